"""Small DL19 inputs for tests: the first queries of the shared BM25 candidates, with passage text."""

from __future__ import annotations

import json
from pathlib import Path


def head(data: Path, n_queries: int, depth: int, path: Path) -> Path:
    """Write the first ``n_queries`` DL19 queries x their BM25 top ``depth`` (candidates JSONL) to ``path``."""
    keep, count = [], {}
    for line in (data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl").read_text().splitlines():
        qid = json.loads(line)["qid"]
        if qid not in count and len(count) == n_queries:
            continue
        count[qid] = count.get(qid, 0) + 1
        if count[qid] <= depth:
            keep.append(line)
    path.write_text("\n".join(keep) + "\n")
    return path
