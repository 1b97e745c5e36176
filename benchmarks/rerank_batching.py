"""Benchmark: the lockstep scheduler (one batched engine call per round across all queries) against a per-query
sequential loop (same engine, same method, one query at a time), then a cached re-run.

Real vLLM on CPU with the tiny random-weight model (rankk_cli.testing.build_tiny_model), TREC DL19 BM25
candidates (43 queries x 100) at depth 100 / window 20 / stride 10, method rankk, a 256-token thinking budget (the
random model never closes its thinking, so every reply is cut off and each window also sends a forced follow-up
of --force-max-tokens tokens: both loops do the same work). Reasoning rerankers think for thousands of tokens, so
decode dominates as it does here; with --max-tokens 32 (prefill-dominated) the ratio falls to ~4x on 2 CPU cores.

    python benchmarks/rerank_batching.py [--queries 43] [--max-tokens 256] [--truncate 64]

Prints engine calls and wall times; the baseline is the sequential loop over the same queries, measured in the
same run (all of them by default; --sequential-queries K runs the first K and scales by Q/K, ``extrapolated=1``).
The floor: the requests the batched run rendered (token ids + SamplingParams, benchmarks/_floor.py) sent again by
a plain loop, one LLM.generate per round of the same composition, so rankk's own cost is a printed ratio
(``batched_vs_floor``). vLLM's prefix cache is reset before each timed case (none reuses another's prompts).
Last line: RESULT name=value ...
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _args import add_windowing

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_windowing(ap)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--force-max-tokens", type=int, default=8)
    ap.add_argument("--truncate", type=int, default=64, help="passage tokens (0: no truncation)")
    ap.add_argument("--sequential-queries", type=int, default=0,
                    help="run the sequential baseline on the first K queries and scale its time by Q/K "
                         "(each query's loop is independent, so its cost is additive); 0 = all queries (exact)")
    ap.add_argument("--model-dir", default=None, help="where to build the tiny model (default: a temp dir)")
    args = ap.parse_args()

    from rankk_cli.docs import read_candidates
    from rankk_cli.paths import data_root
    from rankk_cli.rerank.engines.vllm import VLLMEngine
    from rankk_cli.sources import load_topics
    from rankk_cli.testing import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="rankk-bench-"))
    model_dir = build_tiny_model(args.model_dir or work / "tiny-model")
    dl19 = data_root() / "trec-dl" / "dl19"
    run, texts = read_candidates(dl19 / "candidates" / "bm25.jsonl")
    topics = load_topics(dl19 / "topics.tsv")
    keep = run.qids[: args.queries]
    run.df = run.df[run.df["qid"].isin(keep)].reset_index(drop=True)

    from rankk_cli.rerank.pipeline import stdout_to_stderr

    with stdout_to_stderr():  # vLLM logs to stdout: keep stdout for the RESULT line
        result = bench(args, engine_cls=VLLMEngine, model_dir=model_dir, run=run, texts=texts, topics=topics,
                       work=work)
    print(result)


def bench(args, *, engine_cls, model_dir, run, texts, topics, work) -> str:
    from rankk_cli.rerank.cache import CallCache
    from rankk_cli.rerank.engines.base import EngineOptions, Request, Sampling
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.methods.rankk import RankK
    from rankk_cli.rerank.pipeline import build_queries
    from rankk_cli.rerank.scheduler import Scheduler

    t0 = time.perf_counter()
    engine = engine_cls(str(model_dir), Sampling(temperature=0.0, max_tokens=args.max_tokens),
                        EngineOptions(max_model_len=8192))
    load_s = time.perf_counter() - t0
    truncate = (lambda text: engine.truncate(text, args.truncate)) if args.truncate else None
    items = build_queries(run, texts, topics, args.depth, truncate)
    config = RerankConfig(depth=args.depth, window=args.window, stride=args.stride,
                          force_max_tokens=args.force_max_tokens)
    engine.generate([Request(prompt="warm up the engine", max_tokens=4)])  # neither side pays first-call costs
    print(f"engine loaded in {load_s:.1f}s; {len(items)} queries x {args.depth}, window {args.window}, "
          f"stride {args.stride}, max_tokens {args.max_tokens}, force_max_tokens {args.force_max_tokens}",
          file=sys.stderr)

    def timed(label, fn):
        engine.llm.reset_prefix_cache()
        t = time.perf_counter()
        out = fn()
        s = time.perf_counter() - t
        print(f"{label:<28} {s:8.1f}s", file=sys.stderr)
        return out, s

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _floor import recording, render, replay

    cache_dir = work / "calls"
    batched = Scheduler(engine, cache=CallCache(cache_dir), schedule="lockstep")
    with recording(RankK) as log:
        res_b, batched_s = timed("batched (lockstep)", lambda: batched.run(RankK(config), items))
    recorded = render(engine, log)  # what the batched run sent, as vLLM received it (untimed)
    floor, floor_s = timed("floor (plain LLM.generate)", lambda: replay(engine.llm, recorded, "lockstep"))
    print(f"{'':<28} floor: {floor['calls']} generate calls, {floor['tokens']} tokens (batched: "
          f"{batched.stats.output_tokens}); batched / floor = {batched_s / floor_s:.3f}", file=sys.stderr)

    seq_calls = 0

    seq_items = items[: args.sequential_queries] if args.sequential_queries else items

    def sequential():
        nonlocal seq_calls
        out = {}
        for item in seq_items:
            s = Scheduler(engine, schedule="lockstep")  # no cache: every window really goes to the engine
            out.update(s.run(RankK(config), [item]))
            seq_calls += s.stats.engine_calls
        return out

    res_s, seq_measured_s = timed(f"sequential ({len(seq_items)} queries)", sequential)
    scale = len(items) / len(seq_items)
    seq_s = seq_measured_s * scale
    seq_calls_all = round(seq_calls * scale)
    if scale != 1:
        print(f"{'sequential, scaled to all':<28} {seq_s:8.1f}s (x{scale:.2f}, extrapolated)", file=sys.stderr)

    cached = Scheduler(engine, cache=CallCache(cache_dir), schedule="lockstep")
    res_c, cached_s = timed("batched, cached re-run", lambda: cached.run(RankK(config), items))
    assert {q: r.order for q, r in res_c.items()} == {q: r.order for q, r in res_b.items()}
    windows = sum(len(r.records) for r in res_b.values())
    outcomes = {}
    for r in res_b.values():
        for rec in r.records:
            outcomes[rec["outcome"]] = outcomes.get(rec["outcome"], 0) + 1
    same = sum(res_s[q].order == res_b[q].order for q in res_s)
    print(f"windows {windows}, outcomes {outcomes}; sequential and batched orders agree on {same}/{len(res_s)} "
          f"queries (batching may change float rounding)", file=sys.stderr)
    print(f"engine calls: batched {batched.stats.engine_calls} (batch sizes {batched.stats.batch_sizes[:3]}...), "
          f"sequential {seq_calls} for {len(seq_items)} queries, cached re-run {cached.stats.engine_calls}", file=sys.stderr)
    engine.close()
    return (f"RESULT queries={len(items)} windows={windows} batched_calls={batched.stats.engine_calls} "
          f"sequential_queries={len(seq_items)} sequential_measured_s={seq_measured_s:.2f} "
          f"sequential_calls={seq_calls_all} sequential_s={seq_s:.2f} extrapolated={int(scale != 1)} "
          f"speedup={seq_s / batched_s:.2f} cached_calls={cached.stats.engine_calls} cached_s={cached_s:.2f} "
          f"floor_s={floor_s:.2f} floor_calls={floor['calls']} floor_tokens={floor['tokens']} "
          f"batched_tokens={batched.stats.output_tokens} floor_vs_batched={floor_s / batched_s:.3f}")


if __name__ == "__main__":
    main()
