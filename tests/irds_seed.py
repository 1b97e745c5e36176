"""Pre-seed an IR_DATASETS_HOME from /work/shared/data so the REAL ir_datasets code works offline.

What ir_datasets 0.6 expects for ``msmarco-passage`` (read from ir_datasets/datasets/msmarco_passage.py and
etc/downloads.json; base path = ``$IR_DATASETS_HOME/msmarco-passage``):

- ``trec-dl-2019/queries.tsv``  -- ``Cache(GzipExtract(dlc['trec-dl-2019/queries']), base/'trec-dl-2019/queries.tsv')``:
  the already-extracted TSV ``qid<TAB>text``; a present Cache file is used as is (no md5 check).
- ``trec-dl-2019/qrels``        -- ``dlc['trec-dl-2019/qrels']`` has ``cache_path: trec-dl-2019/qrels``: TREC qrels.
- ``trec-dl-2020/queries.tsv.gz`` -- DL20 queries are ``GzipExtract(dlc[...])`` WITHOUT a Cache, so the download's
  cache_path (a gzip file) must be there.
- ``trec-dl-2020/qrels``        -- as for 2019.
- ``collection.tsv``            -- ``Cache(FixEncoding(TarExtract(...collectionandqueries...)), base/'collection.tsv')``:
  ``docid<TAB>text``; here only the union of the DL19/DL20 candidate passages (the shared corpora), not all
  8.8M. The docstore (``collection.tsv.pklz4``) is built from it by ir_datasets on first ``docs_store().get``.
- ``irds_version.txt`` = ``v2`` -- otherwise ir_datasets' Migrator DELETES collection.tsv before first use.

ir_datasets fixes its home folder when it is first imported (msmarco_passage computes its base path at import),
so code that must see a test's seeded IR_DATASETS_HOME has to run in a fresh process: the `rankk` CLI fixture,
or a `python -c` subprocess (see `fresh()` in tests/test_sources.py). In-process calls in a pytest worker use
whichever home was set when ir_datasets was first imported there.

The judged subsets (``trec-dl-2019/judged``) filter the queries by the qrels' qids, so the 43 (DL19) / 54 (DL20)
judged topics in the shared data are exactly what ir_datasets would return. The unfiltered ``trec-dl-2019`` id
will also see only those topics (the shared data does not carry the 200 unjudged ones).
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

SEEDED_IDS = (
    "msmarco-passage/trec-dl-2019/judged",
    "msmarco-passage/trec-dl-2019",
    "msmarco-passage/trec-dl-2020/judged",
    "msmarco-passage/trec-dl-2020",
)


def seed_msmarco_passage(home: str | Path, data: str | Path, docs: bool = True) -> Path:
    """Write the msmarco-passage TREC DL 2019/2020 files under ``home``; returns the dataset's base path."""
    home, data = Path(home), Path(data)
    base = home / "msmarco-passage"
    dl19, dl20 = data / "trec-dl" / "dl19", data / "trec-dl" / "dl20"
    (base / "trec-dl-2019").mkdir(parents=True, exist_ok=True)
    (base / "trec-dl-2020").mkdir(parents=True, exist_ok=True)
    (base / "trec-dl-2019" / "queries.tsv").write_bytes((dl19 / "topics.tsv").read_bytes())
    (base / "trec-dl-2019" / "qrels").write_bytes((dl19 / "qrels.txt").read_bytes())
    (base / "trec-dl-2020" / "queries.tsv.gz").write_bytes(gzip.compress((dl20 / "topics.tsv").read_bytes(), mtime=0))
    (base / "trec-dl-2020" / "qrels").write_bytes((dl20 / "qrels.txt").read_bytes())
    if docs:
        seen: set[str] = set()
        with open(base / "collection.tsv", "w", encoding="utf-8") as out:
            for corpus in (dl19 / "corpus.jsonl", dl20 / "corpus.jsonl"):
                with open(corpus, encoding="utf-8") as fh:
                    for line in fh:
                        if not line.strip():
                            continue
                        doc = json.loads(line)
                        if doc["id"] in seen:
                            continue
                        seen.add(doc["id"])
                        # TsvDocs splits on tabs and lines: the shared passages have single spaces only
                        out.write(f"{doc['id']}\t{' '.join(doc['contents'].split())}\n")
        (base / "irds_version.txt").write_text("v2")
    return base


def seed_env_home(data: str | Path, docs: bool = True) -> Path:
    """Seed the IR_DATASETS_HOME of the current environment (the per-test one set by conftest)."""
    return seed_msmarco_passage(os.environ["IR_DATASETS_HOME"], data, docs=docs)
