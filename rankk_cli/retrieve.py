"""The retrieve stage: BM25 through Anserini's Lucene (the jar inside pyserini), written as a TREC run.

    rankk retrieve --corpus corpus.jsonl | --index DIR_OR_PREBUILT --topics FILE_OR_ID -o run.trec [--k 1000]
                   [--k1 0.9 --b 0.4] [--threads N] [--no-cache]

- ``--corpus``: a JSONL corpus is validated, then indexed once into ``cache_root()/indexes/<sha256 of the file>``
  (positions, docvectors and raw documents stored, so the index also serves passage text to ``rankk rerank``).
- ``--index``: a local Lucene index directory, or a pyserini prebuilt index name (downloaded by pyserini's own
  code into its cache; offline this fails with one line).
- k1 and b are always set explicitly (defaults 0.9/0.4, pyserini's Python API) and recorded in the TREC tag
  (``bm25_k1=0.9_b=0.4``), in the Parquet metadata, and on the terminal.
- The search result is kept in the stage cache, keyed by (index identity, topics, k, k1, b, Anserini version);
  a cache hit writes the output without starting Java.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rankk_cli.cache import StageCache, dir_digest, enabled, file_digest, stage_key
from rankk_cli.errors import RankkError, check_input_file
from rankk_cli.outputs import check_not_input, check_output_path
from rankk_cli.paths import cache_root
from rankk_cli.runs import Run, run_from_rankings, run_to_table, write_run

STAGE = "retrieve"


def bm25_tag(k1: float, b: float) -> str:
    return f"bm25_k1={k1:g}_b={b:g}"


JAVA_INT_MAX = 2**31 - 1  # Lucene's hit count is a Java int
MAX_THREADS = 1024


def _check_options(corpus, index, k: int, k1: float, b: float, threads: int) -> None:
    if (corpus is None) == (index is None):
        raise RankkError("give exactly one of --corpus FILE.jsonl (index it) or --index DIR_OR_PREBUILT_NAME"
                         + (", found both" if corpus is not None else ", found neither"))
    if not 1 <= k <= JAVA_INT_MAX:
        raise RankkError(f"--k: expected a positive number of hits, at most {JAVA_INT_MAX}, found {k}")
    if not 0 <= k1 < float("inf"):
        raise RankkError(f"--k1: expected a finite number >= 0, found {k1}")
    if not 0 <= b <= 1:
        raise RankkError(f"--b: expected a number in [0, 1], found {b}")
    if not 1 <= threads <= MAX_THREADS:
        raise RankkError(f"--threads: expected an integer in [1, {MAX_THREADS}], found {threads}")


def _jar_version() -> str:
    from rankk_cli.lucene import anserini_jar

    return anserini_jar().name


def _index_identity(corpus: Path | None, index: str | None) -> tuple[dict, str]:
    """What identifies the index in cache keys (computed without Java), and how to show it."""
    if corpus is not None:
        corpus = check_input_file(corpus, "JSONL corpus file")
        from rankk_cli.lucene import INDEX_FORMAT

        return {"corpus_sha256": file_digest(corpus), "format": INDEX_FORMAT}, str(corpus)
    assert index is not None
    path = Path(index)
    if path.is_dir():
        return {"index_dir": dir_digest(path)}, str(path)
    if path.exists():
        raise RankkError(f"{index}: expected a Lucene index directory or a prebuilt index name, found a file "
                         "(use --corpus for a JSONL corpus)")
    if "/" in index or index.startswith("."):
        raise RankkError(f"{index}: no such index directory")
    import importlib.metadata as md

    try:
        version = md.version("pyserini")
    except md.PackageNotFoundError:
        version = "?"
    return {"prebuilt": index, "pyserini": version}, f"prebuilt:{index}"


def _topics_identity(spec: str) -> dict:
    path = Path(spec)
    if path.is_file():
        return {"topics_sha256": file_digest(path)}
    if not path.exists():  # a pyserini name: the digest of the file it resolves to here
        from rankk_cli.pyserini_names import local_file

        named = local_file(spec, "topics")
        if named is not None:
            return {"topics_sha256": file_digest(named)}
    return {"topics_id": spec}


def retrieve_command(*, topics: str, output: Path, corpus: Path | None = None, index: str | None = None,
                     k: int = 1000, k1: float = 0.9, b: float = 0.4, threads: int = 2, no_cache: bool = False,
                     console: Console | None = None, fmt: str = "table") -> Run:
    """Run BM25 for every topic and write ``output``. Returns the Run that was written. ``fmt`` json: one summary
    object on stdout (``_summary``) once the output is written; the progress lines stay on stderr."""
    console = console or Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    if fmt not in ("table", "json"):
        raise RankkError(f"--format: expected one of table, json, found {fmt!r}")
    _check_options(corpus, index, k, k1, b, threads)
    check_output_path(output, "-o/--output")  # before any work: a bad -o is not found after indexing
    check_not_input(output, "-o/--output", [corpus, topics])
    from rankk_cli.sources import load_topics

    queries = load_topics(topics)
    if not queries:
        raise RankkError(f"{topics}: no topics found")
    index_id, index_label = _index_identity(corpus, index)
    tag = bm25_tag(k1, b)
    key = stage_key(STAGE, index=index_id, topics=_topics_identity(topics), k=k, k1=k1, b=b,
                    anserini=_jar_version())
    cache = StageCache()
    meta = {"stage": STAGE, "model": "bm25", "k1": k1, "b": b, "k": k, "tag": tag, "index": index_label,
            "topics": str(topics)}

    if enabled(no_cache):
        table = cache.get_table(STAGE, key)
        if table is not None:
            run = _run_from_table(table, output)
            write_run(run, output, tag=tag)
            console.print(f"rankk: reused cached result for BM25 k1={k1:g} b={b:g} k={k} "
                          f"({run.df['qid'].nunique()} queries, {len(run)} hits; --no-cache recomputes) "
                          f"-> {output}")
            empty = list(run.meta.get("queries_without_hits") or [])
            if empty:  # said again from the cache: never silent the second time
                shown = ", ".join(empty[:10]) + (f" ... ({len(empty)} in all)" if len(empty) > 10 else "")
                console.print(f"rankk: warning: {len(empty)} of {len(queries)} queries returned no hits: {shown}",
                              style="yellow")
            if fmt == "json":
                _summary(run, output, len(queries), cached=True, seconds=None)
            return run

    from rankk_cli import lucene

    if corpus is not None:
        built = lucene.index_for_corpus(corpus, cache_root() / "indexes", threads=threads, console=console)
        index_dir = built.path
        if built.built:
            console.print(f"rankk: indexed {built.docs:,} docs in {built.seconds:.1f} s -> {index_dir}")
            if built.empty:
                console.print(f"rankk: warning: {built.empty} docs with empty contents were not indexed (as Anserini "
                              "does); they can never be retrieved", style="yellow")
        else:
            console.print(f"rankk: using cached index {index_dir}")
    elif Path(index).is_dir():
        index_dir = Path(index)
    else:
        index_dir, md5 = lucene.prebuilt_index(index, console=console)
        meta["index_md5"] = md5

    searcher = lucene.Searcher(index_dir, k1=k1, b=b)
    start = time.perf_counter()
    if console.is_terminal:  # a live bar; piped, a transient display would leave only a blank line
        with Progress(TextColumn("BM25 search"), BarColumn(), MofNCompleteColumn(), TextColumn("queries"),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("search", total=len(queries))
            results = searcher.search_all(queries, k=k, threads=threads,
                                          on_chunk=lambda n: progress.advance(task, n))
    else:
        results = searcher.search_all(queries, k=k, threads=threads)
    seconds = time.perf_counter() - start
    searcher.close()

    empty = [qid for qid, hits in results.items() if not hits]
    rankings = {qid: hits for qid, hits in results.items() if hits}
    if not rankings:
        raise RankkError(f"{topics}: no query returned any hits from {index_label}")
    if empty:
        shown = ", ".join(empty[:10]) + (f" ... ({len(empty)} in all)" if len(empty) > 10 else "")
        console.print(f"rankk: warning: {len(empty)} of {len(queries)} queries returned no hits: {shown}", style="yellow")
    meta["index_dir"] = str(index_dir)
    meta["queries_without_hits"] = empty
    run = run_from_rankings(rankings, name=Path(output).name, **meta)
    # Lucene scores are float32: write the shortest decimal that maps back to the same float32 (10.8034, not
    # 10.803400039672852); the ranking and every score's float32 value are unchanged.
    run.df["score"] = run.df["score"].to_numpy().astype(np.float32).astype(str).astype(np.float64)
    write_run(run, output, tag=tag)
    cache.put(STAGE, key, run_to_table(run))
    console.print(f"rankk: BM25 k1={k1:g} b={b:g}: {len(rankings)} queries, {len(run)} hits (k={k}) in {seconds:.1f} s "
                  f"({len(queries) / max(seconds, 1e-9):.1f} queries/s, {threads} threads) -> {output} [tag {tag}]")
    if fmt == "json":
        _summary(run, output, len(queries), cached=False, seconds=round(seconds, 3))
    return run


def _summary(run: Run, output: Path, topics: int, cached: bool, seconds: float | None) -> None:
    """``rankk retrieve --format json``: what was written, as one JSON object on stdout."""
    import json
    import sys

    meta = run.meta
    empty = list(meta.get("queries_without_hits") or [])
    sys.stdout.write(json.dumps({
        "output": str(output), "tag": meta.get("tag"), "topics": topics, "queries": int(run.df["qid"].nunique()),
        "hits": len(run), "queries_without_hits": empty, "k": meta.get("k"), "k1": meta.get("k1"),
        "b": meta.get("b"), "index": meta.get("index"), "cached": cached, "seconds": seconds}, indent=1) + "\n")


def _run_from_table(table, output: Path) -> Run:
    import json

    from rankk_cli.runs import META_KEY

    meta = {}
    if table.schema.metadata and META_KEY in table.schema.metadata:
        meta = json.loads(table.schema.metadata[META_KEY])
    meta.pop("name", None)
    df = table.to_pandas()[["qid", "docid", "rank", "score"]]
    return Run(df, Path(output).name, meta)
