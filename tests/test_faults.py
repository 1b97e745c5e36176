"""Fault injection ("nothing lost"): real processes, real files, real signals.

1. kill and resume: ``rankk rerank`` on the tiny model (vLLM, CPU) is SIGKILLed at seeded random points and resumed
   with the same command, under both schedules; the final run and windows file equal an uninterrupted run's
   (separate cache), nothing half-written is ever visible, and over all attempts every request reached the
   engine's cache exactly once. Lockstep and continuous runs write the same files (but for the batch indices and
   seconds of each window).
2. concurrent writers: two rerank processes on one cache doing the same work at the same time: every chunk
   readable, both outputs correct, and a third run of each makes 0 engine calls.
3. server faults: ``--engine openai`` against a local fake server (``fault_server.py``) that drops connections,
   answers 500/429 and stalls: bounded retries, failed windows recorded, a run whose calls all failed exits
   non-zero without writing a "reranked" file, and a re-run against a healthy server makes only the missing calls.
4. SIGINT: exits 130 promptly with a resume hint, no traceback; the re-run repeats nothing.

Greedy decoding everywhere, so runs are deterministic and comparable byte for byte.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from rankk_cli.rerank.engines.base import Completion, Engine, EngineOptions, Sampling
from rankk_cli.rerank.pipeline import rerank_command

# columns of OUT.windows.parquet that do not depend on timing, the cache or which attempt made the call
DETERMINISTIC = ["qid", "pass", "start", "end", "docids", "prompt_hash", "raw", "forced_raw", "reasoning", "parsed",
                 "ties", "outcome", "repairs", "input_tokens", "output_tokens", "score", "logprobs", "step", "note",
                 "reply_tokens", "scores"]
# what depends on where an answer came from (engine batch, cache, derivation from a larger budget)
CACHE_DEPENDENT = {"engine_call", "seconds", "cached", "derived", "generated_tokens"}
N_QUERIES, N_CANDS = 5, 10
# depth 10, window 4, stride 2 -> 4 windows per query; the random tiny model is always cut off at 16 tokens, so
# every window is a reply + a forced answer: 8 lockstep rounds, 8 engine calls, 40 requests
# (the default schedule is continuous; "--schedule lockstep" is added where a test says so)
VLLM_FLAGS = ["--method", "rankk", "--depth", "10", "--window", "4", "--stride", "2", "--max-tokens", "16",
              "--force-max-tokens", "8", "--temperature", "0", "--max-model-len", "4096", "--format", "json"]
PROC_TIMEOUT = 600  # seconds: a bound, never an assertion about speed


# ---------------------------------------------------------------------------------------------- helpers


def chunks(cache: Path) -> list[Path]:
    return sorted((cache / "calls").glob("chunk-*.parquet")) if (cache / "calls").is_dir() else []


def journals(cache: Path) -> list[Path]:
    return sorted((cache / "calls").glob("journal-*.jsonl")) if (cache / "calls").is_dir() else []


def chunk_rows(cache: Path) -> list[dict]:
    """Every row of every chunk; a chunk that does not read is a test failure (corruption)."""
    rows = []
    for path in chunks(cache):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def stored_rows(cache: Path) -> list[dict]:
    """Every finished completion in the cache: chunk rows plus the complete lines of journals (continuous runs
    append there first). A complete journal line that does not parse is a test failure; only the last line of a
    journal may be unfinished (a writer killed mid-write)."""
    rows = chunk_rows(cache)
    for path in journals(cache):
        data = path.read_bytes()
        rows.extend(json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines())
    return rows


def windows_of(out: Path) -> pd.DataFrame:
    df = pd.read_parquet(out if str(out).endswith(".windows.parquet") else Path(str(out) + ".windows.parquet"))
    return df[DETERMINISTIC].map(lambda v: v.tolist() if hasattr(v, "tolist") else v)


def assert_same_windows(out: Path, ref: Path) -> None:
    got, want = windows_of(out), windows_of(ref)
    assert len(got) == len(want)
    pd.testing.assert_frame_equal(got, want)


def leftovers(folder: Path) -> list[str]:
    """Temp files/dirs of atomic writes (all start with '.') left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "rankk_cli", *map(str, args)]


def env_with(cache: Path, **extra) -> dict:
    env = dict(os.environ)
    env.update({"RANKK_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "RANKK_CPU_KV_CACHE_GIB": "0.5"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(args: list[str], cache: Path, log: Path, **extra) -> subprocess.Popen:
    """A rerank process; stderr (vLLM is chatty) goes to ``log`` so no pipe can fill up and block it."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            env=env_with(cache, **extra), start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = PROC_TIMEOUT) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out


class NoCallEngine(Engine):
    """Stands in for ``--engine vllm --model M`` on a cached re-run: same cache keys, but any call is an error,
    so a re-run through it proves the cache already held every request (no model is loaded)."""

    name = "vllm"

    def __init__(self, model: str):
        super().__init__(model, Sampling(), EngineOptions(max_model_len=4096))  # VLLM_FLAGS' --max-model-len
        self.requests = 0

    def stack(self) -> dict:  # the stack the CLI's vllm engine recorded with its answers (same model, options)
        from rankk_cli.rerank.engines.vllm import VLLMEngine

        return VLLMEngine.stack_record(self.model, self.options)

    def generate(self, requests):
        self.requests += len(requests)
        return [Completion("", "error", error="NoCallEngine: a cached re-run must not call the engine")
                for _ in requests]


def cached_rerun(run: Path, out: Path, model: str, topics: Path) -> tuple[dict, NoCallEngine]:
    """The vLLM command (VLLM_FLAGS) again, in-process, answered only from this test's RANKK_CACHE."""
    engine = NoCallEngine(model)
    summary = rerank_command(run=run, output=out, method="rankk", model=model, depth=10, window=4, stride=2,
                             max_tokens=16, force_max_tokens=8, temperature=0.0, topics=str(topics),
                             engine_obj=engine, progress=False, fmt="json")
    return summary, engine


# ---------------------------------------------------------------------------------------------- vLLM fixtures


@pytest.fixture(scope="module")
def cands(tmp_path_factory, data) -> Path:
    """N_QUERIES DL19 queries x top N_CANDS candidates with text (a candidates JSONL)."""
    from dl19 import head

    path = head(data, N_QUERIES, N_CANDS, tmp_path_factory.mktemp("faults-input") / "cands.jsonl")
    return path


@pytest.fixture(scope="module")
def topics(data) -> Path:
    return data / "trec-dl" / "dl19" / "topics.tsv"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cands, topics, tiny_model) -> dict:
    """One uninterrupted run with its own cache: the expected outputs, request keys and request count."""
    root = tmp_path_factory.mktemp("faults-reference")
    cache, out = root / "cache", root / "ref.trec"
    proc = start(cli("rerank", cands, "-o", out, "--model", tiny_model, "--topics", topics, *VLLM_FLAGS), cache,
                 root / "stderr.txt")
    rc, stdout = finish(proc)
    assert rc == 0, (root / "stderr.txt").read_text()[-3000:]
    summary = json.loads(stdout)
    rows = chunk_rows(cache)
    keys = {r["key"] for r in rows}
    assert summary["schedule"] == "continuous" and summary["windows"] == N_QUERIES * 4
    assert summary["engine_calls"] >= 2
    assert len(rows) == len(keys) == summary["requests"]  # no request sent twice within one run
    assert journals(cache) == [] and len(chunks(cache)) == 1  # the journal became ONE chunk when the run ended
    return {"out": out, "summary": summary, "keys": keys, "model": str(tiny_model)}


# ---------------------------------------------------------------------------------------------- same answers


@pytest.mark.slow
def test_lockstep_and_continuous_write_the_same_files(tmp_path, cands, topics, reference):
    """Greedy decoding, fixed lengths: the schedule changes which engine batch answered each call and how long
    it took (``engine_call``, ``seconds``), nothing else -- the run file is byte-identical."""
    out = tmp_path / "lockstep.trec"
    proc = start(cli("rerank", cands, "-o", out, "--model", reference["model"], "--topics", topics, *VLLM_FLAGS,
                     "--schedule", "lockstep"), tmp_path / "cache", tmp_path / "stderr.txt")
    rc, stdout = finish(proc)
    assert rc == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
    summary = json.loads(stdout)
    assert summary["schedule"] == "lockstep" and summary["engine_calls"] == 8  # 8 rounds
    assert out.read_bytes() == reference["out"].read_bytes()
    got = pq.read_table(str(out) + ".windows.parquet")
    want = pq.read_table(str(reference["out"]) + ".windows.parquet")
    assert got.schema == want.schema and got.num_rows == want.num_rows == N_QUERIES * 4
    assert set(got.column_names) - set(DETERMINISTIC) == CACHE_DEPENDENT
    keep = [c for c in got.column_names if c not in ("engine_call", "seconds")]
    assert got.select(keep).equals(want.select(keep))
    for key in ("windows", "requests", "cache_hits", "outcomes", "input_tokens", "output_tokens",
                "generated_tokens"):
        assert summary[key] == reference["summary"][key], key
    assert {r["key"] for r in chunk_rows(tmp_path / "cache")} == reference["keys"]


# ---------------------------------------------------------------------------------------------- 1. kill and resume


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["continuous", "lockstep"])
def test_sigkill_at_random_points_then_resume_equals_uninterrupted_run(tmp_path, cands, topics, reference, schedule):
    rng = random.Random(20261123)
    cache = Path(os.environ["RANKK_CACHE"])
    outdir = tmp_path / "runs"
    outdir.mkdir()
    out = outdir / "killed.trec"
    win = Path(str(out) + ".windows.parquet")
    args = cli("rerank", cands, "-o", out, "--model", reference["model"], "--topics", topics, *VLLM_FLAGS,
               "--schedule", schedule)
    total = reference["summary"]["requests"]
    kills = []  # (delay, completions stored before, stored after, returncode)
    # kill points: after a seeded random number of finished completions stored (chunk rows + journal lines,
    # counted over all attempts), plus a seeded random delay -- so kills land inside the run, between rounds or
    # steps, during an engine call or a write
    targets = sorted(rng.sample(range(1, total), k=3))
    for attempt, target in enumerate(targets):
        before = len(stored_rows(cache))
        log = tmp_path / f"attempt{attempt}.txt"
        proc = start(args, cache, log)
        deadline = time.monotonic() + PROC_TIMEOUT  # bounded wait, never an assertion about speed
        while (len(stored_rows(cache)) < max(target, before + 1) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.005)
        delay = rng.uniform(0.0, 0.05)
        time.sleep(delay)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        rc, _ = finish(proc)
        kills.append((round(delay, 2), before, len(stored_rows(cache)), rc))
        # nothing half-written: each output is absent or complete (a kill may land after a rename)
        if out.exists():
            assert out.read_text() == reference["out"].read_text()
        if win.exists():
            assert_same_windows(win, reference["out"])
        for row in stored_rows(cache):  # every chunk and journal line readable, whatever moment the kill hit
            assert row["key"] in reference["keys"]
        if rc == 0:
            break
        assert rc == -signal.SIGKILL, log.read_text()[-3000:]
    midrun = [k for k in kills if k[3] == -signal.SIGKILL and 0 < k[2] < total]
    assert midrun, f"no kill landed between the first and the last engine call: {kills}"

    # resume with the same command until it succeeds (bounded)
    log = tmp_path / "final.txt"
    rc, stdout = finish(start(args, cache, log))
    assert rc == 0, log.read_text()[-3000:]
    summary = json.loads(stdout)
    assert out.read_text() == reference["out"].read_text()
    assert_same_windows(out, reference["out"])
    assert leftovers(outdir) == [], "temp files left in the output folder"
    # engine calls over ALL attempts: each stored row is one finished completion -> every request exactly once;
    # the journals of killed runs were compacted by the next run, and the last run's own when it ended
    assert journals(cache) == []
    rows = chunk_rows(cache)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == reference["summary"]["requests"], kills
    assert set(keys) == reference["keys"]
    assert summary["cache_hits"] + summary["requests"] == reference["summary"]["requests"]
    assert summary["cache_hits"] > 0
    print(f"{schedule} kills (delay s, stored before, stored after, rc): {kills}; final run: {summary['requests']} requests, "
          f"{summary['cache_hits']} cache hits")


# ---------------------------------------------------------------------------------------------- 2. concurrent writers


@pytest.mark.slow
def test_two_processes_share_one_cache_without_loss_or_corruption(tmp_path, cands, topics, reference):
    cache = Path(os.environ["RANKK_CACHE"])
    outs = [tmp_path / "a.trec", tmp_path / "b.trec"]
    procs = [start(cli("rerank", cands, "-o", o, "--model", reference["model"], "--topics", topics, *VLLM_FLAGS),
                   cache, tmp_path / f"{o.stem}.txt") for o in outs]
    results = [finish(p) for p in procs]
    for (rc, _stdout), o in zip(results, outs):
        assert rc == 0, (tmp_path / f"{o.stem}.txt").read_text()[-3000:]
    summaries = [json.loads(s) for _rc, s in results]
    for o in outs:  # both outputs correct
        assert o.read_text() == reference["out"].read_text()
        assert_same_windows(o, reference["out"])
    assert journals(cache) == []
    rows = chunk_rows(cache)  # every chunk readable
    keys = [r["key"] for r in rows]
    assert set(keys) == reference["keys"]
    # each process sent at most every request once; together no more than twice (a race on the same call); a
    # completion is stored once per process at most (not again when the other process's copy was seen first)
    assert all(s["requests"] <= reference["summary"]["requests"] for s in summaries)
    assert len(keys) <= sum(s["requests"] for s in summaries)
    assert max(Counter(keys).values()) <= 2
    # no lost rows: a third run of each command is answered entirely from the cache
    for o in outs:
        again = tmp_path / f"again-{o.name}"
        summary, engine = cached_rerun(cands, again, reference["model"], topics)
        assert engine.requests == 0 and summary["engine_calls"] == 0
        assert summary["cache_hits"] == reference["summary"]["requests"]
        assert again.read_text() == o.read_text()
    print(f"concurrent: requests sent {[s['requests'] for s in summaries]}, cache hits "
          f"{[s['cache_hits'] for s in summaries]}, chunk rows {len(keys)} for {len(set(keys))} keys")


# ---------------------------------------------------------------------------------------------- 3. server faults
# ``--engine openai`` against fault_server.FaultServer (127.0.0.1, in this test process); the CLI runs as a real
# subprocess. Same 5 queries x 10 candidates and windows as above: 4 rounds x 5 queries = 20 requests, 1 per window.

OPENAI_FLAGS = ["--method", "rankk", "--engine", "openai", "--model", "fake-model", "--depth", "10", "--window", "4",
                "--stride", "2", "--temperature", "0", "--format", "json"]
REQUESTS = N_QUERIES * 4


def openai_args(cands: Path, topics: Path, out: Path, url: str, *extra) -> list[str]:
    return cli("rerank", cands, "-o", out, "--topics", topics, "--base-url", url, *OPENAI_FLAGS, *extra)


def run_cli(args: list[str], cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, env=env_with(cache), timeout=timeout)


def query_texts(cands: Path, topics: Path) -> list[str]:
    qids = list(dict.fromkeys(json.loads(line)["qid"] for line in cands.read_text().splitlines()))
    text = dict(line.split("\t", 1) for line in topics.read_text().splitlines() if line)
    return [text[q].strip() for q in qids]


@pytest.fixture(scope="module")
def healthy_reference(tmp_path_factory, cands, topics) -> dict:
    """The run against an always-healthy fake server (its own cache): what every recovered run must equal."""
    from fault_server import FaultServer

    root = tmp_path_factory.mktemp("faults-healthy")
    out = root / "healthy.trec"
    with FaultServer() as server:
        proc = run_cli(openai_args(cands, topics, out, server.url), root / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    # continuous: each poll that returned answers is an engine call (how many arrive together is timing)
    assert summary["windows"] == REQUESTS and 4 <= summary["engine_calls"] <= REQUESTS
    assert summary["engine_errors"] == 0
    assert server.answered == REQUESTS
    return {"out": out, "summary": summary}


def test_transient_drops_500_429_and_stalls_are_retried_and_the_run_completes(tmp_path, cands, topics,
                                                                              healthy_reference):
    from fault_server import FaultServer

    faults = ["drop", "500", "429", "stall"]
    queries = query_texts(cands, topics)
    # query i's requests fail on their first arrival with fault i % 4 (every kind is hit), then succeed
    plan = {q: faults[i % len(faults)] for i, q in enumerate(queries)}
    out = tmp_path / "out.trec"
    with FaultServer(lambda q, attempt: plan[q] if attempt == 0 else "ok", stall_s=5.0) as server:
        proc = run_cli(openai_args(cands, topics, out, server.url, "--timeout", "1", "--max-retries", "2"),
                       tmp_path / "cache")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["engine_errors"] == 0 and summary["outcomes"].get("failed", 0) == 0
    seen = {action for _q, attempt, action in server.actions() if attempt == 0}
    assert seen == set(faults)
    assert len(server.actions()) == 2 * REQUESTS  # each request: one injected fault, one success -- no more
    assert out.read_text() == healthy_reference["out"].read_text()


def test_persistent_failure_is_bounded_clear_and_finished_windows_are_kept(tmp_path, cands, topics,
                                                                           healthy_reference):
    from fault_server import FaultServer

    bad = query_texts(cands, topics)[2]
    out = tmp_path / "out.trec"
    cache = tmp_path / "cache"
    retries = 2
    with FaultServer(lambda q, attempt: "500" if q == bad else "ok") as server:
        proc = run_cli(openai_args(cands, topics, out, server.url, "--timeout", "5", "--max-retries", str(retries)),
                       cache)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rankk: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "4 of 20 engine requests failed after retries" in errors[0] and "HTTP 500" in errors[0]
    assert "run the same command again" in errors[0]
    assert not out.exists() and not Path(str(out) + ".windows.parquet").exists()
    assert leftovers(tmp_path) == []
    # bounded: every request of the bad query was tried exactly 1 + retries times
    bad_tries = [a for a in server.actions() if a[0] == bad]
    assert len(bad_tries) == 4 * (1 + retries) and {a[2] for a in bad_tries} == {"500"}
    # the 16 finished requests were kept: against a healthy server only the bad query's 4 are sent
    with FaultServer() as healthy:
        again = run_cli(openai_args(cands, topics, out, healthy.url), cache)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["requests"] == 4 and summary["cache_hits"] == REQUESTS - 4
    assert healthy.answered == 4 and {q for q, _a, _x in healthy.actions()} == {bad}
    assert out.read_text() == healthy_reference["out"].read_text()


def test_server_down_for_everything_fails_after_the_retry_limit(tmp_path, cands, topics):
    from fault_server import FaultServer

    out = tmp_path / "out.trec"
    with FaultServer(lambda q, attempt: "drop") as server:
        proc = run_cli(openai_args(cands, topics, out, server.url, "--timeout", "5", "--max-retries", "1"),
                       tmp_path / "cache")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "engine requests failed after retries" in proc.stderr and "connection failed" in proc.stderr
    # the first round fails entirely; every request tried exactly twice (1 + --max-retries 1)
    assert len(server.actions()) <= 2 * REQUESTS and all(a[1] <= 1 for a in server.actions())
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- 4. SIGINT


def test_sigint_mid_run_exits_130_promptly_with_a_resume_hint(tmp_path, cands, topics, healthy_reference):
    """The first round is answered, the second stalls (as a hung server would): Ctrl-C must not wait for the
    stalled requests' --timeout; the re-run against a healthy server sends only the unfinished requests."""
    from fault_server import FaultServer

    answered = []

    def plan(q: str, attempt: int) -> str:
        answered.append(q)
        return "ok" if len(answered) <= N_QUERIES else "stall"

    out = tmp_path / "out.trec"
    cache = tmp_path / "cache"
    log = tmp_path / "stderr.txt"
    with FaultServer(plan, stall_s=120.0) as server:
        proc = start(openai_args(cands, topics, out, server.url, "--timeout", "300"), cache, log)
        deadline = time.monotonic() + 120
        while len(server.actions("stall")) < N_QUERIES and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(server.actions("stall")) == N_QUERIES, log.read_text()[-3000:]
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        rc, stdout = finish(proc, timeout=60)
        waited = time.monotonic() - sent
    err = log.read_text()
    assert rc == 130, err[-3000:]
    assert waited < 30, f"exit took {waited:.1f} s after SIGINT (the stalled requests' timeout is 300 s)"
    assert "Traceback" not in err
    assert f"interrupted; no output written. {N_QUERIES} finished engine requests are in the call cache" in err
    assert "run the same command again to resume" in err
    assert not out.exists() and leftovers(tmp_path) == [] and stdout == ""
    for row in chunk_rows(cache):  # readable
        assert row["key"]
    with FaultServer() as healthy:
        again = run_cli(openai_args(cands, topics, out, healthy.url), cache)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert summary["cache_hits"] == N_QUERIES and summary["requests"] == REQUESTS - N_QUERIES
    assert out.read_text() == healthy_reference["out"].read_text()
