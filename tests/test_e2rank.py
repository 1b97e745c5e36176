"""E2Rank: the pseudo query (golden, E2Rank's src/eval.py listwise prompt), one embedding round, the stated repair
of a pseudo query cut at the model's context, and the real packaged MiniLM through vLLM pooling."""

from __future__ import annotations


import pyarrow.parquet as pq

from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.methods.base import OK, REPAIRED, Candidate, RerankConfig, method_options
from rankk_cli.rerank.methods.e2rank import E2Rank, pseudo_query
from rankk_cli.rerank.methods.embed import Embed

GOLDEN = ("Given a web search query and some relevant documents, rerank the documents that answer the query:\n"
          "Documents:\n[1] alpha {y} two\n[2] beta\nSearch Query: what is {x}?")


def cands(n):
    return [Candidate(f"d{i}", f"passage  {i}\nmore", float(n - i), i + 1) for i in range(n)]


def test_pseudo_query_golden_and_the_qwen3_template():
    assert pseudo_query("what is {x}?", ["alpha {y}\n two", "beta", "gamma"], docs=2) == GOLDEN
    assert pseudo_query("q", ["a b c d"], words=2) .endswith("[1] a b\nSearch Query: q")
    assert pseudo_query("what is {x}?", ["alpha {y}\n two", "beta"], template="qwen3") == (
        "<|im_start|>user\n" + GOLDEN + "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert METHODS.get("e2rank") is E2Rank and E2Rank.resolve_model(None) == Embed.resolve_model(None)


def test_one_round_pseudo_query_then_cosine_and_a_cut_pseudo_query_is_stated():
    m = E2Rank(RerankConfig(), **method_options(E2Rank, ["docs=2", "eos=<|endoftext|>"]))
    gen = m.rerank("q1", "the query", cands(3))
    calls = next(gen)
    assert len(calls) == 4 and calls[0].request.embed.startswith("Given a web search query")
    assert "[2] passage 1 more\nSearch Query: the query" in calls[0].request.embed
    assert "[3]" not in calls[0].request.embed  # docs=2: only the top two
    assert [c.request.embed for c in calls[1:]] == [f"passage {i} more<|endoftext|>" for i in range(3)]
    vec = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [1.0, 1.0]}
    comps = [Completion("", "length", input_tokens=256, embedding=[0.0, 1.0])] + \
        [Completion("", "stop", embedding=vec[i]) for i in range(3)]
    try:
        gen.send(comps)
    except StopIteration as stop:
        res = stop.value
    assert res.order == ["d1", "d2", "d0"]
    (rec,) = res.records
    assert rec["outcome"] == REPAIRED and "pseudo query cut at the model's context (256 tokens)" in rec["repairs"]


def test_e2rank_on_minilm_through_vllm_pooling_cached_rerun(minilm_vllm, dl19_subset, tmp_path):
    from rankk_cli.rerank.pipeline import rerank_command

    cands_path, topics = dl19_subset(2, 8)
    args = dict(run=cands_path, topics=str(topics), method="e2rank", model=Embed.resolve_model(None), depth=8,
                engine_obj=minilm_vllm, fmt="json", progress=False)
    short = rerank_command(output=tmp_path / "a.trec", truncate=30, method_opts=("docs=4",), **args)
    assert short["engine_calls"] == 1 and short["requests"] == 2 * 9 and short["outcomes"]["ok"] == 2
    rows = pq.read_table(str(tmp_path / "a.trec") + ".windows.parquet").to_pylist()
    assert all(r["outcome"] == OK and sorted(r["parsed"]) == list(range(1, 9)) for r in rows)
    # the reference defaults (20 docs of 1024 words) overflow MiniLM's 256 tokens: said, per query
    full = rerank_command(output=tmp_path / "b.trec", **args)
    assert full["outcomes"]["repaired"] == 2
    again = rerank_command(output=tmp_path / "c.trec", truncate=30, method_opts=("docs=4",), **args)
    assert again["engine_calls"] == 0 and again["cache_hits"] == 2 * 9
    assert (tmp_path / "a.trec").read_text().replace("a.trec", "") == \
        (tmp_path / "c.trec").read_text().replace("c.trec", "")
