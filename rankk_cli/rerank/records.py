"""The window record: ONE definition of what rankk writes per window (per pair, per comparison) and of the
windows Parquet schema (``OUT.windows.parquet``).

A method starts a record with ``new_record`` and fills the fields it owns (outcome, raw, reasoning, parsed,
repairs, ...); the scheduler adds the bookkeeping fields of the calls behind it (``finish_record``: qid, engine
call indices, prompt hash, tokens, seconds, cached); the pipeline writes ``to_table``. A key that is not a
field here is a bug, not a silently dropped column: ``to_table`` raises.
"""

from __future__ import annotations

import json

from rankk_cli.rerank.methods.base import OK

WINDOWS_SUFFIX = ".windows.parquet"  # OUT.windows.parquet beside the run OUT (rerank's default, report's pairing)

# name -> (arrow type name, what it holds). Order = column order in the Parquet file.
FIELDS: dict[str, tuple[str, str]] = {
    "qid": ("string", "query id"),
    "pass": ("int64", "sliding-window pass (1-based); heap/sort phase for setwise and pairwise methods"),
    "start": ("int64", "first position of the window in the current ranking (0-based)"),
    "end": ("int64", "one past the window's last position"),
    "docids": ("list<string>", "the window's documents as shown (input order)"),
    "engine_call": ("list<int64>", "index of the batched engine call of each request (-1: from the cache)"),
    "prompt_hash": ("string", "call-cache key of the window's first request"),
    "raw": ("string", "the model's reply as generated"),
    "forced_raw": ("string", "the forced follow-up's reply (cut-off or answer-less replies), else null"),
    "reasoning": ("string", "the thinking part of the reply"),
    "parsed": ("list<int64>", "the window's order as read (1-based ids), or the method's verdict"),
    "ties": ("string", "JSON list of tied id groups, best first"),
    "outcome": ("string", "ok | repaired | forced | failed"),
    "repairs": ("string", "every repair and reason, '; '-joined (empty when the answer was taken as given)"),
    "input_tokens": ("int64", "prompt tokens of the window's requests"),
    "output_tokens": ("int64", "generated tokens of the window's requests"),
    "seconds": ("float64", "engine (generate) seconds of the window's requests; 0 for calls from the cache"),
    "cached": ("bool", "every request of the window came from the call cache"),
    "derived": ("bool", "some request of the window was derived from a cached completion of the same request "
                        "with a larger token budget (its first tokens, or the same reply; rerank/derive.py)"),
    "reply_tokens": ("int64", "generated tokens of the window's first request: the reply (thinking + answer) "
                              "under the budget, the forced follow-up excluded"),
    "generated_tokens": ("int64", "tokens the engine actually generated for the window's requests (calls answered "
                                  "from the cache or derived: 0); sums to the run's generated_tokens"),
    "score": ("float64", "pointwise score (rank1: p(true)), else null"),
    "logprobs": ("string", "JSON {identifier: logprob} the ranking was read from (first), the score tokens' "
                           "(erank), else null"),
    "scores": ("string", "JSON {id: score 0..10} a group's answer gave (grouprank), else null"),
    "step": ("string", "heap/sort step of setwise and pairwise methods (build, extract), else null"),
    "note": ("string", "what the method says of itself (oracle), of a pair (erank: score from the parsed integer; "
                       "crossencoder: pair cut at the context), else null"),
}
# numeric fields that can never be negative (checked when a windows file is read)
NON_NEGATIVE = ("input_tokens", "output_tokens", "seconds")
# fields a method sets; the scheduler owns the rest (finish_record)
SCHEDULER_FIELDS = ("qid", "engine_call", "prompt_hash", "input_tokens", "output_tokens", "seconds", "cached",
                    "derived", "reply_tokens", "generated_tokens")


def _arrow(type_name: str):
    import pyarrow as pa

    if type_name.startswith("list<"):
        return pa.list_(_arrow(type_name[5:-1]))
    return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}[type_name]


def schema():
    import pyarrow as pa

    return pa.schema([(name, _arrow(t)) for name, (t, _what) in FIELDS.items()])


def new_record(pass_: int, start: int, end: int, docids: list[str]) -> dict:
    """A method's record of one window, outcome ``ok`` until the method says otherwise. ``calls`` (the Call
    objects behind it) is consumed by ``finish_record``."""
    return {"pass": pass_, "start": start, "end": end, "docids": list(docids), "outcome": OK, "raw": "",
            "forced_raw": None, "reasoning": "", "parsed": [], "ties": [], "repairs": "", "calls": []}


def finish_record(rec: dict, qid: str) -> dict:
    """Fold the bookkeeping of the record's calls (set by the scheduler in each ``Call.meta``) into it."""
    calls = rec.pop("calls", [])
    rec["qid"] = qid
    rec["engine_call"] = [c.meta.get("engine_call", -1) for c in calls]
    rec["prompt_hash"] = calls[0].meta.get("key", "") if calls else ""
    rec["input_tokens"] = sum(c.meta.get("input_tokens", 0) for c in calls)
    rec["output_tokens"] = sum(c.meta.get("output_tokens", 0) for c in calls)
    # engine seconds of the calls actually made: a call answered from the cache cost nothing (``cached`` says so)
    rec["seconds"] = sum(c.meta.get("seconds", 0.0) for c in calls if not c.meta.get("cached", False))
    rec["cached"] = bool(calls) and all(c.meta.get("cached", False) for c in calls)
    rec["derived"] = any(c.meta.get("derived", False) for c in calls)
    rec["reply_tokens"] = calls[0].meta.get("output_tokens", 0) if calls else 0
    rec["generated_tokens"] = sum(c.meta.get("output_tokens", 0) for c in calls if not c.meta.get("cached", False))
    return rec


def to_table(records: list[dict]):
    """The windows Parquet table of ``records``; a key that is no field raises (never a silently lost column)."""
    import pyarrow as pa

    rows = []
    for r in records:
        unknown = set(r) - set(FIELDS) - {"calls"}
        if unknown:
            raise ValueError(f"window record has field(s) {sorted(unknown)} that records.FIELDS does not define")
        row = {k: r.get(k) for k in FIELDS}
        row["ties"] = json.dumps(r.get("ties") or [])
        if row["logprobs"] is not None and not isinstance(row["logprobs"], str):
            row["logprobs"] = json.dumps(row["logprobs"])
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema())


# ----------------------------------------------------------------------------------------------------------
# reading a windows file back (rankk report): the same FIELDS, checked


_KIND = {"string": "of strings", "int64": "of numbers", "float64": "of numbers", "bool": "of booleans"}


def _type_ok(t, type_name: str) -> bool:
    import pyarrow as pa

    if pa.types.is_null(t):  # an all-null column (e.g. forced_raw of a run without forced answers)
        return True
    if pa.types.is_dictionary(t):  # a pandas categorical written to Parquet
        t = t.value_type
    if type_name.startswith("list<"):
        return (pa.types.is_list(t) or pa.types.is_large_list(t)) and _type_ok(t.value_type, type_name[5:-1])
    return {"string": lambda: pa.types.is_string(t) or pa.types.is_large_string(t),
            "int64": lambda: pa.types.is_integer(t) or pa.types.is_floating(t),
            "float64": lambda: pa.types.is_integer(t) or pa.types.is_floating(t),
            "bool": lambda: pa.types.is_boolean(t)}[type_name]()


def check_table(table, path) -> None:
    """Every column of a windows table that ``FIELDS`` defines has its type (numbers finite; token counts and
    seconds non-negative): ``FILE: expected ..., found ...`` otherwise. Only ``qid`` is required (strings, or
    integers from a hand-made file); columns ``FIELDS`` does not define are left alone."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rankk_cli.errors import file_error

    names = table.column_names
    if "qid" not in names:
        raise file_error(path, None, "expected a 'qid' column (rankk rerank's windows Parquet), found columns "
                         f"{', '.join(names[:8]) or 'none'}")
    for name in set(names):
        if names.count(name) > 1:
            raise file_error(path, None, f"expected each column once, found {name!r} {names.count(name)} times")
    for name, (type_name, what) in FIELDS.items():
        if name not in names:
            continue
        t = table.schema.field(name).type
        ok = _type_ok(t, type_name) or (name == "qid" and pa.types.is_integer(t))
        if name == "qid" and pa.types.is_null(t):
            ok = False
        if not ok:
            kind = (f"as lists of {'integers' if 'int' in type_name else 'strings'} ({what})"
                    if type_name.startswith("list<") else _KIND[type_name])
            raise file_error(path, None, f"expected column {name!r} {kind}, found type {t}")
        if pa.types.is_null(t) or table.num_rows == 0:
            continue
        col = table.column(name)
        if name == "qid" and col.null_count:
            raise file_error(path, None, f"expected a qid in every row, found {col.null_count} null(s)")
        if pa.types.is_floating(t):
            bad = pc.invert(pc.is_finite(col))
            if pc.any(bad).as_py():
                row = next(i for i, v in enumerate(bad.to_pylist()) if v)
                raise file_error(path, None, f"expected finite numbers in column {name!r}, found "
                                 f"{col[row].as_py()!r} (row {row + 1})")
        if name in NON_NEGATIVE:
            low = pc.min(col).as_py()
            if low is not None and low < 0:
                raise file_error(path, None, f"expected non-negative numbers in column {name!r}, found {low!r}")


def read_windows(path):
    """A windows Parquet file as a DataFrame, checked by ``check_table`` (one line for a damaged file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankk_cli.errors import RankkError

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - a damaged side file: one line
        raise RankkError(f"{path}: expected rankk rerank's windows Parquet, cannot read it: "
                         f"{' '.join(str(exc).split())[:160]}") from None
    check_table(table, path)
    for i, f in enumerate(table.schema):  # pandas categoricals: plain columns again
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, f.name, table.column(i).cast(f.type.value_type))
    df = table.to_pandas()
    df["qid"] = df["qid"].astype(str)
    return df
