"""Benchmark: reading a 7,000,000-line TREC run (the synthetic run of eval_speed.py).

    python benchmarks/run_io.py [--queries 7000] [--depth 1000] [--repeat 3]

Compared in one process, on the same file:
- rankk_cli.runs.read_run (validated, in ranking order)                 <- the subject
- ir_measures.read_trec_run, consumed into a list                       <- baseline 1
- pandas.read_csv(sep=r"\\s+", header=None)                              <- baseline 2
- rankk_cli.runs.read_run on the same run written as Parquet (re-read)

Each figure is the median of --repeat runs (wall and process CPU time; the machine may be shared, CPU time is the
steadier one). ir_measures runs once (it takes ~15 s). Last line: `RESULT ...` with ratios (> 1: rankk faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _synth import make_synthetic  # noqa: E402


def measure(fn, repeat: int) -> tuple[float, float, object]:
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        out = None
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=7000)
    ap.add_argument("--depth", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import ir_measures
    import pandas as pd

    from rankk_cli.runs import read_run, write_run

    with tempfile.TemporaryDirectory(prefix="rankk-runio-") as tmp:
        tmp = Path(tmp)
        run_path, _ = make_synthetic(tmp, args.queries, args.depth)
        parquet = tmp / "run.parquet"
        write_run(read_run(run_path), parquet)
        n = args.queries * args.depth
        print(f"run: {n:,} lines, {run_path.stat().st_size / 1e6:.0f} MB text, {parquet.stat().st_size / 1e6:.0f} MB "
              f"Parquet", flush=True)

        rows = {}
        rows["rankk read_run (text)"] = measure(lambda: read_run(run_path), args.repeat)
        print("rankk text done", flush=True)
        rows["rankk read_run (Parquet)"] = measure(lambda: read_run(parquet), args.repeat)
        print("rankk parquet done", flush=True)
        rows["pandas read_csv sep=\\s+"] = measure(
            lambda: pd.read_csv(run_path, sep=r"\s+", header=None,
                                names=["qid", "q0", "docid", "rank", "score", "tag"]), args.repeat)
        print("pandas done", flush=True)
        rows["ir_measures read_trec_run"] = measure(lambda: list(ir_measures.read_trec_run(str(run_path))), 1)
        print("ir_measures done", flush=True)

        assert len(rows["rankk read_run (text)"][2]) == n == len(rows["ir_measures read_trec_run"][2])

    text_wall, text_cpu = rows["rankk read_run (text)"][:2]
    print()
    print(f"{'reader':30} {'wall s':>8} {'cpu s':>8} {'wall / rankk text':>18}")
    for name, (wall, cpu, _) in rows.items():
        print(f"{name:30} {wall:8.2f} {cpu:8.2f} {wall / text_wall:18.2f}")
    irm_wall, irm_cpu = rows["ir_measures read_trec_run"][:2]
    pq_wall, pq_cpu = rows["rankk read_run (Parquet)"][:2]
    pd_wall = rows["pandas read_csv sep=\\s+"][0]
    print("RESULT " + " ".join([
        f"lines={n}", f"rankk_text_s={text_wall:.2f}", f"rankk_parquet_s={pq_wall:.2f}",
        f"ir_measures_s={irm_wall:.2f}", f"pandas_s={pd_wall:.2f}",
        f"ir_measures_over_rankk={irm_wall / text_wall:.2f}", f"ir_measures_cpu_over_rankk={irm_cpu / text_cpu:.2f}",
        f"pandas_over_rankk={pd_wall / text_wall:.2f}", f"rankk_text_over_parquet={text_wall / pq_wall:.2f}",
        f"ir_measures_text_over_parquet={irm_wall / pq_wall:.2f}"]))


if __name__ == "__main__":
    main()
