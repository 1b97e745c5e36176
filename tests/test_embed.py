"""The embed method: contract (one round, cosine ranking, stated repairs) and real MiniLM on vLLM CPU."""

from __future__ import annotations

import json

import pytest

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import FAILED, OK, REPAIRED, Candidate, RerankConfig
from rankk_cli.rerank.methods.embed import Embed, cosine, minilm_dir


def _cands(n):
    return [Candidate(f"d{i}", f"passage {i}", float(n - i), i + 1) for i in range(n)]


def _vec(c):
    return Completion("", "stop", embedding=c)


def drive(method, completions_for):
    gen = method.rerank("q1", "the query", _cands(3))
    calls = next(gen)
    try:
        gen.send(completions_for(calls))
    except StopIteration as stop:
        return calls, stop.value
    raise AssertionError("embed must finish after one round")


def test_one_round_with_query_and_all_passages_ranked_by_cosine():
    vecs = {"the query": [1.0, 0.0], "passage 0": [0.0, 1.0], "passage 1": [1.0, 0.1], "passage 2": [1.0, 1.0]}
    calls, res = drive(Embed(RerankConfig()), lambda calls: [_vec(vecs[c.request.embed]) for c in calls])
    assert [c.request.embed for c in calls] == ["the query", "passage 0", "passage 1", "passage 2"]
    assert all(c.request.prompt is None and c.request.messages is None for c in calls)
    assert res.order == ["d1", "d2", "d0"]
    assert res.scores["d1"] > res.scores["d2"] > res.scores["d0"]
    assert res.scores["d2"] == pytest.approx(cosine([1, 0], [1, 1]))
    (rec,) = res.records
    assert rec["outcome"] == OK and rec["parsed"] == [2, 3, 1] and len(rec["calls"]) == 4


def test_a_missing_passage_embedding_is_repaired_and_stated():
    def answer(calls):
        out = [_vec([1.0, float(i)]) for i in range(len(calls))]
        out[1] = Completion("", "error", error="boom")
        return out

    _calls, res = drive(Embed(RerankConfig()), answer)
    assert res.order[-1] == "d0"  # the failed one goes below the embedded ones
    assert res.scores["d0"] < min(res.scores["d1"], res.scores["d2"])
    assert res.records[0]["outcome"] == REPAIRED and "boom" in res.records[0]["repairs"]


def test_a_missing_query_embedding_keeps_first_stage_order():
    _calls, res = drive(Embed(RerankConfig()),
                        lambda calls: [Completion("", "error", error="down")] + [_vec([1.0])] * (len(calls) - 1))
    assert res.order == ["d0", "d1", "d2"] and res.scores is None
    assert res.records[0]["outcome"] == FAILED and "down" in res.records[0]["repairs"]


def test_model_resolution_lives_in_the_method():
    assert Embed.resolve_model(None) == minilm_dir() == Embed.resolve_model("minilm")
    assert (__import__("pathlib").Path(minilm_dir()) / "config.json").exists()
    assert Embed.resolve_model("/some/dir") == "/some/dir"


def test_identical_texts_have_cosine_one_and_long_passages_truncate(minilm_vllm):
    long = " ".join(f"word{i % 97}" for i in range(5000))
    a, b, c, d = minilm_vllm.generate([Request(embed="a cat on a mat"), Request(embed="a cat on a mat"),
                                       Request(embed=long), Request(embed="quantum chromodynamics lecture")])
    assert cosine(a.embedding, b.embedding) == pytest.approx(1.0, abs=1e-6)
    assert cosine(a.embedding, d.embedding) < 0.5
    assert len(c.embedding) == len(a.embedding) == 384
    assert c.finish_reason == "length" and c.input_tokens == 256  # cut to MiniLM's context, said, no error
    assert a.finish_reason == "stop"


def test_embed_and_generate_requests_cannot_mix_on_a_pooling_model(minilm_vllm):
    from rankk_cli.errors import RankkError

    with pytest.raises(RankkError, match="embedding"):
        minilm_vllm.generate([Request(prompt="hello")])


def test_noveleval_rerank_is_cached_and_resumable(minilm_vllm, data, tmp_path):
    from rankk_cli.rerank.pipeline import rerank_command

    args = dict(run=data / "noveleval/runs/given-order.trec", docs=str(data / "noveleval/corpus.jsonl"),
                topics=str(data / "noveleval/topics.tsv"), method="embed", model=Embed.resolve_model(None),
                engine_obj=minilm_vllm, fmt="json", progress=False)
    first = rerank_command(output=tmp_path / "a.trec", **args)
    assert first["engine_calls"] == 1  # all 21 queries x (1 + 20) texts in ONE engine call
    assert first["requests"] == 21 * 21 and first["outcomes"]["ok"] == 21
    second = rerank_command(output=tmp_path / "b.trec", **args)
    assert second["engine_calls"] == 0 and second["cache_hits"] == 21 * 21
    assert (tmp_path / "a.trec").read_text().replace("a.trec", "") == \
        (tmp_path / "b.trec").read_text().replace("b.trec", "")


def test_embed_beats_bm25_on_dl19(minilm_vllm, data, tmp_path):
    """MUST SHOW: MiniLM cosine over DL19 BM25 top-100 lifts nDCG@10 well above BM25's 0.5058."""
    import ir_measures
    from ir_measures import nDCG

    from rankk_cli.rerank.pipeline import rerank_command

    dl19 = data / "trec-dl/dl19"
    out = tmp_path / "embed.dl19.trec"
    summary = rerank_command(run=dl19 / "candidates/bm25.jsonl", topics=str(dl19 / "topics.tsv"), output=out,
                             method="embed", model="minilm", engine_obj=minilm_vllm, fmt="json", progress=False)
    assert summary["engine_calls"] == 1 and summary["outcomes"]["failed"] == 0
    qrels = list(ir_measures.read_trec_qrels(str(dl19 / "qrels.txt")))
    bm25 = ir_measures.calc_aggregate([nDCG @ 10], qrels, list(ir_measures.read_trec_run(
        str(dl19 / "runs/bm25.trec"))))[nDCG @ 10] if (dl19 / "runs/bm25.trec").exists() else 0.5058
    embed = ir_measures.calc_aggregate([nDCG @ 10], qrels, list(ir_measures.read_trec_run(str(out))))[nDCG @ 10]
    print(json.dumps({"bm25_ndcg10": round(bm25, 4), "embed_ndcg10": round(embed, 4),
                      "seconds": summary["seconds"]}))
    assert bm25 == pytest.approx(0.5058, abs=1e-3)
    assert embed >= 0.60
