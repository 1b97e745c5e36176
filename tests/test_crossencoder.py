"""The cross-encoder method: one round of (query, passage) pairs through vLLM's score API, on a random-weight
BERT-style cross-encoder built here (rankk_cli.testing.build_tiny_cross_encoder): vLLM's scores equal
transformers' forward pass on the same weights and pair encoding, a cached re-run makes 0 engine calls, and a
model that is no cross-encoder is one line."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.methods.base import FAILED, OK, RerankConfig
from rankk_cli.rerank.methods.crossencoder import CrossEncoder
from test_parsers import cands, drive


def test_one_round_of_pairs_scores_and_a_missing_score_below():
    def replies(calls, step):
        assert [c.request.pair for c in calls] == [("q", f"text {i}") for i in range(4)]
        assert all(c.request.embed is None and c.request.messages is None for c in calls)
        return [Completion("", "stop", embedding=[0.2]), Completion("", "error", error="boom"),
                Completion("", "length", input_tokens=512, embedding=[0.9]), Completion("", "stop", embedding=[0.2])]

    res, steps = drive(CrossEncoder(RerankConfig()), cands(4), replies)
    assert len(steps) == 1 and METHODS.get("crossencoder") is CrossEncoder
    assert res.order == ["d2", "d0", "d3", "d1"]  # 0.9, then the 0.2 tie in first-stage order, the failed last
    recs = res.records
    assert [r["outcome"] for r in recs] == [OK, FAILED, OK, OK] and "boom" in recs[1]["repairs"]
    assert recs[2]["note"] == "pair cut at the model's context (512 tokens)" and recs[1]["score"] < 0.2


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory):
    from rankk_cli.testing import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / "tiny-ce")


@pytest.fixture(scope="module")
def ce_vllm(tiny_ce):
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rankk_cli.rerank.engines.base import EngineOptions
    from rankk_cli.rerank.engines.vllm import VLLMEngine

    # float32: the comparison with transformers below is then exact up to float noise (bf16 is ~1e-2 off)
    engine = VLLMEngine(str(tiny_ce), options=EngineOptions(dtype="float32"))
    yield engine
    engine.close()


PAIRS = [("what is a flea", "Fleas are small wingless insects that feed on blood."),
         ("what is a flea", "The moon orbits the earth once a month."),
         ("how long is a marathon", "A marathon is 42.195 kilometres long."),
         ("how long is a marathon", "word " * 800)]  # cut at the model's 512 positions


def test_vllm_scores_equal_transformers_on_the_same_pair_encoding(ce_vllm, tiny_ce):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    got = ce_vllm.generate([Request(pair=p) for p in PAIRS])
    tok = AutoTokenizer.from_pretrained(str(tiny_ce))
    model = BertForSequenceClassification.from_pretrained(str(tiny_ce)).eval()
    with torch.no_grad():
        enc = tok([q for q, _ in PAIRS], [p for _, p in PAIRS], truncation=True, max_length=512, padding=True,
                  return_tensors="pt")
        want = torch.sigmoid(model(**enc).logits[:, 0]).tolist()
    scores = [c.embedding[0] for c in got]
    assert scores == pytest.approx(want, abs=1e-4), (scores, want)
    assert len(set(round(s, 4) for s in scores)) == len(scores)  # random weights, yet distinct pairs differ
    assert [c.finish_reason for c in got] == ["stop", "stop", "stop", "length"] and got[3].input_tokens == 512


def test_crossencoder_rerank_through_vllm_cached_rerun(ce_vllm, tiny_ce, dl19_subset, tmp_path):
    from rankk_cli.rerank.pipeline import rerank_command

    path, topics = dl19_subset(2, 6)
    args = dict(run=path, topics=str(topics), method="crossencoder", model=str(tiny_ce), depth=6,
                engine_obj=ce_vllm, fmt="json", progress=False)
    first = rerank_command(output=tmp_path / "a.trec", **args)
    assert first["engine_calls"] == 1 and first["requests"] == 12 and first["outcomes"]["ok"] == 12
    rows = pq.read_table(str(tmp_path / "a.trec") + ".windows.parquet").to_pylist()
    by_doc = {(r["qid"], r["docids"][0]): r["score"] for r in rows}
    assert all(0.0 < s < 1.0 and not math.isnan(s) for s in by_doc.values())
    from rankk_cli.runs import read_run

    run = read_run(tmp_path / "a.trec")
    for qid, group in run.by_query():  # the run's head is the pairs sorted by their recorded score
        head = group["docid"].tolist()[:6]
        assert [by_doc[(qid, x)] for x in head] == sorted((by_doc[(qid, x)] for x in head), reverse=True)
    again = rerank_command(output=tmp_path / "b.trec", **args)
    assert again["engine_calls"] == 0 and again["cache_hits"] == 12
    assert (tmp_path / "a.trec").read_text().replace("a.trec", "") == \
        (tmp_path / "b.trec").read_text().replace("b.trec", "")


def test_a_model_that_is_no_cross_encoder_is_one_line(tiny_vllm):
    with pytest.raises(RankkError, match="is a generative model; scoring pairs needs a cross-encoder"):
        tiny_vllm.generate([Request(pair=("q", "p"))])
