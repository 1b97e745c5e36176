"""``rankk compare``: paired significance tests of runs against a baseline (or of every pair), per measure.

Per (run, measure): both means, the delta, its effect size (Cohen's d_z: mean delta / standard deviation of the
per-query deltas) and 95% confidence interval (Student t, n - 1 degrees of freedom: the interval of the paired
t-test), a two-sided paired p-value (t-test, paired randomisation or Wilcoxon signed-rank), the p-value corrected
for multiple testing over the *family of all (run, measure) comparisons* made in one call (Holm or Bonferroni:
family-wise error; Benjamini-Hochberg: false discovery rate), win/tie/loss counts over queries and a marker.

``--all-pairs`` compares every run with every other (each unordered pair once, the family is all pairs x
measures) and labels the runs a, b, c, ...: as in ranx, a run's mean carries the letters of the runs it is
significantly better than.

Per-query values come from ``rankk_cli.evaluate`` with trec_eval ``-c`` semantics: every judged query counts, a
query missing from a run scores 0, so all vectors are aligned on the same query list.

Library use (``rankk report`` and notebooks): ``paired_test``, ``permutation_test``, ``correct``,
``effect_size``, ``mean_delta_ci``, ``win_tie_loss``, ``compare_results`` / ``compare_all_pairs`` (rows from
``EvalResult`` objects), ``letters`` and ``plot_deltas``.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from rankk_cli.errors import RankkError
from rankk_cli.evaluate import UNDEFINED, cell

TESTS = {"t": "paired t-test", "permutation": "paired randomisation test", "wilcoxon": "Wilcoxon signed-rank test"}
CORRECTIONS = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "no"}
CI_LEVEL = 0.95
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SUPERSCRIPT = dict(zip(LETTERS, "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖ𐞥ʳˢᵗᵘᵛʷˣʸᶻ"))
TIE_TOLERANCE = 1e-12  # per-query deltas this small count as ties (float noise between identical rankings)


# ----------------------------------------------------------------------------------------------------------
# statistics


def permutation_test(a, b, permutations: int = 10000, seed: int = 42) -> float:
    """Two-sided paired randomisation test of mean(b - a) = 0 (random sign flips of the per-query deltas).

    With 2**n <= permutations every sign pattern is enumerated (an exact p-value); otherwise ``permutations``
    random patterns are drawn with ``seed`` and p = (hits + 1) / (permutations + 1).
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = len(d)
    if n == 0 or np.all(np.abs(d) <= TIE_TOLERANCE):
        return 1.0
    observed = abs(d.mean())
    eps = 1e-12 * max(1.0, observed)
    if n < 63 and 2 ** n <= permutations:
        codes = np.arange(2 ** n, dtype=np.int64)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(n)) & 1)
        means = np.abs(signs @ d) / n
        return float(np.mean(means >= observed - eps))
    rng = np.random.default_rng(seed)
    hits, done, chunk = 0, 0, max(1, min(permutations, 2_000_000 // max(n, 1)))
    while done < permutations:
        k = min(chunk, permutations - done)
        signs = rng.integers(0, 2, size=(k, n), dtype=np.int8) * 2 - 1
        hits += int(np.count_nonzero(np.abs(signs @ d) / n >= observed - eps))
        done += k
    return (hits + 1) / (permutations + 1)


def undefined_test(a, b, test: str = "t") -> str | None:
    """Why the paired ``test`` of ``a`` and ``b`` has no p-value (None when it has one): fewer than two queries
    (no test has a null distribution there), or a t-test of a constant non-zero difference (zero variance: t is
    infinite, the p-value is not a number)."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    if len(d) < 2:
        return f"n = {len(d)} {'query' if len(d) == 1 else 'queries'}, a paired test needs at least 2"
    if np.all(np.abs(d) <= TIE_TOLERANCE):
        return None  # no difference at all: p = 1
    if test == "t" and np.all(np.abs(d - d[0]) <= TIE_TOLERANCE):
        return (f"every per-query delta is {d[0]:+.4g}: zero variance, so the t statistic is infinite and its "
                "p-value undefined")
    return None


def paired_test(a, b, test: str = "t", permutations: int = 10000, seed: int = 42) -> float:
    """Two-sided p-value that runs ``a`` and ``b`` (aligned per-query values) have the same mean.

    No difference at all (n >= 2) -> 1.0. Undefined (``undefined_test``: n < 2, or a t-test of a constant
    non-zero difference) -> NaN: not significant, null in JSON, – in tables, and the commands warn.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test needs two aligned 1-d vectors, got shapes {a.shape} and {b.shape}")
    d = b - a
    if undefined_test(a, b, test) is not None:
        return float("nan")
    if np.all(np.abs(d) <= TIE_TOLERANCE):
        return 1.0
    if test == "permutation":
        return permutation_test(a, b, permutations, seed)
    from scipy import stats

    if test == "t":
        p = stats.ttest_rel(b, a).pvalue
    elif test == "wilcoxon":
        p = stats.wilcoxon(b, a).pvalue
    else:
        raise ValueError(f"unknown test {test!r}; expected one of {', '.join(TESTS)}")
    p = float(p)
    return p if math.isnan(p) else min(1.0, max(0.0, p))  # no number from scipy: undefined, warned


def correct(pvalues, method: str = "holm") -> np.ndarray:
    """Corrected p-values: Holm's step-down or Bonferroni (family-wise error), Benjamini-Hochberg (false discovery
    rate, scipy's ``false_discovery_control``), or none; capped at 1."""
    p = np.asarray(pvalues, dtype=np.float64)
    defined = ~np.isnan(p)
    if not defined.all():  # an undefined test is no test: the family is the defined ones, NaN stays NaN
        out = p.copy()
        out[defined] = correct(p[defined], method)
        return out
    m = len(p)
    if method == "none" or m == 0:
        return p.copy()
    if method == "bonferroni":
        return np.minimum(1.0, p * m)
    if method == "bh":
        from scipy.stats import false_discovery_control

        return np.minimum(1.0, np.asarray(false_discovery_control(p, method="bh"), dtype=np.float64))
    if method == "holm":
        order = np.argsort(p, kind="stable")
        adjusted = np.empty(m)
        running = 0.0
        for i, idx in enumerate(order):
            running = max(running, min(1.0, (m - i) * p[idx]))
            adjusted[idx] = running
        return adjusted
    raise ValueError(f"unknown correction {method!r}; expected one of {', '.join(CORRECTIONS)}")


def holm(pvalues) -> np.ndarray:
    """Holm-adjusted p-values (``correct(pvalues, "holm")``)."""
    return correct(pvalues, "holm")


def bonferroni(pvalues) -> np.ndarray:
    """Bonferroni-adjusted p-values (``correct(pvalues, "bonferroni")``)."""
    return correct(pvalues, "bonferroni")


def _deltas(a, b) -> np.ndarray:
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    return np.zeros_like(d) if np.all(np.abs(d) <= TIE_TOLERANCE) else d


def effect_size(a, b) -> float:
    """Cohen's d_z of the paired deltas ``b - a``: their mean over their standard deviation (n - 1).

    Defined where it can be: no difference at all -> 0.0; a constant non-zero difference -> +-inf; fewer than
    two queries -> NaN."""
    d = _deltas(a, b)
    if len(d) < 2:
        return float("nan")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / sd


def mean_delta_ci(a, b, level: float = CI_LEVEL) -> tuple[float, float]:
    """Two-sided ``level`` confidence interval of the mean delta ``b - a`` (Student t with n - 1 degrees of
    freedom, the interval of the paired t-test); (NaN, NaN) with fewer than two queries."""
    d = _deltas(a, b)
    n = len(d)
    if n < 2:
        return float("nan"), float("nan")
    from scipy import stats

    mean = float(d.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(d.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def win_tie_loss(a, b, tolerance: float = TIE_TOLERANCE) -> tuple[int, int, int]:
    """Queries where ``b`` beats, ties with, loses to ``a``."""
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    wins = int(np.count_nonzero(d > tolerance))
    losses = int(np.count_nonzero(d < -tolerance))
    return wins, len(d) - wins - losses, losses


# ----------------------------------------------------------------------------------------------------------
# comparison rows


@dataclass
class ComparisonRow:
    run: str
    baseline: str
    measure: str
    n: int
    baseline_mean: float
    mean: float
    delta: float
    effect_size: float  # Cohen's d_z of the per-query deltas
    ci_low: float  # 95% confidence interval of the mean delta
    ci_high: float
    p_value: float
    p_corrected: float
    test: str
    correction: str
    wins: int
    ties: int
    losses: int
    significant: bool
    baseline_excluded: int | None = None  # (qid, docid) pairs --exclude dropped from the baseline / this run
    excluded: int | None = None

    @property
    def marker(self) -> str:
        return "*" if self.significant else ""


def _aligned(baseline, other, measure: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-query vectors of one measure on the baseline's query list (queries a run lacks score 0)."""
    j_base = baseline.measures.index(measure)
    j_other = other.measures.index(measure)
    a = np.asarray(baseline.values[:, j_base], dtype=np.float64)
    if list(other.qids) == list(baseline.qids):
        return a, np.asarray(other.values[:, j_other], dtype=np.float64)
    where = {q: i for i, q in enumerate(other.qids)}
    b = np.array([other.values[where[q], j_other] if q in where else 0.0 for q in baseline.qids])
    return a, b


def _row(baseline, other, m: str, test: str, correction: str, permutations: int, seed: int) -> ComparisonRow:
    a, b = _aligned(baseline, other, m)
    w, t, l = win_tie_loss(a, b)
    low, high = mean_delta_ci(a, b)
    return ComparisonRow(
        run=other.run, baseline=baseline.run, measure=m, n=len(a),
        baseline_mean=float(a.mean()) if len(a) else float("nan"),
        mean=float(b.mean()) if len(b) else float("nan"),
        delta=float((b - a).mean()) if len(a) else float("nan"),
        effect_size=effect_size(a, b), ci_low=low, ci_high=high,
        p_value=paired_test(a, b, test, permutations, seed), p_corrected=float("nan"),
        test=test, correction=correction, wins=w, ties=t, losses=l, significant=False,
        baseline_excluded=getattr(baseline, "excluded", None), excluded=getattr(other, "excluded", None))


def _check(test: str, correction: str) -> None:
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}")
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}")


def _correct_rows(rows: list[ComparisonRow], correction: str, alpha: float) -> list[ComparisonRow]:
    adjusted = correct([r.p_value for r in rows], correction)
    for r, p in zip(rows, adjusted):
        r.p_corrected = float(p)
        r.significant = bool(p < alpha)
    return rows


def compare_results(baseline, others: Sequence, measures: Sequence[str] | None = None, test: str = "t",
                    correction: str = "holm", alpha: float = 0.05, permutations: int = 10000,
                    seed: int = 42) -> list[ComparisonRow]:
    """Rows for every (run, measure) of ``others`` against ``baseline`` (``EvalResult`` objects, trec_eval -c).

    The correction runs over the whole family of (run, measure) comparisons returned.
    """
    _check(test, correction)
    measures = list(measures or baseline.measures)
    rows = [_row(baseline, other, m, test, correction, permutations, seed) for other in others for m in measures]
    return _correct_rows(rows, correction, alpha)


def compare_all_pairs(results: Sequence, measures: Sequence[str] | None = None, test: str = "t",
                      correction: str = "holm", alpha: float = 0.05, permutations: int = 10000,
                      seed: int = 42) -> list[ComparisonRow]:
    """Rows for every unordered pair of ``results`` (the earlier one as ``baseline``) and measure; the correction
    runs over all of them."""
    _check(test, correction)
    measures = list(measures or results[0].measures)
    rows = [_row(results[i], results[j], m, test, correction, permutations, seed)
            for i in range(len(results)) for j in range(i + 1, len(results)) for m in measures]
    return _correct_rows(rows, correction, alpha)


def letters(runs: Sequence[str], rows: Sequence[ComparisonRow]) -> tuple[dict, dict]:
    """``({run: letter}, {(run, measure): letters of the runs it is significantly better than})`` for
    all-pairs rows (ranx's superscripts)."""
    letter = {run: LETTERS[i] for i, run in enumerate(runs)}
    better: dict = {(run, r.measure): [] for run in runs for r in rows}
    for r in rows:
        if r.significant and r.delta > 0:
            better[(r.run, r.measure)].append(letter[r.baseline])
        elif r.significant and r.delta < 0:
            better[(r.baseline, r.measure)].append(letter[r.run])
    return letter, {k: "".join(sorted(v)) for k, v in better.items()}


# ----------------------------------------------------------------------------------------------------------
# plot


def plot_deltas(baseline, others: Sequence, measures: Sequence[str], rows: Sequence[ComparisonRow],
                path: str | Path) -> Path:
    """PNG of per-query deltas: one panel per (run, measure), sorted bars, wins green, losses red."""
    return plot_pairs([(baseline, other) for other in others], measures, rows, path)


def plot_pairs(pairs: Sequence, measures: Sequence[str], rows: Sequence[ComparisonRow], path: str | Path) -> Path:
    """``plot_deltas`` for any (baseline, run) pairs: one row of panels per pair (``--all-pairs``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rankk_cli.runs import atomic_path

    path = Path(path)
    by_key = {(r.baseline, r.run, r.measure): r for r in rows}
    nrows, ncols = len(pairs), len(measures)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.8 * ncols, 4.0 * nrows), squeeze=False)
    for i, (baseline, other) in enumerate(pairs):
        for j, m in enumerate(measures):
            ax = axes[i][j]
            a, b = _aligned(baseline, other, m)
            d = np.sort(b - a)[::-1]
            colours = np.where(d > TIE_TOLERANCE, "#2e7d32", np.where(d < -TIE_TOLERANCE, "#c62828", "#9e9e9e"))
            x = np.arange(len(d))
            ax.bar(x, d, width=0.85, color=colours, edgecolor="none")
            ax.axhline(0.0, color="black", linewidth=0.8)
            row = by_key.get((baseline.run, other.run, m))
            mean = float(d.mean()) if len(d) else 0.0
            ax.axhline(mean, color="#1565c0", linestyle="--", linewidth=1.2)
            ax.annotate(f"mean Δ = {mean:+.4f}", xy=(len(d) - 1 if len(d) else 0, mean), xytext=(0, 4),
                        textcoords="offset points", ha="right", va="bottom", color="#1565c0", fontsize=9)
            title = f"{other.run} vs {baseline.run}: {m}"
            if row is not None:
                corr = "" if row.correction == "none" else f", {CORRECTIONS[row.correction]}-corrected"
                title += (f"\nwins/ties/losses {row.wins}/{row.ties}/{row.losses}, d = {row.effect_size:.2f}, "
                          f"p = {row.p_corrected:.3g}{corr}{' *' if row.significant else ''}")
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(f"queries ({len(d)}), sorted by Δ")
            ax.set_ylabel(f"Δ {m} (run − baseline)")
            ax.set_xlim(-0.5, max(len(d), 1) - 0.5)
            lim = max(float(np.abs(d).max()) if len(d) else 0.0, 1e-3) * 1.15
            ax.set_ylim(-lim, lim)
            ax.grid(axis="y", alpha=0.3)
    from matplotlib.patches import Patch

    axes[0][0].legend(handles=[Patch(color="#2e7d32", label="run better"), Patch(color="#c62828", label="baseline better")],
                      loc="lower left", fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------
# rendering


def _p(value: float) -> str:
    if math.isnan(value):
        return UNDEFINED
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Text for LaTeX: control characters escaped first (``cell``: never a broken row), then each special
    character replaced in one pass (so ``\\``'s ``\\textbackslash{}`` keeps its braces)."""
    return "".join(_LATEX.get(ch, ch) for ch in cell(text))


_latex_escape = latex_escape


TSV_COLUMNS = ["run", "baseline", "measure", "n", "baseline_mean", "mean", "delta", "effect_size", "ci_low",
               "ci_high", "p_value", "p_corrected", "test", "correction", "wins", "ties", "losses", "significant"]


def _finite(value):
    """JSON has no NaN or infinity: such a number is null there."""
    return value if not isinstance(value, float) or math.isfinite(value) else None


def _row_dict(r: ComparisonRow) -> dict:
    """The row as a dict; the excluded counts only when --exclude was given."""
    d = asdict(r)
    if r.excluded is None and r.baseline_excluded is None:
        del d["excluded"], d["baseline_excluded"]
    return d


def _json_row(r: ComparisonRow) -> dict:
    return {k: _finite(v) for k, v in {**_row_dict(r), "marker": r.marker}.items()}


def _d(value: float) -> str:
    return UNDEFINED if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                            else f"{value:+.2f}")


def _ci(r: ComparisonRow, digits: int = 4) -> str:
    if math.isnan(r.ci_low):
        return UNDEFINED
    return f"[{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}]"


def _caption(rows: list[ComparisonRow], alpha: float, all_pairs: bool) -> str:
    first = rows[0]
    what = "comparisons (all pairs)" if all_pairs else "comparisons"
    mark = "a letter: significantly better than that run" if all_pairs else "*"
    return (f"{TESTS[first.test]}, {CORRECTIONS[first.correction]} correction over {len(rows)} {what}; {mark} at "
            f"corrected p < {alpha:g}; d = Cohen's d_z of the per-query deltas; 95% CI of the mean delta "
            f"(t, n - 1 df); n = {first.n} queries (trec_eval -c)")


def render(rows: list[ComparisonRow], fmt: str, alpha: float, out=None, runs: Sequence[str] | None = None) -> None:
    """Print the rows; ``runs`` (all the runs, in order) means all-pairs rows, labelled a, b, c, ..."""
    out = out or sys.stdout
    all_pairs = runs is not None
    letter, better = letters(runs, rows) if all_pairs else ({}, {})
    measures = list(dict.fromkeys(r.measure for r in rows))
    if fmt == "json":
        if not all_pairs:
            out.write(json.dumps([_json_row(r) for r in rows], indent=1) + "\n")
            return
        means = {(r.baseline, r.measure): r.baseline_mean for r in rows}
        means.update({(r.run, r.measure): r.mean for r in rows})
        systems = [{"run": run, "letter": letter[run],
                    "means": {m: _finite(means[(run, m)]) for m in measures},
                    "better_than": {m: list(better[(run, m)]) for m in measures}} for run in runs]
        pairs = [{**_json_row(r), "run_letter": letter[r.run], "baseline_letter": letter[r.baseline]} for r in rows]
        out.write(json.dumps({"systems": systems, "pairs": pairs}, indent=1) + "\n")
        return
    if fmt == "tsv":
        cols = TSV_COLUMNS + (["run_letter", "baseline_letter"] if all_pairs else [])
        if any(r.excluded is not None for r in rows):
            cols += ["baseline_excluded", "excluded"]
        lines = ["\t".join(cols)]
        for r in rows:
            d = {**asdict(r), "run_letter": letter.get(r.run), "baseline_letter": letter.get(r.baseline)}
            lines.append("\t".join((f"{d[c]:.6g}" if math.isfinite(d[c]) else UNDEFINED if math.isnan(d[c])
                                    else f"{d[c]:.6g}") if isinstance(d[c], float)
                                   else cell(str(d[c])) for c in cols))
        out.write("\n".join(lines) + "\n")
        return
    if not rows:
        return
    first = rows[0]
    caption = _caption(rows, alpha, all_pairs)
    if any(r.excluded is not None for r in rows):
        dropped = {first.baseline: first.baseline_excluded, **{r.run: r.excluded for r in rows}}
        caption += "; excluded (qid, docid) pairs dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items())
    if fmt == "latex":
        out.write(_latex(rows, measures, caption, runs, letter, better) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    from rich.markup import escape

    console = Console(file=out, soft_wrap=True, width=None if getattr(out, "isatty", lambda: False)() else 240)
    if all_pairs:
        means = {(r.baseline, r.measure): r.baseline_mean for r in rows}
        means.update({(r.run, r.measure): r.mean for r in rows})
        summary = Table(title="all pairs: letters = significantly better than that run", caption=None)
        summary.add_column("", no_wrap=True)
        summary.add_column("run", no_wrap=True)
        for m in measures:
            summary.add_column(m, justify="right", no_wrap=True)
        for run in runs:
            summary.add_row(letter[run], escape(cell(run)), *(f"{means[(run, m)]:.4f}"
                                                + "".join(_SUPERSCRIPT[c] for c in better[(run, m)])
                                                for m in measures))
        console.print(summary)
    table = Table(title="all pairs" if all_pairs else f"baseline: {escape(cell(first.baseline))}",
                  caption=escape(cell(caption)))
    columns = [("run", "left")] + ([("vs", "left")] if all_pairs else []) + [
        ("measure", "left"), ("vs mean" if all_pairs else "baseline", "right"), ("mean", "right"), ("Δ", "right"),
        ("95% CI", "right"), ("d", "right"), ("p", "right"), (f"p ({first.correction})", "right"),
        ("W/T/L", "right"), ("sig", "center")]
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True)
    for r in rows:
        style = ("green" if r.delta > 0 else "red") if r.significant else None
        lead = [escape(cell(r.run))] + ([escape(cell(r.baseline))] if all_pairs else [])
        table.add_row(*lead, r.measure, f"{r.baseline_mean:.4f}", f"{r.mean:.4f}", f"{r.delta:+.4f}", _ci(r),
                      _d(r.effect_size), _p(r.p_value), _p(r.p_corrected), f"{r.wins}/{r.ties}/{r.losses}",
                      r.marker, style=style)
    console.print(table)


def _latex(rows, measures, caption, runs, letter, better) -> str:
    first = rows[0]
    cell = {(r.run, r.measure): r for r in rows}
    head = [r"\begin{table}[t]", r"\centering"]
    if runs is None:  # against the baseline: mean with marker, then delta, its 95% CI and d
        lines = head + [r"\begin{tabular}{l" + "r" * len(measures) + "}", r"\toprule",
                        "Run & " + " & ".join(_latex_escape(m) for m in measures) + r" \\", r"\midrule",
                        _latex_escape(first.baseline) + " (baseline) & "
                        + " & ".join(f"{next(r for r in rows if r.measure == m).baseline_mean:.4f}"
                                     for m in measures) + r" \\"]
        for run in dict.fromkeys(r.run for r in rows):
            cells = []
            for m in measures:
                r = cell[(run, m)]
                mark = r"$^{*}$" if r.significant else ""
                cells.append(f"{r.mean:.4f}{mark} ({r.delta:+.4f} {_ci(r)}, $d$ = {_d(r.effect_size)})")
            lines.append(_latex_escape(run) + " & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}",
                  r"\caption{" + _latex_escape(f"Mean (delta vs {first.baseline}, its 95% CI, effect size d). "
                                               + caption) + "}", r"\end{table}"]
        return "\n".join(lines)
    # all pairs: ranx-style table (letters of the runs each is significantly better than; best mean in bold),
    # then every pair with its delta, 95% CI, d and corrected p
    means = {(r.baseline, r.measure): r.baseline_mean for r in rows}
    means.update({(r.run, r.measure): r.mean for r in rows})
    best = {m: max(means[(run, m)] for run in runs) for m in measures}
    lines = head + [r"\begin{tabular}{ll" + "r" * len(measures) + "}", r"\toprule",
                    " & Run & " + " & ".join(_latex_escape(m) for m in measures) + r" \\", r"\midrule"]
    for run in runs:
        cells = []
        for m in measures:
            value = f"{means[(run, m)]:.4f}"
            if means[(run, m)] == best[m]:
                value = r"\textbf{" + value + "}"
            sup = better[(run, m)]
            cells.append(value + (r"$^{" + sup + "}$" if sup else ""))
        lines.append(f"{letter[run]} & " + _latex_escape(run) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\medskip", "", r"\begin{tabular}{llrrrr}", r"\toprule",
              r"Pair & Measure & $\Delta$ & 95\% CI & $d$ & $p$ \\", r"\midrule"]
    for r in rows:
        lines.append(f"{letter[r.run]} vs {letter[r.baseline]} & {_latex_escape(r.measure)} & {r.delta:+.4f} & "
                     f"{_ci(r)} & {_d(r.effect_size)} & {_p(r.p_corrected)}{r'$^{*}$' if r.significant else ''}"
                     r" \\")
    lines += [r"\bottomrule", r"\end{tabular}",
              r"\caption{" + _latex_escape("Superscripts: significantly better than the run of that letter; "
                                           "Delta = second minus first of the pair. " + caption) + "}",
              r"\end{table}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# the command


def compare_command(baseline: Path, runs: Sequence[Path], qrels: str, measures: Sequence[str], test: str = "t",
                    correction: str = "holm", alpha: float = 0.05, permutations: int = 10000, seed: int = 42,
                    plot: Path | None = None, fmt: str = "table", all_pairs: bool = False,
                    exclude: Path | None = None) -> list[ComparisonRow]:
    from rankk_cli.errors import check_input_file, file_error
    from rankk_cli.outputs import check_not_input
    from rankk_cli.evaluate import (QrelsSource, evaluate_path, note, parse_measures, report_coverage, unique_names,
                                    warn_qrels)

    if not 0.0 < alpha < 1.0:
        raise RankkError(f"--alpha: expected a number between 0 and 1, found {alpha}")
    if permutations < 1:
        raise RankkError(f"--permutations: expected a positive number, found {permutations}")
    if not runs:
        raise RankkError("compare: expected at least one run besides the baseline, found none")
    if all_pairs and len(runs) + 1 > len(LETTERS):
        raise RankkError(f"--all-pairs: expected at most {len(LETTERS)} runs (one letter each), found "
                         f"{len(runs) + 1}")
    if plot is not None:  # before any work, as -o and --latex elsewhere
        from rankk_cli.outputs import check_output_path

        check_output_path(plot, "--plot")
    parsed = parse_measures(measures)
    paths = [Path(baseline), *map(Path, runs)]
    for path in paths:
        check_input_file(path, "run file")
    check_not_input(plot, "--plot", [*paths, qrels, exclude])
    from rankk_cli.exclude import load_exclusions

    exclusions = load_exclusions(exclude)
    names = unique_names(paths)
    source = QrelsSource(qrels)
    # every run is read and scored before any note is printed: a bad run is then the only line on stderr
    results = [evaluate_path(path, source, parsed, run_queries_only=False, name=name, exclusions=exclusions)
               for path, name in zip(paths, names)]
    for name, result in zip(names, results):
        if result.cached:
            note(f"{name}: reused cached results")
        report_coverage(result, qrels, run_queries_only=False, exclusions=exclusions)
    if not results[0].qids:
        raise RankkError(f"{qrels}: expected judged queries to compare on, found none")
    measure_names = [str(m) for m in parsed]
    if all_pairs:
        rows = compare_all_pairs(results, measure_names, test, correction, alpha, permutations, seed)
        pairs = [(results[i], results[j]) for i in range(len(results)) for j in range(i + 1, len(results))]
    else:
        rows = compare_results(results[0], results[1:], measure_names, test, correction, alpha, permutations, seed)
        pairs = [(results[0], other) for other in results[1:]]
    warn_qrels(source.get(), qrels, parsed)
    warn_undefined(rows, pairs, test)
    if plot is not None:
        try:
            plot_pairs(pairs, measure_names, rows, plot)
        except OSError as exc:
            raise file_error(plot, None, "cannot write the output (--plot): "
                             f"{' '.join(str(exc.strerror or exc).split())}") from None
        note(f"wrote {plot}")
    render(rows, fmt, alpha, runs=names if all_pairs else None)
    return rows


def warn_undefined(rows: Sequence[ComparisonRow], pairs: Sequence, test: str) -> None:
    """One warning per comparison whose p-value is undefined (``undefined_test``): not significant."""
    from rankk_cli.evaluate import warn

    by = {(b.run, o.run): (b, o) for b, o in pairs}
    for r in rows:
        if not math.isnan(r.p_value):
            continue
        b, o = by[(r.baseline, r.run)]
        why = undefined_test(*_aligned(b, o, r.measure), test) or "the test returned no number"
        warn(f"{r.run} vs {r.baseline}, {r.measure}: no p-value ({why}): not significant (null in JSON, – in "
             "tables)")
