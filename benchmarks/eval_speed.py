"""Benchmark: `rankk eval` vs the `ir_measures` CLI vs ranx on a synthetic 7,000 x 1,000 run with graded qrels.

    python benchmarks/eval_speed.py [--queries 7000] [--depth 1000] [--skip-ranx]

All three score the same files (nDCG@10, AP, R@100, RR@10) in the same run of this script:
- rankk: the CLI in a subprocess, `rankk eval RUN --qrels QRELS -m ... --no-cache --format tsv`;
- ir_measures: its documented CLI, `ir_measures QRELS RUN nDCG@10 AP R@100 RR@10` (subprocess);
- ranx: in a subprocess that first warms the numba JIT on a tiny run, then times Qrels.from_file +
  Run.from_file + evaluate (so file reading is included, the one-off JIT compile is not).
Wall time and the child processes' CPU time are reported (the machine may be shared: CPU time is the steadier
figure). Last line: `RESULT name=value ...` with ratios baseline/rankk (> 1 means rankk is faster).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _synth import make_synthetic  # noqa: E402

MEASURES = ["nDCG@10", "AP", "R@100", "RR@10"]
RANX_METRICS = ["ndcg@10", "map", "recall@100", "mrr@10"]

RANX_CODE = r"""
import sys, time
from ranx import Qrels, Run, evaluate
# warm the JIT (compiles, or loads numba's on-disk cache)
evaluate({"q": {"a": 1, "b": 2}}, {"q": {"a": 0.5, "b": 0.4, "c": 0.1}}, %(metrics)r)
t = time.perf_counter()
qrels = Qrels.from_file(sys.argv[1], kind="trec")
run = Run.from_file(sys.argv[2], kind="trec")
res = evaluate(qrels, run, %(metrics)r)
print("RANX_SECONDS", time.perf_counter() - t)
print("RANX_VALUES", " ".join(f"{k}={v:.4f}" for k, v in res.items()))
"""


def exe(name: str) -> list[str]:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    return [found] if Path(found).exists() else [sys.executable, "-m", name.replace("-", "_")]


def timed(cmd: list[str], env=None) -> tuple[float, float, subprocess.CompletedProcess]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr[-2000:]}")
    return wall, cpu, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=7000)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--skip-ranx", action="store_true")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rankk-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        run, qrels = make_synthetic(tmp, args.queries, args.depth)
        n_lines = args.queries * args.depth
        print(f"synthetic run: {n_lines:,} lines, {sum(1 for _ in open(qrels)):,} qrels "
              f"({time.perf_counter() - t:.1f} s to generate)", flush=True)
        env = dict(os.environ, RANKK_CACHE=str(tmp / "cache"), RANKK_NO_CACHE="1")

        rows = []
        measure_args = [a for m in MEASURES for a in ("-m", m)]
        wall, cpu, res = timed([*exe("rankk"), "eval", str(run), "--qrels", str(qrels), *measure_args,
                                "--no-cache", "--format", "tsv"], env)
        rankk_vals = " ".join(f"{ln.split()[1]}={float(ln.split()[2]):.4f}" for ln in res.stdout.splitlines()[1:])
        rows.append(("rankk eval (CLI)", wall, cpu, rankk_vals))
        print(f"rankk done: {wall:.1f} s", flush=True)

        wall, cpu, res = timed([*exe("ir_measures"), str(qrels), str(run), *MEASURES], env)
        irm_vals = " ".join(f"{ln.split()[0]}={float(ln.split()[1]):.4f}" for ln in res.stdout.splitlines())
        rows.append(("ir_measures CLI", wall, cpu, irm_vals))
        print(f"ir_measures done: {wall:.1f} s", flush=True)

        if not args.skip_ranx:
            wall_total, cpu, res = timed([sys.executable, "-c", RANX_CODE % {"metrics": RANX_METRICS}, str(qrels),
                                          str(run)], env)
            out = dict(ln.split(" ", 1) for ln in res.stdout.splitlines() if ln.startswith("RANX_"))
            rows.append(("ranx (JIT warm, incl. reading)", float(out["RANX_SECONDS"]), float("nan"),
                         out["RANX_VALUES"]))
            print(f"ranx done: {wall_total:.1f} s including warm-up", flush=True)

    base = rows[0]
    print()
    print(f"{'system':34} {'wall s':>8} {'cpu s':>8} {'wall/rankk':>11}  values")
    for name, wall, cpu, vals in rows:
        print(f"{name:34} {wall:8.2f} {cpu:8.2f} {wall / base[1]:11.2f}  {vals}")
    result = [f"lines={n_lines}", f"rankk_wall_s={base[1]:.2f}", f"rankk_cpu_s={base[2]:.2f}",
              f"ir_measures_wall_s={rows[1][1]:.2f}", f"ir_measures_over_rankk={rows[1][1] / base[1]:.2f}",
              f"ir_measures_cpu_over_rankk={rows[1][2] / base[2]:.2f}"]
    if len(rows) > 2:
        result += [f"ranx_wall_s={rows[2][1]:.2f}", f"ranx_over_rankk={rows[2][1] / base[1]:.2f}"]
    result.append(f"values_agree_with_ir_measures={rankk_vals == irm_vals}")
    print("RESULT " + " ".join(result))


if __name__ == "__main__":
    main()
