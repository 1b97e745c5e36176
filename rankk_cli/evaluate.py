"""``rankk eval``: score runs against qrels with ir-measures measures, trec_eval semantics, fast.

Semantics (those of trec_eval / pytrec_eval, which ir_measures uses):

- a run's documents are ordered by score descending, ties broken by docid *descending* (byte order), exactly as
  trec_eval's ``comp_sim_docno``; the rank column is ignored. Scores are compared as trec_eval holds them, as
  C floats (float32): 1.00000002 and 1.00000001 are a tie there, and so here. (ir_measures' ``RR@k`` and ``Judged@k`` come from
  its msmarco/judged providers, which break ties by docid *ascending*; we reproduce what ir_measures reports.)
- default ``-c``: the mean runs over every query in the qrels; judged queries missing from the run count as 0.
  ``run_queries_only`` averages over the run's judged queries instead (trec_eval without ``-c``).
- run queries without any judgement are ignored (and reported on stderr).
- grades <= 0 are not relevant; nDCG's gain is the grade (negative grades gain 0), discount log2(rank + 1), ideal
  ranking built from all judged documents.

A vectorised numpy evaluator computes the common measures (nDCG, nDCG@k, AP, AP@k, R@k, P@k, RR, RR@k,
Success@k, Judged@k, each with ``rel=`` where ir-measures allows it, rel >= 1); anything else goes to ir_measures'
own providers. Tests check agreement with ir_measures per query.

``--exclude FILE`` (``rankk_cli.exclude``) drops listed (qid, docid) pairs from each run before scoring (BRIGHT's
excluded ids); how many were dropped is part of the result and of the output.

Per-run results are cached (``StageCache``, stage ``eval``) keyed by the run's digest, the qrels' digest or id, the
measures, the semantics and the exclusion file's digest.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rankk_cli.errors import RankkError, show

CACHE_STAGE = "eval"
CACHE_VERSION = 2  # 2: float32 score ties, -c NumQ/NumRel, per-measure fallback providers

# measure name -> params the fast evaluator understands (judged_only=False is also accepted)
_FAST_PARAMS = {
    "nDCG": {"cutoff"},
    "AP": {"cutoff", "rel"},
    "R": {"cutoff", "rel"},
    "P": {"cutoff", "rel"},
    "RR": {"cutoff", "rel"},
    "Success": {"cutoff", "rel"},
    "Judged": {"cutoff"},
}
_NEEDS_CUTOFF = {"R", "P", "Success"}


def warn(message: str) -> None:
    sys.stderr.write(f"rankk: warning: {message}\n")


def note(message: str) -> None:
    sys.stderr.write(f"rankk: {message}\n")


# ----------------------------------------------------------------------------------------------------------
# measures


def parse_measures(specs: Sequence[str]) -> list:
    """ir_measures Measure objects for the strings given (deduplicated, order kept); bad strings -> RankkError.

    Each string is an ir-measures measure (``nDCG@10``, ``R(rel=2)@100``) or a trec_eval name (``ndcg_cut.10``,
    ``map``, ``recall.100``, ``P.10``, ``recip_rank``, ``ndcg_cut.5,10``, ``P`` = trec_eval's default cutoffs,
    nicknames such as ``official``), mapped by ir_measures' ``parse_trec_measure`` onto the same measures, so a
    trec_eval name is computed (and cached) exactly like its ir-measures spelling."""
    import ir_measures

    out, seen = [], set()
    for spec in specs:
        text = str(spec).strip()
        try:
            found = [ir_measures.parse_measure(text)]
            found[0].validate_params()
        except Exception as exc:  # ir_measures raises ValueError, NameError, SyntaxError, TypeError...
            found = _parse_trec_measure(text)
            if found is None:
                detail = " ".join(str(exc).split()) or type(exc).__name__
                raise RankkError(f"-m {show(str(spec))}: expected an ir-measures measure such as nDCG@10, AP, "
                                 f"R(rel=2)@100, RR@10, P@5 or a trec_eval name such as ndcg_cut.10, map, P.10; "
                                 f"found an invalid one ({detail})") from None
        for measure in found:
            cutoff = dict(measure.params).get("cutoff")
            if cutoff is not None and (not isinstance(cutoff, int) or cutoff < 1):
                # trec_eval aborts (SIGABRT) on a zero cutoff; a rank cutoff is a positive integer
                raise RankkError(f"-m {show(str(spec))}: expected a cutoff of at least 1, found {cutoff!r}")
            if str(measure) not in seen:
                seen.add(str(measure))
                out.append(measure)
    if not out:
        raise RankkError("-m: expected at least one measure, found none")
    return out


def _parse_trec_measure(text: str) -> list | None:
    """The measures a trec_eval ``-m`` name stands for, or None when it is not one ir_measures maps."""
    import contextlib
    import io

    import ir_measures

    if not text or any(ch.isspace() for ch in text):
        return None
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):  # nicknames print the names they skip
            found = list(ir_measures.parse_trec_measure(text))
        for measure in found:
            measure.validate_params()
    except Exception:  # ValueError for unknown / unsupported names, anything else is not a measure either
        return None
    if said.getvalue().strip():
        note(f"-m {text}: {' '.join(said.getvalue().split())}")
    return found or None


# trec_eval's printed name of a measure: ir_measures name -> (trec_eval base name, parameter printed after '_')
_TREC_NAMES = {"nDCG": ("ndcg", "ndcg_cut"), "AP": ("map", "map_cut"), "P": (None, "P"), "R": (None, "recall"),
               "RR": ("recip_rank", None), "Success": (None, "success"), "Bpref": ("bpref", None),
               "Rprec": ("Rprec", None), "NumQ": ("num_q", None), "NumRel": ("num_rel", None),
               "NumRet": ("num_ret", None), "SetP": ("set_P", None), "SetR": ("set_recall", None),
               "SetAP": ("set_map", None), "SetRelP": ("set_relative_P", None), "infAP": ("infAP", None)}
_TREC_LONG = {"num_q", "num_rel", "num_ret", "num_rel_ret"}  # printed as integers by trec_eval


def trec_name(measure) -> str:
    """The name trec_eval prints for ``measure`` (``ndcg_cut_10``, ``map``, ``P_10``, ``recall_100``,
    ``recip_rank``, ``num_rel_ret``, ``iprec_at_recall_0.10``); a measure trec_eval does not have (``RR@10``,
    ``R(rel=2)@100``, ``Judged@10``) keeps its ir-measures name."""
    params = dict(measure.params)
    rel = params.pop("rel", 1)
    cutoff = params.pop("cutoff", None)
    name = measure.NAME
    if name == "NumRet" and rel == 1 and "rel" in dict(measure.params) and not params and cutoff is None:
        return "num_rel_ret"
    if name == "IPrec" and set(params) == {"recall"} and rel == 1 and cutoff is None:
        return f"iprec_at_recall_{float(params['recall']):.2f}"
    if name == "SetF" and params.get("beta", 1.0) == 1.0 and set(params) <= {"beta"} and rel == 1 and cutoff is None:
        return "set_F"
    plain, cut = _TREC_NAMES.get(name, (None, None))
    if rel != 1 or params:
        return str(measure)
    if cutoff is None and plain:
        return plain
    if cutoff is not None and cut:
        return f"{cut}_{cutoff}"
    return str(measure)


def fast_supported(measure) -> bool:
    """True when the vectorised evaluator computes ``measure`` exactly as ir_measures does."""
    allowed = _FAST_PARAMS.get(measure.NAME)
    if allowed is None:
        return False
    params = dict(measure.params)
    if params.get("judged_only", False) is not False:
        return False
    params.pop("judged_only", None)
    if not set(params) <= allowed:
        return False
    rel = params.get("rel", 1)
    if not isinstance(rel, int) or rel < 1:
        return False
    cutoff = params.get("cutoff")
    if cutoff is not None and (not isinstance(cutoff, int) or cutoff < 1):
        return False
    if measure.NAME in _NEEDS_CUTOFF and cutoff is None:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# qrels


@dataclass
class Qrels:
    """Qrels as arrays: ``qids`` (query order of the file), and per judgement its query index, docid, grade."""

    df: pd.DataFrame  # qid, docid, relevance
    label: str

    def __post_init__(self):
        codes, uniques = pd.factorize(self.df["qid"], sort=False)
        self.qids: list[str] = [str(q) for q in uniques]
        self.qidx = codes.astype(np.int64)
        self.grade = self.df["relevance"].to_numpy(dtype=np.int64)
        self._lookup = None

    def lookup(self):
        """(unique docids as an arrow array, sorted keys qidx*ndocs+didx, their grades, ndocs)."""
        if self._lookup is None:
            dcodes, duniq = pd.factorize(self.df["docid"], sort=False)
            ndocs = max(len(duniq), 1)
            keys = self.qidx * ndocs + dcodes.astype(np.int64)
            order = np.argsort(keys, kind="stable")
            self._lookup = (_arrow_strings(pd.Series(duniq, dtype=object)), keys[order], self.grade[order], ndocs)
        return self._lookup


def _read_qrels_fast(path: Path) -> pd.DataFrame | None:
    """pyarrow fast path for a clean qrels file; None whenever anything looks off (sources then diagnoses)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rankk_cli.runs import arrow_csv

    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if raw[:2] == b"\x1f\x8b" or raw.startswith(b"\xef\xbb\xbf") or b"\r" in raw or b"\x00" in raw:
        return None
    table = arrow_csv(raw, {"qid": pa.string(), "it": pa.string(), "docid": pa.string(), "relevance": pa.int64()})
    if table is None:
        return None
    if table.num_rows == 0:
        return None
    for name in ("qid", "it", "docid", "relevance"):
        col = table.column(name)
        if col.null_count:
            return None
        if name != "relevance" and pc.any(pc.equal(pc.utf8_length(col), 0)).as_py():
            return None
    df = table.select(["qid", "docid", "relevance"]).to_pandas()
    if df.duplicated(["qid", "docid"]).any():
        return None
    return df


def load_indexed_qrels(spec: str) -> Qrels:
    """Qrels from a TREC qrels file (fast path, else ``sources.load_qrels`` which names bad lines) or an id."""
    from rankk_cli import sources

    path = Path(spec)
    if not path.exists():  # a pyserini name (dl19-passage) whose file is here reads through the fast path too
        from rankk_cli.pyserini_names import local_file

        path = local_file(spec, "qrels") or path
    df = _read_qrels_fast(path) if path.is_file() else None
    if df is None:
        df = sources.load_qrels(path if path.is_file() else spec)
    if len(df) == 0:
        raise RankkError(f"{spec}: expected at least one judgement, found none")
    return Qrels(df.reset_index(drop=True), str(spec))


def qrels_identity(spec: str) -> str:
    """What identifies the qrels in cache keys: the file's digest, or the ir_datasets id (a pyserini name: the
    digest of its file here, else its ir_datasets id)."""
    from rankk_cli.cache import file_digest

    path = Path(spec)
    if path.is_file():
        return "sha256:" + file_digest(path)
    if not path.exists():
        from rankk_cli.pyserini_names import identity

        named = identity(str(spec), "qrels")
        if named is not None:
            return named
    return "id:" + str(spec)


# ----------------------------------------------------------------------------------------------------------
# the vectorised evaluator


def _arrow_strings(series: pd.Series):
    import pyarrow as pa

    arr = pa.array(series) if not isinstance(series, (pa.Array, pa.ChunkedArray)) else series
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pa.array(series.astype(str).tolist(), pa.string())
    return arr


def _blocks(qid_arrow) -> tuple[np.ndarray, np.ndarray] | None:
    """Starts of runs of equal qids and the qid at each start, when each qid forms one contiguous block."""
    import pyarrow.compute as pc

    n = len(qid_arrow)
    if n == 0:
        return np.zeros(0, np.int64), qid_arrow
    change = pc.not_equal(qid_arrow[1:], qid_arrow[:-1]).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.int64)
    heads = qid_arrow.take(starts)
    if len(pc.unique(heads)) != len(starts):
        return None
    return starts, heads


def _tie_orders(block: np.ndarray, score: np.ndarray, docid_arrow, perm: np.ndarray,
                need_asc: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``perm`` (rows sorted by block, score desc) with tied scores ordered by docid descending (trec_eval), and,
    when asked, ascending (ir_measures' msmarco/judged providers)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    b, s = block[perm], score[perm]
    tie = (b[1:] == b[:-1]) & (s[1:] == s[:-1])
    if not tie.any():
        return perm, (perm if need_asc else None)
    in_tie = np.zeros(len(perm), dtype=bool)
    in_tie[1:] |= tie
    in_tie[:-1] |= tie
    slots = np.flatnonzero(in_tie)
    new_group = np.ones(len(slots), dtype=bool)
    new_group[1:] = ~tie[slots[1:] - 1]
    group = np.cumsum(new_group) - 1
    rows = perm[slots]
    table = pa.table({"g": group, "d": docid_arrow.take(pa.array(rows))})
    order = pc.sort_indices(table, sort_keys=[("g", "ascending"), ("d", "descending")]).to_numpy()
    desc = perm.copy()
    desc[slots] = rows[order]
    if not need_asc:
        return desc, None
    # docids are unique within a query, so ascending order is each tie group reversed
    first = np.flatnonzero(new_group)
    last = np.append(first[1:], len(slots)) - 1
    k = np.arange(len(slots))
    mirrored = first[group] + last[group] - k
    asc = perm.copy()
    asc[slots] = rows[order[mirrored]]
    return desc, asc


@dataclass
class _Ranked:
    """One run's rows in evaluation order, as arrays."""

    nblocks: int
    block_qidx: np.ndarray  # per block: index of the query in the qrels, -1 when not judged
    block_len: np.ndarray
    block: np.ndarray  # per row (ordered)
    pos: np.ndarray  # 0-based position within its query
    grade: dict  # tie direction ("desc"/"asc") -> grades per ordered row (NaN = unjudged)


def _rank(df: pd.DataFrame, qrels: Qrels, need_asc: bool) -> _Ranked:
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(df)
    qid_arrow = _arrow_strings(df["qid"])
    docid_arrow = _arrow_strings(df["docid"])
    score = df["score"].to_numpy(dtype=np.float64)

    found = _blocks(qid_arrow)
    if found is not None:
        starts, heads = found
        lengths = np.diff(np.append(starts, n))
        block = np.repeat(np.arange(len(starts), dtype=np.int64), lengths)
        head_qids = heads
    else:
        codes, uniques = pd.factorize(df["qid"], sort=False)
        block = codes.astype(np.int64)
        head_qids = _arrow_strings(pd.Series(uniques, dtype=object))
    nblocks = len(head_qids)

    # rows sorted by block, then score descending (stable); usually the input already is
    same = block[1:] == block[:-1]
    if (block[1:] < block[:-1]).any() or (same & (score[1:] > score[:-1])).any():
        perm = np.lexsort((-score, block))
    else:
        perm = np.arange(n, dtype=np.int64)

    # judged queries and grades (looked up once, in file order)
    qrels_qids = pa.array(qrels.qids, pa.string())
    block_qidx = pc.index_in(head_qids, value_set=qrels_qids).to_numpy(zero_copy_only=False)
    block_qidx = np.where(np.isnan(block_qidx), -1, block_qidx).astype(np.int64)
    doc_uniques, keys, grades, ndocs = qrels.lookup()
    grade = np.full(n, np.nan)
    didx = pc.index_in(docid_arrow, value_set=doc_uniques).to_numpy(zero_copy_only=False)
    qidx_row = block_qidx[block]
    ok = ~np.isnan(didx) & (qidx_row >= 0)
    if ok.any():
        rows = np.flatnonzero(ok)
        want = qidx_row[rows] * ndocs + didx[rows].astype(np.int64)
        at = np.searchsorted(keys, want)
        at = np.minimum(at, len(keys) - 1)
        hit = keys[at] == want
        grade[rows[hit]] = grades[at[hit]]

    block_len = np.bincount(block, minlength=nblocks).astype(np.int64)
    block_start = np.concatenate([[0], np.cumsum(block_len)[:-1]]).astype(np.int64)
    out_grades = {}
    # trec_eval holds scores as C floats (float32): scores equal there are ties, broken by docid descending;
    # ir_measures' msmarco/judged providers sort Python floats (float64), ties by docid ascending. The float32
    # rounding is monotone, so ``perm`` (score desc in float64) is also score desc in float32.
    with np.errstate(over="ignore"):
        score32 = score.astype(np.float32).astype(np.float64)
    s64, s32, b = score[perm], score32[perm], block[perm]
    same_block = b[1:] == b[:-1]
    if not (same_block & (s32[1:] == s32[:-1]) & (s64[1:] != s64[:-1])).any():
        # the usual case: float32 makes no new ties, so one pass gives both tie orders
        perm_desc, perm_asc = _tie_orders(block, score, docid_arrow, perm, need_asc)
    else:
        perm_desc, _ = _tie_orders(block, score32, docid_arrow, perm, False)
        perm_asc = _tie_orders(block, score, docid_arrow, perm, True)[1] if need_asc else None
    out_grades["desc"] = grade[perm_desc]
    if perm_asc is not None:
        out_grades["asc"] = grade[perm_asc]
    block_sorted = block[perm]
    pos = np.arange(n, dtype=np.int64) - block_start[block_sorted]
    return _Ranked(nblocks, block_qidx, block_len, block_sorted, pos, out_grades)


def _ideal_dcg(qrels: Qrels, cutoff: int | None) -> np.ndarray:
    """Per qrels query: DCG of the ideal ranking of its positively graded judgements (trec_eval)."""
    nq = len(qrels.qids)
    pos_mask = qrels.grade > 0
    q = qrels.qidx[pos_mask]
    g = qrels.grade[pos_mask].astype(np.float64)
    order = np.lexsort((-g, q))
    q, g = q[order], g[order]
    counts = np.bincount(q, minlength=nq)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(q)) - starts[q]
    w = g / np.log2(rank + 2.0)
    if cutoff is not None:
        w = np.where(rank < cutoff, w, 0.0)
    return np.bincount(q, weights=w, minlength=nq)


def _fast_values(measure, ranked: _Ranked, qrels: Qrels, cache: dict) -> np.ndarray:
    """Per-block values of one fast measure."""
    name = measure.NAME
    params = measure.params
    cutoff = params.get("cutoff")
    rel = params.get("rel", 1)
    asc = name in ("Judged",) or (name == "RR" and cutoff is not None)
    grade = ranked.grade["asc" if asc else "desc"]
    pos, block, nb = ranked.pos, ranked.block, ranked.nblocks
    within = pos < cutoff if cutoff is not None else np.ones(len(pos), dtype=bool)
    nq = len(qrels.qids)
    qidx = ranked.block_qidx

    def per_query(values_by_q: np.ndarray) -> np.ndarray:  # qrels-query array -> block array
        out = np.zeros(nb)
        judged = qidx >= 0
        out[judged] = values_by_q[qidx[judged]]
        return out

    def num_rel() -> np.ndarray:
        key = ("num_rel", rel)
        if key not in cache:
            cache[key] = per_query(np.bincount(qrels.qidx, weights=(qrels.grade >= rel).astype(float), minlength=nq))
        return cache[key]

    relevant = grade >= rel  # NaN (unjudged) compares False
    if name == "nDCG":
        gain = np.where(grade > 0, grade, 0.0)
        dcg = np.bincount(block, weights=np.where(within, gain / np.log2(pos + 2.0), 0.0), minlength=nb)
        idcg = per_query(_ideal_dcg(qrels, cutoff))
        return np.divide(dcg, idcg, out=dcg.copy(), where=idcg > 0)
    if name == "AP":
        hits = relevant & within
        cum = np.cumsum(hits)
        start_cum = np.concatenate([[0], cum])[np.concatenate([[0], np.cumsum(ranked.block_len)[:-1]])][block]
        rel_so_far = cum - start_cum
        prec = np.where(hits, rel_so_far / (pos + 1.0), 0.0)
        total = np.bincount(block, weights=prec, minlength=nb)
        nr = num_rel()
        return np.divide(total, nr, out=np.zeros(nb), where=nr > 0)
    if name in ("R", "P", "Success"):
        count = np.bincount(block, weights=(relevant & within).astype(float), minlength=nb)
        if name == "P":
            return count / float(cutoff)
        if name == "Success":
            return (count > 0).astype(float)
        nr = num_rel()
        return np.divide(count, nr, out=np.zeros(nb), where=nr > 0)
    if name == "RR":
        hits = np.flatnonzero(relevant & within)
        out = np.zeros(nb)
        if len(hits):
            blocks_hit, first = np.unique(block[hits], return_index=True)
            out[blocks_hit] = 1.0 / (pos[hits[first]] + 1.0)
        return out
    if name == "Judged":
        judged = ~np.isnan(grade) & within
        count = np.bincount(block, weights=judged.astype(float), minlength=nb)
        denom = np.minimum(ranked.block_len, cutoff) if cutoff is not None else ranked.block_len
        return count / denom
    raise AssertionError(f"not a fast measure: {measure}")


@dataclass
class EvalResult:
    """One run scored: ``values[i, j]`` is measure j on query ``qids[i]`` (the averaged query set)."""

    run: str
    measures: list[str]
    qids: list[str]
    values: np.ndarray
    aggregates: dict[str, float]
    unjudged_run_qids: list[str] = field(default_factory=list)
    missing_qids: list[str] = field(default_factory=list)
    cached: bool = False
    excluded: int | None = None  # (qid, docid) pairs --exclude dropped from the run; None: no --exclude
    excluded_queries: int = 0  # queries they were in

    def per_query(self) -> pd.DataFrame:
        """Wide table: index qid, one column per measure."""
        return pd.DataFrame(self.values, index=pd.Index(self.qids, name="qid"), columns=self.measures)


def evaluate(run, qrels: Qrels, measures: list, run_queries_only: bool = False) -> EvalResult:
    """Score a ``runs.Run`` against ``qrels``; see the module docstring for the exact semantics."""
    import pyarrow as pa
    import pyarrow.compute as pc

    df = run.df
    nq = len(qrels.qids)
    fast = [m for m in measures if fast_supported(m)]
    slow = [m for m in measures if not fast_supported(m)]
    values = np.zeros((nq, len(measures)))

    found = _blocks(_arrow_strings(df["qid"])) if len(df) else None
    if found is not None:  # the usual layout: each query's rows together; the block heads are the queries
        run_qid_arrow = found[1]
        run_qids = run_qid_arrow.to_pylist()
    else:
        run_qids = pd.unique(df["qid"])
        run_qid_arrow = _arrow_strings(pd.Series(run_qids, dtype=object))
    in_qrels = pc.is_in(run_qid_arrow, value_set=pa.array(qrels.qids, pa.string())).to_numpy(zero_copy_only=False)
    unjudged = [str(q) for q, ok in zip(run_qids, in_qrels) if not ok]
    present = np.zeros(nq, dtype=bool)
    judged_in_run = pc.index_in(run_qid_arrow, value_set=pa.array(qrels.qids, pa.string()))
    idx = judged_in_run.drop_null().to_numpy(zero_copy_only=False).astype(np.int64)
    present[idx] = True

    if fast and len(df):  # an empty run (everything excluded) scores 0 everywhere, as trec_eval -c's missing queries
        need_asc = any(m.NAME == "Judged" or (m.NAME == "RR" and "cutoff" in m.params) for m in fast)
        ranked = _rank(df[["qid", "docid", "score"]], qrels, need_asc)
        cache: dict = {}
        judged_blocks = ranked.block_qidx >= 0
        for m in fast:
            per_block = _fast_values(m, ranked, qrels, cache)
            values[ranked.block_qidx[judged_blocks], measures.index(m)] = per_block[judged_blocks]
    if slow and len(df):
        _slow_values(df, qrels, measures, slow, values)
    elif slow:
        for m in slow:
            col = values[:, measures.index(m)]
            col[:] = m.DEFAULT if isinstance(m.DEFAULT, (int, float)) else 0.0
            _empty_ranking_values(m, qrels, np.ones(nq, dtype=bool), col)

    rows = np.flatnonzero(present) if run_queries_only else np.arange(nq)
    qids = [qrels.qids[i] for i in rows]
    values = values[rows]
    aggregates = {}
    for j, m in enumerate(measures):
        agg = m.aggregator()
        for v in values[:, j]:
            agg.add(float(v))
        aggregates[str(m)] = float(agg.result()) if len(rows) else float("nan")
    missing = [qrels.qids[i] for i in np.flatnonzero(~present)]
    return EvalResult(run.name, [str(m) for m in measures], qids, values, aggregates, unjudged, missing)


def _empty_ranking_values(measure, qrels: Qrels, missing: np.ndarray, column: np.ndarray) -> None:
    """trec_eval -c scores a judged query the run lacks against an empty ranking: every measure is 0 there except
    the counts that do not depend on the ranking (NumQ = 1, NumRel = the query's relevant judgements)."""
    if not missing.any() or measure.NAME not in ("NumQ", "NumRel"):
        return
    if measure.NAME == "NumQ":
        column[missing] = 1.0
        return
    rel = dict(measure.params).get("rel", 1)
    counts = (qrels.df[qrels.df["relevance"] >= rel].groupby("qid", sort=False).size()
              .reindex(qrels.qids, fill_value=0).to_numpy(dtype=np.float64))
    column[missing] = counts[missing]


def _slow_values(df: pd.DataFrame, qrels: Qrels, measures: list, slow: list, values: np.ndarray) -> None:
    """ir_measures' providers for the measures the fast path does not cover."""
    import ir_measures

    qrels_df = pd.DataFrame({"query_id": qrels.df["qid"].astype(str).astype(object),
                             "doc_id": qrels.df["docid"].astype(str).astype(object),
                             "relevance": qrels.df["relevance"].astype(np.int64)})
    run_df = pd.DataFrame({"query_id": df["qid"].astype(str).astype(object),
                           "doc_id": df["docid"].astype(str).astype(object),
                           "score": df["score"].astype(np.float64)})
    where = {q: i for i, q in enumerate(qrels.qids)}
    for m in slow:
        col = measures.index(m)
        values[:, col] = m.DEFAULT if isinstance(m.DEFAULT, (int, float)) else 0.0
    from rankk_cli.quiet import captured as capture_output

    # providers run tools (gdeval's perl) that write to fd 2: read here, so captured even with -v
    with capture_output(fds=(2,), always=True) as captured:
        try:
            # one provider call per measure: pytrec_eval crashes (SIGSEGV) on Bpref together with NumRel/NumRet/
            # Rprec in one evaluator when a grade is negative, and ir_measures' iter_calc mixes a judged_only
            # measure's filtered run into NumRet computed beside it
            in_run = set(run_df["query_id"].unique())
            absent = np.array([q not in in_run for q in qrels.qids], dtype=bool)
            for m in slow:
                for metric in ir_measures.iter_calc([m], qrels_df, run_df):
                    i = where.get(str(metric.query_id))
                    if i is not None:
                        values[i, measures.index(metric.measure)] = float(metric.value)
                _empty_ranking_values(m, qrels, absent, values[:, measures.index(m)])
            failure = None
        except Exception as exc:  # no provider, provider failure: the user's measure cannot be computed here
            failure = " ".join(str(exc).split()) or type(exc).__name__
    said = " ".join(captured.text().split())
    if failure is not None:
        if "format error" in said and not all(q.isdigit() for q in qrels.qids):
            detail = ("its gdeval provider needs numeric query ids, found e.g. "
                      + show(next(q for q in qrels.qids if not q.isdigit())))
        else:
            detail = said[:300] or failure
        raise RankkError(f"-m {', '.join(map(str, slow))}: ir_measures cannot compute it here ({detail})")
    if said:
        note(said[:500])


# ----------------------------------------------------------------------------------------------------------
# cached evaluation of run files


def _cache_key(run_path: Path, qrels_id: str, measures: list, run_queries_only: bool,
               exclude_id: str | None = None) -> str:
    from rankk_cli.cache import file_digest, stage_key

    extra = {"exclude": exclude_id} if exclude_id is not None else {}  # without --exclude: the keys as before
    return stage_key(CACHE_STAGE, version=CACHE_VERSION, run=file_digest(run_path), qrels=qrels_id,
                     measures=[str(m) for m in measures], semantics="run-queries" if run_queries_only else "trec_eval -c",
                     **extra)


def _to_table(result: EvalResult):
    import pyarrow as pa

    cols = {"qid": pa.array(result.qids, pa.string())}
    for j, m in enumerate(result.measures):
        cols[f"m{j}"] = pa.array(result.values[:, j], pa.float64())
    meta = {"measures": result.measures, "aggregates": result.aggregates,
            "unjudged_run_qids": result.unjudged_run_qids, "missing_qids": result.missing_qids,
            "excluded": result.excluded, "excluded_queries": result.excluded_queries}
    return pa.table(cols).replace_schema_metadata({b"rankk_eval": json.dumps(meta).encode()})


def _from_table(table, name: str) -> EvalResult | None:
    try:
        meta = json.loads(table.schema.metadata[b"rankk_eval"])
        measures = list(meta["measures"])
        qids = [str(q) for q in table.column("qid").to_pylist()]
        values = np.column_stack([table.column(f"m{j}").to_numpy() for j in range(len(measures))]) \
            if qids else np.zeros((0, len(measures)))
        excluded = meta.get("excluded")
        return EvalResult(name, measures, qids, values.reshape(len(qids), len(measures)),
                          {k: float(v) for k, v in meta["aggregates"].items()},
                          list(meta["unjudged_run_qids"]), list(meta["missing_qids"]), cached=True,
                          excluded=None if excluded is None else int(excluded),
                          excluded_queries=int(meta.get("excluded_queries") or 0))
    except Exception:  # a damaged entry is a miss
        return None


class QrelsSource:
    """Qrels loaded at most once, and only when some run is not cached."""

    def __init__(self, spec: str):
        self.spec = str(spec)
        self.identity = qrels_identity(self.spec)
        self._qrels: Qrels | None = None

    def get(self) -> Qrels:
        if self._qrels is None:
            self._qrels = load_indexed_qrels(self.spec)
        return self._qrels


def evaluate_path(path: str | Path, qrels: QrelsSource, measures: list, run_queries_only: bool = False,
                  no_cache: bool = False, name: str | None = None, exclusions=None) -> EvalResult:
    """Score one run file, through the stage cache. Library entry used by ``rankk compare`` and reports.
    ``exclusions`` (``rankk_cli.exclude.Exclusions``): pairs dropped from the run before scoring."""
    from rankk_cli import cache as cache_mod
    from rankk_cli.runs import read_run, run_name

    from rankk_cli.errors import check_input_file

    path = check_input_file(path, "run file")
    display = name or run_name(path)
    store = cache_mod.StageCache()
    key = _cache_key(path, qrels.identity, measures, run_queries_only,
                     exclusions.identity if exclusions is not None else None)
    if cache_mod.enabled(no_cache):
        table = store.get_table(CACHE_STAGE, key)
        if table is not None:
            result = _from_table(table, display)
            if result is not None:
                return result
    run = read_run(path, display)
    dropped = None
    if exclusions is not None:
        run, dropped = exclusions.apply(run)
    result = evaluate(run, qrels.get(), measures, run_queries_only)
    if dropped is not None:
        result.excluded, result.excluded_queries = dropped.pairs, dropped.queries
    store.put(CACHE_STAGE, key, _to_table(result))  # a cache it cannot write: one warning naming RANKK_CACHE
    return result


def report_coverage(result: EvalResult, qrels_spec: str, run_queries_only: bool, exclusions=None) -> None:
    """stderr lines about excluded pairs dropped, and queries that were ignored or counted as 0."""
    if exclusions is not None and result.excluded is not None:
        from rankk_cli.exclude import Dropped, describe

        note(f"{result.run}: {describe(Dropped(result.excluded, result.excluded_queries), exclusions)}")
    if result.unjudged_run_qids:
        ex = ", ".join(result.unjudged_run_qids[:5]) + (", ..." if len(result.unjudged_run_qids) > 5 else "")
        warn(f"{result.run}: {len(result.unjudged_run_qids)} run queries have no judgements in {qrels_spec} "
             f"and are ignored ({ex})")
    if result.missing_qids and not run_queries_only:
        ex = ", ".join(result.missing_qids[:5]) + (", ..." if len(result.missing_qids) > 5 else "")
        warn(f"{result.run}: {len(result.missing_qids)} of {len(result.qids)} judged queries are missing from the "
             f"run and count as 0 (trec_eval -c; --run-queries-only to skip them): {ex}")
    elif result.missing_qids and result.qids:  # averaged over fewer queries than the qrels judge: say so
        warn(f"{result.run}: the mean is over the run's {len(result.qids)} judged queries only (--run-queries-only); "
             f"{len(result.missing_qids)} judged queries of {qrels_spec} are not in the run")


def _examples(items: Sequence[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def warn_qrels(qrels: Qrels, spec: str, measures: Sequence) -> None:
    """Warnings about qrels that make numbers over them hollow: nothing relevant at all, judged queries without a
    relevant judgement (their relevance measures are 0 whatever the run does), and a measure whose ``rel=``
    threshold is above every grade (0 for every query)."""
    nq = len(qrels.qids)
    top = int(qrels.grade.max()) if len(qrels.grade) else 0
    if top <= 0:
        warn(f"{spec}: no judgement has a grade above 0 ({len(qrels.grade)} judgements of {nq} queries): nothing "
             "is relevant, so nDCG, AP, recall, precision and RR are 0 for every query")
    else:
        relevant = np.bincount(qrels.qidx, weights=(qrels.grade > 0).astype(float), minlength=nq)
        none = [q for q, c in zip(qrels.qids, relevant) if c == 0]
        if none:
            warn(f"{spec}: {len(none)} of {nq} judged queries have no relevant judgement (grade > 0), so their "
                 f"nDCG, AP, recall, precision and RR are 0 whatever the run: {_examples(none)}")
    for m in measures:
        rel = dict(getattr(m, "params", {}) or {}).get("rel")
        if isinstance(rel, (int, float)) and top > 0 and rel > top:
            warn(f"-m {m}: rel={rel:g} is above every grade in {spec} (highest {top}): nothing counts as "
                 "relevant, so it is 0 for every query")


def warn_empty_mean(result: EvalResult, qrels_spec: str, run_queries_only: bool) -> None:
    """The mean over zero queries cannot be computed: say so (the value is null in JSON, – in tables)."""
    if result.qids:
        return
    why = ("no query of the run is judged in " if run_queries_only else "no judged query in ") + str(qrels_spec)
    warn(f"{result.run}: the mean is over zero queries ({why}): every value is undefined (null in JSON, – in "
         "tables)")


# ----------------------------------------------------------------------------------------------------------
# rendering


UNDEFINED = "–"  # a number that cannot be computed, in tables and TSV (null in JSON)


def _fmt(value: float) -> str:
    return UNDEFINED if value is None or not math.isfinite(float(value)) else f"{value:.4f}"


def finite(value):
    """JSON has no NaN or infinity: such a number is null there."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def cell(text: str) -> str:
    """A name in one TSV field or table cell: tab, newline, carriage return and other control characters escaped
    (``\\t``, ``\\n``, ``\\x1b``), so a file name never breaks the row (Markdown also escapes ``|``)."""
    out = []
    for ch in str(text):
        if ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _trec_value(name: str, value: float) -> str:
    if name in _TREC_LONG and not math.isnan(value):
        return str(int(round(value)))
    return f"{value:6.4f}"


def render_trec(results: list[EvalResult], measures: list, per_query: bool, out) -> None:
    """trec_eval's own layout: ``measure<TAB>qid<TAB>value`` with the measure padded to 22 characters and values
    as ``%6.4f`` (counts as integers), exactly as trec_eval prints them; with ``per_query`` (trec_eval -q) each
    query of the run that has judgements comes first (qids in byte order, as trec_eval sorts them), then the
    ``all`` rows. Measures keep the order of ``-m``. With several runs, each run's rows follow a ``runid`` row
    naming it (trec_eval's own runid measure)."""
    names = [trec_name(m) for m in measures]
    lines = []
    for r in results:
        if len(results) > 1:
            lines.append(f"{'runid':<22}\tall\t{r.run}")
        if per_query:
            missing = set(r.missing_qids)
            rows = {q: i for i, q in enumerate(r.qids) if q not in missing}
            for qid in sorted(rows, key=lambda q: q.encode("utf-8")):
                i = rows[qid]
                lines.extend(f"{name:<22}\t{qid}\t{_trec_value(name, float(r.values[i, j]))}"
                             for j, name in enumerate(names))
        lines.extend(f"{name:<22}\tall\t{_trec_value(name, r.aggregates[str(m)])}" for m, name in zip(measures, names))
    out.write("\n".join(lines) + ("\n" if lines else ""))


AVERAGING = {False: "trec_eval -c", True: "run queries only"}  # eval JSON's "averaging": the queries averaged


def render(results: list[EvalResult], fmt: str, per_query: bool, out=None, parsed: list | None = None,
           run_queries_only: bool = False) -> None:
    """The results on ``out``; with --exclude every format but trec also says, per run, how many (qid, docid)
    pairs were dropped (json: an ``excluded`` key on each aggregate row; tsv and table: an ``excluded`` column)."""
    out = out or sys.stdout
    measures = results[0].measures if results else []
    excl = any(r.excluded is not None for r in results)
    if fmt == "trec":
        render_trec(results, parsed if parsed is not None else parse_measures(measures), per_query, out)
        return
    if fmt == "json":
        rows = []
        for r in results:
            if per_query:
                for i, qid in enumerate(r.qids):
                    for j, m in enumerate(r.measures):
                        rows.append({"run": r.run, "qid": qid, "measure": m, "value": finite(float(r.values[i, j]))})
            for m in r.measures:
                row = {"run": r.run, "measure": m, "value": finite(r.aggregates[m])}
                if per_query:
                    row = {"run": r.run, "qid": "all", "measure": m, "value": finite(r.aggregates[m])}
                row["n"] = len(r.qids)
                row["averaging"] = AVERAGING[run_queries_only]
                if excl:
                    row["excluded"] = r.excluded
                rows.append(row)
        out.write(json.dumps(rows, indent=1 if len(rows) < 200 else None, allow_nan=False) + "\n")
        return
    if fmt == "tsv":
        tail = "\texcluded" if excl else ""
        lines = [("run\tqid\tmeasure\tvalue" if per_query else "run\tmeasure\tvalue") + tail]
        for r in results:
            x = f"\t{r.excluded}" if excl else ""
            name = cell(r.run)
            if per_query:
                for i, qid in enumerate(r.qids):
                    for j, m in enumerate(r.measures):
                        lines.append(f"{name}\t{qid}\t{m}\t{_fmt(r.values[i, j])}" + ("\t" if excl else ""))
                lines.extend(f"{name}\tall\t{m}\t{_fmt(r.aggregates[m])}{x}" for m in r.measures)
            else:
                lines.extend(f"{name}\t{m}\t{_fmt(r.aggregates[m])}{x}" for m in r.measures)
        out.write("\n".join(lines) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=None, show_lines=False)
    table.add_column("run", style="bold")
    if per_query:
        table.add_column("qid")
    for m in measures:
        table.add_column(m, justify="right")
    if excl:
        table.add_column("excluded", justify="right")
    from rich.markup import escape

    for r in results:
        x = [str(r.excluded)] if excl else []
        name = escape(cell(r.run))
        if per_query:
            for i, qid in enumerate(r.qids):
                table.add_row(name, qid, *(_fmt(v) for v in r.values[i]), *([""] if excl else []))
            table.add_row(name, "all", *(_fmt(r.aggregates[m]) for m in r.measures), *x, style="bold",
                          end_section=True)
        else:
            table.add_row(name, *(_fmt(r.aggregates[m]) for m in r.measures), *x)
    tty = getattr(out, "isatty", lambda: False)()
    Console(file=out, soft_wrap=True, width=None if tty else 500).print(table)


# ----------------------------------------------------------------------------------------------------------
# the command


def eval_command(runs: Sequence[Path], qrels: str, measures: Sequence[str] | None, per_query: bool = False,
                 run_queries_only: bool = False, fmt: str = "table", no_cache: bool = False,
                 expect: Path | None = None, tolerance: float | None = None, exclude: Path | None = None) -> int:
    """Score and print; returns the exit code: 0, or 1 when ``expect`` pins a value this call does not reproduce
    within ``tolerance`` (``rankk_cli.expect``: one stderr line per such value)."""
    from rankk_cli import expect as expect_mod
    from rankk_cli.errors import check_input_file
    from rankk_cli.exclude import load_exclusions

    if tolerance is not None and expect is None:
        raise RankkError("--tolerance: expected --expect FILE beside it (the tolerance is for the pinned values), "
                         "found no --expect")
    tolerance = expect_mod.check_tolerance(expect_mod.DEFAULT_TOLERANCE if tolerance is None else tolerance)
    pinned = expect_mod.read_expect(expect) if expect is not None else []
    specs = list(measures) if measures else ([] if pinned else ["nDCG@10"])
    parsed = parse_measures(specs + [str(row.parsed) for row in pinned])
    for path in runs:  # fail fast, before any work, on a missing run
        check_input_file(path, "run file")
    exclusions = load_exclusions(exclude)
    source = QrelsSource(qrels)
    names = unique_names(runs)
    # every run is read and scored before any note is printed: a bad run is then the only line on stderr
    results = [evaluate_path(path, source, parsed, run_queries_only, no_cache, name=name, exclusions=exclusions)
               for path, name in zip(runs, names)]
    for result in results:
        if result.cached:
            note(f"{result.run}: reused cached results (--no-cache to recompute)")
        report_coverage(result, qrels, run_queries_only, exclusions)
        warn_empty_mean(result, qrels, run_queries_only)
    warn_qrels(source.get(), qrels, parsed)
    render(results, fmt, per_query, parsed=parsed, run_queries_only=run_queries_only)
    if expect is None:
        return 0
    sys.stdout.flush()
    failures = expect_mod.compare_expected(results, pinned, tolerance)
    for line in failures:
        sys.stderr.write(f"rankk: expect: {line}\n")
    if failures:
        return 1
    note(f"expect: all {len(pinned)} pinned values of {expect} reproduced within {tolerance:g}")
    return 0


def unique_names(paths: Sequence) -> list[str]:
    """The runs' display names (the JSON ``run`` key): the file name without its suffix; when two runs share
    it, each of them is named by its path as given instead; a run given again keeps its name with `` (2)``, `` (3)``
    after it (a run compared with itself)."""
    from rankk_cli.runs import run_name

    base = [run_name(Path(p)) for p in paths]
    given = [os.path.normpath(str(p)) for p in paths]
    names = [g if len({gg for gg, bb in zip(given, base) if bb == b}) > 1 else b for g, b in zip(given, base)]
    out, seen = [], {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out
