"""Benchmark: continuous scheduling against lockstep, against a bare-engine floor and against the peers' schemes,
side by side in one run, on a long-tailed workload where every system does exactly the same work.

Real vLLM on CPU with the tiny random-weight model (rankk_cli.testing.build_tiny_model), TREC DL19 BM25
candidates (43 queries x 100), depth 100 / window 20 / stride 10, passages truncated to 64 tokens (``--truncate
0``: none). Every generation request's output length is drawn from a lognormal (median 128, sigma 1, capped at
1024) and forced exactly (min_tokens = max_tokens, EOS ignored; rankk_cli.testing.force_lengths), so each system
generates the same tokens for the same requests.

``--method rankk`` (the default): the random model never closes its thinking, so each window is a reply plus a
forced follow-up (774 requests), each length seeded by the request itself (rankk_cli.testing.lognormal_lengths).
``--method rankzephyr``: one request per window (387), each length seeded by (query, call number) instead
(benchmarks/_floor.step_lengths), so RankLLM, whose prompts differ from rankk's in small ways, gets the same
length for the same window: that is what lets RankLLM be a row.

Systems (one vLLM process at a time: the in-process engines are closed before the server starts); vLLM's prefix
cache is reset before each in-process system, so none reuses another's prompts:
1. rankk lockstep, in-process vLLM (one LLM.generate per round);
2. rankk continuous, in-process vLLM (llm_engine.add_request / step);
3. floor, lockstep and continuous: the requests rankk rendered (token ids + SamplingParams, recorded from rankk's
   last in-process run, see benchmarks/_floor.py) replayed by a plain loop on the same LLM: one LLM.generate per
   round, or one add_request/step loop adding a query's next request when its last one finished;
4. RankLLM 0.25.7 (``--method rankzephyr`` only; ``bash benchmarks/setup_rankllm.sh``): its RankListwiseOSLLM
   batched path (one LLM.generate per window position across all queries: lockstep by construction) on a
   vllm.LLM built with rankk's own LLM kwargs, each prompt's SamplingParams replaced by its window's forced length
   (benchmarks/_rankllm.py says every equalisation; none edits its files). With ``--method rankk`` it is not run:
   RankLLM has no reasoning follow-up, so the rankk method's work (a reply and a forced follow-up per window)
   cannot be given to it;
5. rankk continuous, --engine openai against a local vLLM OpenAI server (python -m vllm.entrypoints.openai.api_server);
6. Rank-K's scheme against the same server: one worker thread per query, each query's windows in sequence, one
   blocking HTTP request at a time (a re-implementation of the scheme with rankk's prompts, not Rank-K's code).

    python benchmarks/scheduling.py [--queries 43] [--seed 0] [--median 128] [--sigma 1] [--cap 1024] [--no-server]
                                    [--repeat 1] [--method rankk|rankzephyr] [--no-rankllm]

Prints wall time, generated tokens/s, mean batch occupancy (requests running per engine step, in-process only)
and ratios against lockstep, the load average after each system; the last line is RESULT name=value ... No call
cache anywhere (forced lengths are not part of the cache key); every rankk system's final orders are checked
equal to lockstep's (RankLLM's parser differs from rankk's, so its orders are only counted).
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
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _args import add_windowing

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_windowing(ap)
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
    ap.add_argument("--method", choices=("rankk", "rankzephyr"), default="rankk")
    ap.add_argument("--no-rankllm", action="store_true", help="skip the RankLLM row (--method rankzephyr)")
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


KEYS = {"rankk lockstep (in-process)": "lockstep", "rankk continuous (in-process)": "continuous",
        "floor lockstep (plain vLLM loop)": "floor_lockstep", "floor continuous (plain vLLM loop)": "floor_continuous",
        "rankk continuous (--engine openai)": "openai", "Rank-K scheme (worker per query, server)": "rankk_scheme"}


class Row:
    def __init__(self, name, seconds, tokens, requests, orders, occupancy=None, extra="", key=None):
        self.name, self.seconds, self.tokens, self.requests = name, seconds, tokens, requests
        self.orders, self.occupancy, self.extra = orders, occupancy, extra
        self.key = key or KEYS[name]


def bench(args, *, model_dir, run, texts, topics, work) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _floor import recording, render, replay, step_lengths, step_meter

    from rankk_cli.rerank.engines.base import EngineOptions, Request, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.pipeline import build_queries
    from rankk_cli.rerank.scheduler import Scheduler
    from rankk_cli.testing import force_lengths, lognormal_lengths

    method_cls = METHODS.get(args.method)
    with recording(method_cls) as log:
        if args.method == "rankk":
            length_of = lognormal_lengths(args.seed, args.median, args.sigma, args.cap)
        else:
            length_of = step_lengths(log, args.seed, args.median, args.sigma, args.cap)
        config = RerankConfig(depth=args.depth, window=args.window, stride=args.stride, force_max_tokens=8)
        sampling = Sampling(temperature=0.0, max_tokens=args.cap)
        engine = VLLMEngine(str(model_dir), sampling, EngineOptions(max_model_len=8192))
        truncate = (lambda text: engine.truncate(text, args.truncate)) if args.truncate else None
        items = build_queries(run, texts, topics, args.depth, truncate)
        force_lengths(engine, length_of)
        engine.generate([Request(prompt="warm up the engine", max_tokens=4)])
        box = step_meter(engine.llm)
        print(f"{len(items)} queries x {args.depth}, window {args.window}, stride {args.stride}, method "
              f"{args.method}; output lengths lognormal(median {args.median:g}, sigma {args.sigma:g}, cap "
              f"{args.cap}) seed {args.seed}, forced; load {os.getloadavg()[0]:.2f}", file=sys.stderr)

        def measured(name, fn):
            engine.llm.reset_prefix_cache()  # no system reuses the prompts another one left in vLLM's cache
            box.update(steps=0, running=0, seconds=0.0)
            t0 = time.perf_counter()
            out = fn()
            s = time.perf_counter() - t0
            print(f"  {name}: {s:.1f}s, {box['steps']} steps ({box['seconds']:.1f}s inside them: outside "
                  f"{s - box['seconds']:.2f}s), load {os.getloadavg()[0]:.2f}", file=sys.stderr)
            return out, s, box["running"] / max(1, box["steps"]), (f"steps {box['steps']}, outside them "
                                                                    f"{s - box['seconds']:.2f}s")

        best: dict[str, Row] = {}

        def keep(key, row):
            if key not in best or row.seconds < best[key].seconds:
                best[key] = row

        recorded = None
        for _ in range(max(1, args.repeat)):
            for schedule in ("lockstep", "continuous"):
                sched = Scheduler(engine, schedule=schedule)
                name = f"rankk {schedule} (in-process)"
                res, s, occ, extra = measured(name, lambda: sched.run(method_cls(config), items))
                keep(schedule, Row(name, s, sched.stats.output_tokens, sched.stats.requests,
                                   {q: r.order for q, r in res.items()}, occ, extra))
            if recorded is None:  # what the last run sent, as vLLM received it (untimed)
                recorded = render(engine, log)
            for schedule in ("lockstep", "continuous"):
                name = f"floor {schedule} (plain vLLM loop)"
                res, s, occ, extra = measured(name, lambda: replay(engine.llm, recorded, schedule))
                keep(f"floor_{schedule}", Row(name, s, res["tokens"], sum(len(st) for q in recorded["queries"]
                                                                         for st in q),
                                              best["lockstep"].orders, occ, extra))
        rows: list[Row] = [best[k] for k in ("lockstep", "continuous", "floor_lockstep", "floor_continuous")]
        llm_kwargs = dict(engine.llm_kwargs)
        engine.close()

        if args.method == "rankzephyr" and not args.no_rankllm:
            row = rankllm_system(args, llm_kwargs, items)
            if row is not None:
                rows.append(row)
        elif not args.no_rankllm:
            print("  RankLLM: not run with --method rankk: RankLLM has no reasoning follow-up, so a reply plus a "
                  "forced follow-up per window cannot be given to it (use --method rankzephyr)", file=sys.stderr)

        if not args.no_server:
            with vllm_server(model_dir, work) as url:
                rows += served_systems(args, url, model_dir, sampling, config, items, length_of, method_cls)

    base = rows[0]
    print(f"\n{'system':<40} {'wall s':>8} {'gen tok/s':>10} {'occupancy':>10} {'vs lockstep':>12}  same orders",
          file=sys.stderr)
    for r in rows:
        occ = f"{r.occupancy:.1f}" if r.occupancy is not None else "n/a"
        same = sum(r.orders.get(q) == base.orders[q] for q in base.orders)
        print(f"{r.name:<40} {r.seconds:8.1f} {r.tokens / r.seconds:10,.0f} {occ:>10} {base.seconds / r.seconds:11.2f}x"
              f"  {same}/{len(base.orders)}  {r.extra}", file=sys.stderr)
    tokens = {r.tokens for r in rows}
    print(f"generated tokens per system: {sorted(tokens)} (equal: the same work); requests {rows[0].requests}; "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    by = {r.key: r for r in rows}
    fields = [f"method={args.method}", f"queries={len(items)}", f"requests={rows[0].requests}",
              f"generated_tokens={rows[0].tokens}", f"same_work={int(len(tokens) == 1)}",
              f"same_orders={int(all(r.orders == base.orders for r in rows if r.key != 'rankllm'))}"]
    for key, r in by.items():
        fields.append(f"{key}_s={r.seconds:.2f}")
        fields.append(f"{key}_tok_s={r.tokens / r.seconds:.0f}")
        if r.occupancy is not None:
            fields.append(f"{key}_occupancy={r.occupancy:.2f}")
    for key, r in list(by.items())[1:]:
        fields.append(f"{key}_vs_lockstep={base.seconds / r.seconds:.2f}")
    cont = by["continuous"]
    fields.append(f"floor_vs_continuous={by['floor_continuous'].seconds / cont.seconds:.3f}")
    fields.append(f"floor_vs_lockstep={by['floor_lockstep'].seconds / base.seconds:.3f}")
    for peer in ("rankllm", "rankk_scheme", "openai"):
        if peer in by:
            fields.append(f"continuous_vs_{peer}={by[peer].seconds / cont.seconds:.2f}")
    return "RESULT " + " ".join(fields)


def rankllm_system(args, llm_kwargs, items) -> "Row | None":
    """RankLLM's batched vLLM path on the same windows, each window forced to the length rankk's call of the same
    number got (step_lengths' key: seed, qid, call number, 0)."""
    import _rankllm

    from rankk_cli.rerank.text import replace_number
    from rankk_cli.testing import lognormal_draw

    try:
        os_llm = _rankllm.load()
    except RuntimeError as exc:
        print(f"  RankLLM: not run: {exc}", file=sys.stderr)
        return None
    stats: dict = {}
    unmatched: list = []

    def length_of(call, i, prompt):
        qid, query, _c = items[i]  # RankLLM's batched rounds keep the requests' order, every query in each
        if f"Search Query: {replace_number(query)}." not in prompt:  # (ftfy may have rewritten the query text)
            unmatched.append((call, i))
        return lognormal_draw([args.seed, qid, call, 0], args.median, args.sigma, args.cap)

    said = []
    _rankllm.equal_handler(os_llm, llm_kwargs, length_of, stats, log=said.append)
    reranker = os_llm.RankListwiseOSLLM(model=llm_kwargs["model"], context_size=llm_kwargs.get("max_model_len", 8192),
                                        window_size=args.window, stride=args.stride)
    for line in said:
        print(f"  RankLLM: {line}", file=sys.stderr)
    llm = reranker._vllm_handler._vllm
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _floor import step_meter

    box = step_meter(llm)
    requests = _rankllm.requests_of(items)
    t0 = time.perf_counter()
    results = reranker.rerank_batch(requests, rank_start=0, rank_end=args.depth)
    s = time.perf_counter() - t0
    print(f"  RankLLM 0.25.7 (in-process, batched): {s:.1f}s, {box['steps']} steps ({box['seconds']:.1f}s inside "
          f"them: outside {s - box['seconds']:.2f}s), {stats['calls']} generate calls, load {os.getloadavg()[0]:.2f}",
          file=sys.stderr)
    if unmatched:
        print(f"  RankLLM: {len(unmatched)} prompts did not show their query's text (first: call, index "
              f"{unmatched[0]}); their lengths are still keyed by position", file=sys.stderr)
    orders = {r.query.qid: [c.docid for c in r.candidates[: args.depth]] for r in results}
    row = Row("RankLLM 0.25.7 (in-process, batched)", s, stats["tokens"], stats["requests"], orders,
              box["running"] / max(1, box["steps"]), f"steps {box['steps']}, outside them {s - box['seconds']:.2f}s; "
              "its own parser", key="rankllm")
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort before the server starts
        pass
    del reranker, llm
    import gc

    gc.collect()
    return row


def served_systems(args, url, model_dir, sampling, config, items, length_of, method_cls) -> list[Row]:
    from rankk_cli.rerank.engines.base import EngineOptions, Request
    from rankk_cli.rerank.engines.openai import OpenAIEngine
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
    res = sched.run(method_cls(config), items)
    s = time.perf_counter() - t0
    rows.append(Row("rankk continuous (--engine openai)", s, sched.stats.output_tokens, sched.stats.requests,
                    {q: r.order for q, r in res.items()}, extra=f"errors {sched.stats.errors}"))
    print(f"  {rows[-1].name}: {s:.1f}s, load {os.getloadavg()[0]:.2f}", file=sys.stderr)

    # Rank-K's scheme: a worker per query; each query's calls one blocking request at a time
    method = method_cls(config)
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
    print(f"  {rows[-1].name}: {s:.1f}s, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
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
