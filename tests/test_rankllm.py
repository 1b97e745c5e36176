"""RankLLM request/result JSONL (castorini/rank_llm data.py): read wherever a candidates file is, written by rerank."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rankk_cli.docs import open_docs, read_candidates
from rankk_cli.errors import RankkError
from rankk_cli.runs import read_run

# Written by hand in rank_llm's shape (Request{query: Query{text, qid}, candidates: [Candidate{docid, score,
# doc}]}): qids and docids as strings or integers (rank_llm allows both), doc texts under the keys its prompt
# builders read (text / segment / contents, a title in front), extra doc keys that must travel untouched.
GOLDEN_REQUEST = """\
{"query": {"text": "how do fleas live", "qid": "q1"}, "candidates": [{"docid": "d1", "score": 9.5, "doc": {"title": "Cats", "text": "Cats sleep a lot."}}, {"docid": "d2", "score": 8.25, "doc": {"segment": "Fleas lay eggs.", "title": "", "url": "http://x/2"}}, {"docid": "d3", "score": 7.0, "doc": {"contents": "The flea life cycle.", "id": "d3"}}, {"docid": "d4", "score": 6.5, "doc": {"text": "Dogs bark.", "contents": "never read: text wins"}}]}

{"query": {"text": "capital of france", "qid": 2}, "candidates": [{"docid": 10, "score": 3, "doc": {"body": "Lyon is big."}}, {"docid": "d5", "score": 2.5, "doc": {"passage": "Paris is the capital."}}]}
"""
GOLDEN_QRELS = "q1 0 d2 2\nq1 0 d3 1\n2 0 d5 1\n"
# rankk rerank --method oracle --depth 3 of the request above, by hand: q1's top 3 by grade (d2 > d3 > d1), d4
# below them; query 2's two candidates swapped; scores strictly decreasing; every doc object as given
GOLDEN_RESULT_ORDER = {"q1": ["d2", "d3", "d1", "d4"], "2": ["d5", "10"]}


@pytest.fixture
def request_file(tmp_path) -> Path:
    path = tmp_path / "requests.jsonl"
    path.write_text(GOLDEN_REQUEST)
    return path


def test_a_request_file_is_a_candidates_run_with_its_texts(request_file):
    run, texts = read_candidates(request_file)
    assert run.df[["qid", "docid", "rank"]].values.tolist() == [
        ["q1", "d1", 1], ["q1", "d2", 2], ["q1", "d3", 3], ["q1", "d4", 4], ["2", "10", 1], ["2", "d5", 2]]
    assert run.df["score"].tolist() == [9.5, 8.25, 7.0, 6.5, 3.0, 2.5]
    # rank_llm's key order (text, segment, contents, content, body, passage), a non-empty title in front
    assert texts == {"d1": "Cats Cats sleep a lot.", "d2": "Fleas lay eggs.", "d3": "The flea life cycle.",
                     "d4": "Dogs bark.", "10": "Lyon is big.", "d5": "Paris is the capital."}
    assert run.meta["rankllm"]["queries"] == {"q1": "how do fleas live", "2": "capital of france"}
    assert run.meta["rankllm"]["docs"]["d2"] == {"segment": "Fleas lay eggs.", "title": "", "url": "http://x/2"}
    # also as a document source, plain or gzipped
    gz = request_file.with_name("requests.jsonl.gz")
    gz.write_bytes(gzip.compress(GOLDEN_REQUEST.encode()))
    assert open_docs(str(gz)).get(["d3", "10"]) == {"d3": "The flea life cycle.", "10": "Lyon is big."}
    assert read_run(gz).df["docid"].tolist() == run.df["docid"].tolist()


def test_round_trip_rerank_writes_rankllm_results_that_read_again(rankk, request_file, tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(GOLDEN_QRELS)
    out = tmp_path / "reranked.jsonl"
    # no --topics: the request file carries the query texts
    proc = rankk("rerank", request_file, "-o", out, "--method", "oracle", "--qrels", qrels, "--depth", "3")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    given = {str(o["query"]["qid"]): o for o in map(json.loads, filter(None, GOLDEN_REQUEST.splitlines()))}
    docs = {str(c["docid"]): c["doc"] for o in given.values() for c in o["candidates"]}
    assert [o["query"] for o in lines] == [{"text": "how do fleas live", "qid": "q1"},
                                           {"text": "capital of france", "qid": "2"}]
    for o in lines:
        assert set(o) == {"query", "candidates"}  # exactly rank_llm's Result/Request fields
        cands = o["candidates"]
        assert all(set(c) == {"docid", "score", "doc"} for c in cands)
        assert [c["docid"] for c in cands] == GOLDEN_RESULT_ORDER[o["query"]["qid"]]
        assert [c["doc"] for c in cands] == [docs[c["docid"]] for c in cands]  # carried over untouched
        scores = [c["score"] for c in cands]
        assert all(a > b for a, b in zip(scores, scores[1:]))
    # read again: as a rerank input (its own candidates, texts and queries) and as a run to score
    run, texts = read_candidates(out)
    assert run.df.groupby("qid", sort=False)["docid"].apply(list).to_dict() == GOLDEN_RESULT_ORDER
    assert texts == read_candidates(request_file)[1]
    proc = rankk("eval", out, "--qrels", qrels, "-m", "nDCG@3", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["measure"] == "nDCG@3" and row["value"] == pytest.approx(1.0)  # the oracle's order, read back


def test_report_reads_rankllm_jsonl_runs_as_systems(rankk, request_file, tmp_path):
    """A RankLLM request file and rankk's ``-o X.jsonl`` result sit in a report folder like any run: each is a
    system named without its suffix, scored, and nothing is listed as unread."""
    ds = tmp_path / "report" / "toy"
    ds.mkdir(parents=True)
    (ds / "qrels.txt").write_text(GOLDEN_QRELS)
    (ds / "bm25.jsonl").write_text(GOLDEN_REQUEST)
    proc = rankk("rerank", request_file, "-o", ds / "oracle.jsonl", "--method", "oracle", "--qrels",
                 ds / "qrels.txt", "--depth", "3")
    assert proc.returncode == 0, proc.stderr
    proc = rankk("report", tmp_path / "report", "-m", "nDCG@3", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "not read" not in proc.stderr
    table = json.loads(proc.stdout)
    systems = {row["system"]: row for row in table["systems"]}
    assert set(systems) == {"bm25", "oracle"} and table["baseline"] == "bm25" and table["queries"] == {"toy": 2}
    assert systems["oracle"]["values"]["toy"]["nDCG@3"] == pytest.approx(1.0)
    assert systems["bm25"]["values"]["toy"]["nDCG@3"] < 1.0
    assert systems["oracle"]["cost"] is not None  # its windows file (oracle.jsonl.windows.parquet) was read


def test_a_trec_run_with_docs_is_written_with_contents_for_every_candidate(request_file, tmp_path, capsys):
    from rankk_cli.rerank.pipeline import rerank_command

    trec = tmp_path / "run.trec"
    trec.write_text("q1 Q0 d1 1 4 bm25\nq1 Q0 d2 2 3 bm25\nq1 Q0 d3 3 2 bm25\nq1 Q0 d4 4 1 bm25\n")
    topics = tmp_path / "topics.tsv"
    topics.write_text("q1\thow do fleas live\n")
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(GOLDEN_QRELS)
    out = tmp_path / "out.jsonl.gz"
    rerank_command(run=trec, output=out, method="oracle", model=None, docs=str(request_file), topics=str(topics),
                   depth=2, qrels=str(qrels), progress=False)
    capsys.readouterr()
    (line,) = [json.loads(x) for x in gzip.decompress(out.read_bytes()).decode().splitlines()]
    # beyond --depth too (d3, d4 were never read for reranking): every candidate has its text
    assert [(c["docid"], c["doc"]) for c in line["candidates"]] == [
        ("d2", {"contents": "Fleas lay eggs."}), ("d1", {"contents": "Cats Cats sleep a lot."}),
        ("d3", {"contents": "The flea life cycle."}), ("d4", {"contents": "Dogs bark."})]


GOOD_Q = '"query": {"text": "t", "qid": "q"}'


@pytest.mark.parametrize("line,needle", [
    ('{"query": {"text": "t", "qid": "q"}, "candidates": [', "expected a JSON object, found invalid JSON"),
    ('{"query": {"text": "t"}, "candidates": []}', "expected 'query' to be an object {\"text\", \"qid\"}"),
    ('{"query": {"text": "", "qid": "q"}, "candidates": []}', "expected query 'text' to be a non-empty string"),
    ('{"query": {"text": "t", "qid": "a b"}, "candidates": []}', "expected query 'qid' to be a non-empty id"),
    ('{' + GOOD_Q + ', "candidates": {"docid": "d"}}', "expected 'candidates' to be a list, found dict"),
    ('{' + GOOD_Q + ', "candidates": [{"score": 1, "doc": {"text": "x"}}]}',
     'candidate 1: expected an object {"docid", "score", "doc"}'),
    ('{' + GOOD_Q + ', "candidates": [{"docid": true, "score": 1, "doc": {"text": "x"}}]}',
     "candidate 1: expected 'docid' to be a string or integer, found true"),
    ('{' + GOOD_Q + ', "candidates": [{"docid": "d", "score": "high", "doc": {"text": "x"}}]}',
     "candidate 1 (docid 'd'): expected a finite number as 'score', found '\"high\"'"),
    ('{' + GOOD_Q + ', "candidates": [{"docid": "d", "score": 1, "doc": "x"}]}',
     "candidate 1 (docid 'd'): expected 'doc' to be an object holding the passage"),
    ('{' + GOOD_Q + ', "candidates": [{"docid": "d", "score": 1, "doc": {"title": "x", "url": "u"}}]}',
     "candidate 1 (docid 'd'): expected the passage in one of doc's 'text', 'segment', 'contents'"),
    ('{' + GOOD_Q + ', "candidates": [{"docid": "d", "score": 1, "doc": {"text": ["x"]}}]}',
     "candidate 1 (docid 'd'): expected doc 'text' to be a string"),
    ('{' + GOOD_Q + ', "candidates": [{"docid": "d", "score": 1, "doc": {"text": "x"}}, '
     '{"docid": "d", "score": 0, "doc": {"text": "y"}}]}',
     "candidate 2 (docid 'd'): expected each docid once per query, found it again"),
    ('{"query": {"text": "t", "qid": "q0"}, "candidates": []}',
     "expected each qid once, found qid 'q0' again (first at line 1)"),
    ('{"query": {"text": "t", "qid": "q2"}, "candidates": [{"docid": "z", "score": 1, "doc": {"text": "y"}}]}',
     "candidate 1 (docid 'z'): expected the same doc as at line 1, found another"),
    ('{"qid": "q", "docid": "d", "rank": 1, "score": 1, "text": "x"}', "expected a RankLLM request"),
])
def test_a_malformed_record_is_one_line_naming_file_and_line(request_file, tmp_path, line, needle):
    first = '{"query": {"text": "t", "qid": "q0"}, "candidates": [{"docid": "z", "score": 1, "doc": {"text": "x"}}]}'
    path = tmp_path / "bad.jsonl"
    path.write_text(first + "\n\n" + line + "\n")  # the bad record is on line 3 (a blank line counted)
    with pytest.raises(RankkError) as err:
        read_candidates(path)
    assert str(err.value).startswith(f"{path}:3: ") and needle in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_a_malformed_request_file_exits_2_with_one_line_and_writes_nothing(rankk, tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"query": {"text": "t", "qid": "q"}, "candidates": [{"docid": "d", '
                                   b'"score": null, "doc": {"text": "x"}}]}\n'))
    out = tmp_path / "out.jsonl"
    proc = rankk("rerank", path, "-o", out, "--method", "rankk", "--model", "m", "--depth", "5")
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0] == (f"rankk: error: {path}:1: candidate 1 (docid 'd'): expected a finite number as 'score', "
                        "found 'null'")
    assert not out.exists() and not Path(str(out) + ".windows.parquet").exists()


def test_a_json_array_of_requests_reads_as_the_jsonl_does(request_file, tmp_path):
    # rank_llm's DataWriter.write_in_json_format / its older retrieve caches: json.dumps(list, indent=2)
    requests = [json.loads(x) for x in GOLDEN_REQUEST.splitlines() if x.strip()]
    array = tmp_path / "retrieve_results_x.json"
    array.write_text(json.dumps(requests, indent=2, ensure_ascii=False))
    run, texts = read_candidates(request_file)
    arun, atexts = read_candidates(array)
    assert arun.df.equals(run.df) and atexts == texts and arun.meta["rankllm"] == run.meta["rankllm"]
    assert read_run(array).df[["qid", "docid"]].equals(run.df[["qid", "docid"]])  # eval reads it too
    lines = tmp_path / "lines.json"  # JSON lines under a .json name: not mistaken for a {qid: {docid: score}} run
    lines.write_text(GOLDEN_REQUEST)
    from rankk_cli.rerank.pipeline import is_candidates_input

    assert is_candidates_input(array) and is_candidates_input(lines)
    assert read_candidates(lines)[0].df.equals(run.df)
    # a bad item names the line it starts on
    requests[1]["candidates"][0]["score"] = "x"
    array.write_text(json.dumps(requests, indent=2))
    starts = [n for n, x in enumerate(json.dumps(requests, indent=2).splitlines(), start=1) if x == "  {"]
    start = starts[1]  # the second request's first line
    with pytest.raises(RankkError) as err:
        read_candidates(array)
    assert str(err.value).startswith(f"{array}:{start}: candidate 1 (docid '10'): expected a finite number")
    array.write_text('[\n  {"query": {"text": "t", "qid": "q"}, "candidates": []}\n  {"query": 1}\n]')
    with pytest.raises(RankkError) as err:
        read_candidates(array)
    assert str(err.value).startswith(f"{array}:3: expected ',' or ']' after a request in the JSON array")
