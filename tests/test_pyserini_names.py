"""pyserini's names for topics and qrels resolve to the same files: from $RANKK_DATA, from a seeded pyserini cache
folder, or through a seeded IR_DATASETS_HOME (the real ir_datasets code); offline, a name found nowhere is one
line saying where it would come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rankk_cli import pyserini_names, sources
from rankk_cli.errors import RankkError


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No $RANKK_DATA files and an empty pyserini cache: only what a test seeds is there."""
    empty = tmp_path / "empty-data"
    empty.mkdir()
    cache = tmp_path / "pyserini"
    monkeypatch.setenv("RANKK_DATA", str(empty))
    monkeypatch.setenv("PYSERINI_CACHE", str(cache))
    return cache / "topics-and-qrels"


def fresh(code: str):
    """``code`` in a new interpreter (ir_datasets fixes its home at import); returns the JSON it prints."""
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_names_map_to_anserini_tools_files():
    cases = {("dl19-passage", "topics"): "topics.dl19-passage.txt", ("dl19-passage", "qrels"): "qrels.dl19-passage.txt",
             ("dl20", "topics"): "topics.dl20.txt", ("dl20-passage", "qrels"): "qrels.dl20-passage.txt",
             ("msmarco-passage-dev-subset", "topics"): "topics.msmarco-passage.dev-subset.txt",
             ("beir-v1.0.0-scifact-test", "topics"): "topics.beir-v1.0.0-scifact.test.tsv.gz",
             ("beir-v1.0.0-scifact", "qrels"): "qrels.beir-v1.0.0-scifact.test.txt",
             ("beir-v1.0.0-cqadupstack-android-test", "qrels"): "qrels.beir-v1.0.0-cqadupstack-android.test.txt",
             ("bright-biology", "topics"): "topics.bright-biology.tsv.gz"}
    for (name, kind), filename in cases.items():
        assert pyserini_names.lookup(name, kind).filename == filename
    assert pyserini_names.lookup("dl19-passage", "qrels").irds == "msmarco-passage/trec-dl-2019/judged"
    assert pyserini_names.lookup("beir-v1.0.0-nfcorpus-test", "topics").irds == "beir/nfcorpus/test"
    for name in ("beir-v1.0.0-nope-test", "dl19", "bright-nope", "msmarco-passage/trec-dl-2019/judged"):
        assert pyserini_names.lookup(name, "topics") is None


def test_every_ir_datasets_route_is_a_registered_id():
    from rankk_cli import irds

    names = ["dl19-passage", "dl20", "dl20-passage", "msmarco-passage-dev-subset"] + \
        [f"beir-v1.0.0-{ds}-test" for ds in pyserini_names._BEIR]
    for name in names:
        for kind in ("topics", "qrels"):
            ident = pyserini_names.lookup(name, kind).irds
            assert ident is None or irds.is_dataset_id(ident), (name, kind, ident)


def test_names_resolve_to_the_shared_data_files(data):
    dl19, dl20, beir = data / "trec-dl" / "dl19", data / "trec-dl" / "dl20", data / "beir-topics-qrels"
    assert sources.load_topics("dl19-passage") == sources.load_topics(dl19 / "topics.tsv")
    assert sources.load_qrels("dl19-passage").equals(sources.load_qrels(dl19 / "qrels.txt"))
    topics20 = sources.load_topics("dl20")
    assert topics20 == sources.load_topics(dl20 / "topics.tsv") and len(topics20) == 200
    for name in ("dl20-passage", "dl20"):
        assert sources.load_qrels(name).equals(sources.load_qrels(dl20 / "qrels.txt"))
    for name in ("beir-v1.0.0-scifact-test", "beir-v1.0.0-scifact"):
        assert sources.load_topics(name) == sources.load_topics(beir / "topics.beir-v1.0.0-scifact.test.tsv.gz")
        assert sources.load_qrels(name).equals(sources.load_qrels(beir / "qrels.beir-v1.0.0-scifact.test.txt"))
    bright = data / "bright-topics-qrels"
    assert sources.load_topics("bright-biology") == sources.load_topics(bright / "topics.bright-biology.tsv.gz")


def test_a_seeded_pyserini_cache_is_read(nowhere, data):
    nowhere.mkdir(parents=True)
    dl19 = data / "trec-dl" / "dl19"
    (nowhere / "topics.dl19-passage.txt").write_bytes((dl19 / "topics.tsv").read_bytes())
    (nowhere / "qrels.dl19-passage.txt").write_bytes((dl19 / "qrels.txt").read_bytes())
    (nowhere / "topics.msmarco-passage.dev-subset.txt").write_text("2\tandrogen receptor define\n1215\t3 levels\n")
    (nowhere / "qrels.msmarco-passage.dev-subset.txt").write_text("2 0 130 1\n1215 0 8700 1\n")
    assert sources.load_topics("dl19-passage") == sources.load_topics(dl19 / "topics.tsv")
    assert sources.load_qrels("dl19-passage").equals(sources.load_qrels(dl19 / "qrels.txt"))
    assert sources.load_topics("msmarco-passage-dev-subset") == {"2": "androgen receptor define", "1215": "3 levels"}
    assert sources.load_qrels("msmarco-passage-dev-subset")["docid"].tolist() == ["130", "8700"]
    # a bad file in the cache is named like any other input
    (nowhere / "qrels.dl20-passage.txt").write_text("1 0 d1\n")
    with pytest.raises(RankkError, match=r"qrels\.dl20-passage\.txt:1: expected 4 columns"):
        sources.load_qrels("dl20-passage")


def test_eval_with_a_name_from_the_pyserini_cache_shares_the_file_cache_entry(nowhere, data, rankk):
    nowhere.mkdir(parents=True)
    dl19 = data / "trec-dl" / "dl19"
    (nowhere / "qrels.dl19-passage.txt").write_bytes((dl19 / "qrels.txt").read_bytes())
    run = dl19 / "runs" / "bm25.trec"
    by_name = rankk("eval", run, "--qrels", "dl19-passage", "-m", "ndcg_cut.10", "--format", "tsv")
    assert by_name.returncode == 0, by_name.stderr
    assert by_name.stdout.splitlines()[1] == "bm25\tnDCG@10\t0.5058"
    by_file = rankk("eval", run, "--qrels", dl19 / "qrels.txt", "-m", "nDCG@10", "--format", "tsv")
    assert by_file.stdout == by_name.stdout and "reused cached results" in by_file.stderr  # same file, same key


def test_names_through_a_seeded_ir_datasets_home(nowhere, irds_seeded, data, rankk):
    # neither $RANKK_DATA nor the pyserini cache has them: the real ir_datasets code reads the seeded home
    dl19, dl20 = data / "trec-dl" / "dl19", data / "trec-dl" / "dl20"
    got = fresh("from rankk_cli import sources\n"
                "t19 = sources.load_topics('dl19-passage'); q19 = sources.load_qrels('dl19-passage')\n"
                "t20 = sources.load_topics('dl20'); q20 = sources.load_qrels('dl20-passage')\n"
                "print(json.dumps([t19, sorted(map(list, q19.itertuples(index=False, name=None))), t20, "
                "sorted(map(list, q20.itertuples(index=False, name=None)))]))")
    t19, q19, t20, q20 = got
    assert t19 == sources.load_topics(dl19 / "topics.tsv") and t20 == sources.load_topics(dl20 / "topics.tsv")
    for rows, path in ((q19, dl19 / "qrels.txt"), (q20, dl20 / "qrels.txt")):
        assert rows == sorted(map(list, sources.load_qrels(path).itertuples(index=False, name=None)))
    proc = rankk("eval", dl19 / "runs" / "bm25.trec", "--qrels", "dl19-passage", "--format", "tsv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1] == "bm25\tnDCG@10\t0.5058"


def test_a_name_found_nowhere_is_one_line_saying_where_it_would_come_from(nowhere, rankk, tmp_path):
    run = tmp_path / "r.trec"
    run.write_text("1 Q0 d1 1 1.0 t\n")
    proc = rankk("eval", run, "--qrels", "beir-v1.0.0-webis-touche2020-test")
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("rankk: error: pyserini qrels name 'beir-v1.0.0-webis-touche2020-test': expected ")
    assert str(nowhere / "qrels.beir-v1.0.0-webis-touche2020.test.txt") in line
    assert line.endswith("https://raw.githubusercontent.com/castorini/anserini-tools/master/topics-and-qrels/"
                         f"qrels.beir-v1.0.0-webis-touche2020.test.txt (what pyserini downloads into {nowhere}/)")
    # with an ir_datasets route that is not seeded (this machine is offline, as the bad-input table assumes)
    proc = rankk("eval", run, "--qrels", "msmarco-passage-dev-subset")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert "ir_datasets id 'msmarco-passage/dev/small'" in line and "qrels.msmarco-passage.dev-subset.txt" in line
    assert "Traceback" not in proc.stderr


def test_cache_keys_of_a_name_are_its_files_digest(data, nowhere):
    from rankk_cli.evaluate import qrels_identity
    from rankk_cli.retrieve import _topics_identity

    nowhere.mkdir(parents=True)
    dl19 = data / "trec-dl" / "dl19"
    # not on this machine: the ir_datasets id it would be read from (no download to compute a key)
    assert qrels_identity("dl19-passage") == "id:msmarco-passage/trec-dl-2019/judged"
    (nowhere / "topics.dl19-passage.txt").write_bytes((dl19 / "topics.tsv").read_bytes())
    (nowhere / "qrels.dl19-passage.txt").write_bytes((dl19 / "qrels.txt").read_bytes())
    assert qrels_identity("dl19-passage") == qrels_identity(str(dl19 / "qrels.txt"))
    assert _topics_identity("dl19-passage") == _topics_identity(str(dl19 / "topics.tsv"))
    (nowhere / "qrels.dl19-passage.txt").write_text("1 0 d1 1\n")  # another file, another key
    assert qrels_identity("dl19-passage") != qrels_identity(str(dl19 / "qrels.txt"))
