"""The rerank stage end to end: flags, inputs, dry run, outputs, call cache, SIGINT; real vLLM on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import FakeEngine

from rankk_cli.docs import read_candidates
from rankk_cli.rerank.pipeline import rerank_command
from rankk_cli.runs import read_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def dl19(data):
    d = data / "trec-dl" / "dl19"
    return {"cands": d / "candidates" / "bm25.jsonl", "run": d / "runs" / "bm25.trec", "topics": d / "topics.tsv",
            "corpus": d / "corpus.jsonl"}


@pytest.fixture
def small(tmp_path, dl19):
    """3 DL19 queries x 30 candidates with text (a candidates JSONL) + topics."""
    lines = dl19["cands"].read_text().splitlines()
    keep, seen = [], {}
    for line in lines:
        obj = json.loads(line)
        seen.setdefault(obj["qid"], 0)
        if len(seen) <= 3 and seen[obj["qid"]] < 30:
            seen[obj["qid"]] += 1
            keep.append(line)
    path = tmp_path / "cands.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------- flags and inputs


@pytest.mark.parametrize("flags,needle", [
    (["--window", "0"], "--window: expected an integer >= 1, found 0"),
    (["--stride", "0"], "--stride: expected an integer >= 1, found 0"),
    (["--window", "5", "--stride", "6"], "--stride: expected at most --window (5), found 6"),
    (["--depth", "0"], "--depth: expected an integer >= 1, found 0"),
    (["--passes", "0"], "--passes: expected an integer >= 1, found 0"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--format", "xml"], "--format: expected one of table, json, found 'xml'"),
])
def test_bad_flags_exit_2_with_one_line(rankk, small, dl19, tmp_path, flags, needle):
    out = tmp_path / "out.trec"
    args = [small, "-o", out, "--method", "rankk", "--model", "m", "--topics", dl19["topics"], *flags]
    line = one_line_error(rankk("rerank", *args))
    assert needle in line
    assert not out.exists()


def test_unknown_qids_and_missing_docs_are_clear_errors(rankk, small, dl19, tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tsomething else\n")
    line = one_line_error(rankk("rerank", small, "-o", tmp_path / "o.trec", "--method", "rankk", "--model", "m",
                                "--topics", topics))
    assert "--topics" in line and "3 qid(s)" in line
    line = one_line_error(rankk("rerank", dl19["run"], "-o", tmp_path / "o.trec", "--method", "rankk", "--model", "m",
                                "--topics", dl19["topics"]))
    assert line.startswith("rankk: error: --docs: expected a document source")
    line = one_line_error(rankk("rerank", small, "-o", tmp_path / "o.trec", "--method", "rankk", "--model", "m"))
    assert "--topics: expected" in line


def test_dry_run_prints_every_request_and_calls_no_engine(rankk, dl19, tmp_path):
    proc = rankk("rerank", dl19["cands"], "--method", "rankk", "--model", "no/such-model", "--topics", dl19["topics"],
                 "--dry-run", "--depth", "100")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(rows) == 43 * 9
    first = rows[0]
    assert (first["pass"], first["start"], first["end"]) == (1, 80, 100)
    assert first["request"]["messages"][0]["role"] == "user"
    content = first["request"]["messages"][0]["content"]
    assert content.count("\n\n[") == 20 and "\n\n[20] " in content and "[21]" not in content
    assert len(first["key"]) == 64
    # --depth below the default window: the window shrinks to the depth (an explicit larger --window is an
    # error, test_bad_inputs); a TREC run + --docs corpus works too
    proc = rankk("rerank", dl19["run"], "--docs", dl19["corpus"], "--method", "rankzephyr", "--model", "m",
                 "--topics", dl19["topics"], "--dry-run", "--depth", "7")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(rows) == 43 and all((r["start"], r["end"]) == (0, 7) for r in rows)
    assert rows[0]["request"]["messages"][0]["role"] == "system"


def test_dry_run_truncate_loads_only_the_tokenizer(rankk, small, dl19, tiny_model):
    full = rankk("rerank", small, "--method", "rank1", "--model", tiny_model, "--topics", dl19["topics"], "--dry-run")
    cut = rankk("rerank", small, "--method", "rank1", "--model", tiny_model, "--topics", dl19["topics"], "--dry-run",
                "--truncate", "8")
    assert full.returncode == 0 and cut.returncode == 0, cut.stderr
    a = [json.loads(x)["request"]["prompt"] for x in full.stdout.splitlines()]
    b = [json.loads(x)["request"]["prompt"] for x in cut.stdout.splitlines()]
    assert len(a) == len(b) == 90
    assert all(len(y) < len(x) for x, y in zip(a, b) if len(x) > 400)
    assert "vllm" not in cut.stderr.lower()


# ---------------------------------------------------------------------------------------------- outputs (fake engine)


def run_fake(small, dl19, out, engine, **kw):
    args = dict(run=small, output=out, method="rankk", model="fake-model", topics=str(dl19["topics"]), depth=25,
                window=10, stride=5, engine_obj=engine, progress=False)
    args.update(kw)
    return rerank_command(**args)


def test_outputs_scores_tail_windows_file_and_cached_rerun(small, dl19, tmp_path, capsys):
    out = tmp_path / "runs" / "out.trec"
    engine = FakeEngine()
    summary = run_fake(small, dl19, out, engine, fmt="json")
    printed = json.loads(capsys.readouterr().out)
    assert printed["engine_calls"] == summary["engine_calls"] == 4  # 1 + ceil(15/5) windows, 3 queries batched
    assert engine.batches == [3] * 4
    assert printed["windows"] == 12 and printed["outcomes"] == {"ok": 12, "repaired": 0, "forced": 0, "failed": 0}
    assert printed["cache_hits"] == 0 and printed["output_tokens"] == 12 * 8
    run = read_run(out)
    src = read_candidates(small)[0]
    for qid, group in run.df.groupby("qid", sort=False):
        scores = group["score"].to_numpy()
        assert np.all(np.diff(scores) < 0)
        first = src.df[src.df.qid == qid].docid.tolist()
        got = group.docid.tolist()
        assert sorted(got) == sorted(first) and len(got) == 30
        assert got[25:] == first[25:]  # beyond --depth: first-stage order, below the head
        assert got[:25] != first[:25]
    win = pd.read_parquet(Path(str(out) + ".windows.parquet"))
    assert len(win) == 12
    assert {"qid", "pass", "start", "end", "engine_call", "prompt_hash", "raw", "reasoning", "parsed", "outcome",
            "repairs", "input_tokens", "output_tokens", "seconds", "cached"} <= set(win.columns)
    assert win.iloc[0][["start", "end"]].tolist() == [15, 25] and win.iloc[0]["reasoning"] == "reasoning"
    assert not win["cached"].any()
    # the same command again: zero engine calls, identical output
    again = FakeEngine()
    summary2 = run_fake(small, dl19, tmp_path / "again.trec", again)
    assert again.batches == [] and summary2["engine_calls"] == 0 and summary2["cache_hits"] == 12
    assert (tmp_path / "again.trec").read_text() == out.read_text()
    assert "rerank outcomes" in capsys.readouterr().err


def test_full_ranking_is_one_window_per_query_and_the_summary_says_so(small, dl19, tmp_path, capsys):
    """--window equal to --depth: one call per query over its whole candidate list (no sliding)."""
    engine = FakeEngine()
    summary = run_fake(small, dl19, tmp_path / "full.trec", engine, depth=12, window=12, stride=6, fmt="json")
    assert summary["ranking"] == "full" and summary["windows"] == 3 and sum(engine.batches) == 3
    win = pd.read_parquet(tmp_path / "full.trec.windows.parquet")
    assert win[["start", "end"]].values.tolist() == [[0, 12]] * 3
    # the fake reverses each window: the whole head comes back reversed in ONE window
    run, first = read_run(tmp_path / "full.trec"), read_candidates(small)[0]
    for qid, group in run.df.groupby("qid", sort=False):
        assert group.docid.tolist()[:12] == first.df[first.df.qid == qid].docid.tolist()[:12][::-1]
    assert "rankk: full ranking: one window of all 12 candidates per query" in capsys.readouterr().err
    sliding = run_fake(small, dl19, tmp_path / "sl.trec", FakeEngine(), depth=12, window=6, stride=3)
    assert sliding["ranking"] == "sliding" and sliding["windows"] == 3 * 3
    assert "rankk: sliding windows: window 6, stride 3 over the top 12" in capsys.readouterr().err


def test_failed_run_leaves_no_output(small, dl19, tmp_path):
    class Broken(FakeEngine):
        def generate(self, requests):
            if self.batches:
                raise RuntimeError("engine crashed")
            return super().generate(requests)

    out = tmp_path / "out.trec"
    with pytest.raises(RuntimeError):
        run_fake(small, dl19, out, Broken())
    assert list(tmp_path.iterdir()) == [tmp_path / "cands.jsonl"] or not out.exists()
    assert not out.exists() and not Path(str(out) + ".windows.parquet").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rankk")]


def test_rank1_scores_are_probabilities_and_outcomes_recorded(small, dl19, tmp_path):
    engine = FakeEngine(cut_off=lambda req: "Passage: 5." in req.prompt)
    summary = run_fake(small, dl19, tmp_path / "r1.trec", engine, method="rank1", depth=10, fmt="json")
    assert engine.batches[0] == 30
    assert summary["windows"] == 30 and summary["outcomes"]["ok"] + summary["outcomes"]["forced"] == 30
    run = read_run(tmp_path / "r1.trec")
    head = run.df[run.df["rank"] <= 10]["score"]
    assert head.between(0, 1).all()


SIGINT_SCRIPT = textwrap.dedent('''
    import sys
    sys.path.insert(0, {tests!r})
    from fakes import FakeEngine
    from rankk_cli.rerank.pipeline import rerank_command
    engine = FakeEngine(delay=float(sys.argv[1]))
    try:
        rerank_command(run={small!r}, output={out!r}, method="rankk", model="fake-model", topics={topics!r},
                       depth=30, window=10, stride=5, engine_obj=engine, progress=False, fmt="json")
    finally:
        sys.stderr.write(f"REQUESTS={{sum(engine.batches)}}\\n")
''')


def test_sigint_exits_130_and_rerun_resumes_from_cache(small, dl19, tmp_path):
    out = tmp_path / "out.trec"
    script = tmp_path / "go.py"
    script.write_text(SIGINT_SCRIPT.format(tests=str(REPO / "tests"), small=str(small), out=str(out),
                                           topics=str(dl19["topics"])))
    calls_dir = Path(os.environ["RANKK_CACHE"]) / "calls"
    proc = subprocess.Popen([sys.executable, str(script), "1.0"], stderr=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    # a finished call is stored: a chunk (lockstep) or a journal line (continuous, the default)
    while not list(calls_dir.glob("chunk-*.parquet")) + list(calls_dir.glob("journal-*.jsonl")) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err
    assert not out.exists()
    first = int(err.split("REQUESTS=")[1].split()[0])
    assert 3 <= first < 15  # at least one call finished, not all (5 rounds x 3 queries)
    done = subprocess.run([sys.executable, str(script), "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    second = int(done.stderr.split("REQUESTS=")[1].split()[0])
    assert summary["cache_hits"] >= 3 and second == 15 - summary["cache_hits"]
    assert out.exists()


# ---------------------------------------------------------------------------------------------- real vLLM, tiny model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rankk", "rankzephyr", "rank1"])
def test_tiny_vllm_end_to_end(method, small, dl19, tmp_path, tiny_vllm, capsys):
    out = tmp_path / f"{method}.trec"
    kw = dict(run=small, output=out, method=method, model=tiny_vllm.model, topics=str(dl19["topics"]), depth=12,
              window=6, stride=3, max_tokens=24, force_max_tokens=16, truncate=48, engine_obj=tiny_vllm,
              progress=False, fmt="json")
    summary = rerank_command(**kw)
    capsys.readouterr()
    n_windows = 3 * (12 if method == "rank1" else 3)
    assert summary["windows"] == n_windows and sum(summary["outcomes"].values()) == n_windows
    assert summary["engine_calls"] >= 1 and summary["output_tokens"] > 0
    win = pd.read_parquet(Path(str(out) + ".windows.parquet"))
    assert len(win) == n_windows and set(win["outcome"]) <= {"ok", "repaired", "forced", "failed"}
    # random replies: something had to be repaired, forced or failed, and it says why
    assert (win["outcome"] != "ok").any() and (win.loc[win["outcome"] != "ok", "repairs"].str.len() > 0).all()
    run = read_run(out)
    src = read_candidates(small)[0]
    for qid, group in run.df.groupby("qid", sort=False):
        assert sorted(group.docid) == sorted(src.df[src.df.qid == qid].docid) and group.docid.is_unique
    rerun = rerank_command(**{**kw, "output": tmp_path / "again.trec"})
    assert rerun["engine_calls"] == 0 and rerun["cache_hits"] == summary["requests"]
    assert (tmp_path / "again.trec").read_text() == out.read_text()


@pytest.mark.slow
def test_cli_builds_vllm_engine_from_registry(rankk, small, dl19, tiny_model, tmp_path):
    out = tmp_path / "cli.trec"
    args = [small, "-o", out, "--method", "rankk", "--model", tiny_model, "--topics", dl19["topics"], "--depth", "6",
            "--window", "6", "--stride", "3", "--max-tokens", "16", "--max-model-len", "4096", "--format", "json"]
    proc = rankk("rerank", *args, env={"RANKK_CPU_KV_CACHE_GIB": "0.5"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["engine"] == "vllm" and summary["windows"] == 3 and summary["engine_calls"] >= 1
    assert "rerank" in proc.stderr  # progress / outcome table on stderr
    assert read_run(out).df.groupby("qid").size().tolist() == [30, 30, 30]
    assert summary["model_loaded"] is True
    # the same command again: every request is in the call cache, so the model is never loaded
    again = tmp_path / "again.trec"
    proc = rankk("rerank", *[again if a == out else a for a in args], env={"RANKK_CPU_KV_CACHE_GIB": "0.5"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary2 = json.loads(proc.stdout)
    assert summary2["engine_calls"] == 0 and summary2["cache_hits"] == summary["requests"]
    assert summary2["model_loaded"] is False
    # the stack is known without the model: the same one both times, the real engine's (rankk_cli.rerank.stack)
    assert summary2["stack"] == summary["stack"] and summary["stack"]["max_model_len"] == 4096
    assert summary["stack"]["engine"] == "vllm" and summary["stack"]["model"]["kind"] == "directory"
    assert summary2["cache_other_stack"] == 0
    assert "answered from the call cache; the model was not loaded" in proc.stderr
    assert "Loading safetensors" not in proc.stderr
    assert again.read_text() == out.read_text()


@pytest.mark.parametrize("schedule", ["continuous", "lockstep"])
def test_cost_figures_are_apart_and_add_up_to_the_wall_time(small, dl19, tmp_path, schedule):
    """load (import + model), generate (inside the engine, load excluded), rankk's own code: each >= 0, together
    the wall time; a cached re-run generates nothing and its windows cost 0 engine seconds."""
    import pyarrow.parquet as pq

    from rankk_cli.docs import read_candidates
    from rankk_cli.rerank.engines.base import EngineOptions, LazyEngine, Sampling
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.pipeline import rerank
    from rankk_cli.sources import load_topics

    def slow_load():
        time.sleep(0.3)  # stands in for importing vLLM and loading weights
        return FakeEngine(delay=0.05)

    engine = LazyEngine(slow_load, "fake", "fake-model", Sampling(), EngineOptions())
    run, texts = read_candidates(small)
    out = rerank(run, texts, load_topics(dl19["topics"]), "rankk", engine, RerankConfig(depth=20, window=10, stride=5),
                 progress=False, schedule=schedule)
    s = out.summary
    parts = [s["load_seconds"], s["generate_seconds"], s["rankk_seconds"]]
    assert all(p >= 0 for p in parts) and abs(sum(parts) - s["wall_seconds"]) < 0.005
    assert s["load_seconds"] >= 0.3 and s["generate_seconds"] >= 0.05  # the load is not counted as generate time
    assert s["generate_seconds"] < s["wall_seconds"] - 0.3

    class Rendering(FakeEngine):
        """An engine that spends part of each call rendering prompts (rankk's own code) and says so."""

        def generate(self, requests):
            time.sleep(0.04)  # rendering: chat template + tokenising
            self.stats.extra["own_seconds"] = self.stats.extra.get("own_seconds", 0.0) + 0.04
            return super().generate(requests)

    rendering = Rendering(delay=0.01)
    s = rerank(run, texts, load_topics(dl19["topics"]), "rankk", rendering, RerankConfig(depth=20, window=10, stride=5),
               progress=False, schedule=schedule).summary
    own = rendering.stats.extra["own_seconds"]
    assert own >= 0.04 * 3 and abs(s["load_seconds"] + s["generate_seconds"] + s["rankk_seconds"] - s["wall_seconds"]) < 0.005
    assert s["rankk_seconds"] >= own - 0.005  # the rendering is counted as rankk's own time, not generate time

    out_path = tmp_path / "o.trec"
    first = run_fake(small, dl19, out_path, FakeEngine(), fmt="json", schedule=schedule)
    assert first["load_seconds"] == 0  # an engine built beforehand: no load inside the run
    again = run_fake(small, dl19, tmp_path / "again.trec", FakeEngine(), fmt="json", schedule=schedule)
    assert again["requests"] == 0 and again["generate_seconds"] == 0
    rows = pq.read_table(str(tmp_path / "again.trec") + ".windows.parquet").to_pylist()
    assert rows and all(r["cached"] and r["seconds"] == 0 for r in rows)
