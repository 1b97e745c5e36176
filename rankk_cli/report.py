"""``rankk report``: a folder of runs + qrels -> one paper-style table (Markdown and LaTeX) and a PNG.

Folder layout (decided here, documented in ``rankk report --help``)::

    DIR/<dataset>/<system>.trec              a run (also .trec.gz, .txt, .run, .parquet, .json, .json.gz)
    DIR/<dataset>/<system>.trec.windows.parquet   optional: rankk rerank's per-window records (cost columns)
    DIR/<dataset>/qrels.txt                  optional: the dataset's qrels (else --qrels DATASET=FILE|ID)

Rows are systems (a system is a run file name without its suffix, the same name across datasets), columns are
dataset x measure, then the rerank cost summed over datasets (requests sent to the engine, batched engine calls,
tokens in/out, seconds; "-" for runs without a windows file, e.g. first-stage runs). Every cell of a non-baseline
system carries a marker when a paired test against the baseline on that dataset and measure is significant after
correction across the systems of that column: ``†`` significantly better, ``‡`` significantly worse. The best
value of each column is bold. Paired tests (t, permutation, wilcoxon) and corrections (Holm, Bonferroni, none)
are ``rankk compare``'s own functions (``rankk_cli.compare.paired_test`` / ``correct``).

The PNG has two histograms: rankings (windows / comparisons) generated per query, and reasoning length in words
per window, one colour per reranked system.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rankk_cli.errors import RankkError, file_error, show
from rankk_cli.outputs import check_outputs, commit_outputs
from rankk_cli.rerank.records import WINDOWS_SUFFIX

RUN_SUFFIXES = (".trec", ".trec.gz", ".txt", ".run", ".parquet", ".json", ".jsonl", ".gz")
BETTER, WORSE = "†", "‡"


# ----------------------------------------------------------------------------------------------------------
# discovery


def _is_run(path: Path) -> bool:
    name = path.name
    if not path.is_file() or name.startswith(".") or name.endswith(WINDOWS_SUFFIX) or name.startswith("qrels"):
        return False
    return name.endswith(RUN_SUFFIXES)


def discover(root: Path, skip: Sequence[Path] = ()) -> dict[str, dict[str, Path]]:
    """``{dataset: {system: run path}}`` from ``root/<dataset>/<system>.<suffix>``; files in ``skip`` (the
    --exclude files, which may sit beside the runs) are not runs."""
    from rankk_cli.runs import run_name

    skipped = {os.path.realpath(p) for p in skip}

    root = Path(root)
    if not root.is_dir():
        raise RankkError(f"{root}: expected a report folder DIR/<dataset>/<system>.trec, found "
                         f"{'a file' if root.exists() else 'nothing'}")
    found: dict[str, dict[str, Path]] = {}
    unread_dirs: list[Path] = []  # folders below DIR/<dataset>/, and dataset folders without a run
    unread_files: list[Path] = []  # files directly in DIR, files in DIR/<dataset>/ that are no run
    orphans: list[Path] = []  # windows files without their run beside them
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not entry.is_dir():
            if os.path.realpath(entry) not in skipped:
                unread_files.append(entry)
    for ds_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        runs = {}
        entries = sorted(ds_dir.iterdir())
        for path in entries:
            if _is_run(path) and os.path.realpath(path) not in skipped:
                system = run_name(path)
                if system in runs:
                    raise RankkError(f"{path}: system {show(system)} appears twice in {ds_dir} "
                                     f"(also {runs[system].name})")
                runs[system] = path
        run_paths = {p.name for p in runs.values()}
        for path in entries:
            if path.name.startswith(".") or path in runs.values() or os.path.realpath(path) in skipped:
                continue
            if path.is_dir():
                unread_dirs.append(path)
            elif path.name.endswith(WINDOWS_SUFFIX):
                if path.name[: -len(WINDOWS_SUFFIX)] not in run_paths:
                    orphans.append(path)
            elif not path.name.startswith("qrels"):
                unread_files.append(path)
        if runs:
            found[ds_dir.name] = runs
        else:
            unread_dirs.append(ds_dir)
    if not found:
        raise RankkError(f"{root}: expected run files in DIR/<dataset>/<system>.trec, found none")
    if unread_dirs:
        unread_dirs.sort()
        warn(f"report: {len(unread_dirs)} folder(s) under {root} not read (runs are read from "
             f"DIR/<dataset>/<system>.trec only, one level deep): {_listed(unread_dirs)}")
    if unread_files:
        warn(f"report: {len(unread_files)} file(s) under {root} not read (not a run, qrels or windows file in "
             f"DIR/<dataset>/; run suffixes: {', '.join(RUN_SUFFIXES)}): {_listed(unread_files)}")
    if orphans:
        warn(f"report: {len(orphans)} windows file(s) have no run beside them and are not counted: "
             f"{_listed(orphans)}")
    return found


def _listed(items: Sequence, limit: int = 5) -> str:
    shown = ", ".join(show(str(p), 200)[1:-1] if not str(p).isprintable() else str(p) for p in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def warn(message: str) -> None:
    from rankk_cli.evaluate import warn as _warn

    _warn(message)


def parse_qrels_specs(specs: Sequence[str], datasets: Sequence[str], root: Path) -> dict[str, str]:
    """``--qrels dataset=FILE`` (repeatable) plus ``DIR/<dataset>/qrels*`` files; every dataset needs one."""
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise RankkError(f"--qrels: expected DATASET=FILE (or DATASET=ir_datasets id), found {spec!r}")
        if name not in datasets:
            raise RankkError(f"--qrels: no dataset {name!r} in {root} (datasets: {', '.join(datasets)})")
        out[name] = value
    for ds in datasets:
        local = sorted(p for p in (Path(root) / ds).glob("qrels*") if p.is_file())
        if ds in out:
            if local:
                warn(f"report: {ds}: --qrels {out[ds]} is used; {_listed(local)} in the folder not read")
            continue
        if not local:
            raise RankkError(f"--qrels: expected qrels for dataset {ds!r}: pass --qrels {ds}=FILE or put "
                             f"{Path(root) / ds / 'qrels.txt'}")
        if len(local) > 1:
            warn(f"report: {ds}: {len(local)} qrels files in the folder, {local[0].name} is used and "
                 f"{_listed([p.name for p in local[1:]])} not read (pass --qrels {ds}=FILE to choose)")
        out[ds] = str(local[0])
    return out


def parse_exclude_specs(specs: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``--exclude FILE`` (every dataset) and ``--exclude DATASET=FILE`` (one dataset): the files for every
    dataset, and the per-dataset ones. ``NAME=...`` is a dataset form unless the whole spec is a file."""
    every: list[str] = []
    per: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if sep and name and value and not Path(spec).exists():
            if name in per:
                raise RankkError(f"--exclude: expected one exclusion file per dataset, found two for {name!r}")
            per[name] = value
        else:
            every.append(spec)
    if len(every) > 1:
        raise RankkError(f"--exclude: expected one exclusion file for all datasets (or DATASET=FILE), found "
                         f"{len(every)}: {', '.join(every)}")
    return every, per


def exclusion_files(specs: Sequence[str], datasets: Sequence[str], root: Path) -> dict[str, str]:
    """``{dataset: exclusion file}`` from the --exclude specs (a dataset may have none)."""
    every, per = parse_exclude_specs(specs)
    for name in per:
        if name not in datasets:
            raise RankkError(f"--exclude: no dataset {name!r} in {root} (datasets: {', '.join(datasets)})")
    return {ds: per.get(ds, every[0] if every else None) for ds in datasets if ds in per or every}


# ----------------------------------------------------------------------------------------------------------
# output files: checked before any work, written all or nothing (shared with rankk rerank)


# ----------------------------------------------------------------------------------------------------------
# cost from the rerank windows files


COST_COLUMNS = ("requests", "engine calls", "tokens in", "tokens out", "generate s")  # windows files: engine seconds, cached calls 0


def windows_table(run_path: Path):
    """The rerank windows Parquet beside ``run_path`` as a DataFrame (read and checked by the module that writes
    it: ``rankk_cli.rerank.records``), or None."""
    from rankk_cli.rerank.records import read_windows

    path = Path(str(run_path) + WINDOWS_SUFFIX)
    return read_windows(path) if path.is_file() else None


def cost_of(df, what: str = "windows") -> dict:
    """Cost columns summed over ``df`` (windows already checked by ``records.read_windows``)."""

    def total(column: str) -> float:
        if column not in df:
            return 0
        col = df[column]
        if col.dtype.kind in "iu":  # exact
            return int(col.sum())
        value = float(col.astype("float64").fillna(0).sum())
        if not math.isfinite(value):
            raise RankkError(f"{what}: expected a finite total of column {column!r}, found {value}")
        return value

    calls = [list(c) if c is not None else [] for c in df.get("engine_call", [])]
    return {
        "requests": sum(len(c) for c in calls),
        "engine calls": len({int(i) for c in calls for i in c if i is not None and i >= 0}),
        "tokens in": int(round(total("input_tokens"))),
        "tokens out": int(round(total("output_tokens"))),
        "generate s": float(total("seconds")),
    }


# ----------------------------------------------------------------------------------------------------------
# the report


@dataclass
class Report:
    datasets: list[str]
    measures: list[str]
    systems: list[str]
    baseline: str
    values: dict = field(default_factory=dict)  # (system, dataset, measure) -> mean
    pvalues: dict = field(default_factory=dict)  # (system, dataset, measure) -> corrected p
    markers: dict = field(default_factory=dict)  # (system, dataset, measure) -> "†" | "‡" | ""
    cost: dict = field(default_factory=dict)  # system -> {column: number} (only reranked systems)
    windows: dict = field(default_factory=dict)  # system -> DataFrame of all its windows (for the plot)
    notes: list[str] = field(default_factory=list)
    alpha: float = 0.05
    correction: str = "holm"
    test: str = "t"
    queries: dict = field(default_factory=dict)  # dataset -> number of queries averaged
    excluded: dict = field(default_factory=dict)  # dataset -> {system: (qid, docid) pairs --exclude dropped}

    def best(self, ds: str, m: str) -> float | None:
        vals = [v for (s, d, mm), v in self.values.items() if d == ds and mm == m and not math.isnan(v)]
        return max(vals) if vals else None

    def rows(self) -> list[tuple[str, list[tuple[str, bool]], list[str]]]:
        """(system, [(cell text, is best)], cost cells) in display order."""
        out = []
        for s in self.systems:
            cells = []
            for ds in self.datasets:
                for m in self.measures:
                    v = self.values.get((s, ds, m))
                    if v is None or math.isnan(v):
                        cells.append(("–", False))
                        continue
                    best = self.best(ds, m)
                    cells.append((f"{v:.4f}{self.markers.get((s, ds, m), '')}", best is not None and v == best))
            c = self.cost.get(s)
            cost = ([f"{c['requests']:,}", f"{c['engine calls']:,}", f"{c['tokens in']:,}", f"{c['tokens out']:,}",
                     f"{c['generate s']:.1f}"] if c else ["–"] * len(COST_COLUMNS))
            out.append((s, cells, cost))
        return out

    def legend(self) -> str:
        corr = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "no"}[self.correction]
        test = {"t": "t-test", "permutation": "permutation test", "wilcoxon": "Wilcoxon signed-rank test"}[self.test]
        return (f"{BETTER}/{WORSE}: significantly better/worse than {self.baseline} (paired {test}, {corr} "
                f"correction across systems per column, alpha {self.alpha}); best per column in bold; cost summed "
                "over datasets from the rerank windows files.")

    def to_markdown(self) -> str:
        head = ["system"] + [f"{_md(ds)} {m}" for ds in self.datasets for m in self.measures] + list(COST_COLUMNS)
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for s, cells, cost in self.rows():
            name = f"{_md(s)} (baseline)" if s == self.baseline else _md(s)
            shown = [f"**{t}**" if best else t for t, best in cells]
            lines.append("| " + " | ".join([name] + shown + cost) + " |")
        lines += ["", self.legend()] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def to_latex(self) -> str:
        from rankk_cli.compare import latex_escape as esc

        def cell(text: str, best: bool) -> str:
            mark = ""
            if text.endswith(BETTER):
                text, mark = text[:-1], r"$^\dagger$"
            elif text.endswith(WORSE):
                text, mark = text[:-1], r"$^\ddagger$"
            text = text.replace("–", "--")
            return (rf"\textbf{{{text}}}" if best else text) + mark

        nm = len(self.measures)
        cols = "l" + "r" * (len(self.datasets) * nm) + "r" * len(COST_COLUMNS)
        out = [r"\begin{tabular}{" + cols + "}", r"\toprule"]
        out.append(" & ".join(["System"] + [rf"\multicolumn{{{nm}}}{{c}}{{{esc(ds)}}}" for ds in self.datasets]
                              + [rf"\multicolumn{{{len(COST_COLUMNS)}}}{{c}}{{Cost}}"]) + r" \\")
        out.append(" & ".join([""] + [esc(m) for _ in self.datasets for m in self.measures]
                              + ["Requests", "Calls", "Tok.\\ in", "Tok.\\ out", "Sec."]) + r" \\")
        out.append(r"\midrule")
        for s, cells, cost in self.rows():
            name = esc(s) + (" (baseline)" if s == self.baseline else "")
            out.append(" & ".join([name] + [cell(t, b) for t, b in cells]
                                  + [c.replace(",", "{,}").replace("–", "--") for c in cost]) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}"]
        legend = esc(self.legend()).replace(BETTER, r"$\dagger$").replace(WORSE, r"$\ddagger$")
        return "% " + legend + "\n" + "\n".join(out) + "\n"

    def to_dict(self) -> dict:
        """``rankk report --format json``: one object per system (``values``/``pvalues``/``markers`` nested as
        dataset -> measure -> number; the baseline has no pvalues; a number that cannot be computed is null),
        its cost (null without a windows file), and the test settings, queries averaged per dataset and notes."""
        from rankk_cli.evaluate import finite

        systems = []
        for s in self.systems:
            row = {"system": s, "baseline": s == self.baseline, "values": {}, "pvalues": {}, "markers": {},
                   "cost": self.cost.get(s)}
            for ds in self.datasets:
                for m in self.measures:
                    if (s, ds, m) in self.values:
                        row["values"].setdefault(ds, {})[m] = finite(float(self.values[(s, ds, m)]))
                    if (s, ds, m) in self.pvalues:
                        row["pvalues"].setdefault(ds, {})[m] = finite(float(self.pvalues[(s, ds, m)]))
                        row["markers"].setdefault(ds, {})[m] = {BETTER: "better", WORSE: "worse"}.get(
                            self.markers.get((s, ds, m), ""))
            systems.append(row)
        return {"datasets": self.datasets, "measures": self.measures, "baseline": self.baseline,
                "test": self.test, "correction": self.correction, "alpha": self.alpha,
                "queries": self.queries, "systems": systems, "notes": self.notes, "excluded": self.excluded}


def _md(text: str) -> str:
    """A name in a Markdown table cell: control characters escaped (``\\t``, ``\\n``) and ``|`` as ``\\|``."""
    from rankk_cli.evaluate import cell

    return cell(text).replace("|", "\\|")


def build_report(root: Path, qrels_specs: Sequence[str] = (), measures: Sequence[str] = ("nDCG@10",),
                 baseline: str | None = None, alpha: float = 0.05, correction: str = "holm",
                 no_cache: bool = False, test: str = "t", exclude: Sequence[str] = ()) -> Report:
    """``exclude``: ``FILE`` (every dataset) or ``DATASET=FILE`` specs (``rankk_cli.exclude``): those (qid, docid)
    pairs are dropped from every run of the dataset before scoring, and the counts noted under the table."""
    from rankk_cli.compare import correct, paired_test, undefined_test
    from rankk_cli.evaluate import QrelsSource, evaluate_path, parse_measures, warn_qrels
    from rankk_cli.exclude import load_exclusions

    if correction not in ("holm", "bonferroni", "none"):
        raise RankkError(f"--correction: expected holm, bonferroni or none, found {correction!r}")
    if test not in ("t", "permutation", "wilcoxon"):
        raise RankkError(f"--test: expected t, permutation or wilcoxon, found {test!r}")
    if not 0 < alpha < 1:
        raise RankkError(f"--alpha: expected a level between 0 and 1, found {alpha}")
    root = Path(root)
    every, per = parse_exclude_specs(exclude)
    found = discover(root, skip=[Path(p) for p in [*every, *per.values()] if Path(p).exists()])
    datasets = list(found)
    qrels = parse_qrels_specs(qrels_specs, datasets, root)
    excl_files = exclusion_files(exclude, datasets, root)
    exclusions = {ds: load_exclusions(f) for ds, f in excl_files.items()}  # all read (and checked) up front
    parsed = parse_measures(list(measures))
    names = [str(m) for m in parsed]
    systems = sorted({s for runs in found.values() for s in runs})
    if baseline is None:
        baseline = "bm25" if "bm25" in systems else systems[0]
    elif baseline not in systems:
        raise RankkError(f"--baseline: no system {baseline!r} in {root} (systems: {', '.join(systems)})")
    # baseline first, the others in name order
    systems = [baseline] + [s for s in systems if s != baseline]
    absent = [f"{s} in {ds}" for s in systems for ds in datasets if s not in found[ds]]
    if absent:
        warn(f"report: {len(absent)} system/dataset cell group(s) have no run (– in the table; cost summed over "
             f"the datasets a system has): {_listed(absent)}")
    rep = Report(datasets, names, systems, baseline, alpha=alpha, correction=correction, test=test)
    # the windows files are read (and their schema checked) before any evaluation: a bad one fails fast
    windows = {(s, ds): windows_table(runs[s]) for ds, runs in found.items() for s in runs}
    for (s, ds), df in windows.items():
        if df is not None:
            _check_windows_match(found[ds][s], df)

    for ds, runs in found.items():
        source = QrelsSource(qrels[ds])
        excl = exclusions.get(ds)
        results = {s: evaluate_path(p, source, parsed, no_cache=no_cache, name=s, exclusions=excl)
                   for s, p in runs.items()}
        if excl is not None:
            rep.excluded[ds] = {s: results[s].excluded for s in systems if s in results}
            rep.notes.append(f"{ds}: excluded (qid, docid) pairs dropped before scoring ({excl.source}, "
                             f"{len(excl)} listed): " + ", ".join(f"{s} {n}" for s, n in rep.excluded[ds].items()))
        any_result = next(iter(results.values()))
        rep.queries[ds] = len(any_result.qids)
        _warn_coverage(ds, results, qrels[ds])
        warn_qrels(source.get(), f"{ds} qrels {qrels[ds]}", parsed)
        for s, res in results.items():
            for m in names:
                rep.values[(s, ds, m)] = res.aggregates[m]
        if baseline not in results:
            rep.notes.append(f"{ds}: no {baseline} run, so no significance markers")
            continue
        base = results[baseline]
        others = [s for s in systems if s in results and s != baseline]
        for j, m in enumerate(names):
            b = base.per_query()[m]
            series = [results[s].per_query()[m].reindex(b.index).fillna(0.0).to_numpy() for s in others]
            raw = [paired_test(b.to_numpy(), vals, test=test) for vals in series]
            adj = [float(p) for p in correct(raw, correction)]
            for s, vals, p in zip(others, series, adj):
                rep.pvalues[(s, ds, m)] = p
                why = undefined_test(b.to_numpy(), vals, test) or ("the test returned no number" if math.isnan(p)
                                                                    else None)
                if why is not None:
                    warn(f"{ds}: {s} vs {baseline}, {m}: no p-value ({why}): no significance marker")
                if p < alpha:
                    rep.markers[(s, ds, m)] = BETTER if vals.mean() > b.to_numpy().mean() else WORSE

    import pandas as pd

    for s in systems:
        frames = []
        for ds, runs in found.items():
            if s in runs:
                df = windows[(s, ds)]
                if df is not None:
                    df = df.assign(dataset=ds)
                    frames.append(df)
        if frames:
            df = pd.concat(frames, ignore_index=True)
            rep.windows[s] = df
            rep.cost[s] = cost_of(df, f"{s}'s windows files")
            if "cached" in df and df["cached"].fillna(False).astype(bool).any():
                n = int(df["cached"].fillna(False).astype(bool).sum())
                rep.notes.append(f"{s}: {n} of {len(df)} windows were answered from the call cache in the run that "
                                 "wrote them: their tokens and seconds are the original call's, but 'engine calls' "
                                 "counts only calls that run made")
    return rep


def _warn_coverage(ds: str, results: dict, qrels_spec: str) -> None:
    """What ``rankk eval`` says about a run's queries, per dataset and system: a run none of whose queries is
    judged (qrels of another dataset?), run queries without judgements (ignored), judged queries the run lacks
    (counted as 0, trec_eval -c)."""
    for s, res in results.items():
        judged_in_run = len(res.qids) - len(res.missing_qids)
        n_run = judged_in_run + len(res.unjudged_run_qids)
        where = f"{ds}/{s}"
        if judged_in_run == 0:
            warn(f"{where}: none of the run's {n_run} queries is judged in {qrels_spec} (qrels of another "
                 f"dataset?): all its {len(res.qids)} judged queries count as 0")
            continue
        if res.unjudged_run_qids:
            warn(f"{where}: {len(res.unjudged_run_qids)} of the run's {n_run} queries have no judgements in "
                 f"{qrels_spec} and are ignored ({_listed(res.unjudged_run_qids)})")
        if res.missing_qids:
            warn(f"{where}: {len(res.missing_qids)} of {len(res.qids)} judged queries are missing from the run and "
                 f"count as 0 (trec_eval -c): {_listed(res.missing_qids)}")


def _check_windows_match(run_path: Path, df) -> None:
    """A windows file must describe the run beside it: its queries are the run's, and the documents each window
    shows are in the run's ranking of that query. One warning (how many) when not -- a windows file copied from
    another run or dataset credits its cost to the wrong system."""
    from rankk_cli.runs import read_run

    wpath = str(run_path) + WINDOWS_SUFFIX
    if not len(df):
        return
    run = read_run(run_path)
    docs = run.df.groupby("qid", sort=False)["docid"].agg(set).to_dict()
    wq = list(dict.fromkeys(df["qid"]))
    foreign = [q for q in wq if q not in docs]
    if foreign:
        warn(f"{wpath}: {len(foreign)} of its {len(wq)} queries are not in {run_path.name} (a windows file of "
             f"another run or dataset?); its cost is counted for this system anyway: {_listed(foreign)}")
        return
    if "docids" in df:
        bad = 0
        for q, ids in zip(df["qid"], df["docids"]):
            if ids is not None and not set(map(str, ids)) <= docs.get(q, set()):
                bad += 1
        if bad:
            warn(f"{wpath}: {bad} of its {len(df)} windows show documents that are not in {run_path.name}'s "
                 "ranking of that query (a windows file of another run?); its cost is counted for this system "
                 "anyway")


# ----------------------------------------------------------------------------------------------------------
# the figure


def render_plot(rep: Report) -> bytes:
    """The PNG (rankings per query, reasoning length per window) as bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), dpi=120)
    with_files = [s for s in rep.systems if s in rep.windows]
    systems = [s for s in with_files if len(rep.windows[s])]  # an empty windows file has nothing to draw
    colors = plt.get_cmap("tab10")
    ax1, ax2 = axes
    if not systems:
        text = "no windows recorded in the rerank windows files" if with_files else "no rerank windows files found"
        for ax in axes:
            ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    per_query = {}
    lengths = {}
    for s in systems:
        df = rep.windows[s]
        per_query[s] = df.groupby(["dataset", "qid"]).size().to_numpy()
        reasoning = df["reasoning"].fillna("") if "reasoning" in df else []
        lengths[s] = np.array([len(str(t).split()) for t in reasoning])
    if systems:
        hi = max(int(v.max()) for v in per_query.values())
        bins = np.arange(0.5, hi + 1.5, max(1, math.ceil(hi / 40)))
        for i, s in enumerate(systems):
            ax1.hist(per_query[s], bins=bins, histtype="stepfilled", alpha=0.35, color=colors(i % 10),
                     edgecolor=colors(i % 10), linewidth=1.5,
                     label=f"{s} (median {np.median(per_query[s]):.0f})")
        ax1.set_xlabel("rankings generated per query (windows / comparisons)")
        ax1.set_ylabel("queries")
        ax1.set_title("Rankings generated per query")
        ax1.legend(fontsize=8)
        with_reasoning = [s for s in systems if lengths[s].size and lengths[s].max() > 0]
        if with_reasoning:
            top = max(int(lengths[s].max()) for s in with_reasoning)
            bins = np.linspace(0, top + 1, 31)
            for i, s in enumerate(systems):
                if s in with_reasoning:
                    ax2.hist(lengths[s], bins=bins, histtype="stepfilled", alpha=0.35, color=colors(i % 10),
                             edgecolor=colors(i % 10), linewidth=1.5,
                             label=f"{s} (median {np.median(lengths[s]):.0f} words)")
            ax2.legend(fontsize=8)
        else:
            ax2.text(0.5, 0.5, "no reasoning recorded", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_xlabel("reasoning length per window (words)")
        ax2.set_ylabel("windows")
        ax2.set_title("Reasoning length")
    for ax in axes:
        ax.grid(alpha=0.3)
    return figure_png(plt, fig)


def figure_png(plt, fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (laid out tight; closed whatever happens)."""
    import io

    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# the command


def report_command(root: Path, qrels: Sequence[str] = (), measures: Sequence[str] = ("nDCG@10",),
                   baseline: str | None = None, alpha: float = 0.05, correction: str = "holm",
                   output: Path | None = None, latex: Path | None = None, plot_path: Path | None = None,
                   no_cache: bool = False, test: str = "t", exclude: Sequence[str] = (),
                   fmt: str = "markdown") -> Report:
    """Every output path is checked before any work; the files are written together or not at all. ``fmt``
    json: ``Report.to_dict`` on stdout (whether or not -o writes the Markdown)."""
    from rankk_cli.outputs import check_not_input
    from rankk_cli.rerank.sweep import SWEEP_FILE

    if (Path(root) / SWEEP_FILE).is_file():  # a --max-tokens sweep folder: its own table (cost beside measures)
        from rankk_cli.rerank.sweep import report_sweep

        ignored = [flag for flag, given in (("--qrels", qrels), ("--baseline", baseline), ("--exclude", exclude),
                                            ("--latex", latex)) if given]
        return report_sweep(Path(root), output=output, plot_path=plot_path, fmt=fmt, ignored=ignored)

    outputs = {"-o/--output": output, "--latex": latex, "--plot": plot_path}
    check_outputs(outputs)
    _check_not_an_input(outputs, Path(root))
    every, per = parse_exclude_specs(exclude)
    for flag, path in outputs.items():
        check_not_input(path, flag, [*every, *per.values()])

    rep = build_report(root, qrels, measures, baseline, alpha, correction, no_cache, test, exclude)
    md = rep.to_markdown()
    items: list[tuple[Path, Callable[[Path], None]]] = []
    if output is not None:
        items.append((Path(output), lambda tmp: tmp.write_text(md, encoding="utf-8")))
    if latex is not None:
        tex = rep.to_latex()
        items.append((Path(latex), lambda tmp: tmp.write_text(tex, encoding="utf-8")))
    if plot_path is not None:
        png = render_plot(rep)
        items.append((Path(plot_path), lambda tmp: tmp.write_bytes(png)))
    commit_outputs(items)
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(rep.to_dict(), indent=1, allow_nan=False, ensure_ascii=False) + "\n")
    elif output is None:
        sys.stdout.write(md)
    return rep


def _check_not_an_input(outputs: dict[str, Path | None], root: Path) -> None:
    """An output must not overwrite a file the report reads (a run, a windows file or qrels under ``root``)."""
    if not root.is_dir():
        return  # build_report says what is wrong with it
    top = os.path.realpath(root)
    for flag, path in outputs.items():
        if path is None or not Path(path).is_file():
            continue
        real = os.path.realpath(path)
        if os.path.commonpath([top, real]) != top:
            continue
        p = Path(real)
        if _is_run(p) or p.name.endswith(WINDOWS_SUFFIX) or p.name.startswith("qrels"):
            raise file_error(path, None, f"expected an output path ({flag}) that is not one of the report's "
                             f"inputs in {root}, found an input file")
