"""rankk compare, issue 12: Benjamini-Hochberg, effect size and 95% CI of the mean delta in every format, all-pairs
mode with ranx-style letters, and the randomisation test cross-checked against scipy.stats.permutation_test."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from scipy import stats

from rankk_cli.compare import (compare_all_pairs, compare_results, correct, effect_size, letters, mean_delta_ci,
                               paired_test, permutation_test)
from rankk_cli.evaluate import EvalResult


def vectors(seed: int, n: int = 40, shift: float = 0.05):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, n)
    b = np.clip(a + rng.normal(shift, 0.2, n), 0, 1)
    b[: n // 5] = a[: n // 5]  # ties: zero deltas, which a sign flip leaves alone
    return a, b


def bh_by_hand(p):
    """Benjamini-Hochberg step-up, written the plain way: p_(i) * m / i, made monotone from the largest down."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted


# ----------------------------------------------------------------------------------------------------------
# Benjamini-Hochberg


def test_bh_hand_checked_and_against_scipy():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04 -> *4/1, *4/2, *4/3, *4/4 = 0.02, 0.02, 0.04, 0.04 (already monotone)
    assert correct(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(0, 0.2, int(rng.integers(1, 30))) ** 2
        ours = correct(q, "bh")
        assert ours == pytest.approx(bh_by_hand(list(q)), abs=1e-15)
        assert ours == pytest.approx(stats.false_discovery_control(q, method="bh"), abs=1e-15)
        assert np.all(ours <= correct(q, "holm") + 1e-15)  # FDR control is never stricter than Holm
    assert list(correct([], "bh")) == []


def test_bh_through_the_cli_over_the_whole_family(rankk, data):
    root = data / "trec-dl" / "dl20"
    runs = [root / "runs" / "bm25.trec", root / "runs" / "splade-pp-ed.trec"]
    args = ["compare", *runs, "--qrels", root / "qrels.txt", "-m", "nDCG@10", "-m", "AP", "-m", "RR@10",
            "--format", "json"]
    rows = json.loads(rankk(*args, "--correction", "bh").stdout)
    assert [r["correction"] for r in rows] == ["bh"] * 3
    raw = [r["p_value"] for r in rows]
    assert [r["p_corrected"] for r in rows] == pytest.approx(list(stats.false_discovery_control(raw)), abs=1e-15)
    assert [r["p_value"] for r in json.loads(rankk(*args, "--correction", "none").stdout)] == raw


# ----------------------------------------------------------------------------------------------------------
# effect size and confidence interval


@pytest.mark.parametrize("seed", range(4))
def test_effect_size_and_ci_against_independent_formulas(seed):
    a, b = vectors(seed)
    d = list(b - a)
    assert effect_size(a, b) == pytest.approx(statistics.mean(d) / statistics.stdev(d), rel=1e-12)
    low, high = mean_delta_ci(a, b)
    ci = stats.ttest_rel(b, a).confidence_interval(0.95)
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    # the interval excludes 0 exactly when the uncorrected paired t-test rejects at 0.05
    assert (low > 0 or high < 0) == (paired_test(a, b, "t") < 0.05)


def test_effect_size_and_ci_degenerate_cases():
    a = np.array([0.2, 0.5, 0.7])
    assert effect_size(a, a.copy()) == 0.0 and mean_delta_ci(a, a.copy()) == (0.0, 0.0)
    assert effect_size(a, a + 0.25) == math.inf and mean_delta_ci(a, a + 0.25) == pytest.approx((0.25, 0.25))
    assert effect_size(a, a - 0.25) == -math.inf
    assert math.isnan(effect_size(a[:1], a[:1] + 1)) and all(map(math.isnan, mean_delta_ci(a[:1], a[:1] + 1)))


def test_effect_size_and_ci_in_every_format(rankk, data):
    root = data / "trec-dl" / "dl19"
    args = ["compare", root / "runs" / "bm25.trec", root / "runs" / "splade-pp-ed.trec", "--qrels",
            root / "qrels.txt", "-m", "nDCG@10"]
    [row] = json.loads(rankk(*args, "--format", "json").stdout)
    d = row["effect_size"]
    assert row["ci_low"] < row["delta"] < row["ci_high"]
    tsv = rankk(*args, "--format", "tsv").stdout.splitlines()
    header, values = tsv[0].split("\t"), tsv[1].split("\t")
    got = dict(zip(header, values))
    assert float(got["effect_size"]) == pytest.approx(d, rel=1e-5)
    assert float(got["ci_low"]) == pytest.approx(row["ci_low"], rel=1e-5)
    assert float(got["ci_high"]) == pytest.approx(row["ci_high"], rel=1e-5)
    ci_text = f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
    table = rankk(*args).stdout
    assert ci_text in table and f"{d:+.2f}" in table and "95% CI" in table
    latex = rankk(*args, "--format", "latex").stdout
    assert ci_text in latex and f"$d$ = {d:+.2f}" in latex and r"95\% CI" in latex


# ----------------------------------------------------------------------------------------------------------
# all pairs


def result(name: str, values) -> EvalResult:
    values = np.asarray(values, dtype=np.float64)
    qids = [f"q{i}" for i in range(len(values))]
    return EvalResult(name, ["nDCG@10"], qids, values[:, None], {"nDCG@10": float(values.mean())})


def test_all_pairs_rows_letters_and_correction_family():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.6, 50)
    systems = [result("weak", base), result("strong", np.clip(base + rng.normal(0.25, 0.1, 50), 0, 1)),
               result("same", np.clip(base + rng.normal(0.0, 0.1, 50), 0, 1)),
               result("best", np.clip(base + rng.normal(0.35, 0.1, 50), 0, 1))]
    rows = compare_all_pairs(systems, test="t", correction="holm")
    assert [(r.baseline, r.run) for r in rows] == [("weak", "strong"), ("weak", "same"), ("weak", "best"),
                                                 ("strong", "same"), ("strong", "best"), ("same", "best")]
    for r in rows:
        a = next(s for s in systems if s.run == r.baseline).values[:, 0]
        b = next(s for s in systems if s.run == r.run).values[:, 0]
        assert r.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-9)
        assert r.delta == pytest.approx((b - a).mean(), abs=1e-12)
    assert [r.p_corrected for r in rows] == pytest.approx(list(correct([r.p_value for r in rows], "holm")))
    letter, better = letters([s.run for s in systems], rows)
    assert letter == {"weak": "a", "strong": "b", "same": "c", "best": "d"}
    # every significant pair puts the loser's letter on the winner, and nothing else carries letters
    expected = {(s.run, "nDCG@10"): set() for s in systems}
    for r in rows:
        if r.significant:
            winner, loser = (r.run, r.baseline) if r.delta > 0 else (r.baseline, r.run)
            expected[(winner, "nDCG@10")].add(letter[loser])
    assert {k: set(v) for k, v in better.items()} == expected
    assert "a" in better[("strong", "nDCG@10")] and "a" in better[("best", "nDCG@10")]
    assert better[("weak", "nDCG@10")] == ""
    # against a baseline the family is smaller: the same pair's correction differs
    vs_weak = compare_results(systems[0], systems[1:], test="t", correction="holm")
    assert [r.p_value for r in vs_weak] == [r.p_value for r in rows[:3]]


def test_all_pairs_cli_table_latex_json_tsv(tmp_path, rankk, data):
    root = data / "trec-dl" / "dl19"
    bm25, splade = root / "runs" / "bm25.trec", root / "runs" / "splade-pp-ed.trec"
    # a third run: BM25 with its lower half of each ranking reversed (worse than both)
    lines = bm25.read_text().splitlines()
    by_q: dict = {}
    for line in lines:
        by_q.setdefault(line.split()[0], []).append(line.split())
    out = []
    for q, rows in by_q.items():
        docs = [r[2] for r in rows]
        docs = docs[10:20][::-1] + docs[:10] + docs[20:]
        out += [f"{q} Q0 {d} {i + 1} {100 - i} worse" for i, d in enumerate(docs)]
    worse = tmp_path / "worse.trec"
    worse.write_text("\n".join(out) + "\n")
    args = ["compare", bm25, splade, worse, "--qrels", root / "qrels.txt", "-m", "nDCG@10", "-m", "AP",
            "--all-pairs", "--correction", "bh"]
    js = rankk(*args, "--format", "json")
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert [s["letter"] for s in doc["systems"]] == ["a", "b", "c"]
    assert [(p["baseline"], p["run"]) for p in doc["pairs"]] == [("bm25", "splade-pp-ed")] * 2 + \
        [("bm25", "worse")] * 2 + [("splade-pp-ed", "worse")] * 2
    assert all({"effect_size", "ci_low", "ci_high", "run_letter", "baseline_letter"} <= set(p) for p in doc["pairs"])
    raw = [p["p_value"] for p in doc["pairs"]]
    assert [p["p_corrected"] for p in doc["pairs"]] == pytest.approx(list(stats.false_discovery_control(raw)))
    splade_sys = next(s for s in doc["systems"] if s["run"] == "splade-pp-ed")
    assert splade_sys["better_than"]["nDCG@10"] == ["a", "c"]  # SPLADE++ED beats BM25 and the worse run

    table = rankk(*args).stdout
    row = next(line for line in table.splitlines() if "splade-pp-ed" in line and "ᵃᶜ" in line)
    assert f"{splade_sys['means']['nDCG@10']:.4f}ᵃᶜ" in row
    latex = rankk(*args, "--format", "latex").stdout
    assert r"\textbf{" + f"{splade_sys['means']['nDCG@10']:.4f}" + r"}$^{ac}$" in latex
    assert "b vs a & nDCG@10" in latex and r"95\% CI" in latex
    tsv = rankk(*args, "--format", "tsv").stdout.splitlines()
    assert tsv[0].split("\t")[-2:] == ["run_letter", "baseline_letter"] and len(tsv) == 7
    png = tmp_path / "pairs.png"
    plotted = rankk(*args, "--plot", png)
    assert plotted.returncode == 0 and png.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------------------------------------
# the randomisation test against scipy.stats.permutation_test (same statistic: the mean of the paired deltas)


def scipy_permutation(a, b, n_resamples, seed=0):
    return stats.permutation_test((b, a), lambda x, y, axis=-1: np.mean(x - y, axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=n_resamples, alternative="two-sided",
                                  random_state=seed).pvalue


@pytest.mark.parametrize("seed,n", [(0, 8), (1, 13), (2, 16)])
def test_permutation_exact_equals_scipy_exact(seed, n):
    # 2**n <= permutations: both enumerate every sign pattern, so the p-values are equal
    a, b = vectors(seed, n=n, shift=0.1)
    ours = permutation_test(a, b, permutations=2 ** n)
    assert ours == pytest.approx(scipy_permutation(a, b, np.inf), abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_permutation_monte_carlo_within_a_stated_tolerance_of_scipy_exact(seed):
    # n = 17: 131,072 patterns, scipy enumerates them all; ours draws B = 20,000 random patterns. Our estimate's
    # standard error is sqrt(p (1 - p) / B) <= 0.0036; the stated tolerance is 4 standard errors + 1/B.
    # (These seeds give exact p-values of about 0.036, 0.089 and 0.0038: the range where a marker flips.)
    a, b = vectors(seed + 10, n=17, shift=0.2)
    exact = scipy_permutation(a, b, np.inf)
    assert 0.001 < exact < 0.1
    draws = 20000
    ours = permutation_test(a, b, permutations=draws, seed=seed)
    tolerance = 4 * math.sqrt(max(exact * (1 - exact), 1e-4) / draws) + 1 / draws
    assert abs(ours - exact) <= tolerance, (ours, exact, tolerance)
    # and scipy's own Monte Carlo, with as many resamples, lands within twice that of ours
    assert abs(ours - scipy_permutation(a, b, draws, seed=seed)) <= 2 * tolerance
