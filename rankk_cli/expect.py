"""``rankk eval --expect FILE``: pin numbers (a lab's CI, 2CR-style reproductions) and fail when they move.

The expect file holds what ``rankk eval`` printed before, so pinning is ``rankk eval ... --format json >
expected.json`` (or ``--format tsv``), then ``rankk eval ... --expect expected.json`` in CI. Two shapes, told
apart by the first character that is not whitespace (``[`` or ``{`` is JSON, anything else TSV):

- JSON: a list of ``{"run": RUN, "measure": MEASURE, "value": NUMBER}`` objects, optionally with ``"qid"`` (a
  query id pins that query's value, ``"all"`` or no qid the aggregate) -- what ``--format json`` prints, with or
  without ``--per-query``; or an object ``{RUN: {MEASURE: NUMBER, ...}, ...}`` for hand-written pins.
- TSV: ``run<TAB>measure<TAB>value`` or ``run<TAB>qid<TAB>measure<TAB>value`` lines -- what ``--format tsv``
  prints (its header line is skipped); blank lines and lines starting with ``#`` are ignored.

RUN is the run's name as rankk prints it (the file name without .trec/.gz/.parquet). MEASURE is any spelling
``-m`` accepts (``nDCG@10``, ``ndcg_cut.10``, ``ndcg_cut_10``); every pinned measure is evaluated, beside the
``-m`` ones. A value differs when ``|found - expected| > tolerance`` (absolute; default 1e-4, so the 4 decimals
``--format tsv`` prints stay within it); NaN matches only NaN. Each differing value, and each pinned run or query
that this call did not evaluate, is one line on stderr and the exit code is 1; otherwise 0. A malformed expect
file is one line and exit code 2, before anything is evaluated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from rankk_cli.errors import RankkError, file_error, show

DEFAULT_TOLERANCE = 1e-4


@dataclass
class Expected:
    run: str
    qid: str | None  # None: the aggregate ("all")
    measure: str  # as given in the file
    value: float
    where: str  # FILE:LINE or FILE: entry N, for messages
    parsed: object = None  # the ir_measures measure


def _number(path, line, value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise file_error(path, line, f"expected a number as {what}, found {show(json.dumps(value))}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise file_error(path, line, f"expected a number as {what}, found {show(str(value))}") from None
    if math.isinf(number):
        raise file_error(path, line, f"expected a finite number (or NaN) as {what}, found {show(str(value))}")
    return number


def _text(path, line, value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise file_error(path, line, f"expected a non-empty string as {what}, found {show(json.dumps(value))}")
    return value.strip()


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _read_json(path: Path, text: str) -> list[Expected]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise file_error(path, exc.lineno, f"expected a JSON expect file, found invalid JSON ({exc.msg} at column "
                         f"{exc.colno})") from None
    except (ValueError, RecursionError):
        raise file_error(path, None, "expected a JSON expect file, found JSON rankk cannot load") from None
    out: list[Expected] = []
    if isinstance(data, dict):
        for run, measures in data.items():
            if not isinstance(measures, dict):
                raise file_error(path, None, f"expected {{MEASURE: value}} for run {show(run)}, found "
                                 f"{type(measures).__name__}")
            for measure, value in measures.items():
                where = f"run {run!r} measure {measure!r}"
                out.append(Expected(_text(path, None, run, "a run name"), None,
                                    _text(path, None, measure, f"the measure of {where}"),
                                    _number(path, None, value, f"the value of {where}"), f"{path}"))
        return out
    if not isinstance(data, list):
        raise file_error(path, None, "expected a JSON list of {\"run\", \"measure\", \"value\"} objects or an "
                         f"object {{RUN: {{MEASURE: value}}}}, found {type(data).__name__}")
    for n, row in enumerate(data, start=1):
        where = f"entry {n}"
        if not isinstance(row, dict):
            raise file_error(path, None, f"{where}: expected an object with \"run\", \"measure\", \"value\", found "
                             f"{type(row).__name__}")
        missing = [k for k in ("run", "measure", "value") if k not in row]
        if missing:
            raise file_error(path, None, f"{where}: expected the keys \"run\", \"measure\", \"value\", found no "
                             f"{', '.join(repr(k) for k in missing)}")
        qid = row.get("qid")
        qid = None if qid is None or qid == "all" else _text(path, None, qid, f"the qid of {where}")
        out.append(Expected(_text(path, None, row["run"], f"the run of {where}"), qid,
                            _text(path, None, row["measure"], f"the measure of {where}"),
                            _number(path, None, row["value"], f"the value of {where}"), f"{path}: {where}"))
    return out


def _read_tsv(path: Path, text: str) -> list[Expected]:
    out: list[Expected] = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("\t")]
        if parts in (["run", "measure", "value"], ["run", "qid", "measure", "value"]):
            continue  # the header --format tsv prints
        if len(parts) == 3:
            run, measure, value = parts
            qid = None
        elif len(parts) == 4:
            run, qid, measure, value = parts
            qid = None if qid == "all" else qid
        else:
            raise file_error(path, lineno, "expected 'run<TAB>measure<TAB>value' or 'run<TAB>qid<TAB>measure<TAB>"
                             f"value', found {len(parts)} tab-separated fields: {show(line)}")
        if not run or not measure or qid == "":
            raise file_error(path, lineno, f"expected non-empty fields, found an empty one: {show(line)}")
        out.append(Expected(run, qid, measure, _number(path, lineno, value, "the value (last field)"),
                            f"{path}:{lineno}"))
    return out


def read_expect(path: str | Path) -> list[Expected]:
    """The pinned values of an expect file (JSON or TSV, see the module docstring); malformed -> RankkError."""
    from rankk_cli.errors import check_input_file
    from rankk_cli.evaluate import parse_measures
    from rankk_cli.runs import read_text_file

    path = check_input_file(path, "expect file")
    text = read_text_file(path, "expect file")
    start = text.lstrip()
    rows = _read_json(path, text) if start[:1] in ("[", "{") else _read_tsv(path, text)
    if not rows:
        raise file_error(path, None, "expected at least one pinned value, found none")
    seen: dict = {}
    for row in rows:
        try:
            found = parse_measures([row.measure])
        except RankkError as exc:
            raise RankkError(f"{row.where}: expected a measure rankk eval -m accepts, found {show(row.measure)} "
                             f"({str(exc).split(': ', 1)[-1]})") from None
        if len(found) != 1:
            raise RankkError(f"{row.where}: expected one measure, found {show(row.measure)}, which stands for "
                             f"{len(found)} ({', '.join(map(str, found[:4]))}{', ...' if len(found) > 4 else ''})")
        row.parsed = found[0]
        key = (row.run, row.qid, str(row.parsed))
        if key in seen:
            raise RankkError(f"{row.where}: expected each (run, qid, measure) once, found run {row.run!r} "
                             f"{'qid ' + repr(row.qid) + ' ' if row.qid else ''}{row.parsed} again "
                             f"(first at {seen[key]})")
        seen[key] = row.where
    return rows


def check_tolerance(tolerance: float) -> float:
    if not math.isfinite(tolerance) or tolerance < 0:
        raise RankkError(f"--tolerance: expected a finite number >= 0, found {tolerance}")
    return tolerance


def compare_expected(results, expected: list[Expected], tolerance: float) -> list[str]:
    """One line per pinned value that differs by more than ``tolerance`` or was not evaluated."""
    by_run = {r.run: r for r in results}
    lines = []
    for row in expected:
        measure = str(row.parsed)
        label = f"{row.run} {'qid ' + row.qid + ' ' if row.qid else ''}{row.measure}"
        result = by_run.get(row.run)
        if result is None:
            lines.append(f"{label}: expected {row.value:.6f} ({row.where}), found no run of that name among the "
                         f"runs evaluated ({', '.join(sorted(by_run))})")
            continue
        j = result.measures.index(measure)
        if row.qid is None:
            found = result.aggregates[measure]
        else:
            if row.qid not in result.qids:
                lines.append(f"{label}: expected {row.value:.6f} ({row.where}), found no judged query "
                             f"{row.qid!r} in this evaluation")
                continue
            found = float(result.values[result.qids.index(row.qid), j])
        if math.isnan(row.value) or math.isnan(found):
            if math.isnan(row.value) and math.isnan(found):
                continue
            lines.append(f"{label}: expected {row.value:.6f}, found {found:.6f} ({row.where})")
            continue
        diff = abs(found - row.value)
        if diff > tolerance:
            lines.append(f"{label}: expected {row.value:.6f}, found {found:.6f}, off by {diff:.2e} > tolerance "
                         f"{tolerance:g} ({row.where})")
    return lines
