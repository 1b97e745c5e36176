"""Document stores: where passage texts come from, behind one interface.

``open_docs(spec)`` returns a DocStore whose ``get(docids) -> {docid: text}`` raises one clear line naming the
source and (a few of) the docids it does not have. A spec is:

- a JSONL corpus, one ``{"id", "contents"}`` per line (pyserini JsonCollection; ``title`` + ``text`` keys are
  accepted too and joined with a space); plain or .gz. Validated with FILE:LINE errors; the docid -> text map is
  built once and cached as Parquet in the stage cache, keyed by the file's digest;
- a TSV corpus ``docid<TAB>text`` (.tsv, plain or .gz);
- a candidates file with text: JSONL ``{"qid","docid","rank","score","text"}``, RankLLM's request JSONL
  ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc"}]}`` (``rankk_cli.rankllm``; it also
  carries the query texts), or Parquet with a ``text`` column -- both a run and a document source
  (``read_candidates``);
- a Lucene index directory built with stored raw documents (delegates to ``rankk_cli.lucene.LuceneDocs``);
- an ir_datasets id (its docstore, ``get_many``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Protocol

import numpy as np
import pandas as pd

from rankk_cli.errors import (check_found, check_input_file, file_error, json_object_line, show,
                              tab_line)
from rankk_cli.runs import (INT64_MAX, Run, _check_duplicates, checked_id, order_run, read_text_file, rerank_positions,
                            run_name)

CORPUS_CACHE_VERSION = 1


class DocStore(Protocol):
    source: str

    def get(self, docids: Iterable[str]) -> dict[str, str]: ...



class MappingDocs:
    """Texts held in memory (corpus files, candidates files)."""

    def __init__(self, texts: dict[str, str], source: str):
        self.texts = texts
        self.source = source

    def __len__(self) -> int:
        return len(self.texts)

    def get(self, docids: Iterable[str]) -> dict[str, str]:
        docids = [str(d) for d in docids]
        texts = self.texts
        out = {d: texts[d] for d in docids if d in texts}
        check_found(out, docids, self.source)
        return out


class CheckedDocs:
    """Wrap another store (Lucene) so that missing docids always give the same clear error."""

    def __init__(self, inner, source: str):
        self.inner = inner
        self.source = source

    def get(self, docids: Iterable[str]) -> dict[str, str]:
        docids = [str(d) for d in docids]
        found = self.inner.get(docids) or {}
        out = {str(k): v for k, v in found.items() if v is not None}
        check_found(out, docids, self.source)
        return out


# ----------------------------------------------------------------------------------------------------------
# JSONL helpers


def _json_lines(path: Path, what: str):
    """Yield (lineno, dict) for each non-blank line of a JSONL file, with FILE:LINE errors."""
    text = read_text_file(path, what)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        yield lineno, json_object_line(path, lineno, line)


def _id_value(obj: dict, key: str, path: Path, lineno: int) -> str:
    if key not in obj:
        raise file_error(path, lineno, f"expected a {key!r} field, found keys {sorted(obj)[:8]}")
    return checked_id(obj[key], repr(key), path, lineno)


def _text_value(obj: dict, path: Path, lineno: int, keys=("contents",)) -> str:
    for key in keys:
        if key in obj:
            value = obj[key]
            if not isinstance(value, str):
                raise file_error(path, lineno, f"expected {key!r} to be a string, found {show(json.dumps(value))}")
            return value
    if "text" in obj or "title" in obj:
        parts = []
        for key in ("title", "text"):
            value = obj.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise file_error(path, lineno, f"expected {key!r} to be a string, found {show(json.dumps(value))}")
            if value.strip():
                parts.append(value.strip())
        return " ".join(parts)
    raise file_error(path, lineno, f"expected a 'contents' field (or 'title'/'text'), found keys {sorted(obj)[:8]}")


# ----------------------------------------------------------------------------------------------------------
# corpora


def _corpus_frame(path: Path, rows, label: str) -> pd.DataFrame:
    """DataFrame(docid, text) from (lineno, docid, text) rows; a repeated id is the FILE:LINE error."""
    ids, texts = [], []
    first: dict[str, int] = {}
    for lineno, docid, text in rows:
        if docid in first:
            raise file_error(path, lineno, f"expected each {label} once, found {label} {show(docid)} again "
                             f"(first at line {first[docid]})")
        first[docid] = lineno
        ids.append(docid)
        texts.append(text)
    return pd.DataFrame({"docid": ids, "text": texts})


def parse_jsonl_corpus(path: str | Path) -> pd.DataFrame:
    """A JSONL corpus as DataFrame(docid, text), validated (FILE:LINE errors, duplicate ids rejected)."""
    path = Path(path)

    def rows():
        for lineno, obj in _json_lines(path, "corpus file"):
            docid = _id_value(obj, "id" if "id" in obj or "docid" not in obj else "docid", path, lineno)
            yield lineno, docid, _text_value(obj, path, lineno)

    return _corpus_frame(path, rows(), "id")


def parse_tsv_corpus(path: str | Path) -> pd.DataFrame:
    """A TSV corpus ``docid<TAB>text`` as DataFrame(docid, text)."""
    path = Path(path)
    text = read_text_file(path, "corpus file")

    def rows():
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                yield (lineno, *tab_line(path, lineno, line, "docid", "text"))

    return _corpus_frame(path, rows(), "docid")


def load_corpus(path: str | Path, no_cache: bool = False) -> dict[str, str]:
    """docid -> text of a JSONL/TSV corpus file, through the stage cache (keyed by the file's digest)."""
    from rankk_cli.cache import StageCache, enabled, file_digest, stage_key

    path = check_input_file(path, "corpus file")
    fmt = "tsv" if _base_suffix(path) == ".tsv" else "jsonl"
    try:
        digest = file_digest(path)
    except OSError as exc:
        raise file_error(path, None, f"cannot read corpus file: {exc.strerror or exc}") from None
    key = stage_key("corpus", format=fmt, digest=digest, version=CORPUS_CACHE_VERSION)
    cache = StageCache()
    df = cache.get("corpus", key) if enabled(no_cache) else None
    if df is None or list(df.columns) != ["docid", "text"]:
        df = parse_tsv_corpus(path) if fmt == "tsv" else parse_jsonl_corpus(path)
        cache.put("corpus", key, df)
    return dict(zip(df["docid"].tolist(), df["text"].tolist()))


def _base_suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


# ----------------------------------------------------------------------------------------------------------
# candidates (a run with text)


def _candidates_jsonl(path: Path) -> pd.DataFrame:
    rows = {"qid": [], "docid": [], "rank": [], "score": [], "text": []}
    lines = []
    for lineno, obj in _json_lines(path, "candidates file"):
        qid = _id_value(obj, "qid", path, lineno)
        docid = _id_value(obj, "docid", path, lineno)
        rank = obj.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or abs(rank) > INT64_MAX:
            raise file_error(path, lineno, f"expected an integer 'rank' (int64), found {show(json.dumps(rank))}")
        score = obj.get("score")
        try:
            finite = math.isfinite(score)
        except (TypeError, OverflowError):  # not a number, or an integer beyond float range
            finite = False
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not finite:
            raise file_error(path, lineno, f"expected a finite number as 'score', found {show(json.dumps(score))}")
        if "text" not in obj:
            raise file_error(path, lineno, f"expected a 'text' field, found keys {sorted(obj)[:8]}")
        text = _text_value(obj, path, lineno, keys=("text",))
        rows["qid"].append(qid)
        rows["docid"].append(docid)
        rows["rank"].append(rank)
        rows["score"].append(float(score))
        rows["text"].append(text)
        lines.append(lineno)
    if not lines:
        raise file_error(path, None, "empty candidates file: expected JSON lines {qid, docid, rank, score, text}")
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype(np.int64)
    df["score"] = df["score"].astype(np.float64)
    dup = df.duplicated(["qid", "docid"], keep=False)
    if dup.any():
        # report with real line numbers (blank lines counted)
        fake = "\n".join("x" if i else "" for i in _line_mask(lines))
        _check_duplicates(df, path, fake)
    return df


def _line_mask(lines: list[int]) -> list[bool]:
    mask = [False] * lines[-1]
    for n in lines:
        mask[n - 1] = True
    return mask


def is_candidates_file(path: str | Path) -> bool:
    """Does this JSONL/Parquet file look like a candidates file (qid, docid and text)?"""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception:
            return False
        return {"qid", "docid", "text"} <= set(names)
    from rankk_cli import rankllm

    if rankllm.is_request_file(path):
        return True
    obj = _first_json_object(path)
    return obj is not None and {"qid", "docid"} <= set(obj)


def _first_json_object(path: Path) -> dict | None:
    """The first non-blank line of a (possibly gzipped) JSONL file as a dict, reading only that far; None when
    it cannot be read or parsed (the full parser then names the problem)."""
    import gzip

    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as fh:
            for raw in fh:
                line = raw.decode("utf-8-sig").strip()
                if line:
                    obj = json.loads(line)
                    return obj if isinstance(obj, dict) else None
    except (OSError, EOFError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return None


def read_candidates(path: str | Path) -> tuple[Run, dict[str, str]]:
    """A candidates file (JSONL, RankLLM JSONL or Parquet with ``text``) as (Run in ranking order, {docid: text}).
    A RankLLM file's query texts and doc objects ride in ``run.meta["rankllm"]`` ({"queries", "docs"}): the rerank
    stage takes its queries from there when no --topics is given, and writes the doc objects back out."""
    from rankk_cli.runs import read_parquet_run

    path = Path(path)
    if str(path).endswith(".parquet"):
        run = read_parquet_run(path)
        if "text" not in run.df.columns:
            raise file_error(path, None, f"expected a 'text' column in a candidates file, found columns "
                             f"{list(run.df.columns)}")
        df = run.df
    else:
        if _base_suffix(path) not in (".jsonl", ".json"):
            raise file_error(path, None, "expected a candidates file (.jsonl or .parquet with text), found a "
                             f"{path.suffix or 'suffix-less'} file")
        from rankk_cli import rankllm

        if rankllm.is_request_file(path):
            run, texts, queries, docs = rankllm.read(path)
            run.meta["rankllm"] = {"queries": queries, "docs": docs}
            return run, texts
        df = rerank_positions(order_run(_candidates_jsonl(path)))
        run = Run(df, run_name(path.name.replace(".jsonl", "")), {"candidates": str(path)})
    texts: dict[str, str] = {}
    for docid, text in zip(df["docid"].tolist(), df["text"].tolist()):
        if not isinstance(text, str):
            raise file_error(path, None, f"expected text for every candidate, found {text!r} for docid {show(docid)}")
        texts.setdefault(docid, text)
    return run, texts


# ----------------------------------------------------------------------------------------------------------
# opening any document source


def open_docs(spec: str | Path, no_cache: bool = False) -> DocStore:
    """A DocStore for a corpus file, candidates file, Lucene index directory or ir_datasets id (the dispatch is
    ``sources.resolve``'s, as for topics and qrels)."""
    from rankk_cli.sources import resolve

    return resolve(spec, "document", lambda path: _open_path(Path(path), no_cache), None, _open_id)


def _open_id(spec: str) -> DocStore:
    from rankk_cli import irds

    return irds.IrdsDocs(spec)


def _open_path(path: Path, no_cache: bool) -> DocStore:
    if path.exists():
        if path.is_dir():
            if not any(p.name.startswith("segments") for p in path.iterdir()):
                raise file_error(path, None, "expected a Lucene index directory (with a segments_N file) or a "
                                 "corpus file, found a directory without an index")
            from rankk_cli.lucene import LuceneDocs  # RETRIEVE's module; imports Java only when used

            return CheckedDocs(LuceneDocs(str(path)), f"Lucene index {path}")
        suffix = _base_suffix(path)
        if suffix == ".parquet":
            if not is_candidates_file(path):
                raise file_error(path, None, "expected a Parquet candidates file with qid, docid and text columns")
            _run, texts = read_candidates(path)
            return MappingDocs(texts, str(path))
        if suffix in (".jsonl", ".json"):
            from rankk_cli.runs import looks_like_json_run

            if suffix == ".json" and looks_like_json_run(path) and not is_candidates_file(path):
                raise file_error(path, None, "expected a document source (corpus or candidates file with text), "
                                 "found a JSON score run {qid: {docid: score}}, which holds no text")
            if is_candidates_file(path):
                _run, texts = read_candidates(path)
                return MappingDocs(texts, str(path))
            return MappingDocs(load_corpus(path, no_cache=no_cache), str(path))
        if suffix == ".tsv":
            return MappingDocs(load_corpus(path, no_cache=no_cache), str(path))
        raise file_error(path, None, "expected a document source (.jsonl corpus or candidates, .tsv corpus, "
                         f".parquet candidates, a Lucene index directory), found a {suffix or 'suffix-less'} file")
    raise file_error(path, None, "no such document source (corpus file, candidates file or index directory)")
