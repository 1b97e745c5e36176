"""--exclude: a benchmark's forbidden (qid, docid) pairs (BRIGHT's excluded_ids) dropped before scoring or
reranking. Every value is checked against pytrec_eval (through ir_measures) on a run this test filtered by hand;
the file formats, the counts in the output, the cache key, and an empty file changing nothing."""

from __future__ import annotations

import gzip
import json
import shutil

import ir_measures
import pytest

from rankk_cli.exclude import load_exclusions, parse_exclusions
from rankk_cli.runs import Run, read_run, write_run

MEASURES = ["nDCG@10", "AP", "R@100", "RR@10", "P@5"]


def trec_rows(path):
    return [(p[0], p[2], float(p[4])) for p in (ln.split() for ln in path.read_text().splitlines()) if p]


def reference(qrels_path, rows, measures=MEASURES) -> dict:
    """{(qid, measure): value} and {measure: mean} from ir_measures (pytrec_eval) on (qid, docid, score) rows."""
    qrels = list(ir_measures.read_trec_qrels(str(qrels_path)))
    run: dict[str, dict[str, float]] = {}
    for q, d, s in rows:
        run.setdefault(q, {})[d] = s
    parsed = [ir_measures.parse_measure(m) for m in measures]
    per = {(x.query_id, str(x.measure)): x.value for x in ir_measures.iter_calc(parsed, qrels, run)}
    agg = {str(k): v for k, v in ir_measures.calc_aggregate(parsed, qrels, run).items()}
    return per, agg


def cli_json(rankk, *args) -> list[dict]:
    proc = rankk(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def m_args(measures=MEASURES):
    return sum([["-m", m] for m in measures], [])


@pytest.fixture
def dl19(data):
    return data / "trec-dl" / "dl19"


@pytest.fixture
def pairs(dl19):
    """A forbidden list with bite: per query the docs at ranks 1 and 3 of BM25 and the first relevant doc
    SPLADE ranks, plus pairs no run holds (an unknown doc, an unknown query, BRIGHT's "N/A" placeholder)."""
    qrels = {(q.query_id, q.doc_id): q.relevance for q in ir_measures.read_trec_qrels(str(dl19 / "qrels.txt"))}
    bm25, splade = trec_rows(dl19 / "runs" / "bm25.trec"), trec_rows(dl19 / "runs" / "splade-pp-ed.trec")
    out: dict[str, list[str]] = {}
    for qid in dict.fromkeys(q for q, _d, _s in bm25):
        docs = [d for q, d, _s in bm25 if q == qid]
        rel = [d for q, d, _s in splade if q == qid and qrels.get((q, d), 0) > 0]
        out[qid] = [docs[0], docs[2], *rel[:1], "no-such-doc", "N/A"]
    out["no-such-query"] = [bm25[0][1]]
    return out


def write_tsv(path, pairs):
    path.write_text("".join(f"{q}\t{d}\n" for q, docs in pairs.items() for d in docs))
    return path


def drop(rows, pairs):
    banned = {(q, d) for q, docs in pairs.items() for d in docs}
    kept = [r for r in rows if (r[0], r[1]) not in banned]
    return kept, len(rows) - len(kept)


# ----------------------------------------------------------------------------------------------------------
# file formats


def test_tsv_json_jsonl_and_gzip_give_the_same_pairs(tmp_path, pairs):
    want = sorted((q, d) for q, docs in pairs.items() for d in dict.fromkeys(docs))
    write_tsv(tmp_path / "ex.tsv", pairs)
    (tmp_path / "ex.json").write_text(json.dumps(pairs, indent=1))
    # BRIGHT's examples as JSON lines: other fields beside id and excluded_ids, ids in any order
    (tmp_path / "examples.jsonl").write_text("".join(
        json.dumps({"query": f"text {q}", "id": q, "gold_ids": [], "excluded_ids": docs}) + "\n"
        for q, docs in pairs.items()))
    (tmp_path / "ex.json.gz").write_bytes(gzip.compress(json.dumps(pairs).encode()))
    dup = dict(pairs)
    dup[next(iter(pairs))] = pairs[next(iter(pairs))] * 2  # a pair listed twice is one pair
    (tmp_path / "dup.txt").write_text("".join(f"{q}\t{d}\n" for q, docs in dup.items() for d in docs))
    for name in ("ex.tsv", "ex.json", "examples.jsonl", "ex.json.gz", "dup.txt"):
        got = parse_exclusions(tmp_path / name)
        assert sorted(zip(got["qid"], got["docid"])) == want, name
    for text in ("", "\n  \n", "{}", "\ufeff\n"):
        (tmp_path / "empty").write_text(text)
        assert len(parse_exclusions(tmp_path / "empty")) == 0
    (tmp_path / "empty.gz").write_bytes(gzip.compress(b""))
    assert len(load_exclusions(tmp_path / "empty.gz")) == 0


def test_apply_drops_only_the_listed_pairs_and_renumbers_ranks(tmp_path):
    run = read_run(_write(tmp_path / "r.trec", "q1 Q0 a 1 3 t\nq1 Q0 b 2 2 t\nq1 Q0 c 3 1 t\nq2 Q0 a 1 9 t\n"))
    (tmp_path / "ex.json").write_text(json.dumps({"q1": ["a", "zz"], "q3": ["a"]}))
    kept, dropped = load_exclusions(tmp_path / "ex.json").apply(run)
    assert list(zip(kept.df["qid"], kept.df["docid"], kept.df["rank"])) == [("q1", "b", 1), ("q1", "c", 2),
                                                                            ("q2", "a", 1)]
    assert (dropped.pairs, dropped.queries) == (1, 1)
    assert kept.df["score"].tolist() == [2.0, 1.0, 9.0]


def _write(path, text):
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------------------
# eval, compare, report against pytrec_eval on a hand-filtered run


def test_eval_with_exclusions_equals_pytrec_eval_on_the_run_filtered_by_hand(tmp_path, dl19, pairs, rankk):
    ex = write_tsv(tmp_path / "excluded.tsv", pairs)
    qrels = dl19 / "qrels.txt"
    rows = trec_rows(dl19 / "runs" / "bm25.trec")
    kept, n_dropped = drop(rows, pairs)
    per, agg = reference(qrels, kept)
    out = cli_json(rankk, "eval", dl19 / "runs" / "bm25.trec", "--qrels", qrels, *m_args(), "--per-query",
                   "--exclude", ex)
    got = {(r["qid"], r["measure"]): r["value"] for r in out if r["qid"] != "all"}
    assert set(got) == set(per) and len(per) == 43 * len(MEASURES)
    for key, value in per.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    means = {r["measure"]: r for r in out if r["qid"] == "all"}
    for m in MEASURES:
        assert means[m]["value"] == pytest.approx(agg[m], abs=1e-9), m
        assert means[m]["excluded"] == n_dropped
    assert 43 * 2 < n_dropped < 43 * 3 + 1  # ranks 1 and 3 everywhere, the relevant doc where BM25 has it
    # and the exclusions matter: without them nDCG@10 is BM25's published 0.5058
    plain = cli_json(rankk, "eval", dl19 / "runs" / "bm25.trec", "--qrels", qrels, "-m", "nDCG@10")
    assert round(plain[0]["value"], 4) == 0.5058 and abs(plain[0]["value"] - means["nDCG@10"]["value"]) > 0.05
    assert "excluded" not in plain[0]


def test_an_empty_exclusion_file_changes_no_value(tmp_path, dl19, rankk):
    (tmp_path / "none.tsv").write_text("")
    (tmp_path / "none.json").write_text("{}")
    args = ["eval", dl19 / "runs" / "bm25.trec", dl19 / "runs" / "splade-pp-ed.trec", "--qrels",
            dl19 / "qrels.txt", *m_args(), "--per-query"]
    plain = cli_json(rankk, *args)
    for name in ("none.tsv", "none.json"):
        rows = cli_json(rankk, *args, "--exclude", tmp_path / name)
        assert [{k: v for k, v in r.items() if k != "excluded"} for r in rows] == plain
        assert {r["excluded"] for r in rows if "excluded" in r} == {0}


def test_bright_examples_jsonl_is_an_exclusion_file_as_shipped(tmp_path, data, rankk):
    """BRIGHT's own examples (pony: every query's excluded_ids is ["N/A"]) read as they are: nothing dropped,
    values unchanged; the same file with real ids drops exactly those, as pytrec_eval on a filtered run says."""
    bright = data / "bright-topics-qrels"
    examples = bright / "topics.bright-pony-original.jsonl.gz"
    qrels = bright / "qrels.bright-pony.txt"
    ex = load_exclusions(examples)
    assert len(ex) == ex.queries == 112 and set(ex.pairs["docid"]) == {"N/A"}
    # a run over pony's judged docs: each query's gold docs interleaved with other queries' gold docs
    gold: dict[str, list[str]] = {}
    for q in ir_measures.read_trec_qrels(str(qrels)):
        if q.relevance > 0:
            gold.setdefault(q.query_id, []).append(q.doc_id)
    pool = sorted({d for docs in gold.values() for d in docs})
    rows = []
    for i, (qid, docs) in enumerate(gold.items()):
        others = [d for d in pool[i::7] if d not in docs][:15]
        ranked = [x for pair in zip(others, docs) for x in pair] + others[len(docs):]
        rows += [(qid, d, float(100 - r)) for r, d in enumerate(ranked)]
    run = tmp_path / "run.trec"
    run.write_text("".join(f"{q} Q0 {d} {r} {s} t\n" for r, (q, d, s) in enumerate(rows, 1)))
    measures = ["nDCG@10", "R@10"]
    base = cli_json(rankk, "eval", run, "--qrels", qrels, *m_args(measures))
    same = cli_json(rankk, "eval", run, "--qrels", qrels, *m_args(measures), "--exclude", examples)
    assert [r["value"] for r in same] == [r["value"] for r in base] and {r["excluded"] for r in same} == {0}
    # now with ids: each query's first-ranked document, written in BRIGHT's field
    first = {}
    for q, d, _s in rows:
        first.setdefault(q, d)
    real = tmp_path / "pony-excluded.jsonl"
    real.write_text("".join(json.dumps({"id": q, "excluded_ids": [d]}) + "\n" for q, d in first.items()))
    got = cli_json(rankk, "eval", run, "--qrels", qrels, *m_args(measures), "--exclude", real)
    kept, n = drop(rows, {q: [d] for q, d in first.items()})
    _per, agg = reference(qrels, kept, measures)
    assert n == len(first) and all(r["excluded"] == n for r in got)
    for r in got:
        assert r["value"] == pytest.approx(agg[r["measure"]], abs=1e-9)
    assert got[0]["value"] != pytest.approx(base[0]["value"], abs=1e-3)


def test_the_exclusion_file_is_part_of_the_eval_cache_key(tmp_path, dl19, pairs, rankk):
    run, qrels = dl19 / "runs" / "bm25.trec", dl19 / "qrels.txt"
    a = write_tsv(tmp_path / "a.tsv", pairs)
    b = write_tsv(tmp_path / "b.tsv", {q: docs[:1] for q, docs in pairs.items()})

    def once(*extra):
        proc = rankk("eval", run, "--qrels", qrels, "-m", "nDCG@10", "--format", "json", *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)[0], "reused cached results" in proc.stderr

    plain, hit0 = once()
    with_a, hit1 = once("--exclude", a)
    with_b, hit2 = once("--exclude", b)
    again_a, hit3 = once("--exclude", a)
    assert not hit0 and not hit1 and not hit2 and hit3
    assert again_a == with_a and with_a["excluded"] > with_b["excluded"] > 0
    assert len({plain["value"], with_a["value"], with_b["value"]}) == 3
    kept, _n = drop(trec_rows(run), {q: docs[:1] for q, docs in pairs.items()})
    assert with_b["value"] == pytest.approx(reference(qrels, kept, ["nDCG@10"])[1]["nDCG@10"], abs=1e-9)
    # editing the file in place is a different key too
    write_tsv(a, {q: docs[:1] for q, docs in pairs.items()})
    edited, hit4 = once("--exclude", a)
    assert edited == with_b and hit4  # keyed by content: now a holds b's pairs, it finds b's entry


def test_compare_and_report_drop_the_same_pairs(tmp_path, dl19, pairs, rankk):
    ex = tmp_path / "excluded.json"
    ex.write_text(json.dumps(pairs))
    qrels = dl19 / "qrels.txt"
    refs, counts = {}, {}
    for name in ("bm25", "splade-pp-ed"):
        kept, counts[name] = drop(trec_rows(dl19 / "runs" / f"{name}.trec"), pairs)
        refs[name] = reference(qrels, kept, ["nDCG@10"])[1]["nDCG@10"]
    (row,) = cli_json(rankk, "compare", dl19 / "runs" / "bm25.trec", dl19 / "runs" / "splade-pp-ed.trec",
                      "--qrels", qrels, "--exclude", ex)
    assert row["baseline_mean"] == pytest.approx(refs["bm25"], abs=1e-9)
    assert row["mean"] == pytest.approx(refs["splade-pp-ed"], abs=1e-9)
    assert (row["baseline_excluded"], row["excluded"]) == (counts["bm25"], counts["splade-pp-ed"])
    proc = rankk("compare", dl19 / "runs" / "bm25.trec", dl19 / "runs" / "splade-pp-ed.trec", "--qrels", qrels,
                 "--exclude", ex)
    assert proc.returncode == 0 and f"dropped: bm25 {counts['bm25']}, splade-pp-ed {counts['splade-pp-ed']}" \
        in " ".join(proc.stdout.split())

    folder = tmp_path / "paper" / "dl19"
    folder.mkdir(parents=True)
    shutil.copy(dl19 / "runs" / "bm25.trec", folder / "bm25.trec")
    shutil.copy(dl19 / "runs" / "splade-pp-ed.trec", folder / "splade.trec")
    shutil.copy(qrels, folder / "qrels.txt")
    shutil.copy(ex, folder / "excluded.json")  # beside the runs: an input, not a system
    from rankk_cli.report import build_report

    for spec in (f"dl19={folder / 'excluded.json'}", str(folder / "excluded.json")):
        rep = build_report(tmp_path / "paper", exclude=[spec])
        assert rep.systems == ["bm25", "splade"]
        assert rep.values[("bm25", "dl19", "nDCG@10")] == pytest.approx(refs["bm25"], abs=1e-9)
        assert rep.values[("splade", "dl19", "nDCG@10")] == pytest.approx(refs["splade-pp-ed"], abs=1e-9)
        assert rep.excluded == {"dl19": {"bm25": counts["bm25"], "splade": counts["splade-pp-ed"]}}
        assert any(f"bm25 {counts['bm25']}, splade {counts['splade-pp-ed']}" in n for n in rep.notes)
    proc = rankk("report", tmp_path / "paper", "--exclude", f"dl19={folder / 'excluded.json'}")
    assert proc.returncode == 0, proc.stderr
    assert f"| bm25 (baseline) | {refs['bm25']:.4f} |" in proc.stdout and "excluded (qid, docid) pairs" in proc.stdout
    proc = rankk("report", tmp_path / "paper", "--exclude", f"nope={ex}")
    assert proc.returncode == 2 and "--exclude: no dataset 'nope'" in proc.stderr


# ----------------------------------------------------------------------------------------------------------
# rerank


def test_rerank_drops_excluded_pairs_before_the_windows(tmp_path, dl19, pairs, rankk):
    run = read_run(dl19 / "runs" / "bm25.trec")
    keep = run.qids[:4]
    small = tmp_path / "bm25.json"
    write_run(Run(run.df[run.df["qid"].isin(keep)].reset_index(drop=True), "bm25"), small)
    ex = write_tsv(tmp_path / "ex.tsv", pairs)
    out = tmp_path / "oracle.trec"
    summary = cli_json(rankk, "rerank", small, "--docs", dl19 / "corpus.jsonl", "--topics", dl19 / "topics.tsv",
                       "--method", "oracle", "--qrels", dl19 / "qrels.txt", "--depth", "5", "-o", out,
                       "--exclude", ex)
    first = json.loads(small.read_text())
    banned = {(q, d) for q, docs in pairs.items() for d in docs}
    kept = {q: [d for d in docs if (q, d) not in banned] for q, docs in first.items()}
    n = sum(len(first[q]) - len(kept[q]) for q in first)
    assert summary["excluded"] == {"pairs": n, "queries": 4} and n >= 8
    got = read_run(out)
    for qid in keep:
        docs = got.df[got.df["qid"] == qid]["docid"].tolist()
        assert not banned & {(qid, d) for d in docs}
        # the window was the top 5 of what is left (not the top 5 of the input with holes in it)
        assert sorted(docs[:5]) == sorted(kept[qid][:5]) and docs[5:] == kept[qid][5:]
    import pyarrow.parquet as pq

    windows = pq.read_table(str(out) + ".windows.parquet").to_pandas()
    assert len(windows) == 4
    for qid, docids in zip(windows["qid"], windows["docids"]):  # what each window showed the method
        assert sorted(docids) == sorted(kept[qid][:5])
