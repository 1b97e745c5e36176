"""RankLLM's request/result files (castorini/rank_llm ``rank_llm/data.py``): read as candidates, written as results.

One JSON object per line (plain or .gz), the shape of rank_llm's ``Request``/``Result`` dataclasses (also a JSON
array of them, ``.json``: what rank_llm's ``read_requests_from_file`` also reads and its older retrieve caches
``retrieve_results_<dataset>.json`` hold; errors then name the line each request starts on)::

    {"query": {"text": "...", "qid": "q1"},
     "candidates": [{"docid": "d1", "score": 12.3, "doc": {"contents": "..."}}, ...]}

``qid`` and ``docid`` may be strings or integers (rank_llm allows both; rankk reads them as strings). A line's
candidates are in ranking order (rank 1 first) and its scores are kept. The passage text is the first of the
doc's ``text``, ``segment``, ``contents``, ``content``, ``body``, ``passage`` keys that is present -- the order
rank_llm's prompt builders look them up in -- with a non-empty ``title`` put in front (joined with a space, as
rankk's corpora join title and text; rank_llm's own prompt adds ``Title:``/``Content:`` labels, a prompt detail
left to each method here). Other keys of ``doc`` (ids, titles, headings, URLs) are carried over untouched. A
docid that appears under several queries must hold the same doc each time (rankk keeps one text per docid).

Reading gives a candidates run, its texts, the query texts (so no ``--topics`` is needed) and each docid's doc
object; ``write`` writes a reranked run back in the same shape (rank_llm's ``DataWriter.write_in_jsonl_format``:
``query`` then ``candidates``), in the reranked order with rankk's scores (strictly decreasing, as in a TREC run)
and the candidates' doc objects. Bad records are one ``FILE:LINE: ...`` line naming the field.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from pathlib import Path

from rankk_cli.errors import file_error, show
from rankk_cli.runs import checked_id

TEXT_KEYS = ("text", "segment", "contents", "content", "body", "passage")
SHAPE = '{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {...}}]}'
SUFFIXES = (".jsonl", ".jsonl.gz")
_ARRAY_HEAD = re.compile(rb'\s*\[\s*\{\s*"query"\s*:')


def is_request(obj) -> bool:
    """A parsed JSON line that is a RankLLM request/result (has ``query`` and ``candidates``)."""
    return isinstance(obj, dict) and "query" in obj and "candidates" in obj


def is_request_file(path: str | Path) -> bool:
    """Does the file (plain or gzipped) hold RankLLM requests: a first JSON line with ``query`` and
    ``candidates``, or a JSON array whose first object starts with ``"query"``? Reads only its head."""
    from rankk_cli.docs import _first_json_object

    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as fh:
            head = fh.read(1 << 12)
    except (OSError, EOFError, zlib.error):
        return False
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    return _ARRAY_HEAD.match(head) is not None or is_request(_first_json_object(Path(path)))


def _records(path: Path):
    """(line, object) of each request: JSON lines, or the items of a JSON array (the line each item starts on)."""
    from rankk_cli.docs import _json_lines
    from rankk_cli.runs import read_text_file

    text = read_text_file(path, "RankLLM request file")
    start = len(text) - len(text.lstrip())
    if not text.startswith("[", start):
        yield from _json_lines(path, "RankLLM request file")
        return
    decoder = json.JSONDecoder()
    i, line, at = start + 1, 1, 0

    def line_of(pos: int) -> int:
        nonlocal line, at
        line += text.count("\n", at, pos)
        at = pos
        return line

    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == "]":
            break
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise file_error(path, line_of(exc.pos), f"expected a JSON array of RankLLM requests, found invalid "
                             f"JSON ({exc.msg})") from None
        lineno = line_of(i)
        if not isinstance(obj, dict):
            raise file_error(path, lineno, f"expected a RankLLM request {SHAPE}, found {type(obj).__name__}")
        yield lineno, obj
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
        if i < len(text) and text[i] == ",":
            i += 1
        elif i >= len(text) or text[i] != "]":
            raise file_error(path, line_of(min(i, len(text))), "expected ',' or ']' after a request in the JSON "
                             "array, found " + (show(text[i:i + 20]) if i < len(text) else "the end of the file"))
    if text[i + 1:].strip():
        raise file_error(path, line_of(i + 1), "expected nothing after the JSON array, found more")


def is_output_path(path: str | Path) -> bool:
    """A reranked run written in RankLLM's shape: ``-o X.jsonl`` or ``X.jsonl.gz``."""
    return str(path).lower().endswith(SUFFIXES)


def _id(value, what: str, path: Path, lineno: int, where: str = "") -> str:
    return checked_id(value, what, path, lineno, before=f"{where}: " if where else "")


def doc_text(doc: dict, path: Path, lineno: int, where: str) -> str:
    """The passage text of a RankLLM doc object (see the module doc), else the FILE:LINE error."""
    for key in TEXT_KEYS:
        if key in doc:
            body = doc[key]
            if not isinstance(body, str):
                raise file_error(path, lineno, f"{where}: expected doc {key!r} to be a string, found "
                                 f"{show(json.dumps(body))}")
            title = doc.get("title")
            if title is not None and not isinstance(title, str):
                raise file_error(path, lineno, f"{where}: expected doc 'title' to be a string, found "
                                 f"{show(json.dumps(title))}")
            return " ".join(p.strip() for p in (title or "", body) if p and p.strip())
    raise file_error(path, lineno, f"{where}: expected the passage in one of doc's {', '.join(map(repr, TEXT_KEYS))}, "
                     f"found keys {sorted(doc)[:8]}")


def read(path: str | Path):
    """(Run in the file's ranking order, {docid: text}, {qid: query text}, {docid: doc object})."""
    import numpy as np
    import pandas as pd

    from rankk_cli.runs import Run, run_name

    path = Path(path)
    rows: dict[str, list] = {"qid": [], "docid": [], "rank": [], "score": []}
    texts: dict[str, str] = {}
    docs: dict[str, dict] = {}
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    doc_line: dict[str, int] = {}
    for lineno, obj in _records(path):
        if not is_request(obj):
            raise file_error(path, lineno, f"expected a RankLLM request {SHAPE}, found keys {sorted(obj)[:8]}")
        query = obj["query"]
        if not isinstance(query, dict) or "qid" not in query or "text" not in query:
            raise file_error(path, lineno, "expected 'query' to be an object {\"text\", \"qid\"}, found "
                             f"{show(json.dumps(query))}")
        qid = _id(query["qid"], "query 'qid'", path, lineno)
        if not isinstance(query["text"], str) or not query["text"].strip():
            raise file_error(path, lineno, f"expected query 'text' to be a non-empty string, found "
                             f"{show(json.dumps(query['text']))}")
        if qid in first_line:
            raise file_error(path, lineno, f"expected each qid once, found qid {show(qid)} again (first at line "
                             f"{first_line[qid]})")
        first_line[qid] = lineno
        queries[qid] = query["text"]
        cands = obj["candidates"]
        if not isinstance(cands, list):
            raise file_error(path, lineno, f"expected 'candidates' to be a list, found {type(cands).__name__}")
        seen: set[str] = set()
        for i, cand in enumerate(cands, start=1):
            where = f"candidate {i}"
            if not isinstance(cand, dict) or "docid" not in cand:
                raise file_error(path, lineno, f"{where}: expected an object {{\"docid\", \"score\", \"doc\"}}, "
                                 f"found {show(json.dumps(cand))}")
            docid = _id(cand["docid"], "'docid'", path, lineno, where)
            where = f"candidate {i} (docid {show(docid)})"
            if docid in seen:
                raise file_error(path, lineno, f"{where}: expected each docid once per query, found it again")
            seen.add(docid)
            score = cand.get("score")
            try:
                finite = math.isfinite(score)
            except (TypeError, OverflowError):
                finite = False
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not finite:
                raise file_error(path, lineno, f"{where}: expected a finite number as 'score', found "
                                 f"{show(json.dumps(score))}")
            doc = cand.get("doc")
            if not isinstance(doc, dict):
                raise file_error(path, lineno, f"{where}: expected 'doc' to be an object holding the passage, "
                                 f"found {show(json.dumps(doc))}")
            text = doc_text(doc, path, lineno, where)
            if docid in docs and docs[docid] != doc:  # rankk keeps one text per docid: never pick one silently
                raise file_error(path, lineno, f"{where}: expected the same doc as at line {doc_line[docid]}, "
                                 "found another")
            texts.setdefault(docid, text)
            docs.setdefault(docid, doc)
            doc_line.setdefault(docid, lineno)
            rows["qid"].append(qid)
            rows["docid"].append(docid)
            rows["rank"].append(i)
            rows["score"].append(float(score))
    if not rows["qid"]:
        raise file_error(path, None, f"expected RankLLM requests with candidates {SHAPE}, found none")
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype(np.int64)
    df["score"] = df["score"].astype(np.float64)
    name = run_name(path.name.replace(".jsonl", "").replace(".json", ""))
    return Run(df, name, {"candidates": str(path)}), texts, queries, docs


def write(run, path: str | Path, queries: dict[str, str], docs: dict[str, dict]) -> None:
    """``run`` as RankLLM results: one line per query (run order), candidates in ranking order with the run's
    scores (strictly decreasing, as the TREC writer makes them) and their doc objects; gzipped for ``.gz``."""
    from rankk_cli.runs import _prepared, atomic_write_bytes

    df = _prepared(run)
    lines = []
    for qid, group in df.groupby("qid", sort=False):
        missing = [d for d in group["docid"] if d not in docs]
        if missing or qid not in queries:
            what = f"query text of qid {show(qid)}" if qid not in queries else f"doc of docid {show(missing[0])}"
            raise file_error(path, None, f"expected a RankLLM result for every candidate, found no {what}")
        cands = [{"docid": d, "score": float(s), "doc": docs[d]}
                 for d, s in zip(group["docid"].tolist(), group["score"].tolist())]
        lines.append(json.dumps({"query": {"text": queries[qid], "qid": qid}, "candidates": cands},
                                ensure_ascii=False, allow_nan=False))
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if str(path).lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)


def output_docs(run, texts: dict[str, str], source_docs: dict[str, dict] | None) -> dict[str, dict]:
    """The doc object of every docid of ``run`` for a RankLLM result: the input's own (a RankLLM input), else
    ``{"contents": text}``."""
    if source_docs is not None:
        return source_docs
    return {d: {"contents": texts[d]} for d in dict.fromkeys(run.df["docid"].tolist()) if d in texts}
