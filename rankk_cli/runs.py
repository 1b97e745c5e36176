"""The Run table and its file formats.

A run is one pandas DataFrame with columns ``qid`` (str), ``docid`` (str), ``rank`` (int64, 1-based),
``score`` (float64), plus any optional columns (``text``, ``tag``, ...). Within a query the rows are in ranking
order: score descending, ties broken by the rank column, then by position in the file. Queries keep the order in
which they first appear.

Formats, chosen by suffix:
- TREC run text (``qid Q0 docid rank score tag``; any whitespace; optionally ``.gz``);
- Parquet (``.parquet``), which also carries ``Run.meta`` (a JSON dict) in the schema metadata;
- JSON score runs (``.json``, ``.json.gz``): one object ``{qid: {docid: score}}``, the shape of Rank1's
  ``score.json`` and of Rank-K's ``rerank.py`` output. A JSON run has no rank column: within a query the rank is
  the document's position in the file, so ties in score keep file order (the TREC rule: score, rank, file order).

Reading validates and raises ``RankkError("FILE:LINE: ...")``; the fast path is pyarrow's CSV reader, and any
problem it meets is re-diagnosed by a line-by-line parser so the message can name the exact line.

Writing is atomic (temp file + rename) and makes scores strictly decreasing within each query, so that
trec_eval's sort by score can never reorder a ranking (in float32, as trec_eval holds scores, for TREC text).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from rankk_cli.errors import RankkError, bad_id, check_input_file, file_error, show

RUN_COLUMNS = ["qid", "docid", "rank", "score"]
META_KEY = b"rankk"
CHECKED_KEY = b"rankk.checked_rows"  # set by write_parquet_run after a full check
# LZ4 (LZ4_RAW): ~1.5x faster to read than the default snappy at about the same size (7M-line run: 63 vs 61 MB);
# every Parquet reader (pyarrow, pandas, polars, duckdb, Spark) decodes it
PARQUET_COMPRESSION = "lz4"


@dataclass
class Run:
    """A ranking per query: ``df`` holds (qid, docid, rank, score, ...) in ranking order."""

    df: pd.DataFrame
    name: str = "run"
    meta: dict = field(default_factory=dict)

    @property
    def qids(self) -> list[str]:
        return list(dict.fromkeys(self.df["qid"].tolist()))

    def __len__(self) -> int:
        return len(self.df)

    def by_query(self) -> Iterator[tuple[str, pd.DataFrame]]:
        for qid, group in self.df.groupby("qid", sort=False):
            yield str(qid), group

    def top(self, depth: int) -> "Run":
        """The first ``depth`` rows of each query."""
        df = self.df[self.df["rank"] <= depth].reset_index(drop=True)
        return Run(df, self.name, dict(self.meta))


# ----------------------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on failure remove it."""
    path = Path(path)
    if path.is_dir():
        raise file_error(path, None, "expected an output file path, found a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


_UMASK: list[int] = []


def _umask() -> int:
    if not _UMASK:
        mask = os.umask(0o022)
        os.umask(mask)
        _UMASK.append(mask)
    return _UMASK[0]


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


# ----------------------------------------------------------------------------------------------------------
# reading text files (shared by runs, qrels and topics)


def read_text_file(path: str | Path, what: str = "file") -> str:
    """Read a (possibly gzipped) UTF-8 text file; strip a BOM; normalise CRLF. Errors name file and line."""
    path = check_input_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise file_error(path, None, f"cannot read {what}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise file_error(path, None, f"corrupt gzip data: {exc}") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise file_error(path, line, f"expected a text {what}, found binary data (NUL byte)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise file_error(path, line, f"expected UTF-8 text, found undecodable byte 0x{raw[exc.start]:02x}") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            line = text[: text.index("\r")].count("\n") + 1
            raise file_error(path, line, "expected a line ending, found a bare carriage return")
    if not text or text.isspace():  # same test as `not text.strip()`, without copying a large file
        raise file_error(path, None, f"empty {what}: expected at least one line")
    return text


def parse_float(text: str) -> float | None:
    """A finite float, or None. Python's float() also takes '1_000' and non-ASCII digits ('１', '٣'); trec_eval
    and pyarrow do not, nor do we."""
    if "_" in text or not text.isascii():
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


INT64_MAX = 2**63 - 1
_ASCII_SPACE = re.compile(r"[ \t\n\v\f\r]+")


def fields(line: str) -> list[str]:
    """Whitespace-separated columns as trec_eval sees them: split on ASCII whitespace only (str.split() would
    also split on a no-break space or other Unicode spaces inside an id)."""
    if line.isascii():
        return line.split()
    return [part for part in _ASCII_SPACE.split(line) if part]


def parse_int(text: str) -> int | None:
    """An integer that fits int64 (ASCII digits, optional sign), or None."""
    if "_" in text or not text.isascii():
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return value if -INT64_MAX <= value <= INT64_MAX else None


# ----------------------------------------------------------------------------------------------------------
# TREC run files


def _run_bytes(path: Path) -> bytes | None:
    """The file's bytes when they can go straight to the fast parser (no BOM, CR or NUL; gunzipped), else None.

    Anything unusual (missing file, bad gzip, CRLF...) returns None, and ``read_text_file`` then decodes or
    diagnoses it; invalid UTF-8 is caught by pyarrow's parser, which makes the fast path decline.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except Exception:
        return None
    if raw.startswith(b"\xef\xbb\xbf") or b"\r" in raw or b"\x00" in raw:
        return None
    return raw


def sniff_delimiter(data: bytes) -> str | None:
    """The single-character delimiter of a clean whitespace-separated file (from its first line), or None when the
    line mixes tabs and spaces, repeats them or starts with one (the slow, exact path handles those)."""
    nl = data.find(b"\n")
    first = data[: nl] if nl >= 0 else data
    if b"\t" in first and b" " not in first.strip():
        return "\t"
    if b"\t" not in first and b"  " not in first.strip() and not first.startswith(b" "):
        return " "
    return None


def arrow_csv(data: bytes, column_types: dict):
    """``data`` parsed by pyarrow with exactly these columns and types (no quoting, no empty lines, no nulls
    accepted as such), or None when it does not parse cleanly -- callers then diagnose on their slow path."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    delimiter = sniff_delimiter(data)
    if delimiter is None:
        return None
    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=list(column_types), block_size=1 << 26),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False, escape_char=False,
                                             double_quote=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=False,
                                                 quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _trec_fast(text: str | bytes) -> pd.DataFrame | None:
    """pyarrow fast path for a well-formed file; None when anything looks off (the slow path then diagnoses)."""
    import pyarrow as pa

    data = text if isinstance(text, bytes) else text.encode("utf-8")
    table = arrow_csv(data, {"qid": pa.string(), "q0": pa.string(), "docid": pa.string(), "rank": pa.int64(),
                             "score": pa.float64(), "tag": pa.string()})
    if table is None:
        return None
    if table.num_rows == 0:
        return None
    for name in ("qid", "docid", "q0", "tag", "rank", "score"):
        if table.column(name).null_count:
            return None
    df = table.select(["qid", "docid", "rank", "score", "tag"]).to_pandas()
    if (df["qid"] == "").any() or (df["docid"] == "").any() or (df["tag"] == "").any():
        return None
    if not np.isfinite(df["score"].to_numpy()).all():
        return None
    return df


def _trec_slow(text: str, path: Path) -> pd.DataFrame:
    """Line-by-line parser: accepts any whitespace, names the exact line of any problem."""
    qids, docids, ranks, scores, tags = [], [], [], [], []
    for lineno, line in enumerate(text.split("\n"), start=1):
        parts = fields(line)
        if not parts:
            continue
        if len(parts) != 6:
            raise file_error(path, lineno, f"expected 6 columns 'qid Q0 docid rank score tag', found {len(parts)}: "
                             f"{show(line)}")
        qid, _q0, docid, rank_s, score_s, tag = parts
        rank = parse_int(rank_s)
        if rank is None:
            raise file_error(path, lineno, f"expected an integer rank in column 4, found {show(rank_s)}")
        score = parse_float(score_s)
        if score is None:
            raise file_error(path, lineno, f"expected a finite number as score in column 5, found {show(score_s)}")
        qids.append(qid)
        docids.append(docid)
        ranks.append(rank)
        scores.append(score)
        tags.append(tag)
    if not qids:
        raise file_error(path, None, "empty run file: expected lines 'qid Q0 docid rank score tag'")
    return pd.DataFrame({"qid": qids, "docid": docids, "rank": np.array(ranks, dtype=np.int64),
                         "score": np.array(scores, dtype=np.float64), "tag": tags})


def _line_numbers(text: str) -> np.ndarray:
    """1-based line number of each non-blank line (only used to report errors)."""
    return np.array([i for i, line in enumerate(text.split("\n"), start=1) if line.strip()], dtype=np.int64)


def _check_duplicates(df: pd.DataFrame, path: Path, text: str | None, key=("qid", "docid"), what="document") -> None:
    dup = df.duplicated(list(key), keep=False)
    if not dup.any():
        return
    rows = np.flatnonzero(dup.to_numpy())
    first_key = tuple(df.iloc[rows[0]][k] for k in key)
    same = [r for r in rows if tuple(df.iloc[r][k] for k in key) == first_key]
    if text is not None:
        lines = _line_numbers(text)
        first, second = int(lines[same[0]]), int(lines[same[1]])
    else:
        first, second = same[0] + 1, same[1] + 1
    label = " ".join(f"{k} {show(str(v))}" for k, v in zip(key, first_key))
    raise file_error(path, second, f"expected each ({', '.join(key)}) once, found a duplicate {what}: {label} "
                     f"(first at line {first})")


def _qid_blocks(df: pd.DataFrame) -> np.ndarray | None:
    """Start row of each query when every query's rows are contiguous (the usual layout), else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(df)
    if n == 0:
        return None
    try:
        qid = pa.array(df["qid"])
        if isinstance(qid, pa.ChunkedArray):
            qid = qid.combine_chunks()
        if not (pa.types.is_string(qid.type) or pa.types.is_large_string(qid.type)):
            return None
        change = pc.not_equal(qid[1:], qid[:-1]).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, TypeError, ValueError):
        return None
    starts = np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)
    if len(pc.unique(qid.take(pa.array(starts)))) != len(starts):
        return None
    return starts


def _unique_docs_fast(df: pd.DataFrame, starts: np.ndarray | None | bool = False) -> bool:
    """True when no (qid, docid) repeats, checked query by query (cheap); False means 'unknown or repeats'.
    ``starts``: the query blocks when the caller has them (None: not contiguous)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if starts is False:
        starts = _qid_blocks(df)
    if starts is None or len(starts) * 16 > len(df):  # interleaved or tiny queries: the general check is fine
        return False
    try:
        docid = pa.array(df["docid"])
        if isinstance(docid, pa.ChunkedArray):
            docid = docid.combine_chunks()
    except (pa.ArrowException, TypeError, ValueError):
        return False
    ends = np.append(starts[1:], len(df))
    for a, b in zip(starts.tolist(), ends.tolist()):
        if len(pc.unique(docid.slice(a, b - a))) != b - a:
            return False
    return True


def _in_ranking_order(df: pd.DataFrame, starts: np.ndarray) -> bool:
    """Rows already grouped by query, score descending, ties by rank ascending (file order after that)."""
    score = df["score"].to_numpy(dtype=np.float64)
    rank = df["rank"].to_numpy(dtype=np.int64)
    same = np.ones(len(df) - 1, dtype=bool)
    same[starts[1:] - 1] = False
    ds = score[1:] - score[:-1]
    bad = same & ((score[1:] > score[:-1]) | ((ds == 0) & (rank[1:] < rank[:-1])))
    return not bad.any()


def order_run(df: pd.DataFrame) -> pd.DataFrame:
    """Ranking order: queries by first appearance; within a query score desc, then rank asc, then file order."""
    starts = _qid_blocks(df)
    if starts is not None and _in_ranking_order(df, starts):
        return df.reset_index(drop=True)
    qcode = pd.factorize(df["qid"], sort=False)[0]
    idx = np.lexsort((np.arange(len(df)), df["rank"].to_numpy(), -df["score"].to_numpy(), qcode))
    out = df.iloc[idx].reset_index(drop=True)
    return out


def canonical(df: pd.DataFrame, on_repeat: Callable[[], None], copy: bool = True) -> pd.DataFrame:
    """Validated ranking order with ranks 1..n: ``on_repeat()`` (which raises the exact FILE:LINE error) runs
    when the cheap per-query check cannot rule out a repeated (qid, docid). The query blocks are found once."""
    starts = _qid_blocks(df)
    if not _unique_docs_fast(df, starts):
        on_repeat()
    if starts is not None and _in_ranking_order(df, starts):
        return rerank_positions(df.reset_index(drop=True), starts, copy=copy)
    return rerank_positions(order_run(df), copy=False)


def rerank_positions(df: pd.DataFrame, starts: np.ndarray | None | bool = False, copy: bool = True
                     ) -> pd.DataFrame:
    """Set the rank column to 1..n within each query, following the current row order (on a copy unless the
    caller owns ``df``)."""
    if copy:
        df = df.copy()
    if starts is False:
        starts = _qid_blocks(df)
    if starts is not None:
        rank = df["rank"].to_numpy()
        step = np.diff(rank) == 1
        step[starts[1:] - 1] = True
        if len(rank) and step.all() and (rank[starts] == 1).all():  # already 1..n per query (files rankk wrote)
            return df
        lengths = np.diff(np.append(starts, len(df)))
        df["rank"] = np.arange(1, len(df) + 1, dtype=np.int64) - np.repeat(starts, lengths)
    else:
        df["rank"] = df.groupby("qid", sort=False).cumcount().to_numpy(dtype=np.int64) + 1
    return df


def first_bad_id(column) -> int | None:
    """Row of the first id in a string column that ``bad_id`` rejects, else None. A byte scan of the Arrow
    buffers, chunk by chunk (tens of ms for 7M ids); the exact per-id test runs only on a chunk with an empty id
    or a suspicious byte (<= space, DEL, or non-ASCII, which may be a Unicode space)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column if isinstance(column, (pa.Array, pa.ChunkedArray)) else pa.array(column)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    base = 0
    for chunk in chunks:
        if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
            chunk = pc.cast(chunk, pa.string())
        n = len(chunk)
        if n == 0:
            continue
        offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
        buffers = chunk.buffers()
        offsets = np.frombuffer(buffers[1], dtype=offset_type)[chunk.offset: chunk.offset + n + 1]
        data = (np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0]: offsets[-1]] if buffers[2] is not None
                else np.zeros(0, np.uint8))
        # data - 33 wraps below zero: >= 94 means a byte < 33 (space, controls) or > 126 (DEL, non-ASCII)
        if (offsets[1:] == offsets[:-1]).any() or chunk.null_count or (data - np.uint8(33) >= np.uint8(94)).any():
            for i, value in enumerate(chunk.to_pylist()):
                if value is None or bad_id(value):
                    return base + i
        base += n
    return None


def read_trec_run(path: str | Path, name: str | None = None) -> Run:
    path = Path(path)
    text = None
    raw = _run_bytes(path)  # fast path: clean bytes straight to pyarrow, no str round trip
    df = _trec_fast(raw) if raw is not None else None
    del raw
    if df is None:
        text = read_text_file(path, "run file")
        df = _trec_fast(text)
        if df is None:
            df = _trec_slow(text, path)
    df = canonical(df, lambda: _check_duplicates(df, path, text if text is not None
                                                 else read_text_file(path, "run file")), copy=False)
    return Run(df, name or run_name(path))


def read_parquet_run(path: str | Path, name: str | None = None) -> Run:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = check_input_file(path, "run file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise file_error(path, None, f"expected a Parquet run file, cannot read it: {exc}") from None
    missing = [c for c in RUN_COLUMNS if c not in table.column_names]
    if missing:
        raise file_error(path, None, f"expected columns {RUN_COLUMNS}, missing {missing}")
    meta = {}
    if table.schema.metadata and META_KEY in table.schema.metadata:
        try:
            meta = dict(json.loads(table.schema.metadata[META_KEY]))
        except (ValueError, TypeError):
            raise file_error(path, None, "expected rankk metadata as a JSON object, found something else") from None
    for column in RUN_COLUMNS:
        nulls = table.column(column).null_count
        if nulls:
            raise file_error(path, None, f"expected a value in every row of column {column!r}, found {nulls} null(s)")
    types = {c: table.schema.field(c).type for c in RUN_COLUMNS}
    if not (pa.types.is_integer(types["rank"])):
        raise file_error(path, None, f"expected an integer 'rank' column, found type {types['rank']}")
    if not (pa.types.is_floating(types["score"]) or pa.types.is_integer(types["score"])):
        raise file_error(path, None, f"expected a numeric 'score' column, found type {types['score']}")
    for column in ("qid", "docid"):
        if not (pa.types.is_string(types[column]) or pa.types.is_large_string(types[column])
                or pa.types.is_integer(types[column])):
            raise file_error(path, None, f"expected a string {column!r} column, found type {types[column]}")
    for column in ("qid", "docid"):
        if pa.types.is_integer(types[column]):
            continue
        row = first_bad_id(table.column(column))
        if row is not None:
            value = table.column(column)[row].as_py()
            raise file_error(path, row + 1, f"expected a {column} without spaces or control characters (a TREC "
                             f"run cannot hold it), found {show(value)} (row {row + 1})")
    df = table.to_pandas()
    df["qid"] = df["qid"].astype(str)
    df["docid"] = df["docid"].astype(str)
    df["score"] = df["score"].astype(np.float64)
    df["rank"] = df["rank"].astype(np.int64)
    if len(df) == 0:
        raise file_error(path, None, "empty run file: expected at least one row")
    bad = ~np.isfinite(df["score"].to_numpy())
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise file_error(path, row + 1, f"expected a finite score, found {df['score'].iloc[row]!r} (row {row + 1})")
    checked = (table.schema.metadata or {}).get(CHECKED_KEY)
    if checked is not None and checked == str(table.num_rows).encode():
        # written by rankk after a full check (unique (qid, docid), ranking order) and not resized since: only
        # the cheap order check runs again (an edited score shows there); a repeat is re-checked if it fails
        starts = _qid_blocks(df)
        if starts is not None and _in_ranking_order(df, starts):
            return Run(rerank_positions(df, starts, copy=False), name or run_name(path), meta)
    df = canonical(df, lambda: _check_duplicates(df, path, None), copy=False)
    return Run(df, name or run_name(path), meta)


def run_name(path: str | Path) -> str:
    """A display name for a run file: the file name without .gz/.jsonl/.json/.trec/.txt/.run/.tsv/.parquet."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".trec", ".txt", ".run", ".tsv", ".parquet"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def read_run(path: str | Path, name: str | None = None) -> Run:
    """Read a TREC run (plain or .gz), a Parquet run, a JSON score run or a JSONL candidates file (rankk's
    ``{qid, docid, rank, score, text}`` or RankLLM's ``{query, candidates}``, e.g. ``rankk rerank -o X.jsonl``; a
    RankLLM ``.json`` array too), validated, in ranking order."""
    from rankk_cli import rankllm

    if str(path).lower().endswith((".jsonl", ".jsonl.gz")) or (
            is_json_run_path(path) and rankllm.is_request_file(path)):  # RankLLM's .json array too
        from rankk_cli.docs import read_candidates

        run = read_candidates(path)[0]
        run.meta.pop("rankllm", None)  # query texts and doc objects: not needed to score it
        if "text" in run.df.columns:
            run.df = run.df.drop(columns="text")
        return Run(run.df, name or run.name, run.meta)
    if str(path).endswith(".parquet"):
        return read_parquet_run(path, name)
    if is_json_run_path(path):
        return read_json_run(path, name)
    return read_trec_run(path, name)


# ----------------------------------------------------------------------------------------------------------
# JSON score runs {qid: {docid: score}}

JSON_RUN_SUFFIXES = (".json", ".json.gz")
JSON_RUN_SHAPE = "{qid: {docid: score}}"


def is_json_run_path(path: str | Path) -> bool:
    """A ``.json`` / ``.json.gz`` name: read and written as a JSON score run."""
    return str(path).endswith(JSON_RUN_SUFFIXES)


_JSON_RUN_HEAD = re.compile(rb'\s*\{\s*"(?:[^"\\]|\\.)*"\s*:\s*\{')


def looks_like_json_run(path: str | Path) -> bool:
    """Does the file (plain or gzipped) start like ``{"qid": {`` -- an object whose first value is an object, a
    JSON score run -- rather than like a JSONL line ``{"qid": "1", ...}``? Reads only the first 64 KiB."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            data = fh.read(1 << 16)
    except (OSError, EOFError, zlib.error):
        return False
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return _JSON_RUN_HEAD.match(data) is not None


class JsonPairs(list):
    """A JSON object as its (key, value) pairs in file order: ``object_pairs_hook`` keeps repeated keys, which
    ``dict`` would silently collapse to the last one, so they can be reported."""


class JsonConstant:
    """``NaN``/``Infinity``/``-Infinity`` as written (Python's json accepts them; a score may not be one)."""

    def __init__(self, name: str):
        self.name = name


def load_json(text: str, path: Path, expected: str):
    """``text`` parsed keeping every object as ``JsonPairs``; invalid JSON is the FILE:LINE error."""
    try:
        return json.loads(text, object_pairs_hook=JsonPairs, parse_constant=JsonConstant)
    except json.JSONDecodeError as exc:
        raise file_error(path, exc.lineno, f"expected {expected}, found invalid JSON ({exc.msg} at column "
                         f"{exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # an integer over Python's digit limit; nesting too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split()[:12])
        raise file_error(path, None, f"expected {expected}, found JSON rankk cannot load ({reason})") from None


def checked_id(value, label: str, path, line: int | None, where: str = "", before: str = "") -> str:
    """A JSON value used as a qid/docid, as a string: a string or an integer (not a bool, float, list...) that a
    TREC file can hold (``bad_id``); else ``FILE[:LINE]: expected {label} ...``. ``label`` says which id, e.g.
    ``'docid'`` or ``each docid``; ``where`` follows it, e.g. `` (qid 'q1')``; ``before`` precedes the message,
    e.g. ``candidate 3: ``."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise file_error(path, line, f"{before}expected {label} to be a string or integer{where}, found "
                         f"{json_kind(value)}")
    value = str(value)
    if bad_id(value):
        raise file_error(path, line, f"{before}expected {label} to be a non-empty id without spaces or control characters "
                         f"(a TREC run cannot hold it){where}, found {show(value)}")
    return value


def json_kind(value) -> str:
    """What a parsed JSON value is, for 'found ...' in messages."""
    if isinstance(value, JsonPairs):
        return "an object"
    if isinstance(value, list):
        return f"a list {show(json.dumps(value, default=str))}"
    if isinstance(value, JsonConstant):
        return value.name
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return f"a string {show(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return "a number beyond float range"
    return f"the number {show(json.dumps(value))}"


def json_finite(value) -> float | None:
    """A JSON number as a finite float, else None (strings, booleans, null, NaN/Infinity, 1e400 are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return value if math.isfinite(value) else None


def check_json_id(value: str, what: str, path: Path, where: str = "") -> None:
    if bad_id(value):
        raise file_error(path, None, f"expected each {what} without spaces or control characters (a TREC run "
                         f"cannot hold it){where}, found {show(value)}")


_JSON_NUMBER = (int, float)  # exact types: a bool (an int subclass) is not a score


def _json_run_frame(obj, path: Path) -> pd.DataFrame:
    """The rows of a parsed JSON run. The per-query loop checks the structure and repeated keys (set sizes, in
    C); scores and ids are then checked over whole columns, so a 1M-entry file costs about what json.loads does."""
    if not isinstance(obj, JsonPairs):
        raise file_error(path, None, f"expected a JSON run {JSON_RUN_SHAPE}, found {json_kind(obj)} at the top")
    qids, counts, docids, values = [], [], [], []
    seen_q: set[str] = set()
    for qid, docs in obj:
        if qid in seen_q:
            raise file_error(path, None, f"expected each qid once, found qid {show(qid)} twice (a repeated key)")
        seen_q.add(qid)
        if not isinstance(docs, JsonPairs):
            raise file_error(path, None, f"expected qid {show(qid)} to map to an object {{docid: score}} (a JSON "
                             f"run is {JSON_RUN_SHAPE}), found {json_kind(docs)}")
        keys = [d for d, _v in docs]
        if len(set(keys)) != len(keys):
            seen: set[str] = set()
            docid = next(d for d in keys if d in seen or seen.add(d))
            raise file_error(path, None, f"expected each docid once per query, found docid {show(docid)} twice "
                             f"under qid {show(qid)} (a repeated key)")
        check_json_id(qid, "qid", path)
        if keys:
            qids.append(qid)
            counts.append(len(keys))
            docids.extend(keys)
            values.extend(v for _d, v in docs)
    if not docids:
        raise file_error(path, None, f"empty run file: expected a JSON run {JSON_RUN_SHAPE} with at least one "
                         "score")
    counts_arr = np.array(counts, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts_arr)[:-1]])

    def where(row: int) -> str:
        q = qids[int(np.searchsorted(starts, row, side="right")) - 1]
        return f"qid {show(q)}, docid {show(docids[row])}"

    bad = next((i for i, v in enumerate(values) if type(v) not in _JSON_NUMBER), None)
    if bad is None:
        try:
            scores = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float range
            bad = next(i for i, v in enumerate(values) if json_finite(v) is None)
    if bad is None:
        finite = np.isfinite(scores)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
    if bad is not None:
        value = values[bad]
        found = "a number beyond float range" if type(value) is int else json_kind(value)
        raise file_error(path, None, f"expected a finite number as the score of {where(bad)}, found {found}")
    row = first_bad_id(docids)
    if row is not None:
        q = qids[int(np.searchsorted(starts, row, side="right")) - 1]
        check_json_id(docids[row], "docid", path, f" (qid {show(q)})")
    rank = np.arange(1, len(docids) + 1, dtype=np.int64) - np.repeat(starts, counts_arr)
    return pd.DataFrame({"qid": np.repeat(np.array(qids, dtype=object), counts_arr),
                         "docid": np.array(docids, dtype=object), "rank": rank, "score": scores})


def read_json_run(path: str | Path, name: str | None = None) -> Run:
    """A JSON score run ``{qid: {docid: score}}`` (plain or gzipped), validated, in ranking order: score
    descending, ties in file order."""
    path = Path(path)
    text = read_text_file(path, "run file")
    df = _json_run_frame(load_json(text, path, f"a JSON run {JSON_RUN_SHAPE}"), path)
    del text
    df = canonical(df, lambda: None, copy=False)  # repeats were rejected above, key by key
    return Run(df, name or run_name(path))


# ----------------------------------------------------------------------------------------------------------
# writing


def strictly_decreasing(df: pd.DataFrame, as_float32: bool = True) -> np.ndarray:
    """Scores for ``df`` (already in ranking order) made strictly decreasing within each query.

    ``as_float32`` (TREC text): strictly decreasing as trec_eval reads them, as C floats (float32), so its score
    sort can never reorder the ranking: a tie or an inversion -- including two float64 scores that round to one
    float32, e.g. 1.00000002 and 1.00000001 -- steps the later score to the next float32 below its predecessor's
    (a float64 value too, written exactly). Otherwise (Parquet, lossless) the step is the next float64 below.
    Scores that already decrease at that precision are kept bit for bit.
    """
    scores = df["score"].to_numpy(dtype=np.float64).copy()
    if len(scores) < 2:
        return scores
    if as_float32:
        with np.errstate(over="ignore"):
            key = scores.astype(np.float32)
    else:
        key = scores.copy()
    qcode = pd.factorize(df["qid"], sort=False)[0]
    same_q = qcode[1:] == qcode[:-1]
    down = key.dtype.type(-np.inf)
    while True:  # a fix can create a new violation further down: sweep until clean (bounded by query length)
        bad = same_q & (key[1:] >= key[:-1]) & np.isfinite(key[:-1])
        if not bad.any():  # (below an infinite float32 -- |score| > 3.4e38 -- there is nothing to step to)
            return scores
        for i in np.flatnonzero(bad) + 1:  # increasing order, so fixes cascade down the query
            if key[i] >= key[i - 1] and np.isfinite(key[i - 1]):
                key[i] = np.nextafter(key[i - 1], down)
                scores[i] = float(key[i])


def _prepared(run: Run, as_float32: bool = True) -> pd.DataFrame:
    df = run.df
    df = rerank_positions(df)
    df["score"] = strictly_decreasing(df, as_float32)
    return df


def _check_writable_ids(df: pd.DataFrame, path: str | Path, what: str) -> None:
    for column in ("qid", "docid"):
        row = first_bad_id(df[column].astype(str))
        if row is not None:
            raise RankkError(f"{path}: cannot write a {what}: {column} {show(str(df[column].iloc[row]))} is empty "
                             "or holds whitespace or a control character (TREC columns are whitespace-separated); "
                             "write .parquet instead, or fix the ids at their source")


def write_trec_run(run: Run, path: str | Path, tag: str | None = None) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    df = _prepared(run)
    _check_writable_ids(df, path, "TREC run")
    tag = tag or run.meta.get("tag") or run.name
    tag = "_".join(str(tag).split()) or "rankk"
    table = pa.table({
        "qid": pa.array(df["qid"].astype(str), pa.string()),
        "q0": pa.array(np.full(len(df), "Q0", dtype=object), pa.string()),
        "docid": pa.array(df["docid"].astype(str), pa.string()),
        "rank": pa.array(df["rank"].to_numpy(), pa.int64()),
        "score": pa.array(df["score"].to_numpy(), pa.float64()),
        "tag": pa.array(np.full(len(df), tag, dtype=object), pa.string()),
    })
    buf = io.BytesIO()
    pacsv.write_csv(table, buf, write_options=pacsv.WriteOptions(include_header=False, delimiter=" ",
                                                                 quoting_style="none"))
    data = buf.getvalue()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)


def run_to_table(run: Run, df: pd.DataFrame | None = None):
    import pyarrow as pa

    table = pa.Table.from_pandas(run.df if df is None else df, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[META_KEY] = json.dumps({"name": run.name, **run.meta}, sort_keys=True).encode()
    return table.replace_schema_metadata(metadata)


def write_parquet_run(run: Run, path: str | Path) -> None:
    import pyarrow.parquet as pq

    df = _prepared(run, as_float32=False)  # lossless: float64 ties only
    table = run_to_table(run, df)
    starts = _qid_blocks(df)
    if starts is not None and _in_ranking_order(df, starts) and (
            _unique_docs_fast(df, starts) or not df.duplicated(["qid", "docid"]).any()):
        # checked once here so every re-read (the stage cache) can skip the per-query uniqueness pass
        table = table.replace_schema_metadata({**table.schema.metadata, CHECKED_KEY: str(table.num_rows).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)


def write_json_run(run: Run, path: str | Path) -> None:
    """``{qid: {docid: score}}`` in ranking order (queries in run order), gzipped for ``.json.gz``. Scores are
    made strictly decreasing as float32, exactly as for TREC text: the seed scripts hand these files to
    pytrec_eval, which holds scores as C floats. Ids are those a TREC run can hold (what the reader accepts)."""
    df = _prepared(run)
    _check_writable_ids(df, path, "JSON run")
    out: dict[str, dict[str, float]] = {}
    for qid, docid, score in zip(df["qid"].astype(str).tolist(), df["docid"].astype(str).tolist(),
                                 df["score"].tolist()):
        docs = out.get(qid)
        if docs is None:
            docs = out[qid] = {}
        docs[docid] = score
    data = json.dumps(out, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n"
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)


def write_run(run: Run, path: str | Path, tag: str | None = None) -> None:
    """Write TREC (plain/.gz), Parquet or a JSON score run (.json/.json.gz) by suffix; atomic; strictly
    decreasing scores."""
    if str(path).endswith(".parquet"):
        write_parquet_run(run, path)
    elif is_json_run_path(path):
        write_json_run(run, path)
    else:
        write_trec_run(run, path, tag)


def run_from_rankings(rankings: dict[str, list[tuple[str, float]]], name: str = "run", **meta) -> Run:
    """Build a Run from ``{qid: [(docid, score), ...]}`` given in ranking order."""
    qids, docids, scores = [], [], []
    for qid, items in rankings.items():
        for docid, score in items:
            qids.append(str(qid))
            docids.append(str(docid))
            scores.append(float(score))
    df = pd.DataFrame({"qid": qids, "docid": docids, "score": np.array(scores, dtype=np.float64)})
    df["rank"] = df.groupby("qid", sort=False).cumcount().to_numpy(dtype=np.int64) + 1
    return Run(df[["qid", "docid", "rank", "score"]], name, dict(meta))
