"""The one rerank spec: every rerank flag checked in ``RerankSpec.build`` before any input is read, the method
built once, engine flags checked by the engine class, flags nobody uses warned about."""

from __future__ import annotations

import json

import pytest
from fakes import FakeEngine

from rankk_cli.errors import RankkError
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.pipeline import rerank_command
from rankk_cli.rerank.spec import RerankSpec


@pytest.fixture
def inputs(tmp_path, data):
    dl19 = data / "trec-dl" / "dl19"
    lines = [json.loads(x) for x in (dl19 / "candidates" / "bm25.jsonl").read_text().splitlines()]
    keep = [x for x in lines if x["qid"] == lines[0]["qid"]][:8]
    cands = tmp_path / "cands.jsonl"
    cands.write_text("".join(json.dumps(x) + "\n" for x in keep))
    return {"run": cands, "topics": str(dl19 / "topics.tsv"), "qrels": str(dl19 / "qrels.txt")}


def build(inputs, tmp_path, **kw):
    args = dict(run=inputs["run"], topics=inputs["topics"], output=tmp_path / "out.trec", method="rankk",
                model="m", depth=8, window=4, stride=2)
    args.update(kw)
    return RerankSpec.build(**args)


def test_spec_holds_the_validated_parts(inputs, tmp_path):
    spec = build(inputs, tmp_path, method="prp", method_opts=("variant=sorting",), max_tokens=None)
    assert spec.method_name == "prp" and spec.method_options == {"variant": "sorting"}
    assert spec.config.window == 4 and spec.config.stride == 2 and spec.config.depth == 8
    assert spec.outputs.windows == tmp_path / "out.trec.windows.parquet"
    assert spec.engine_cls.name == "vllm" and spec.engine_name == "vllm"
    # the method's own default budget when --max-tokens is not given
    assert spec.sampling.max_tokens == (METHODS.get("prp").default_max_tokens or 4096)
    assert spec.warnings == ["--window, --stride ignored: method prp does not use them"]  # pairwise: no windows


@pytest.mark.parametrize("kw, message", [
    ({"engine": "openai", "timeout": 0}, "--timeout: expected seconds > 0"),
    ({"engine": "openai", "concurrency": 0}, "--concurrency: expected an integer >= 1"),
    ({"engine": "openai", "max_retries": -1}, "--max-retries: expected an integer >= 0"),
    ({"engine": "openai", "base_urls": ("localhost:8000",)}, "--base-url: expected http(s)://"),
    ({"tensor_parallel": 0}, "--tensor-parallel: expected an integer >= 1"),
    ({"gpu_memory_utilization": 1.5}, "--gpu-memory-utilization: expected a fraction in (0, 1]"),
    ({"max_model_len": 0}, "--max-model-len: expected an integer >= 1"),
    ({"dtype": "fp8"}, "--dtype: expected one of auto, bfloat16, float16, float32"),
    ({"fmt": "yaml"}, "--format: expected one of table, json"),
    ({"schedule": "fifo"}, "--schedule: expected one of continuous, lockstep"),
    ({"stride": 5}, "--stride: expected at most --window (4)"),
    ({"temperature": -1.0}, "--temperature: expected a number >= 0"),
    ({"engine": "nope"}, "unknown engine 'nope'"),
])
def test_each_bad_flag_is_one_line_before_any_input_is_read(inputs, tmp_path, kw, message):
    # a run path that does not exist: the flag error must come first (nothing is read before the spec is built)
    with pytest.raises(RankkError) as err:
        build({**inputs, "run": tmp_path / "missing.jsonl"}, tmp_path, **kw)
    assert message in str(err.value)


def test_base_urls_are_normalised_by_the_engine(inputs, tmp_path):
    spec = build(inputs, tmp_path, engine="openai", base_urls=("http://h:1/", "http://h:2/v1"))
    assert spec.engine_options.base_urls == ("http://h:1/v1", "http://h:2/v1")


def test_flags_the_engine_does_not_read_are_warned_about(inputs, tmp_path, capsys):
    spec = build(inputs, tmp_path, engine="vllm", concurrency=8, timeout=5.0)
    assert spec.warnings == ["--timeout, --concurrency ignored: engine vllm does not use them"]
    spec = build(inputs, tmp_path, engine="openai", max_model_len=4096)
    assert spec.warnings == ["--max-model-len ignored: engine openai does not use it"]
    spec = build(inputs, tmp_path, engine="vllm", dtype="float32")
    assert spec.warnings == [] and spec.engine_options.dtype == "float32"
    # a method that needs no engine: engine flags are not its concern, its own ignored flags are
    spec = build(inputs, tmp_path, method="oracle", qrels=str(inputs["qrels"]), window=None, stride=None,
                 concurrency=8)
    assert spec.warnings == ["--model ignored: method oracle does not use it"]


def test_the_method_is_built_once_and_is_the_one_that_runs(inputs, tmp_path, monkeypatch):
    cls = METHODS.get("rankk")
    built = []

    class Counting(cls):
        def __init__(self, *a, **k):
            built.append(self)
            super().__init__(*a, **k)

    monkeypatch.setitem(METHODS.entries, "rankk", Counting)
    summary = rerank_command(run=inputs["run"], topics=inputs["topics"], output=tmp_path / "o.trec", method="rankk",
                             model="fake-model", depth=8, window=4, stride=2, engine_obj=FakeEngine(), progress=False)
    assert len(built) == 1
    assert summary["windows"] == 3 and sum(summary["outcomes"].values()) == 3
