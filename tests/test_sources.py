"""Topics, qrels and documents: local files, ir_datasets ids (real ir_datasets code, pre-seeded offline),
document stores and candidates files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from rankk_cli import docs, irds, sources
from rankk_cli.errors import RankkError
from rankk_cli.runs import Run, read_run, write_run

DL19 = "msmarco-passage/trec-dl-2019/judged"


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# local files


def test_topics_and_qrels_files(data):
    topics = sources.load_topics(data / "trec-dl" / "dl19" / "topics.tsv")
    assert len(topics) == 43 and topics["156493"] == "do goldfish grow"
    qrels = sources.load_qrels(data / "trec-dl" / "dl19" / "qrels.txt")
    assert len(qrels) == 9260 and list(qrels.columns) == ["qid", "docid", "relevance"]
    assert qrels["relevance"].dtype == np.int64 and set(qrels["relevance"]) == {0, 1, 2, 3}
    assert set(qrels["qid"]) == set(topics)


def test_gzipped_topics(data):
    topics = sources.load_topics(data / "beir-topics-qrels" / "topics.beir-v1.0.0-scifact.test.tsv.gz")
    qrels = sources.load_qrels(data / "beir-topics-qrels" / "qrels.beir-v1.0.0-scifact.test.txt")
    assert len(topics) > 100 and set(qrels["qid"]) <= set(topics)


def test_missing_file_that_looks_like_a_path_names_the_file(tmp_path):
    with pytest.raises(RankkError, match=r"topics\.tsv: no such topics file"):
        sources.load_topics(tmp_path / "topics.tsv")
    with pytest.raises(RankkError, match=r"qrels\.txt: no such qrels file"):
        sources.load_qrels("qrels/qrels.txt")


# ----------------------------------------------------------------------------------------------------------
# ir_datasets ids


def test_is_dataset_id_does_not_import_ir_datasets_for_paths():
    code = ("import sys; from rankk_cli import irds\n"
            "for s in ['runs/bm25.trec', 'topics.tsv', './x', '/abs/q', 'qrels.txt.gz', 'a b']:\n"
            "    assert not irds.is_dataset_id(s), s\n"
            "print('ir_datasets' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_is_dataset_id_for_real_ids():
    assert irds.is_dataset_id(DL19)
    assert irds.is_dataset_id("beir/scifact/test")
    assert not irds.is_dataset_id("no-such-dataset/at-all")


def test_unknown_id_is_one_clear_line():
    with pytest.raises(RankkError) as info:
        sources.load_qrels("foo")
    assert str(info.value) == "unknown ir_datasets id 'foo', and no qrels file of that name"
    with pytest.raises(RankkError, match=r"did you mean 'msmarco-passage/trec-dl-2019'"):
        irds.load_queries("msmarco-pasage/trec-dl-2019")


def fresh(code: str):
    """Run ``code`` in a fresh interpreter and return the JSON value it prints (stdout must hold nothing else).

    ir_datasets fixes its home folder when it is imported (``msmarco_passage`` computes its base path at import),
    so anything that depends on THIS test's IR_DATASETS_HOME must run in a new process -- as the CLI does.
    """
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), out.stderr


def test_known_id_offline_not_seeded(tmp_path):
    message, _err = fresh(
        "from rankk_cli import sources\nfrom rankk_cli.errors import RankkError\n"
        "try:\n    sources.load_qrels(%r)\nexcept RankkError as e:\n    print(json.dumps(str(e)))" % DL19)
    assert message.startswith(f"ir_datasets id {DL19!r}: could not load its qrels: the download failed")
    assert "pre-seed" in message and "IR_DATASETS_HOME" in message
    assert str(tmp_path / "ir_datasets" / "msmarco-passage") in message
    assert "\n" not in message


def test_known_id_offline_in_process_is_quiet(capsys):
    with pytest.raises(RankkError, match="download failed"):
        sources.load_qrels("msmarco-passage/trec-dl-2020")
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""  # ir_datasets' DUA banner and retries are swallowed


def test_seeded_queries_and_qrels_equal_the_shared_files(irds_seeded, data):
    dl19 = data / "trec-dl" / "dl19"
    (topics, via_sources, qrels, dtype), err = fresh(
        "from rankk_cli import irds, sources\n"
        f"q = irds.load_queries({DL19!r}); s = sources.load_topics({DL19!r}); r = irds.load_qrels({DL19!r})\n"
        "print(json.dumps([q, s, r.values.tolist(), str(r['relevance'].dtype)]))")
    assert topics == via_sources == sources.read_topics_file(dl19 / "topics.tsv")
    want = sources.read_qrels_file(dl19 / "qrels.txt")
    assert qrels == want.values.tolist() and dtype == "int64"


def test_repeated_judgements_in_a_dataset_are_reported_not_silent(irds_seeded):
    qrels = irds_seeded / "trec-dl-2019" / "qrels"
    first = qrels.read_text().splitlines()[0].split()
    with open(qrels, "a") as fh:
        fh.write(f"{first[0]} Q0 {first[2]} 3\n")
    (n, rel), err = fresh(
        "from rankk_cli import irds\n"
        f"r = irds.load_qrels({DL19!r})\n"
        f"print(json.dumps([len(r), int(r[(r.qid == {first[0]!r}) & (r.docid == {first[2]!r})].relevance.iloc[0])]))")
    assert n == 9260 and rel == 3  # the later judgement wins (as in pytrec_eval, whose qrels are a dict)
    assert f"1 repeated (qid, docid) judgement(s), e.g. qid '{first[0]}' docid '{first[2]}'; keeping the last" in err


def test_seeded_dl20_judged_filters_to_judged_topics(irds_seeded, data):
    (judged_topics, all_topics), _ = fresh(
        "from rankk_cli import irds\n"
        "print(json.dumps([irds.load_queries('msmarco-passage/trec-dl-2020/judged'),"
        " irds.load_queries('msmarco-passage/trec-dl-2020')]))")
    judged = set(sources.read_qrels_file(data / "trec-dl" / "dl20" / "qrels.txt")["qid"])
    assert set(judged_topics) == judged and len(judged_topics) == 54
    assert all_topics == sources.read_topics_file(data / "trec-dl" / "dl20" / "topics.tsv")


def test_seeded_docs_store_serves_the_dl19_candidates(irds_seeded, data):
    _run, texts = docs.read_candidates(data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl")
    wanted = list(texts)[:500]
    (got, error), err = fresh(
        "from rankk_cli import docs\nfrom rankk_cli.errors import RankkError\n"
        f"store = docs.open_docs({DL19!r}); wanted = {wanted!r}\n"
        "got = store.get(wanted)\n"
        "try:\n    store.get(wanted[:3] + ['nope-1', 'nope-2']); error = None\n"
        "except RankkError as e:\n    error = str(e)\n"
        "print(json.dumps([got, error]))")
    assert got == {d: texts[d] for d in wanted}
    assert error == f"ir_datasets id {DL19!r}: 2 of 5 requested docids not found: 'nope-1', 'nope-2'"
    assert "Traceback" not in err  # the lz4 docstore is closed before interpreter teardown
    assert (irds_seeded / "collection.tsv.pklz4").is_dir()  # the real ir_datasets docstore was built


def test_ir_datasets_default_text_is_used(tmp_path):
    """A dataset whose queries have title/description/narrative: default_text() (the title) is the text."""
    import ir_datasets
    from ir_datasets.formats import TrecQueries

    topics = tmp_path / "topics.trec"
    topics.write_text("<top>\n<num> Number: 301\n<title> International Organized Crime\n<desc> Description:\n"
                      "Identify organizations that participate in international criminal activity.\n"
                      "<narr> Narrative:\nA relevant document must ...\n</top>\n")
    name = "rankk-test/trec-topics"
    if name not in ir_datasets.registry._registered:
        ir_datasets.registry.register(name, ir_datasets.datasets.base.Dataset(
            TrecQueries(ir_datasets.util.LocalDownload(topics), namespace="test")))
    else:  # re-point the registered dataset at this test's file
        ir_datasets.registry._registered[name] = ir_datasets.datasets.base.Dataset(
            TrecQueries(ir_datasets.util.LocalDownload(topics), namespace="test"))
    assert irds.load_queries(name) == {"301": "International Organized Crime"}


def test_dataset_without_qrels_says_so():
    with pytest.raises(RankkError, match="has no qrels"):
        irds.load_qrels("msmarco-passage/eval/small")


# ----------------------------------------------------------------------------------------------------------
# document stores


def test_jsonl_corpus_store_and_missing_docids(data):
    store = docs.open_docs(data / "adi" / "corpus.jsonl")
    got = store.get(["1", "3"])
    assert got["1"].startswith("the ibm dsd technical information center")
    with pytest.raises(RankkError) as info:
        store.get(["1"] + [f"x{i}" for i in range(8)])
    message = str(info.value)
    assert message.startswith(str(data / "adi" / "corpus.jsonl"))
    assert "8 of 9 requested docids not found: 'x0', 'x1', 'x2', 'x3', 'x4' and 3 more" in message


def test_corpus_map_is_cached_by_file_digest(tmp_path, monkeypatch):
    corpus = jsonl(tmp_path / "c.jsonl", [{"id": "a", "contents": "alpha"}, {"id": "b", "contents": "beta"}])
    assert docs.open_docs(corpus).get(["a"]) == {"a": "alpha"}
    assert list((tmp_path / "rankk-cache" / "stages" / "corpus").glob("*.parquet"))

    def no_parse(path):
        raise AssertionError("parsed again although the file did not change")

    monkeypatch.setattr(docs, "parse_jsonl_corpus", no_parse)
    assert docs.open_docs(corpus).get(["b"]) == {"b": "beta"}
    # a changed file has a new digest: parsed again (here: the patched parser fires)
    jsonl(corpus, [{"id": "a", "contents": "changed"}])
    with pytest.raises(AssertionError, match="parsed again"):
        docs.open_docs(corpus)
    monkeypatch.undo()
    assert docs.open_docs(corpus).get(["a"]) == {"a": "changed"}
    # --no-cache / RANKK_NO_CACHE skips the lookup
    monkeypatch.setattr(docs, "parse_jsonl_corpus", no_parse)
    with pytest.raises(AssertionError):
        docs.open_docs(corpus, no_cache=True)


def test_title_text_corpus_and_gz_and_int_ids(tmp_path):
    rows = [{"_id": "x", "id": 7, "title": "Title", "text": "body text"}, {"id": "8", "title": "", "text": "only"}]
    corpus = tmp_path / "c.jsonl.gz"
    corpus.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert docs.open_docs(corpus).get(["7", "8"]) == {"7": "Title body text", "8": "only"}


def test_tsv_corpus(data):
    store = docs.open_docs(data / "xquad-r" / "en.corpus.tsv")
    text = store.get(["0-0-0"])["0-0-0"]
    assert text.startswith("The Panthers defense gave up just 308 points")


def test_candidates_jsonl_is_a_run_and_a_doc_source(data):
    dl19 = data / "trec-dl" / "dl19"
    run, texts = docs.read_candidates(dl19 / "candidates" / "bm25.jsonl")
    trec = read_run(dl19 / "runs" / "bm25.trec")
    cols = ["qid", "docid", "rank", "score"]
    pd.testing.assert_frame_equal(run.df[cols], trec.df[cols], check_dtype=False)
    assert len(texts) == run.df["docid"].nunique()
    store = docs.open_docs(dl19 / "candidates" / "bm25.jsonl")
    first = run.df.iloc[0]
    assert store.get([first["docid"]]) == {first["docid"]: first["text"]}


def test_candidates_parquet(tmp_path):
    df = pd.DataFrame({"qid": ["1", "1", "2"], "docid": ["a", "b", "a"], "rank": [1, 2, 1],
                       "score": [2.0, 1.0, 5.0], "text": ["A", "B", "A"]})
    write_run(Run(df, "cands"), tmp_path / "c.parquet")
    run, texts = docs.read_candidates(tmp_path / "c.parquet")
    assert run.df["docid"].tolist() == ["a", "b", "a"] and texts == {"a": "A", "b": "B"}
    assert docs.open_docs(tmp_path / "c.parquet").get(["b"]) == {"b": "B"}
    write_run(Run(df.drop(columns="text"), "no-text"), tmp_path / "n.parquet")
    with pytest.raises(RankkError, match=r"n\.parquet: expected a 'text' column"):
        docs.read_candidates(tmp_path / "n.parquet")


def test_candidates_ranking_order_and_duplicate_line(tmp_path):
    rows = [{"qid": "q", "docid": "b", "rank": 2, "score": 1.0, "text": "B"},
            {"qid": "q", "docid": "a", "rank": 1, "score": 3.0, "text": "A"}]
    run, _ = docs.read_candidates(jsonl(tmp_path / "c.jsonl", rows))
    assert run.df["docid"].tolist() == ["a", "b"] and run.df["rank"].tolist() == [1, 2]
    (tmp_path / "d.jsonl").write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[0]) + "\n")
    with pytest.raises(RankkError, match=r"d\.jsonl:3: expected each \(qid, docid\) once"):
        docs.read_candidates(tmp_path / "d.jsonl")


def test_directory_without_index_and_unknown_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RankkError, match=r"empty: expected a Lucene index directory"):
        docs.open_docs(tmp_path / "empty")
    with pytest.raises(RankkError, match=r"corpus\.jsonl: no such document source"):
        docs.open_docs(str(tmp_path / "corpus.jsonl"))
    with pytest.raises(RankkError, match=r"unknown ir_datasets id 'nope', and no document file"):
        docs.open_docs("nope")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(RankkError, match=r"x\.csv: expected a document source"):
        docs.open_docs(tmp_path / "x.csv")


# ----------------------------------------------------------------------------------------------------------
# ir_datasets ids through the real CLI


def test_cli_eval_with_a_seeded_ir_datasets_id_equals_the_qrels_file(irds_seeded, data, rankk):
    run = data / "trec-dl" / "dl19" / "runs" / "bm25.trec"
    by_id = rankk("eval", run, "--qrels", DL19, "-m", "nDCG@10", "-m", "AP", "--format", "json")
    by_file = rankk("eval", run, "--qrels", data / "trec-dl" / "dl19" / "qrels.txt", "-m", "nDCG@10", "-m", "AP",
                    "--format", "json")
    assert by_id.returncode == 0 and by_file.returncode == 0, by_id.stderr + by_file.stderr
    assert json.loads(by_id.stdout) == json.loads(by_file.stdout)
    assert abs(json.loads(by_id.stdout)[0]["value"] - 0.5058) < 1e-4  # pyserini's published BM25 DL19 figure
    assert "[INFO]" not in by_id.stderr


def test_cli_rerank_dry_run_reads_topics_and_docs_from_ir_datasets(irds_seeded, data, rankk):
    run = data / "trec-dl" / "dl19" / "runs" / "bm25.trec"
    proc = rankk("rerank", run, "--topics", DL19, "--docs", DL19, "--method", "rankk", "--model", "unused",
                 "--dry-run", "--depth", "20")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first = json.loads(proc.stdout.splitlines()[0])
    _run, texts = docs.read_candidates(data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl")
    request = json.dumps(first["request"], ensure_ascii=False)
    top_doc = read_run(run).top(1).df
    qid = first["qid"]
    docid = top_doc[top_doc["qid"] == qid]["docid"].iloc[0]
    assert json.dumps(texts[docid][:80], ensure_ascii=False)[1:-1] in request  # the passage came via the docstore
    assert "[INFO]" not in proc.stderr and "Traceback" not in proc.stderr
