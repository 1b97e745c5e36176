"""JSON score runs {qid: {docid: score}} -- Rank1's score.json, Rank-K's rerank.py output -- read wherever a run
is read and written by ``-o run.json``: round trips TREC <-> JSON <-> Parquet, the seed scripts' exact shapes
scored against pytrec_eval on the very dict, the tie rule, the reader's errors, and every command taking them."""

from __future__ import annotations

import gzip
import json
import shutil

import ir_measures
import numpy as np
import pytest

from rankk_cli.errors import RankkError
from rankk_cli.runs import Run, looks_like_json_run, read_run, write_run


def core(run: Run):
    return run.df[["qid", "docid", "rank", "score"]].reset_index(drop=True)


def trec_lines(path):
    """(qid, docid, rank, score) of a TREC file, parsed here by hand."""
    return [(p[0], p[2], int(p[3]), float(p[4])) for p in (ln.split() for ln in path.read_text().splitlines()) if p]


def pytrec_values(qrels_path, run_dict: dict, measures: list[str]) -> dict:
    """{(qid, measure): value} from ir_measures (pytrec_eval) on a {qid: {docid: score}} dict."""
    qrels = list(ir_measures.read_trec_qrels(str(qrels_path)))
    parsed = [ir_measures.parse_measure(m) for m in measures]
    return {(x.query_id, str(x.measure)): x.value for x in ir_measures.iter_calc(parsed, qrels, run_dict)}


def eval_json(rankk, *args):
    proc = rankk("eval", *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ----------------------------------------------------------------------------------------------------------
# round trips


def test_trec_json_parquet_round_trips_keep_order_and_scores(tmp_path, data):
    src = data / "trec-dl" / "dl19" / "runs" / "bm25.trec"
    first = read_run(src)
    write_run(first, tmp_path / "ref.trec", tag="bm25")
    chain = [".json", ".parquet", ".json.gz", ".parquet", ".json", ".trec"]
    run = first
    for i, suffix in enumerate(chain):
        path = tmp_path / f"step{i}{suffix}"
        write_run(run, path, tag="bm25")  # the tag is TREC's only: the other formats have no column for it
        run = read_run(path)
        got, want = core(run), core(first)
        assert got["qid"].tolist() == want["qid"].tolist() and got["docid"].tolist() == want["docid"].tolist()
        assert got["rank"].tolist() == want["rank"].tolist()
        assert np.array_equal(got["score"].to_numpy().view(np.int64), want["score"].to_numpy().view(np.int64))
    # TREC -> JSON -> Parquet -> JSON.gz -> Parquet -> JSON -> TREC gives the bytes a direct TREC write gives
    assert (tmp_path / f"step{len(chain) - 1}.trec").read_bytes() == (tmp_path / "ref.trec").read_bytes()
    # the JSON file itself, read by json (not by rankk): every query's docids in ranking order, the TREC scores
    written = json.loads((tmp_path / "step0.json").read_text())
    lines = trec_lines(src)
    assert list(written) == list(dict.fromkeys(q for q, *_ in lines))
    for qid, docs in written.items():
        ranked = sorted([ln for ln in lines if ln[0] == qid], key=lambda ln: ln[2])
        assert list(docs.items()) == [(d, s) for _q, d, _r, s in ranked]
    assert gzip.decompress((tmp_path / "step2.json.gz").read_bytes()) == (tmp_path / "step0.json").read_bytes()


def test_written_json_scores_strictly_decrease_as_float32_like_trec(tmp_path):
    # ties, a float64 pair that is one float32, an inversion in file order: written like TREC text
    src = {"q": {"a": 2.0, "b": 2.0, "c": 1.00000002, "d": 1.00000001, "e": 5.0}}
    (tmp_path / "in.json").write_text(json.dumps(src))
    write_run(read_run(tmp_path / "in.json"), tmp_path / "out.json")
    out = json.loads((tmp_path / "out.json").read_text())["q"]
    assert list(out) == ["e", "a", "b", "c", "d"]
    f32 = np.array(list(out.values()), dtype=np.float32)
    assert (f32[1:] < f32[:-1]).all()
    assert out["e"] == 5.0 and out["a"] == 2.0 and out["c"] == 1.00000002  # the first of each tie kept


# ----------------------------------------------------------------------------------------------------------
# the seed scripts' own shapes


def test_a_rank_k_output_file_is_read_in_its_order_and_scored_as_pytrec_eval_does(tmp_path, data, rankk):
    root = data / "trec-dl" / "dl19"
    by_q: dict[str, list[str]] = {}
    for qid, docid, _r, _s in trec_lines(root / "runs" / "bm25.trec"):
        by_q.setdefault(qid, []).append(docid)
    rng = np.random.default_rng(7)
    # Rank-K's rerank.py: a reordering of each query's candidates, scores 1/(i+1), json.dump'ed as one line
    reranked = {q: [docs[i] for i in rng.permutation(len(docs))] for q, docs in by_q.items()}
    rank_k = {q: {d: 1 / (i + 1) for i, d in enumerate(order)} for q, order in reranked.items()}
    path = tmp_path / "rerank.json"
    with open(path, "w") as fh:
        json.dump(rank_k, fh)
    run = read_run(path)
    assert run.name == "rerank"
    for qid, group in run.by_query():
        assert group["docid"].tolist() == reranked[qid]
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert group["score"].tolist() == [1 / (i + 1) for i in range(len(group))]
    measures = ["nDCG@10", "AP", "R@100", "P@5"]
    ref = pytrec_values(root / "qrels.txt", rank_k, measures)
    rows = eval_json(rankk, path, "--qrels", root / "qrels.txt", "--per-query", *sum([["-m", m] for m in measures], []))
    per_query = {(r["qid"], r["measure"]): r["value"] for r in rows if r["qid"] != "all"}
    assert set(per_query) == set(ref) and len(ref) == 43 * len(measures)
    for key, value in ref.items():
        assert per_query[key] == pytest.approx(value, abs=1e-9), key
    mean = {r["measure"]: r["value"] for r in rows if r["qid"] == "all"}
    assert mean["nDCG@10"] == pytest.approx(np.mean([ref[(q, "nDCG@10")] for q in by_q]), abs=1e-12)
    # the same documents in BM25's order score differently: the order the file gives is what was scored
    (bm25,) = eval_json(rankk, root / "runs" / "bm25.trec", "--qrels", root / "qrels.txt", "-m", "nDCG@10")
    assert abs(bm25["value"] - mean["nDCG@10"]) > 0.05


def test_a_rank1_score_file_ranks_by_score_and_ties_keep_file_order(tmp_path):
    # Rank1's score.json: keys in first-stage order, not score order; probabilities that tie
    score = {"7": {"d5": 0.25, "d1": 0.9, "d3": 0.25, "d2": 0.9, "d4": 1}, "3": {"x": -2.5, "y": 0}}
    path = tmp_path / "score.json"
    path.write_text(json.dumps(score, indent=2))
    run = read_run(path)
    assert run.qids == ["7", "3"]
    for qid, docs in score.items():
        items = list(docs.items())
        want = [d for _i, (d, _s) in sorted(enumerate(items), key=lambda t: (-t[1][1], t[0]))]
        group = run.df[run.df["qid"] == qid]
        assert group["docid"].tolist() == want
        assert group["rank"].tolist() == list(range(1, len(want) + 1))
    # the TREC tie rule: a TREC file holding the same scores in the same line order reads identically
    trec = tmp_path / "score.trec"
    trec.write_text("".join(f"{q} Q0 {d} {i} {s} t\n" for q, docs in score.items()
                            for i, (d, s) in enumerate(docs.items(), 1)))
    assert core(read_run(trec)).equals(core(run))


# ----------------------------------------------------------------------------------------------------------
# the reader's errors (the CLI versions are in test_bad_inputs.py)


JSON_ERRORS = {
    "top level a list": ('[["q1", "d1", 1.0]]', "expected a JSON run {qid: {docid: score}}, found a list"),
    "qid to a list (Rank-K's candidate lists)": ('{"q1": ["d1", "d2"]}',
                                                 "expected qid 'q1' to map to an object {docid: score}"),
    "qid to a number": ('{"q1": 3}', "expected qid 'q1' to map to an object"),
    "score an object (one level too deep)": ('{"q1": {"d1": {"score": 1}}}',
                                             "expected a finite number as the score of qid 'q1', docid 'd1', found "
                                             "an object"),
    "score a string": ('{"q1": {"d1": "0.5"}}', "found a string '0.5'"),
    "score null": ('{"q1": {"d1": null}}', "found null"),
    "score a boolean": ('{"q1": {"d1": true}}', "found true"),
    "score NaN": ('{"q1": {"d1": 1, "d2": NaN}}', "docid 'd2', found NaN"),
    "score -Infinity": ('{"q1": {"d1": -Infinity}}', "found -Infinity"),
    "score beyond float range": ('{"q1": {"d1": 1e400}}', "found a number beyond float range"),
    "integer score beyond float range": ('{"q1": {"d1": ' + "9" * 400 + "}}", "expected a finite number"),
    "repeated qid": ('{"q1": {"d1": 1}, "q2": {"d1": 1}, "q1": {"d2": 2}}',
                     "expected each qid once, found qid 'q1' twice"),
    "repeated docid": ('{"q1": {"d1": 1, "d2": 0.5, "d1": 0.2}}',
                       "expected each docid once per query, found docid 'd1' twice under qid 'q1'"),
    "empty object": ("{}", "empty run file"),
    "only empty queries": ('{"q1": {}, "q2": {}}', "empty run file"),
    "empty file": ("", "empty run file"),
    "docid with a space": ('{"q1": {"d 1": 1}}', "expected each docid without spaces"),
    "qid with a tab": ('{"q\\t1": {"d1": 1}}', "expected each qid without spaces"),
    "invalid JSON on line 3": ('{\n "q1": {"d1": 1},\n "q2": {"d1" 1}\n}', ":3: expected a JSON run"),
    "trailing garbage": ('{"q1": {"d1": 1}} {"q2": {}}', ":1: expected a JSON run"),
    "a TREC file named .json": ("q1 Q0 d1 1 2.0 t\n", ":1: expected a JSON run"),
}


@pytest.mark.parametrize("case", sorted(JSON_ERRORS))
def test_json_reader_errors_name_file_and_key(tmp_path, case):
    text, expected = JSON_ERRORS[case]
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(RankkError) as info:
        read_run(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message, message


def test_gzipped_json_runs_and_content_sniffing(tmp_path):
    text = json.dumps({"q1": {"d1": 2.0, "d2": 1.0}})
    (tmp_path / "a.json").write_text(text)
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(text.encode()))
    assert core(read_run(tmp_path / "a.json.gz")).equals(core(read_run(tmp_path / "a.json")))
    assert read_run(tmp_path / "a.json.gz").name == "a"
    (tmp_path / "pretty.json").write_text("\ufeff" + json.dumps({"q1": {"d1": 2.0}}, indent=4))
    (tmp_path / "cands.json").write_text(json.dumps({"qid": "q1", "docid": "d1", "rank": 1, "score": 1.0,
                                                     "text": "t"}) + "\n")
    assert looks_like_json_run(tmp_path / "a.json") and looks_like_json_run(tmp_path / "a.json.gz")
    assert looks_like_json_run(tmp_path / "pretty.json") and not looks_like_json_run(tmp_path / "cands.json")
    assert read_run(tmp_path / "pretty.json").df["docid"].tolist() == ["d1"]  # a BOM is accepted, as for TREC


# ----------------------------------------------------------------------------------------------------------
# every command


def test_eval_compare_report_take_json_runs_like_their_trec_twins(tmp_path, data, rankk):
    root = data / "trec-dl" / "dl19"
    qrels = root / "qrels.txt"
    for name in ("bm25", "splade-pp-ed"):  # twins written by rankk (scores tied in the source are stepped apart
        run = read_run(root / "runs" / f"{name}.trec")  # in both, so both keep the file's order)
        write_run(run, tmp_path / f"{name}.json")
        write_run(run, tmp_path / f"{name}.trec")
    as_trec = eval_json(rankk, tmp_path / "bm25.trec", tmp_path / "splade-pp-ed.trec", "--qrels", qrels,
                        "-m", "nDCG@10", "-m", "AP")
    as_json = eval_json(rankk, tmp_path / "bm25.json", tmp_path / "splade-pp-ed.json", "--qrels", qrels,
                        "-m", "nDCG@10", "-m", "AP")
    assert as_json == as_trec
    assert {(r["run"], r["measure"]): round(r["value"], 4) for r in as_json}[("bm25", "nDCG@10")] == 0.5058

    proc = rankk("compare", tmp_path / "bm25.json", tmp_path / "splade-pp-ed.json", "--qrels", qrels,
                 "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert round(row["baseline_mean"], 4) == 0.5058 and round(row["mean"], 4) == 0.7308
    assert "excluded" not in row  # only with --exclude

    folder = tmp_path / "paper" / "dl19"
    folder.mkdir(parents=True)
    shutil.copy(tmp_path / "bm25.json", folder / "bm25.json")
    write_run(read_run(tmp_path / "splade-pp-ed.json"), folder / "splade.json.gz")
    proc = rankk("report", tmp_path / "paper", "--qrels", f"dl19={qrels}")
    assert proc.returncode == 0, proc.stderr
    assert "| bm25 (baseline) | 0.5058 |" in proc.stdout and "| splade | **0.7308†** |" in proc.stdout


def test_rerank_reads_a_json_run_writes_json_and_still_takes_json_named_candidates(tmp_path, data, rankk):
    root = data / "trec-dl" / "dl19"
    run = read_run(root / "runs" / "bm25.trec")
    keep = run.qids[:3]
    small = Run(run.df[run.df["qid"].isin(keep)].reset_index(drop=True), "bm25")
    write_run(small, tmp_path / "bm25.json")
    common = ["--topics", root / "topics.tsv", "--method", "oracle", "--qrels", root / "qrels.txt", "--depth", "10"]
    proc = rankk("rerank", tmp_path / "bm25.json", "--docs", root / "corpus.jsonl", "-o", tmp_path / "oracle.json",
                 *common)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "oracle.json").read_text())
    assert list(out) == keep
    qrels = {(q.query_id, q.doc_id): q.relevance for q in ir_measures.read_trec_qrels(str(root / "qrels.txt"))}
    for qid in keep:
        head = list(out[qid])[:10]
        first_stage = small.df[small.df["qid"] == qid]["docid"].tolist()
        assert sorted(head) == sorted(first_stage[:10]) and list(out[qid])[10:] == first_stage[10:]
        grades = [qrels.get((qid, d), 0) for d in head]
        assert grades == sorted(grades, reverse=True)  # the oracle's order
    # a candidates JSONL saved as .json is still a candidates file (content decides, not the name)
    lines = [ln for ln in (root / "candidates" / "bm25.jsonl").read_text().splitlines()
             if json.loads(ln)["qid"] in keep]
    (tmp_path / "cands.json").write_text("\n".join(lines) + "\n")
    proc = rankk("rerank", tmp_path / "cands.json", "-o", tmp_path / "from-cands.json", *common)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "from-cands.json").read_text()) == out
    # a JSON run as --docs: one line saying it holds no text
    proc = rankk("rerank", tmp_path / "bm25.json", "--docs", tmp_path / "bm25.json", "-o", tmp_path / "x.trec",
                 *common)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "holds no text" in proc.stderr
    assert not (tmp_path / "x.trec").exists()
