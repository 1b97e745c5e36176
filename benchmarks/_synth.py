"""Seeded synthetic TREC run + graded qrels for the eval / run-I/O benchmarks (not a test fixture)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_synthetic(out_dir: str | Path, n_queries: int = 7000, depth: int = 1000, judged: int = 60,
                   seed: int = 0) -> tuple[Path, Path]:
    """Write ``run.trec`` (n_queries x depth lines, scores with some ties) and ``qrels.txt`` (grades 0-3).

    Each query draws its documents from a pool of 2,000,000 ids; ``judged`` of the run's documents per query
    are judged (grades 0..3, skewed to 0) plus 10 judged documents the run did not retrieve.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pool = 2_000_000
    qids = np.repeat(np.array([f"q{i}" for i in range(n_queries)], dtype=object), depth)
    docnum = np.empty((n_queries, depth), dtype=np.int64)
    for q in range(n_queries):
        docnum[q] = rng.choice(pool, size=depth, replace=False)
    scores = np.sort(np.round(rng.normal(10.0, 2.0, size=(n_queries, depth)), 3), axis=1)[:, ::-1]
    docids = np.char.add("D", docnum.ravel().astype(str)).astype(object)
    ranks = np.tile(np.arange(1, depth + 1, dtype=np.int64), n_queries)
    run = pa.table({"qid": qids, "q0": np.full(len(qids), "Q0", dtype=object), "docid": docids,
                    "rank": ranks, "score": scores.ravel(), "tag": np.full(len(qids), "synth", dtype=object)})
    run_path = out_dir / "run.trec"
    pacsv.write_csv(run, run_path, write_options=pacsv.WriteOptions(include_header=False, delimiter=" ",
                                                                    quoting_style="none"))
    # qrels: judged docs sampled from the run (more from the top) plus unretrieved ones
    q_rows, d_rows = [], []
    for q in range(n_queries):
        pos = np.unique(np.minimum(rng.geometric(1 / 150, size=judged) - 1, depth - 1))
        q_rows.append(np.full(len(pos), q))
        d_rows.append(docnum[q, pos])
        extra = rng.choice(pool, size=10, replace=False) + pool  # ids outside every run
        q_rows.append(np.full(10, q))
        d_rows.append(extra)
    qq = np.concatenate(q_rows)
    dd = np.concatenate(d_rows)
    grades = rng.choice([0, 1, 2, 3], size=len(qq), p=[0.55, 0.25, 0.12, 0.08])
    qrels = pa.table({"qid": np.char.add("q", qq.astype(str)).astype(object), "it": np.zeros(len(qq), np.int64),
                      "docid": np.char.add("D", dd.astype(str)).astype(object), "rel": grades})
    qrels_path = out_dir / "qrels.txt"
    pacsv.write_csv(qrels, qrels_path, write_options=pacsv.WriteOptions(include_header=False, delimiter=" ",
                                                                        quoting_style="none"))
    return run_path, qrels_path
