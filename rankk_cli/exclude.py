"""Excluded (qid, docid) pairs: documents a benchmark forbids for a query, dropped from runs before scoring.

BRIGHT lists, for every query, documents that must not count (its examples' ``excluded_ids`` field, e.g. the
very post a StackExchange question was taken from); its own evaluation removes them from each ranking before
scoring, and without that nDCG@10 differs from every published figure. ``rankk eval/compare/report --exclude``
drop the pairs from every run before scoring (the documents below move up); ``rankk rerank --exclude`` drops them
before reranking, so no window is spent on a forbidden document.

An exclusion file is, by content (not suffix; plain or .gz):

- JSON: one object ``{qid: [docid, ...]}``;
- JSONL: one BRIGHT example per line, ``{"id": qid, "excluded_ids": [docid, ...], ...}`` (other keys ignored),
  i.e. the dataset's ``examples`` split saved as JSON lines;
- TSV: ``qid<TAB>docid`` per line.

An empty file (or ``{}``) excludes nothing. A pair listed twice is one pair; a pair no run holds drops nothing
(BRIGHT writes ``"N/A"`` for "none", which matches no document). Errors are the usual one line naming the file
(and line or key).
"""

from __future__ import annotations

import gzip
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rankk_cli.errors import check_input_file, file_error, json_object_line, show, tab_line
from rankk_cli.runs import JsonConstant, JsonPairs, Run, checked_id, json_kind, load_json, read_text_file, rerank_positions

WHAT = "exclusion file"
SHAPES = "{qid: [docid, ...]} JSON, BRIGHT's JSONL {\"id\", \"excluded_ids\"} or 'qid<TAB>docid' lines"


@dataclass
class Dropped:
    """What excluding removed from one run: rows (pairs) and the queries they were in."""

    pairs: int
    queries: int


@dataclass
class Exclusions:
    """The excluded pairs (unique, file order) of one file, and what identifies them in cache keys."""

    pairs: pd.DataFrame  # qid, docid (str)
    source: str
    identity: str  # "sha256:<digest of the file>"

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def queries(self) -> int:
        return int(self.pairs["qid"].nunique())

    def apply(self, run: Run) -> tuple[Run, Dropped]:
        """``run`` without the excluded pairs, ranks renumbered 1..n per query (order otherwise unchanged)."""
        if not len(self.pairs) or not len(run.df):
            return run, Dropped(0, 0)
        df = run.df
        drop = np.zeros(len(df), dtype=bool)
        rows = np.flatnonzero(df["qid"].astype(str).isin(set(self.pairs["qid"])).to_numpy())  # few queries, often
        if len(rows):
            keys = pd.MultiIndex.from_arrays([df["qid"].iloc[rows].astype(str), df["docid"].iloc[rows].astype(str)])
            drop[rows] = keys.isin(pd.MultiIndex.from_frame(self.pairs))
        n = int(drop.sum())
        if not n:
            return run, Dropped(0, 0)
        queries = int(df["qid"][drop].nunique())
        kept = rerank_positions(df[~drop].reset_index(drop=True), copy=False)
        return Run(kept, run.name, dict(run.meta)), Dropped(n, queries)


def _raw_is_empty(path: Path) -> bool:
    """Nothing but whitespace (or a BOM) in the file, gzipped or not; unreadable or corrupt -> False (the text
    reader then says what is wrong)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return False
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return not raw.strip()


def _id(value, what: str, path: Path, line: int | None, where: str) -> str:
    return checked_id(value, f"each {what}", path, line, where)


def _docid_list(value, path: Path, line: int | None, qid: str) -> list[str]:
    where = f" (qid {show(qid)})"
    if isinstance(value, JsonPairs) or not isinstance(value, list):
        raise file_error(path, line, f"expected qid {show(qid)} to map to a list of docids, found "
                         f"{json_kind(value)}")
    return [_id(d, "docid", path, line, where) for d in value]


def _from_json_object(obj, path: Path) -> list[tuple[str, str]]:
    if not isinstance(obj, JsonPairs):
        raise file_error(path, None, f"expected {SHAPES}, found JSON {json_kind(obj)}")
    pairs, seen = [], set()
    for qid, docids in obj:
        if qid in seen:
            raise file_error(path, None, f"expected each qid once, found qid {show(qid)} twice (a repeated key)")
        seen.add(qid)
        qid = _id(qid, "qid", path, None, "")
        pairs.extend((qid, d) for d in _docid_list(docids, path, None, qid))
    return pairs


def _from_jsonl(text: str, path: Path) -> list[tuple[str, str]]:
    pairs, first = [], {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        obj = json_object_line(path, lineno, line, 'a JSON object {"id", "excluded_ids"} (BRIGHT\'s examples)')
        for key in ("id", "excluded_ids"):
            if key not in obj:
                raise file_error(path, lineno, f"expected an {key!r} field (BRIGHT's examples as JSON lines), "
                                 f"found keys {sorted(obj)[:8]}")
        qid = _id(obj["id"], "qid ('id')", path, lineno, "")
        if qid in first:
            raise file_error(path, lineno, f"expected each id once, found id {show(qid)} again (first at line "
                             f"{first[qid]})")
        first[qid] = lineno
        pairs.extend((qid, d) for d in _docid_list(obj["excluded_ids"], path, lineno, qid))
    return pairs


def _from_tsv(text: str, path: Path) -> list[tuple[str, str]]:
    pairs = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        qid, docid = tab_line(path, lineno, line, "qid", "docid")
        if not docid:
            raise file_error(path, lineno, "expected a docid after the tab, found nothing")
        if "\t" in docid:
            raise file_error(path, lineno, f"expected 2 columns 'qid<TAB>docid', found more: {show(line)}")
        qid = _id(qid, "qid", path, lineno, "")
        pairs.append((qid, _id(docid, "docid", path, lineno, "")))
    return pairs


def parse_exclusions(path: str | Path) -> pd.DataFrame:
    """The unique (qid, docid) pairs of an exclusion file, in file order; validated (one-line errors)."""
    path = check_input_file(path, WHAT)
    if _raw_is_empty(path):
        return pd.DataFrame({"qid": pd.Series([], dtype=object), "docid": pd.Series([], dtype=object)})
    text = read_text_file(path, WHAT)
    head = text.lstrip()[:1]
    if head == "{":
        try:
            json.loads(text, object_pairs_hook=JsonPairs, parse_constant=JsonConstant)
            whole = True
        except json.JSONDecodeError as exc:
            whole = exc.msg != "Extra data"  # a second value after the first: JSON lines
        except (ValueError, RecursionError):
            whole = True  # load_json names the problem
        if whole:
            pairs = _from_json_object(load_json(text, path, SHAPES), path)
        else:
            pairs = _from_jsonl(text, path)
    elif head == "[":
        raise file_error(path, None, f"expected {SHAPES}, found a JSON list")
    else:
        pairs = _from_tsv(text, path)
    df = pd.DataFrame(pairs, columns=["qid", "docid"], dtype=object)
    return df.drop_duplicates(ignore_index=True)


def load_exclusions(spec: str | Path | None) -> Exclusions | None:
    """``--exclude FILE`` as Exclusions (None when not given)."""
    if spec is None:
        return None
    from rankk_cli.cache import file_digest

    path = check_input_file(spec, WHAT)
    pairs = parse_exclusions(path)
    return Exclusions(pairs, str(spec), "sha256:" + file_digest(path))


def describe(dropped: Dropped, exclusions: Exclusions) -> str:
    """'dropped 3 excluded (qid, docid) pairs in 2 queries (listed in FILE: 40 pairs)'."""
    return (f"dropped {dropped.pairs} excluded (qid, docid) pair{'s' if dropped.pairs != 1 else ''} in "
            f"{dropped.queries} quer{'ies' if dropped.queries != 1 else 'y'} (listed in {exclusions.source}: "
            f"{len(exclusions)} pairs)")

