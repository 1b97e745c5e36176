"""Benchmark: continuous scheduling against lockstep and against the peers' schemes, side by side in one run,
on a long-tailed workload where every system does exactly the same work.

Real vLLM on CPU with the tiny random-weight model (rankk_cli.testing.build_tiny_model), TREC DL19 BM25
candidates (43 queries x 100), depth 100 / window 20 / stride 10, method rankk, passages truncated to 64 tokens.
Every generation request's output length is drawn from a lognormal (median 128, sigma 1, capped at 1024), seeded
by the request itself, and forced exactly (min_tokens = max_tokens, EOS ignored; rankk_cli.testing.force_lengths),
so each system generates the same tokens for the same requests. The random model never closes its thinking, so
each window is a reply plus a forced follow-up: 774 requests, each with its own drawn length.

Systems (one vLLM process at a time: the in-process engine is closed before the server starts):
1. rankk lockstep, in-process vLLM (one LLM.generate per round);
2. rankk continuous, in-process vLLM (llm_engine.add_request / step);
3. rankk continuous, --engine openai against a local vLLM OpenAI server (python -m vllm.entrypoints.openai.api_server);
4. Rank-K's scheme against the same server: one worker thread per query, each query's windows in sequence, one
   blocking HTTP request at a time (a re-implementation of the scheme with rankk's prompts, not Rank-K's code).
RankLLM is not run here: see benchmarks/README.md for why.

    python benchmarks/scheduling.py [--queries 43] [--seed 0] [--median 128] [--sigma 1] [--cap 1024] [--no-server]
                                    [--repeat 1]

Prints wall time, generated tokens/s, mean batch occupancy (requests running per engine step, in-process only)
and ratios against lockstep; the last line is RESULT name=value ... No call cache anywhere (forced lengths are
not part of the cache key), and every system's final orders are checked equal to lockstep's.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=10)
    ap.add_argument("--truncate", type=int, default=64, help="passage tokens")
    ap.add_argument("--seed", type=int, default=0, help="seed of the drawn output lengths")
    ap.add_argument("--median", type=float, default=128)
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--cap", type=int, default=1024)
    ap.add_argument("--concurrency", type=int, default=64, help="requests in flight (openai systems)")
    ap.add_argument("--no-server", action="store_true", help="only the in-process systems")
    ap.add_argument("--repeat", type=int, default=1, help="run the in-process pair this many times, alternating "
                    "lockstep and continuous, and keep each one's fastest (a shared machine's load drifts)")
    ap.add_argument("--model-dir", default=None, help="where to build the tiny model (default: a temp dir)")
    args = ap.parse_args()

    from rankk_cli.docs import read_candidates
    from rankk_cli.paths import data_root
    from rankk_cli.rerank.pipeline import stdout_to_stderr
    from rankk_cli.sources import load_topics
    from rankk_cli.testing import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="rankk-sched-"))
    model_dir = build_tiny_model(args.model_dir or work / "tiny-model")
    dl19 = data_root() / "trec-dl" / "dl19"
    run, texts = read_candidates(dl19 / "candidates" / "bm25.jsonl")
    topics = load_topics(dl19 / "topics.tsv")
    keep = run.qids[: args.queries]
    run.df = run.df[run.df["qid"].isin(keep)].reset_index(drop=True)
    with stdout_to_stderr():  # vLLM logs to stdout: keep stdout for the RESULT line
        result = bench(args, model_dir=model_dir, run=run, texts=texts, topics=topics, work=work)
    print(result)


class Row:
    def __init__(self, name, seconds, tokens, requests, orders, occupancy=None, extra=""):
        self.name, self.seconds, self.tokens, self.requests = name, seconds, tokens, requests
        self.orders, self.occupancy, self.extra = orders, occupancy, extra


def count_steps(engine) -> dict:
    """Instrument the in-process engine: engine steps and requests running per step (both schedules step
    ``llm.llm_engine``; LLM.generate calls the same ``step``)."""
    core = engine.llm.llm_engine
    step = core.step
    box = {"steps": 0, "running": 0}

    def counted():
        box["steps"] += 1
        box["running"] += core.get_num_unfinished_requests()
        return step()

    core.step = counted
    return box


def bench(args, *, model_dir, run, texts, topics, work) -> str:
    from rankk_cli.rerank.engines.base import EngineOptions, Request, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.methods.rankk import RankK
    from rankk_cli.rerank.pipeline import build_queries
    from rankk_cli.rerank.scheduler import Scheduler
    from rankk_cli.testing import force_lengths, lognormal_lengths

    length_of = lognormal_lengths(args.seed, args.median, args.sigma, args.cap)
    config = RerankConfig(depth=args.depth, window=args.window, stride=args.stride, force_max_tokens=8)
    sampling = Sampling(temperature=0.0, max_tokens=args.cap)
    engine = VLLMEngine(str(model_dir), sampling, EngineOptions(max_model_len=8192))
    truncate = (lambda text: engine.truncate(text, args.truncate)) if args.truncate else None
    items = build_queries(run, texts, topics, args.depth, truncate)
    force_lengths(engine, length_of)
    engine.generate([Request(prompt="warm up the engine", max_tokens=4)])
    box = count_steps(engine)
    print(f"{len(items)} queries x {args.depth}, window {args.window}, stride {args.stride}; output lengths "
          f"lognormal(median {args.median:g}, sigma {args.sigma:g}, cap {args.cap}) seed {args.seed}, forced; "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    best: dict[str, Row] = {}
    for _ in range(max(1, args.repeat)):
        for schedule in ("lockstep", "continuous"):
            box.update(steps=0, running=0)
            sched = Scheduler(engine, schedule=schedule)
            t0 = time.perf_counter()
            res = sched.run(RankK(config), items)
            s = time.perf_counter() - t0
            row = Row(f"rankk {schedule} (in-process)", s, sched.stats.output_tokens, sched.stats.requests,
                      {q: r.order for q, r in res.items()}, box["running"] / max(1, box["steps"]),
                      f"steps {box['steps']}")
            print(f"  {row.name}: {s:.1f}s, {box['steps']} steps, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
            if schedule not in best or s < best[schedule].seconds:
                best[schedule] = row
    rows: list[Row] = [best["lockstep"], best["continuous"]]
    engine.close()

    if not args.no_server:
        with vllm_server(model_dir, work) as url:
            rows += served_systems(args, url, model_dir, sampling, config, items, length_of)

    base = rows[0]
    print(f"\n{'system':<40} {'wall s':>8} {'gen tok/s':>10} {'occupancy':>10} {'vs lockstep':>12}  same orders",
          file=sys.stderr)
    for r in rows:
        occ = f"{r.occupancy:.1f}" if r.occupancy is not None else "n/a"
        same = sum(r.orders[q] == base.orders[q] for q in base.orders)
        print(f"{r.name:<40} {r.seconds:8.1f} {r.tokens / r.seconds:10,.0f} {occ:>10} {base.seconds / r.seconds:11.2f}x"
              f"  {same}/{len(base.orders)}  {r.extra}", file=sys.stderr)
    tokens = {r.tokens for r in rows}
    print(f"generated tokens per system: {sorted(tokens)} (equal: the same work); requests {rows[0].requests}; "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    keys = ["lockstep", "continuous", "openai", "rankk_scheme"]
    fields = [f"queries={len(items)}", f"requests={rows[0].requests}", f"generated_tokens={rows[0].tokens}",
              f"same_work={int(len(tokens) == 1)}",
              f"same_orders={int(all(r.orders == base.orders for r in rows))}"]
    for key, r in zip(keys, rows):
        fields.append(f"{key}_s={r.seconds:.2f}")
        fields.append(f"{key}_tok_s={r.tokens / r.seconds:.0f}")
        if r.occupancy is not None:
            fields.append(f"{key}_occupancy={r.occupancy:.2f}")
    for key, r in zip(keys[1:], rows[1:]):
        fields.append(f"{key}_vs_lockstep={base.seconds / r.seconds:.2f}")
    if len(rows) == 4:
        fields.append(f"continuous_vs_rankk_scheme={rows[3].seconds / rows[1].seconds:.2f}")
        fields.append(f"continuous_vs_openai={rows[2].seconds / rows[1].seconds:.2f}")
    return "RESULT " + " ".join(fields)


def served_systems(args, url, model_dir, sampling, config, items, length_of) -> list[Row]:
    from rankk_cli.rerank.engines.base import EngineOptions, Request
    from rankk_cli.rerank.engines.openai import OpenAIEngine
    from rankk_cli.rerank.methods.rankk import RankK
    from rankk_cli.rerank.scheduler import Scheduler

    class Forced(OpenAIEngine):
        """The same forced lengths over HTTP: vLLM's server takes min_tokens and ignore_eos in the body."""

        def body(self, request):
            path, body = super().body(request)
            body["max_tokens"] = body["min_tokens"] = int(length_of(request))
            body["ignore_eos"] = True
            body["skip_special_tokens"] = False  # as the in-process engine: the same reply text, so the same
            return path, body                    # forced follow-ups (their lengths are drawn from their text)

    opts = EngineOptions(base_urls=(url,), concurrency=args.concurrency, timeout_s=600, max_retries=0)
    engine = Forced(str(model_dir), sampling, opts)
    engine.generate([Request(prompt="warm up the server", max_tokens=4)])
    rows = []
    sched = Scheduler(engine)
    t0 = time.perf_counter()
    res = sched.run(RankK(config), items)
    s = time.perf_counter() - t0
    rows.append(Row("rankk continuous (--engine openai)", s, sched.stats.output_tokens, sched.stats.requests,
                    {q: r.order for q, r in res.items()}, extra=f"errors {sched.stats.errors}"))
    print(f"  {rows[-1].name}: {s:.1f}s", file=sys.stderr)

    # Rank-K's scheme: a worker per query; each query's calls one blocking request at a time
    method = RankK(config)
    orders, tokens, requests, errors = {}, [0], [0], [0]
    lock = threading.Lock()

    def worker(qid, query, cands):
        gen = method.rerank(qid, query, cands)
        try:
            calls = next(gen)
            while True:
                done = [engine._one(c.request) for c in calls]
                with lock:
                    requests[0] += len(done)
                    tokens[0] += sum(c.output_tokens for c in done)
                    errors[0] += sum(c.finish_reason == "error" for c in done)
                calls = gen.send(done)
        except StopIteration as stop:
            orders[qid] = stop.value.order

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=item, daemon=True) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = time.perf_counter() - t0
    rows.append(Row("Rank-K scheme (worker per query, server)", s, tokens[0], requests[0], orders,
                    extra=f"errors {errors[0]}"))
    print(f"  {rows[-1].name}: {s:.1f}s", file=sys.stderr)
    engine.close()
    return rows


class vllm_server:
    """``python -m vllm.entrypoints.openai.api_server`` over the model, on a free local port, until exit."""

    def __init__(self, model_dir, work):
        self.model_dir, self.log = model_dir, Path(work) / "server.log"

    def __enter__(self) -> str:
        import httpx

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", os.environ.get("RANKK_CPU_KV_CACHE_GIB", "1"))
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "8192", "--enforce-eager",
               "--dtype", "bfloat16"]
        with self.log.open("w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"vLLM server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise SystemExit(f"vLLM server not healthy after 300 s:\n{self.log.read_text()[-3000:]}")
            time.sleep(1)

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    main()
