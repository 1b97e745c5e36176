"""trec_eval's dialect in `rankk eval`: trec_eval measure names (-m ndcg_cut.10, map, P.10, ...) and its output
layout (--format trec), checked against pytrec_eval (trec_eval's own code) on runs generated here."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import pytrec_eval

from rankk_cli.errors import RankkError
from rankk_cli.evaluate import parse_measures, trec_name

TREC_MEASURES = ["ndcg_cut.10", "map", "recall.100", "P.10", "recip_rank", "ndcg_cut.5,20", "num_rel_ret",
                 "map_cut.20", "success.5", "ndcg", "bpref", "Rprec", "num_ret"]
# what pytrec_eval calls them (its result keys), i.e. the names trec_eval prints
TREC_KEYS = {"ndcg_cut_10", "map", "recall_100", "P_10", "recip_rank", "ndcg_cut_5", "ndcg_cut_20", "num_rel_ret",
             "map_cut_20", "success_5", "ndcg", "bpref", "Rprec", "num_ret"}
SUMMED = {"num_rel_ret", "num_ret", "num_q", "num_rel"}  # trec_eval sums counts in the `all` row


def generated(seed: int):
    """qrels {qid: {docid: grade}} and a run {qid: [(docid, score)]}: score ties, float32-equal scores, negative
    grades, judged queries missing from the run, run queries without judgements, unjudged documents."""
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(80)] + ["D1", "a", "zz", "x-1"]
    qrels, run = {}, {}
    for q in range(24):
        qid = str(100 + q * 7) if q % 3 else f"q{q}"  # numeric and non-numeric ids; byte order != numeric order
        if q < 20:
            judged = rng.choice(len(docs), size=int(rng.integers(1, 30)), replace=False)
            qrels[qid] = {docs[d]: int(rng.choice([-1, 0, 0, 1, 1, 2, 3])) for d in judged}
        if q < 16 or q >= 20:
            depth = int(rng.integers(1, 120))
            picked = rng.choice(len(docs), size=min(depth, len(docs)), replace=False)
            scores = rng.integers(0, 8, size=len(picked)).astype(float) / 4
            near = rng.random(len(picked)) < 0.1  # equal as float32, different as float64
            scores[near] += 1e-9
            run[qid] = [(docs[d], float(s)) for d, s in zip(picked, scores)]
    return qrels, run


def write(tmp_path, qrels, run, name="sys"):
    qpath = tmp_path / "qrels.txt"
    qpath.write_text("".join(f"{q} 0 {d} {g}\n" for q, docs in qrels.items() for d, g in docs.items()))
    rpath = tmp_path / f"{name}.trec"
    lines = []
    for q, ranked in run.items():
        for i, (d, s) in enumerate(sorted(ranked, key=lambda x: -x[1])):
            lines.append(f"{q} Q0 {d} {i + 1} {s!r} tag")
    rpath.write_text("\n".join(lines) + "\n")
    return qpath, rpath


def reference(qrels, run, names):
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, set(names))
    return evaluator.evaluate({q: {d: s for d, s in ranked} for q, ranked in run.items()})


def parse_trec_output(text: str) -> list[tuple[str, str, str]]:
    rows = []
    for line in text.splitlines():
        # trec_eval's printf("%-22s\t%s\t%6.4f\n"): the name padded to 22 characters, then two tabs
        assert re.fullmatch(r"\S+ *\t\S+\t\S+", line), line
        name, qid, value = line.split("\t")
        assert len(name) >= 22 and name == name.rstrip().ljust(max(22, len(name.rstrip()))), repr(name)
        rows.append((name.rstrip(), qid, value))
    return rows


def test_trec_names_are_the_ir_measures_measures():
    assert [str(m) for m in parse_measures(["ndcg_cut.10", "map", "recall.100", "P.10", "recip_rank"])] == \
        ["nDCG@10", "AP", "R@100", "P@10", "RR"]
    # a trec_eval name and its ir-measures spelling are one measure (one column, one cache entry)
    assert [str(m) for m in parse_measures(["ndcg_cut.10", "nDCG@10", "ndcg_cut_10", "P_10", "P@10"])] == \
        ["nDCG@10", "P@10"]
    assert [str(m) for m in parse_measures(["ndcg_cut.5,10"])] == ["nDCG@5", "nDCG@10"]
    assert len(parse_measures(["P"])) == 9  # trec_eval's `-m P`: its nine default cutoffs
    names = {str(m): trec_name(m) for m in parse_measures(["nDCG@10", "AP", "R@100", "P@10", "RR", "RR@10",
                                                           "R(rel=2)@100", "num_rel_ret", "AP@100", "Judged@10"])}
    assert names == {"nDCG@10": "ndcg_cut_10", "AP": "map", "R@100": "recall_100", "P@10": "P_10",
                     "RR": "recip_rank", "RR@10": "RR@10", "R(rel=2)@100": "R(rel=2)@100",
                     "NumRet(rel=1)": "num_rel_ret", "AP@100": "map_cut_100", "Judged@10": "Judged@10"}


@pytest.mark.parametrize("bad", ["ndcg_cutt.10", "gm_map", "P.ten", "recip rank"])
def test_unknown_trec_names_are_one_line(bad):
    with pytest.raises(RankkError, match=r"expected an ir-measures measure .* or a trec_eval name"):
        parse_measures([bad])


@pytest.mark.parametrize("seed", range(3))
def test_trec_layout_and_values_equal_pytrec_eval(tmp_path, rankk, seed):
    qrels, run = generated(seed)
    qpath, rpath = write(tmp_path, qrels, run)
    args = ["eval", rpath, "--qrels", qpath, "--format", "trec", "--per-query"]
    for m in TREC_MEASURES:
        args += ["-m", m]
    proc = rankk(*args)
    assert proc.returncode == 0, proc.stderr
    rows = parse_trec_output(proc.stdout)
    ref = reference(qrels, run, TREC_MEASURES)
    assert set(next(iter(ref.values()))) == TREC_KEYS

    per_query = [r for r in rows if r[1] != "all"]
    # trec_eval -q: queries with both a ranking and judgements, in qid byte order, each with every measure
    evaluated = sorted(ref, key=lambda q: q.encode())
    assert list(dict.fromkeys(q for _, q, _ in per_query)) == evaluated
    assert len(per_query) == len(evaluated) * len(TREC_KEYS)
    for name, qid, value in per_query:
        expected = ref[qid][name]
        if name in SUMMED:
            assert value == str(int(expected))
        else:
            assert value == f"{expected:6.4f}" or abs(float(value) - expected) <= 5e-5 + 1e-12, (name, qid)

    # `all`: trec_eval -c (rankk's default): every judged query counts, a missing one as 0; counts are summed
    summary = {name: value for name, qid, value in rows if qid == "all"}
    assert set(summary) == TREC_KEYS
    for name, value in summary.items():
        total = sum(ref[q][name] for q in ref)
        expected = total if name in SUMMED else total / len(qrels)
        if name in SUMMED:
            assert value == str(int(expected))
        else:
            assert abs(float(value) - expected) <= 5e-5 + 1e-12, name

    # full precision (JSON) per query: exactly pytrec_eval's values
    proc = rankk(*[a if a != "trec" else "json" for a in args])
    assert proc.returncode == 0, proc.stderr
    measures = parse_measures(TREC_MEASURES)
    names = {str(m): trec_name(m) for m in measures}
    checked = 0
    for row in json.loads(proc.stdout):
        if row["qid"] != "all" and row["qid"] in ref:
            assert row["value"] == pytest.approx(ref[row["qid"]][names[row["measure"]]], abs=1e-12, rel=0)
            checked += 1
    assert checked == len(ref) * len(TREC_KEYS)


def test_run_queries_only_is_trec_eval_without_c(tmp_path, rankk):
    qrels, run = generated(7)
    qpath, rpath = write(tmp_path, qrels, run)
    proc = rankk("eval", rpath, "--qrels", qpath, "--format", "trec", "--run-queries-only", "-m", "map", "-m",
                 "ndcg_cut.10", "-m", "P.10")
    assert proc.returncode == 0, proc.stderr
    rows = parse_trec_output(proc.stdout)
    assert [name for name, _, _ in rows] == ["map", "ndcg_cut_10", "P_10"]  # the -m order, only `all` rows
    ref = reference(qrels, run, ["map", "ndcg_cut.10", "P.10"])
    for name, qid, value in rows:
        assert qid == "all"
        assert abs(float(value) - np.mean([ref[q][name] for q in ref])) <= 5e-5 + 1e-12


def test_several_runs_each_after_a_runid_row_and_trec_names_share_the_cache(tmp_path, rankk):
    qrels, run = generated(3)
    qpath, rpath = write(tmp_path, qrels, run, "first")
    _, other = generated(4)
    (tmp_path / "b").mkdir()
    opath = write(tmp_path / "b", qrels, other, "second")[1]
    proc = rankk("eval", rpath, opath, "--qrels", qpath, "-m", "nDCG@10", "--format", "tsv")
    assert proc.returncode == 0 and "reused cached" not in proc.stderr
    again = rankk("eval", rpath, opath, "--qrels", qpath, "-m", "ndcg_cut.10", "--format", "trec")
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("reused cached results") == 2  # same measure, same cache entries
    rows = parse_trec_output(again.stdout)
    assert [(n, q) for n, q, _ in rows] == [("runid", "all"), ("ndcg_cut_10", "all"), ("runid", "all"),
                                            ("ndcg_cut_10", "all")]
    assert [v for n, _, v in rows if n == "runid"] == ["first", "second"]
    for (_, _, value), r in zip([x for x in rows if x[0] != "runid"], (run, other)):
        ref = reference(qrels, r, ["ndcg_cut.10"])
        assert abs(float(value) - sum(ref[q]["ndcg_cut_10"] for q in ref) / len(qrels)) <= 5e-5 + 1e-12


def test_dl19_bm25_in_trec_layout(rankk, data):
    root = data / "trec-dl" / "dl19"
    proc = rankk("eval", root / "runs" / "bm25.trec", "--qrels", root / "qrels.txt", "-m", "ndcg_cut.10",
                 "-m", "num_q", "--format", "trec")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ndcg_cut_10           \tall\t0.5058\nnum_q                 \tall\t43\n"
