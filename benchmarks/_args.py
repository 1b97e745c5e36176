"""Flags shared by the rerank benchmarks (one definition of the DL19 windowing they all default to)."""

from __future__ import annotations


def add_windowing(ap, queries: int = 43) -> None:
    """--queries/--depth/--window/--stride: DL19's 43 queries, depth 100, window 20, stride 10 by default."""
    ap.add_argument("--queries", type=int, default=queries)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=10)
