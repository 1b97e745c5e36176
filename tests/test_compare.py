"""rankk compare: paired tests against scipy / independent implementations, corrections, alignment, CLI."""

from __future__ import annotations

import itertools
import math
import json
import random

import numpy as np
import pytest
from scipy import stats

import ir_measures

from rankk_cli.compare import compare_results, correct, paired_test, permutation_test, win_tie_loss
from rankk_cli.evaluate import QrelsSource, evaluate_path, parse_measures


def vectors(seed: int, n: int = 40):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, n)
    b = np.clip(a + rng.normal(0.05, 0.2, n), 0, 1)
    b[: n // 5] = a[: n // 5]  # some ties
    return a, b


@pytest.mark.parametrize("seed", range(4))
def test_t_and_wilcoxon_match_scipy(seed):
    a, b = vectors(seed)
    assert paired_test(a, b, "t") == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-12)
    assert paired_test(a, b, "wilcoxon") == pytest.approx(stats.wilcoxon(b, a).pvalue, rel=1e-12)


def independent_exact_permutation(d):
    """Every sign pattern, written the plain way."""
    obs = abs(sum(d) / len(d))
    hits = total = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        total += 1
        if abs(sum(s * x for s, x in zip(signs, d)) / len(d)) >= obs - 1e-12:
            hits += 1
    return hits / total


@pytest.mark.parametrize("seed", range(3))
def test_permutation_exact_for_small_samples(seed):
    a, b = vectors(seed, n=11)
    d = list(b - a)
    p = paired_test(a, b, "permutation", permutations=10000)
    assert p == pytest.approx(independent_exact_permutation(d), abs=1e-12)
    sp = stats.permutation_test((b, a), lambda x, y: np.mean(x - y), permutation_type="samples",
                                n_resamples=np.inf, alternative="two-sided")
    assert p == pytest.approx(sp.pvalue, abs=1e-9)


def test_permutation_monte_carlo_agrees_with_an_independent_loop_and_is_seeded():
    a, b = vectors(7, n=50)
    d = b - a
    rnd = random.Random(123)
    obs = abs(d.mean())
    draws = 20000
    hits = sum(abs(sum(x if rnd.random() < 0.5 else -x for x in d) / len(d)) >= obs - 1e-12 for _ in range(draws))
    independent = (hits + 1) / (draws + 1)
    p = permutation_test(a, b, permutations=20000, seed=1)
    assert abs(p - independent) < 0.01
    assert p == permutation_test(a, b, permutations=20000, seed=1)  # reproducible with the seed
    assert 0 < p < 1


def test_degenerate_cases_are_defined_or_undefined_never_a_made_up_number():
    a = np.array([0.2, 0.5, 0.7])
    for test in ("t", "wilcoxon", "permutation"):
        assert paired_test(a, a.copy(), test) == 1.0  # no difference at all
        # fewer than two queries: no test has a null distribution (issue 15: not p = 1.0)
        assert math.isnan(paired_test(np.array([]), np.array([]), test))
        assert math.isnan(paired_test(a[:1], a[:1] + 0.3, test))
    # constant shift: zero variance, t infinite -- undefined, not p = 0.0 "significant"
    assert math.isnan(paired_test(a, a + 0.25, "t"))
    assert 0 < paired_test(a, a + 0.25, "permutation") <= 1  # defined for the sign-flip test
    assert list(correct([0.01, float("nan"), 0.02], "holm")[[0, 2]]) == pytest.approx([0.02, 0.02])
    assert math.isnan(correct([0.01, float("nan")], "bonferroni")[1])
    assert win_tie_loss(a, a) == (0, 3, 0)
    assert win_tie_loss(a, np.array([0.3, 0.5, 0.1])) == (1, 1, 1)


def test_holm_and_bonferroni_hand_checked():
    p = [0.01, 0.04, 0.03, 0.005]
    # Bonferroni: p * 4
    assert correct(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # Holm: sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone max 0.06
    assert correct(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert correct(p, "none") == pytest.approx(p)
    assert correct([0.5, 0.6], "bonferroni") == pytest.approx([1.0, 1.0])
    assert correct([0.5, 0.6], "holm") == pytest.approx([1.0, 1.0])
    assert correct([0.2], "holm") == pytest.approx([0.2])
    from rankk_cli.compare import bonferroni, holm

    assert list(holm(p)) == list(correct(p, "holm")) and list(bonferroni(p)) == list(correct(p, "bonferroni"))


def test_rows_use_aligned_trec_eval_c_vectors(tmp_path, data):
    root = data / "trec-dl" / "dl19"
    base = root / "runs" / "bm25.trec"
    # a run missing five judged queries: they must count as 0, aligned by qid
    lines = (root / "runs" / "splade-pp-ed.trec").read_text().splitlines()
    dropped = sorted({ln.split()[0] for ln in lines})[:5]
    partial = tmp_path / "partial.trec"
    partial.write_text("\n".join(ln for ln in lines if ln.split()[0] not in dropped) + "\n")
    measures = ["nDCG@10", "AP"]
    parsed = parse_measures(measures)
    source = QrelsSource(str(root / "qrels.txt"))
    rb = evaluate_path(base, source, parsed)
    rp = evaluate_path(partial, source, parsed)
    rows = compare_results(rb, [rp], measures, test="t", correction="bonferroni")

    qrels = list(ir_measures.read_trec_qrels(str(root / "qrels.txt")))
    qids = list(dict.fromkeys(q.query_id for q in qrels))
    for row, m in zip(rows, measures):
        ref = {}
        for path in (base, partial):
            vals = {x.query_id: x.value for x in ir_measures.iter_calc([ir_measures.parse_measure(m)], qrels,
                                                                       ir_measures.read_trec_run(str(path)))}
            ref[path] = np.array([vals[q] for q in qids])
        assert all(ref[partial][qids.index(q)] == 0 for q in dropped)
        a, b = ref[base], ref[partial]
        assert row.n == len(qids) == 43
        assert row.baseline_mean == pytest.approx(a.mean(), abs=1e-12)
        assert row.mean == pytest.approx(b.mean(), abs=1e-12)
        assert row.delta == pytest.approx((b - a).mean(), abs=1e-12)
        assert row.p_value == pytest.approx(stats.ttest_rel(b, a).pvalue, rel=1e-9)
        assert row.p_corrected == pytest.approx(min(1.0, 2 * row.p_value), rel=1e-12)
        assert (row.wins, row.ties, row.losses) == (int((b > a).sum()), int((b == a).sum()), int((b < a).sum()))
        assert row.significant == (row.p_corrected < 0.05)


def test_cli_json_plot_latex_and_errors(tmp_path, rankk, data):
    root = data / "trec-dl" / "dl20"
    base, other, qrels = root / "runs" / "bm25.trec", root / "runs" / "splade-pp-ed.trec", root / "qrels.txt"
    png = tmp_path / "out" / "deltas.png"
    res = rankk("compare", base, other, "--qrels", qrels, "-m", "nDCG@10", "-m", "R(rel=2)@100", "--test",
                "permutation", "--permutations", "2000", "--correction", "bonferroni", "--plot", png, "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["run"], r["measure"]) for r in rows] == [("splade-pp-ed", "nDCG@10"), ("splade-pp-ed", "R(rel=2)@100")]
    for r in rows:
        assert {"mean", "baseline_mean", "delta", "p_value", "p_corrected", "wins", "ties", "losses",
                "significant", "marker"} <= set(r)
        assert r["p_corrected"] == pytest.approx(min(1.0, 2 * r["p_value"]))
        assert r["wins"] + r["ties"] + r["losses"] == r["n"] == 54
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in png.parent.iterdir() if p.name != "deltas.png"]  # no temp files left

    latex = rankk("compare", base, other, "--qrels", qrels, "--format", "latex")
    assert latex.returncode == 0 and "\\begin{tabular}" in latex.stdout and "0.7197" in latex.stdout

    bad = rankk("compare", base, other, "--qrels", qrels, "--test", "anova")
    assert bad.returncode == 2 and "--test" in bad.stderr and "Traceback" not in bad.stderr
    missing_png = tmp_path / "never.png"
    missing = rankk("compare", base, tmp_path / "nope.trec", "--qrels", qrels, "--plot", missing_png)
    assert missing.returncode == 2 and "nope.trec: no such run file" in missing.stderr
    assert not missing_png.exists()
    help_text = rankk("compare", "--help").stdout
    assert "family" in help_text


def test_compare_rows_on_identical_runs_are_not_significant(tmp_path, data):
    root = data / "trec-dl" / "dl19"
    parsed = parse_measures(["nDCG@10"])
    source = QrelsSource(str(root / "qrels.txt"))
    r = evaluate_path(root / "runs" / "bm25.trec", source, parsed)
    for test in ("t", "wilcoxon", "permutation"):
        [row] = compare_results(r, [r], test=test)
        assert row.p_value == 1.0 and row.p_corrected == 1.0 and not row.significant
        assert (row.wins, row.ties, row.losses) == (0, 43, 0)
        assert not np.isnan(row.delta)
