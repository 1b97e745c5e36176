"""Where topics, qrels and documents come from.

A *spec* is what the user typed: a path to a local file, a pyserini name (``dl19-passage``, ``dl20``,
``beir-v1.0.0-scifact-test``: ``pyserini_names``) or an ir_datasets id. Local files win when they exist.

- topics: TSV ``qid<TAB>text`` (plain or .gz), a pyserini topics name, or an ir_datasets id (its queries);
- qrels: TREC qrels ``qid iter docid grade``, a pyserini qrels name, or an ir_datasets id (its qrels);
- documents: see ``open_docs`` (JSONL corpus, Lucene index with stored raw docs, candidates file with text,
  ir_datasets docs store).

All parsing errors are ``RankkError("FILE:LINE: ...")``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankk_cli.errors import bad_id, file_error, show, tab_line
from rankk_cli.runs import fields, parse_int, read_text_file


# ----------------------------------------------------------------------------------------------------------
# topics


def read_topics_file(path: str | Path) -> dict[str, str]:
    path = Path(path)
    text = read_text_file(path, "topics file")
    topics: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        qid, query = tab_line(path, lineno, line, "qid", "query text")
        if bad_id(qid):
            raise file_error(path, lineno, f"expected a qid without spaces or control characters before the tab "
                             f"(run files are whitespace-separated), found {show(qid)}")
        if not query:
            raise file_error(path, lineno, f"expected query text after the tab for qid {show(qid)}, found nothing")
        if qid in topics:
            raise file_error(path, lineno, f"expected each qid once, found qid {show(qid)} again "
                             f"(first at line {first_line[qid]})")
        topics[qid] = query
        first_line[qid] = lineno
    return topics


def resolve(spec: str | Path, what: str, read_path, by_name, by_id):
    """Where an input comes from -- the ONE dispatch for topics, qrels and documents: an existing path (or a
    spec that looks like one: ``read_path`` then names the missing file) is read as a file; else a pyserini name
    (``by_name`` returns None when it is not one); else an ir_datasets id (``by_id``); else one line saying none
    of them matched."""
    text = str(spec)
    if Path(text).exists():
        return read_path(text)
    from rankk_cli import irds

    if irds.looks_like_path(text):
        return read_path(text)
    if by_name is not None:
        found = by_name(text)
        if found is not None:
            return found
    if irds.is_dataset_id(text):
        return by_id(text)
    raise irds.unknown_id_error(text, what)


def _pyserini(kind: str):
    def by_name(spec: str):
        from rankk_cli import pyserini_names

        return pyserini_names.load(spec, kind)

    return by_name


def _irds(loader: str):
    def by_id(spec: str):
        from rankk_cli import irds

        return getattr(irds, loader)(spec)

    return by_id


def load_topics(spec: str | Path) -> dict[str, str]:
    """``{qid: query text}`` from a TSV file, a pyserini topics name or an ir_datasets id."""
    return resolve(spec, "topics", read_topics_file, _pyserini("topics"), _irds("load_queries"))


# ----------------------------------------------------------------------------------------------------------
# qrels


def read_qrels_file(path: str | Path) -> pd.DataFrame:
    """TREC qrels as a DataFrame (qid: str, docid: str, relevance: int64)."""
    path = Path(path)
    text = read_text_file(path, "qrels file")
    qids, docids, rels = [], [], []
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        parts = fields(line)
        if not parts:
            continue
        if len(parts) != 4:
            raise file_error(path, lineno, f"expected 4 columns 'qid iter docid relevance', found {len(parts)}: "
                             f"{show(line)}")
        qid, _it, docid, rel_s = parts
        rel = parse_int(rel_s)
        if rel is None:
            raise file_error(path, lineno, f"expected an integer relevance in column 4, found {show(rel_s)}")
        key = (qid, docid)
        if key in seen:
            raise file_error(path, lineno, f"expected each (qid, docid) once, found qid {show(qid)} docid "
                             f"{show(docid)} again (first at line {seen[key]})")
        seen[key] = lineno
        qids.append(qid)
        docids.append(docid)
        rels.append(rel)
    return pd.DataFrame({"qid": qids, "docid": docids, "relevance": np.array(rels, dtype=np.int64)})


def load_qrels(spec: str | Path) -> pd.DataFrame:
    """Qrels as a DataFrame (qid, docid, relevance) from a TREC qrels file, a pyserini name or an ir_datasets id
    (``evaluate.load_indexed_qrels`` builds the evaluator's indexed ``Qrels`` from this)."""
    return resolve(spec, "qrels", read_qrels_file, _pyserini("qrels"), _irds("load_qrels"))


# ----------------------------------------------------------------------------------------------------------
# documents (implemented in rankk_cli.docs)


def open_docs(spec: str | Path, no_cache: bool = False):
    """A DocStore (``get(docids) -> {docid: text}``) for a corpus, candidates file, Lucene index or ir_datasets id."""
    from rankk_cli.docs import open_docs as _open_docs

    return _open_docs(spec, no_cache=no_cache)
