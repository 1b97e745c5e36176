"""Thinking-budget sweeps: ``rankk rerank ... --max-tokens 256,512,1024 -o DIR``.

One reranked run and windows file per budget, LARGEST budget first, one engine for all budgets (loaded on first
use: a sweep answered entirely from the call cache loads no model). A smaller budget reuses the larger budget's
generations through the call cache's derivation rule (``derive.py``): a reply that ended within the budget is the
same reply, a longer one is cut to its first B tokens (then forced to answer, as any cut-off reply). What a
method asks differs between budgets only where earlier answers differ: pointwise methods (rank1) send the same
prompts at every budget, so every smaller budget derives from the largest and only the forced answers of the
newly cut-off replies are generated; listwise methods derive each query's first window (and any other prompt
that comes out identical) and generate the windows whose input order an earlier answer changed.

Folder layout (``-o DIR``; several sweeps -- one per system -- may share a folder)::

    DIR/<system>/max-tokens-<B>.trec                 the reranked run at budget B
    DIR/<system>/max-tokens-<B>.trec.windows.parquet its window records
    DIR/sweep.json                                    every system's table: per budget, the cost and measures
    DIR/curve.png, DIR/gain.png, DIR/rankings.png     the curves (see ``curves.py``), redrawn from sweep.json

``<system>`` is ``<method>-<model name>``. With ``--qrels`` each budget is evaluated (``-m``, default nDCG@10;
over the queries of the run) beside the first stage (the input run). Per budget the table holds: mean thinking
tokens per query and per window (``reply_tokens``: the generated tokens of each window's first request, i.e.
the reply under the budget, the forced follow-up excluded), the share of windows forced, the run's wall seconds,
the tokens the engine actually generated (``generated_tokens``: neither cached nor derived), the requests
derived, and the measures. ``rankk report DIR`` shows the same table again.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

from rankk_cli.errors import RankkError

SWEEP_FILE = "sweep.json"
PLOTS = ("curve.png", "gain.png", "rankings.png")
DEFAULT_MEASURES = ("nDCG@10",)
# rerank_command flags a sweep does not take (each budget's windows file lies beside its run; a dry run prints
# requests, which a budget list does not change)
NOT_IN_SWEEP = {"windows_out": "--windows", "dry_run": "--dry-run"}


def parse_budgets(text: str | None) -> list[int] | None:
    """``--max-tokens`` as budgets: None (the method's default), one integer, or a comma-separated list of
    distinct integers >= 1. Anything else: one line naming the flag and what was expected."""
    if text is None:
        return None
    expected = "expected a token budget or a comma-separated list of budgets, integers >= 1 (e.g. 256,512,1024)"
    parts = [p.strip() for p in str(text).split(",")]
    budgets = []
    for part in parts:
        if not re.fullmatch(r"\+?\d+", part or "x") or int(part) < 1:
            raise RankkError(f"--max-tokens: {expected}, found {text!r}" if len(parts) == 1 else
                             f"--max-tokens: {expected}, found {part!r} in {text!r}")
        if int(part) in budgets:
            raise RankkError(f"--max-tokens: expected distinct budgets, found {int(part)} twice in {text!r}")
        budgets.append(int(part))
    return budgets


def rerank_or_sweep(*, max_tokens: str | None, measures=(), **kwargs) -> dict:
    """What ``rankk rerank`` runs: one rerank for one budget, a sweep for a list (``--max-tokens 256,512``)."""
    from rankk_cli.rerank.pipeline import rerank_command

    budgets = parse_budgets(max_tokens)
    if budgets is not None and (len(budgets) > 1 or "," in str(max_tokens)):
        return sweep_command(budgets=budgets, measures=measures, **kwargs)
    if measures:
        sys.stderr.write("rankk: warning: -m/--measure ignored: only a --max-tokens sweep (a budget list) "
                         "evaluates\n")
    return rerank_command(max_tokens=budgets[0] if budgets else None, **kwargs)


def system_name(method: str, model: str | None) -> str:
    name = Path(str(model)).name if model else "none"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{method}-{name}")


def _defaults() -> dict:
    """The rerank flags' defaults, from the one place that declares them (``RerankSpec.build``)."""
    from rankk_cli.rerank.spec import RerankSpec

    return {k: p.default for k, p in inspect.signature(RerankSpec.build).parameters.items()
            if p.default is not inspect.Parameter.empty and k != "model_given"}


def sweep_command(*, budgets: list[int], measures=(), output: Path | None, method: str, fmt: str = "table",
                  **kwargs) -> dict:
    """Run the sweep (see the module doc); returns ``{"sweep": {system: entry}, "folder": DIR}``."""
    from rankk_cli.outputs import check_output_path
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.rerank.pipeline import rerank_command

    opts = {**_defaults(), **kwargs}
    for name, flag in NOT_IN_SWEEP.items():
        if opts.get(name):
            raise RankkError(f"{flag}: not used by a --max-tokens sweep (each budget's run and windows file are "
                             "written in -o DIR); give one budget to use it")
        opts.pop(name, None)
    if output is None:
        raise RankkError("-o/--output: expected a folder for the sweep's runs (--max-tokens lists budgets), "
                         "found none")
    folder = Path(output)
    if folder.exists() and not folder.is_dir():
        raise RankkError(f"{folder}: expected a folder for the sweep (-o/--output with a --max-tokens list), "
                         "found a file")
    check_output_path(folder / SWEEP_FILE, "-o/--output")
    method_cls = METHODS.get(method)
    if not method_cls.needs_engine:
        raise RankkError(f"--max-tokens: method {method!r} generates nothing; a budget sweep needs a method "
                         "that generates")
    measures = list(measures or DEFAULT_MEASURES)
    qrels = opts.pop("qrels", None)
    source = parsed = None
    if qrels is not None:
        from rankk_cli.evaluate import QrelsSource, parse_measures

        parsed = parse_measures(measures)
        source = QrelsSource(qrels)
        source.get()  # a bad qrels file fails before any model loads
    method_qrels = qrels if any(o.name == "qrels" for o in method_cls.options) else None
    # the one validated spec of the largest budget (every flag checked once, the method's model and sampling
    # defaults resolved there, as for a single run); its engine serves every budget
    from rankk_cli.rerank.spec import RerankSpec

    injected = opts.get("engine_obj")
    flags = {k: v for k, v in opts.items() if k not in ("engine_obj", "progress")}
    spec = RerankSpec.build(**{**flags, "output": None, "dry_run": True, "method": method,
                               "max_tokens": max(budgets), "qrels": method_qrels},
                            model_given=injected is None)
    opts["model"] = model = spec.model
    temperature = spec.sampling.temperature
    if spec.no_cache:
        sys.stderr.write("rankk rerank: warning: --no-cache: nothing is derived; every budget is generated in "
                         "full\n")
    elif temperature > 0 and spec.sampling.seed is None:
        sys.stderr.write(f"rankk rerank: warning: --temperature {temperature:g} without --seed: unseeded sampling "
                         "is never derived, every budget is generated in full (give --seed N, or --temperature "
                         "0)\n")
    system = system_name(method, model)
    built = injected is None
    if built:  # ONE engine for every budget, from the spec of the largest
        opts["engine_obj"] = spec.lazy_engine()
    order = sorted(budgets, reverse=True)
    summaries = {}
    try:
        for n, budget in enumerate(order, 1):
            sys.stderr.write(f"rankk rerank: sweep {system}: --max-tokens {budget} ({n}/{len(order)})\n")
            out = folder / system / f"max-tokens-{budget}.trec"
            summaries[budget] = rerank_command(**{**opts, "output": out, "method": method, "max_tokens": budget,
                                                  "qrels": method_qrels, "fmt": "table"})
    finally:
        if built:
            loaded = opts["engine_obj"].loaded
            opts["engine_obj"].close()
    entry = _entry(system, method, model, opts, summaries, source, parsed, folder)
    if built:
        entry["model_loaded"] = loaded
    systems = _write(folder, system, entry)
    if fmt == "json":
        sys.stdout.write(json.dumps({"folder": str(folder), "systems": systems}, indent=1, allow_nan=False,
                                    ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_table({system: entry}))
    sys.stdout.flush()
    return {"folder": str(folder), "systems": systems}


# ----------------------------------------------------------------------------------------------------------
# the table


def _first_stage(opts: dict):
    """The input run as the sweep reranked it (exclusions applied), for the first-stage measures."""
    from rankk_cli.exclude import load_exclusions
    from rankk_cli.rerank.pipeline import read_input_run

    return read_input_run(Path(opts["run"]), load_exclusions(opts.get("exclude")))[0]


def _entry(system, method, model, opts, summaries, source, parsed, folder: Path) -> dict:
    """One system's sweep entry: per budget the cost, the measures and the per-query numbers the plots draw."""
    from rankk_cli.rerank import curves
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.report import windows_table

    kind = METHODS.get(method).kind
    first = per_first = None
    if source is not None:
        from rankk_cli.evaluate import evaluate

        res = evaluate(_first_stage(opts), source.get(), parsed, run_queries_only=True)
        first = {m: res.aggregates[m] for m in res.measures}
        per_first = {q: float(v) for q, v in zip(res.qids, res.values[:, 0])}
    rows = []
    for budget in sorted(summaries):
        s = summaries[budget]
        run_path = Path(s["output"])
        df = windows_table(run_path)
        stats = curves.window_stats(df, listwise=kind == "listwise")
        row = {"max_tokens": budget, "run": str(run_path.relative_to(folder)),
               "windows_file": str(Path(s["windows_file"]).relative_to(folder)),
               **{k: stats[k] for k in ("queries", "windows", "thinking_tokens_per_query",
                                         "thinking_tokens_per_window", "forced_share")},
               "seconds": s["wall_seconds"], "generated_tokens": s["generated_tokens"], "requests": s["requests"],
               "cache_hits": s["cache_hits"], "derived_hits": s.get("derived_hits", 0),
               "per_query": stats["per_query"]}
        if source is not None:
            from rankk_cli.evaluate import evaluate_path

            res = evaluate_path(run_path, source, parsed, run_queries_only=True, no_cache=bool(opts["no_cache"]))
            row["measures"] = {m: res.aggregates[m] for m in res.measures}
            for q, v in zip(res.qids, res.values[:, 0]):
                if q in row["per_query"] and q in per_first:
                    row["per_query"][q]["gain"] = float(v) - per_first[q]
        rows.append(row)
    sampling = {k: v for k, v in summaries[max(summaries)]["sampling"].items() if k != "max_tokens"}
    return {"method": method, "kind": kind, "model": str(model), "engine": summaries[max(summaries)]["engine"],
            "sampling": sampling, "depth": opts["depth"], "run": str(opts["run"]),
            "measures": [str(m) for m in parsed] if parsed else [], "qrels": source.spec if source else None,
            "first_stage": first, "budgets": rows}


def read_sweep(folder: Path) -> dict:
    """``{system: entry}`` of ``folder/sweep.json`` (empty when there is none); a damaged file: one line."""
    path = Path(folder) / SWEEP_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        systems = data["systems"]
        if not isinstance(systems, dict):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise RankkError(f"{path}: expected the sweep table rankk rerank --max-tokens writes "
                         "({\"systems\": {...}}), cannot read it") from None
    return systems


def _write(folder: Path, system: str, entry: dict) -> dict:
    """sweep.json with this system's entry (others kept) and the PNGs redrawn from it, all or nothing."""
    from rankk_cli.outputs import commit_outputs
    from rankk_cli.rerank import curves

    systems = {**read_sweep(folder), system: entry}
    blob = json.dumps({"systems": systems}, indent=1, allow_nan=False, ensure_ascii=False) + "\n"
    items = [(folder / SWEEP_FILE, lambda tmp: tmp.write_text(blob, encoding="utf-8"))]
    for name, png in curves.render_all(systems).items():
        items.append((folder / name, lambda tmp, png=png: tmp.write_bytes(png)))
    commit_outputs(items)
    return systems


def _fmt(v, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def table_rows(entry: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one system's sweep table: first stage, then one row per budget."""
    measures = entry.get("measures") or []
    header = ["max tokens", "thinking tok/query", "thinking tok/window", "forced", "seconds", "generated tok",
              "derived", *measures]
    rows = []
    if entry.get("first_stage"):
        rows.append(["first stage", "-", "-", "-", "-", "-", "-",
                     *(f"{entry['first_stage'][m]:.4f}" for m in measures)])
    for r in entry["budgets"]:
        rows.append([str(r["max_tokens"]), _fmt(r["thinking_tokens_per_query"]),
                     _fmt(r["thinking_tokens_per_window"]), f"{100 * r['forced_share']:.0f}%",
                     _fmt(float(r["seconds"])), _fmt(int(r["generated_tokens"])),
                     f"{r['derived_hits']}/{r['requests'] + r['cache_hits'] + r['derived_hits']}",
                     *(f"{r['measures'][m]:.4f}" for m in measures if "measures" in r)])
    return header, rows


def render_table(systems: dict) -> str:
    """Markdown tables, one per system (what the sweep prints and ``rankk report DIR`` shows)."""
    out = []
    for system, entry in systems.items():
        header, rows = table_rows(entry)
        out.append(f"## {system}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        out.extend("| " + " | ".join(r) + " |" for r in rows)
        note = ("thinking tokens: generated tokens of each window's first request (the reply under the budget); "
                "generated tok: what the engine generated for this budget; derived: requests answered from a "
                "larger budget's generation / all requests")
        if entry.get("measures"):
            note += f"; measures over the run's queries ({entry.get('qrels')})"
        out.append(f"\n{note}\n")
    return "\n".join(out) + "\n"


def report_sweep(folder: Path, output: Path | None = None, plot_path: Path | None = None, fmt: str = "markdown",
                 ignored=()) -> dict:
    """``rankk report DIR`` for a sweep folder: every system's table (cost beside the measures), on stdout or
    ``-o``; ``--plot`` writes the effectiveness-vs-thinking-tokens curve; ``--format json`` the numbers."""
    from rankk_cli.outputs import check_outputs, commit_outputs
    from rankk_cli.rerank import curves

    check_outputs({"-o/--output": output, "--plot": plot_path})
    if ignored:
        sys.stderr.write(f"rankk report: warning: {', '.join(ignored)} ignored: {folder} is a --max-tokens sweep "
                         f"folder, measured when it was made ({SWEEP_FILE})\n")
    systems = read_sweep(folder)
    md = render_table(systems)
    items = []
    if output is not None:
        items.append((Path(output), lambda tmp: tmp.write_text(md, encoding="utf-8")))
    if plot_path is not None:
        png = curves.render_curve(systems)
        items.append((Path(plot_path), lambda tmp: tmp.write_bytes(png)))
    commit_outputs(items)
    if fmt == "json":
        sys.stdout.write(json.dumps({"folder": str(folder), "systems": systems}, indent=1, allow_nan=False,
                                    ensure_ascii=False) + "\n")
    elif output is None:
        sys.stdout.write(md)
    return systems
