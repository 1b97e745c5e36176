"""Benchmark: opening a large call cache and answering a re-run's hits, against the previous cache code.

A synthetic ``calls/`` directory of N entries (default 1M) with ~2 KB texts (sha256-hex keys like Request.key,
chunks of 16,384 rows in row groups of 256 as the cache writes them after compaction). A fresh process opens it
and looks up 1,000 keys that are all present: either the keys of one earlier run (contiguous: what a re-run
hits) or 1,000 keys spread uniformly over the cache (the worst case: every hit in another row group). Reported:
wall seconds from the start of the open to the last hit, and the process's peak RSS, for

- rankk's cache now (rankk_cli/rerank/cache.py: key columns only, sorted numpy index, one row group per hit);
- the previous cache (``git show BASE:rankk_cli/rerank/cache.py``, default the commit before continuous
  scheduling: every chunk read whole into a dict), in the same run, on the same files;

and the same at N/10, to show whether the cost is flat in the cache size. Each measurement is a fresh
subprocess; the first line it prints is the baseline RSS of the interpreter with pyarrow and numpy imported.

    python benchmarks/cache_scale.py [--entries 1000000] [--hits 1000] [--base d66ef3f] [--skip-old]

Last line: RESULT name=value ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS_PER_CHUNK = 16384

PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])

def peak_kb():  # VmHWM: this process's own peak (ru_maxrss can carry the parent's over fork + exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))

import numpy, pyarrow, pyarrow.parquet  # the imports both caches need, before the clock starts
base_rss = peak_kb()
from {module} import CallCache
keys = json.load(open(sys.argv[3]))
t0 = time.perf_counter()
cache = CallCache(sys.argv[2])
opened = time.perf_counter() - t0
hits = sum(cache.get(k) is not None for k in keys)
total = time.perf_counter() - t0
print(json.dumps({{"open_s": opened, "total_s": total, "hits": hits,
                  "peak_mb": peak_kb() / 1024,
                  "base_mb": base_rss / 1024}}))
"""


def key_of(i: int) -> str:
    return hashlib.sha256(f"synthetic request {i}".encode()).hexdigest()


def build(directory: Path, entries: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from rankk_cli.rerank.cache import CallCache

    schema = CallCache.schema()
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(5000)]
    base = " ".join(rng.choice(words) for _ in range(4000))  # ~24 KB of text to cut ~2 KB slices from
    directory.mkdir(parents=True)
    for c, start in enumerate(range(0, entries, ROWS_PER_CHUNK)):
        n = min(ROWS_PER_CHUNK, entries - start)
        ids = range(start, start + n)
        texts = [f"<think>{i}: " + base[(i * 7919) % 20000:(i * 7919) % 20000 + 2000] for i in ids]
        table = pa.table({
            "key": [key_of(i) for i in ids], "engine": ["vllm"] * n, "model": ["synthetic"] * n, "text": texts,
            "finish_reason": ["stop"] * n, "input_tokens": [1500] * n, "output_tokens": [500] * n,
            "logprobs": [None] * n, "seconds": [0.5] * n, "created": [0.0] * n, "embedding": [None] * n,
        }, schema=schema)
        pq.write_table(table, directory / f"chunk-20261201T000000-0-{c:012x}.parquet", row_group_size=256)


def probe(module_dir: Path, module: str, cache_dir: Path, keys_file: Path) -> dict:
    script = PROBE.format(module=module)
    out = subprocess.run([sys.executable, "-c", script, str(module_dir), str(cache_dir), str(keys_file)],
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--hits", type=int, default=1000)
    ap.add_argument("--base", default="d66ef3f", help="commit of the previous cache code")
    ap.add_argument("--skip-old", action="store_true")
    ap.add_argument("--keep", default=None, help="build the caches here and keep them (default: a temp dir)")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="rankk-cache-scale-"))
    old_dir = work / "old_code"
    old_dir.mkdir(parents=True, exist_ok=True)
    (old_dir / "old_cache.py").write_text(subprocess.run(
        ["git", "show", f"{args.base}:rankk_cli/rerank/cache.py"], cwd=REPO, capture_output=True, text=True,
        check=True).stdout)
    rows = []
    for entries in (args.entries // 10, args.entries):
        cache_dir = work / f"calls-{entries}"
        if not cache_dir.exists():
            t0 = time.perf_counter()
            build(cache_dir, entries)
            size = sum(p.stat().st_size for p in cache_dir.iterdir())
            print(f"built {entries:,} entries in {time.perf_counter() - t0:.1f}s ({size / 2**20:,.0f} MiB on "
                  "disk)", file=sys.stderr)
        rng = random.Random(entries)
        start = rng.randrange(0, entries - args.hits)
        layouts = {"run": [key_of(i) for i in range(start, start + args.hits)],
                   "spread": [key_of(i) for i in rng.sample(range(entries), args.hits)]}
        for layout, keys in layouts.items():
            keys_file = work / f"keys-{entries}-{layout}.json"
            keys_file.write_text(json.dumps(keys))
            for name, module_dir, module in (("now", REPO, "rankk_cli.rerank.cache"),
                                             ("old", old_dir, "old_cache")):
                if name == "old" and (args.skip_old or layout == "spread"):  # old: the same cost either way
                    continue
                r = probe(module_dir, module, cache_dir, keys_file)
                assert r["hits"] == args.hits, r
                rows.append((entries, layout, name, r))
                print(f"{entries:>9,} {layout:<6} {name:<4} open {r['open_s']:6.2f}s  open+{args.hits} hits "
                      f"{r['total_s']:6.2f}s  peak RSS {r['peak_mb']:7.0f} MB (interpreter+imports "
                      f"{r['base_mb']:.0f} MB)", file=sys.stderr)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    fields = []
    for entries, layout, name, r in rows:
        tag = f"{name}_{layout}_{entries}"
        fields += [f"{tag}_s={r['total_s']:.2f}", f"{tag}_mb={r['peak_mb']:.0f}"]
    big = {(layout, name): r for entries, layout, name, r in rows if entries == args.entries}
    if ("run", "old") in big:
        fields.append(f"speedup={big[('run', 'old')]['total_s'] / big[('run', 'now')]['total_s']:.1f}")
        fields.append(f"rss_ratio={big[('run', 'old')]['peak_mb'] / big[('run', 'now')]['peak_mb']:.1f}")
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
