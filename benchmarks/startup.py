"""Benchmark: CLI start-up. `rankk --help` and `rankk eval --help` vs `python -c pass` (median of N runs).

    python benchmarks/startup.py [--repeat 15]

Target: each rankk command <= 3x the bare interpreter start. Also reports whether `rankk eval --help` imported
any heavy module (torch, vllm, pyserini, jnius, transformers). Last line: `RESULT ...`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def rankk_cmd() -> list[str]:
    found = shutil.which("rankk") or str(Path(sys.executable).parent / "rankk")
    return [found] if Path(found).exists() else [sys.executable, "-m", "rankk_cli"]


def median_time(cmd: list[str], repeat: int) -> float:
    subprocess.run(cmd, capture_output=True)  # warm the file cache
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True)
        times.append(time.perf_counter() - t)
        if res.returncode != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr.decode()[-1000:]}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()

    base_cmd = [sys.executable, "-c", "pass"]
    cases = {"python -c pass": base_cmd, "rankk --help": [*rankk_cmd(), "--help"],
             "rankk eval --help": [*rankk_cmd(), "eval", "--help"],
             "rankk compare --help": [*rankk_cmd(), "compare", "--help"]}
    # interleave the measurements so load changes hit every case alike
    samples = {k: [] for k in cases}
    for _ in range(args.repeat):
        for name, cmd in cases.items():
            samples[name].append(median_time(cmd, 1))
    med = {k: statistics.median(v) for k, v in samples.items()}

    probe = ("import sys\nfrom rankk_cli.cli import app\ntry:\n    app(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('torch', 'vllm', 'pyserini', 'jnius', 'transformers')))")
    heavy = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip().splitlines()

    base = med["python -c pass"]
    print(f"{'command':24} {'median s':>9} {'x python':>9}")
    for name, value in med.items():
        print(f"{name:24} {value:9.3f} {value / base:9.2f}")
    print(f"heavy modules imported by `rankk eval --help`: {heavy[-1] if heavy else '?'}")
    print("RESULT " + " ".join([f"python_s={base:.3f}", f"help_s={med['rankk --help']:.3f}",
                                f"help_ratio={med['rankk --help'] / base:.2f}",
                                f"eval_help_ratio={med['rankk eval --help'] / base:.2f}",
                                f"compare_help_ratio={med['rankk compare --help'] / base:.2f}",
                                f"repeat={args.repeat}"]))


if __name__ == "__main__":
    main()
