"""The rerank stage: read a run + texts + topics, drive the scheduler (continuous or lockstep), write the reranked run.

``rerank_command`` is what ``rankk rerank`` calls; ``rerank`` is the library entry (it accepts an engine object
that is already built, so tests and notebooks can load a model once and reuse it).

Outputs, both written only when the whole run succeeded (temp files renamed into place at the end):
- the reranked run (TREC/.gz/Parquet by suffix; strictly decreasing scores; candidates below ``depth`` keep
  their first-stage order under the reranked head);
- ``OUT.windows.parquet``: one row per window (per pair for pointwise methods) with qid, pass, start, end, the
  engine-call indices, prompt hash (the call-cache key), raw output, reasoning, parsed order, outcome, repairs,
  tokens, seconds and whether it came from the cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rankk_cli.errors import RankkError, show
from rankk_cli.rerank.engines.base import Engine, EngineOptions, Sampling
from rankk_cli.rerank.methods.base import OUTCOMES, Candidate, QueryResult, RerankConfig
from rankk_cli.runs import Run, run_from_rankings

WINDOWS_SUFFIX = ".windows.parquet"


class EngineFailure(RankkError):
    """Engine requests still failed after the engine's own retries (server down, 5xx/429, timeouts, a prompt
    that does not fit): the run is incomplete, so nothing is written (one line, exit code 1, not 2: it is not
    the user's input). Finished requests are in the call cache, so the same command resumes."""

    exit_code = 1


@dataclass
class RerankOutcome:
    run: Run
    results: dict[str, QueryResult]
    records: list[dict]
    summary: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# validation and inputs


DEFAULT_WINDOW, DEFAULT_STRIDE = 20, 10


def resolve_windowing(depth: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """Defaults that fit the depth: --window 20 (or --depth when that is smaller), --stride half the window, at
    most 10. An explicit --window larger than --depth is an error (it can never be filled); a query with fewer
    candidates than the window still gets one window (windows.py)."""
    if depth < 1:
        raise RankkError(f"--depth: expected an integer >= 1, found {depth}")
    if window is None:
        window = min(DEFAULT_WINDOW, depth)
    elif window > depth:
        raise RankkError(f"--window: expected at most --depth ({depth}), found {window}")
    if stride is None:
        stride = min(DEFAULT_STRIDE, max(1, window // 2))
    return window, stride


def validate(depth: int, window: int, stride: int, passes: int, truncate: int | None = None,
             max_tokens: int | None = None) -> None:
    for flag, value in (("--depth", depth), ("--window", window), ("--stride", stride), ("--passes", passes)):
        if value < 1:
            raise RankkError(f"{flag}: expected an integer >= 1, found {value}")
    if stride > window:
        raise RankkError(f"--stride: expected at most --window ({window}), found {stride}")
    if truncate is not None and truncate < 1:
        raise RankkError(f"--truncate: expected a number of tokens >= 1, found {truncate}")
    if max_tokens is not None and max_tokens < 1:
        raise RankkError(f"--max-tokens: expected an integer >= 1, found {max_tokens}")


def is_candidates_input(run_path: Path) -> bool:
    """A candidates file (a run with text) rather than a run: ``.jsonl``; a ``.json``/``.json.gz`` or Parquet
    file only when its content is one (a ``.json`` is otherwise a JSON score run ``{qid: {docid: score}}``)."""
    from rankk_cli import docs as docs_mod
    from rankk_cli.runs import is_json_run_path, looks_like_json_run

    name = str(run_path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return True
    if is_json_run_path(name):
        return run_path.is_file() and not looks_like_json_run(run_path) and docs_mod.is_candidates_file(run_path)
    if name.endswith(".parquet"):
        return run_path.is_file() and docs_mod.is_candidates_file(run_path)
    return False


def load_inputs(run_path: str | Path, docs: str | None, topics: str | None, depth: int, exclusions=None
                ) -> tuple[Run, dict[str, str], dict[str, str]]:
    """(run, {docid: text} for the top ``depth`` of every query, {qid: query text}). ``exclusions``
    (``rankk_cli.exclude.Exclusions``): pairs dropped from the run first, so the top ``depth`` and every window
    hold only allowed documents; the run's ``meta["excluded"]`` then says how many were dropped."""
    from rankk_cli import docs as docs_mod
    from rankk_cli.runs import read_run
    from rankk_cli.sources import load_topics

    run_path = Path(run_path)
    texts: dict[str, str] = {}
    if is_candidates_input(run_path):
        run, texts = docs_mod.read_candidates(run_path)
    else:
        run = read_run(run_path)
    if exclusions is not None:
        run, dropped = exclusions.apply(run)
        if not len(run.df):
            raise RankkError(f"--exclude {exclusions.source}: expected documents left to rerank, found every "
                             f"(qid, docid) pair of {run_path} excluded")
        run.meta["excluded"] = {"pairs": dropped.pairs, "queries": dropped.queries}
    if topics is None:
        raise RankkError("--topics: expected a topics file or ir_datasets id (runs carry no query text), found none")
    queries = load_topics(topics)
    missing = [q for q in run.qids if q not in queries]
    if missing:
        raise RankkError(f"--topics: expected query text for every qid of {run_path}, found none for "
                         f"{len(missing)} qid(s), e.g. {', '.join(show(q) for q in missing[:3])}")
    head = run.top(depth)
    if docs is not None:
        texts = docs_mod.open_docs(docs).get(list(dict.fromkeys(head.df["docid"].tolist())))
    elif not texts:
        raise RankkError(f"--docs: expected a document source ({run_path} is a run without passage text), "
                         "found none")
    return run, texts, queries


# ----------------------------------------------------------------------------------------------------------
# the stage


def build_queries(run: Run, texts: dict[str, str], queries: dict[str, str], depth: int,
                  truncate_fn=None) -> list[tuple[str, str, list[Candidate]]]:
    cache: dict[str, str] = {}

    def text_of(docid: str, qid: str) -> str:
        if docid not in cache:
            if docid not in texts:
                raise RankkError(f"--docs: expected text for docid {show(docid)} (qid {show(qid)}), found none")
            cache[docid] = truncate_fn(texts[docid]) if truncate_fn else texts[docid]
        return cache[docid]

    out = []
    for qid, group in run.top(depth).by_query():
        cands = [Candidate(d, text_of(d, qid), float(s), int(r))
                 for d, s, r in zip(group["docid"], group["score"], group["rank"])]
        out.append((qid, queries[qid], cands))
    return out


def assemble(run: Run, results: dict[str, QueryResult], depth: int, name: str, meta: dict | None = None) -> Run:
    """Reranked head + first-stage tail, scores decreasing: method scores if given, else positional."""
    rankings = {}
    for qid, group in run.by_query():
        docids = group["docid"].tolist()
        res = results.get(qid)
        head = res.order if res is not None else docids[:depth]
        tail = docids[len(head):] if res is not None else docids[depth:]
        if res is not None and sorted(head) != sorted(docids[:len(head)]):
            raise RuntimeError(f"method returned a ranking for qid {qid} that is not a permutation of its input")
        n = len(docids)
        if res is not None and res.scores:
            items = [(d, res.scores[d]) for d in head]
            low = min(s for _d, s in items) if items else 0.0
            items += [(d, low - 1.0 - j) for j, d in enumerate(tail)]
        else:
            items = [(d, float(n - i)) for i, d in enumerate(head + tail)]
        rankings[qid] = items
    return run_from_rankings(rankings, name, **(meta or {}))


def rerank(run: Run, texts: dict[str, str], queries: dict[str, str], method_name: str, engine: Engine | None,
           config: RerankConfig, *, cache=None, progress: bool = True, dry_run=None, key_parts=None,
           truncate_fn=None, method_options: dict | None = None, schedule: str = "continuous") -> RerankOutcome:
    """Rerank ``run`` (library entry; ``engine`` may be a ready-built Engine; ``method_options``: typed
    constructor options of the method, see ``methods.base.method_options``)."""
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.rerank.scheduler import Scheduler

    method = METHODS.get(method_name)(config, **(method_options or {}))
    items = build_queries(run, texts, queries, config.depth, truncate_fn)
    for line in method.input_warnings([q for q, _t, _c in items]):
        sys.stderr.write(f"rankk: warning: {line}\n")
    planned = [method.planned_windows(len(c)) for _q, _t, c in items]
    total = None if any(p is None for p in planned) else sum(planned)
    load0 = engine.load_seconds if engine is not None else 0.0
    t0 = time.perf_counter()
    # no bar when nothing is planned (oracle: no windows to count, never "0/0 windows")
    with _progress(progress and dry_run is None and total != 0, total) as on_progress:
        sched = Scheduler(engine, cache=cache, on_progress=on_progress, dry_run=dry_run, key_parts=key_parts,
                          schedule=schedule)
        results = sched.run(method, items)
    seconds = time.perf_counter() - t0
    records = [rec for qid, _q, _c in items for rec in results[qid].records]
    outcomes = Counter(r["outcome"] for r in records)
    st = sched.stats
    summary = {
        "method": method_name, "schedule": sched.schedule, "queries": len(items), "windows": len(records),
        "engine_calls": st.engine_calls, "requests": st.requests, "cache_hits": st.cache_hits,
        "derived_hits": st.derived_hits,
        "outcomes": {k: outcomes.get(k, 0) for k in OUTCOMES},
        "input_tokens": sum(r.get("input_tokens", 0) for r in records),
        "output_tokens": sum(r.get("output_tokens", 0) for r in records),
        "generated_tokens": st.output_tokens, "engine_errors": st.errors,
    }
    # where the wall time went, in parts that add up to it: loading the model (import + weights, on the first
    # engine call of a lazily built engine), generating (time inside the engine's calls, load excluded; cached
    # calls cost nothing here) and rankk's own code (prompts, tokenising, parsing, scheduling, cache I/O)
    load = (engine.load_seconds - load0) if engine is not None else 0.0
    inside = st.engine_seconds
    summary.update(wall_seconds=round(seconds, 3), load_seconds=round(load, 3),
                   generate_seconds=round(max(0.0, inside - load), 3),
                   rankk_seconds=round(max(0.0, seconds - inside), 3), seconds=round(seconds, 3))
    if st.first_error:
        summary["first_engine_error"] = st.first_error
    if method.note:  # e.g. the oracle says it is one
        summary["note"] = method.note
    out_run = assemble(run, results, config.depth, name=f"{run.name}.{method_name}",
                       meta={"method": method_name, "depth": config.depth, "window": config.window,
                             "stride": config.stride, "passes": config.passes})
    return RerankOutcome(out_run, results, records, summary)


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None):
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    start = time.perf_counter()
    state = {"tokens": 0}
    with Progress(TextColumn("rerank"), BarColumn(), MofNCompleteColumn(), TextColumn("windows"),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=console,
                  transient=False) as bar:
        task = bar.add_task("rerank", total=total, rate="")

        def on_progress(windows: int, tokens: int) -> None:
            state["tokens"] += tokens
            rate = state["tokens"] / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=windows, rate=f"{rate:,.0f} tok/s")

        yield on_progress


def _render_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="rerank outcomes", title_justify="left")
    for k in ("windows", *OUTCOMES, "engine calls", "cache hits", "derived", "tokens in", "tokens out", "load s",
              "generate s", "rankk s", "wall s"):
        table.add_column(k, justify="right")
    o = summary["outcomes"]
    table.add_row(str(summary["windows"]), *(str(o[k]) for k in OUTCOMES), str(summary["engine_calls"]),
                  str(summary["cache_hits"]), str(summary.get("derived_hits", 0)), f"{summary['input_tokens']:,}", f"{summary['output_tokens']:,}",
                  *(f"{summary[k]:.1f}" for k in ("load_seconds", "generate_seconds", "rankk_seconds",
                                                  "wall_seconds")))
    Console(stderr=True, width=None if sys.stderr.isatty() else 200).print(table)  # piped: no cut-off headers
    if summary.get("schedule") == "continuous" and summary.get("requests"):
        sys.stderr.write(f"rankk: schedule continuous: {summary['requests']} requests sent; engine calls = batches of "
                         "finished answers the engine handed back\n")
    bad = o.get("failed", 0)
    if bad:
        where = f": see {summary['windows_file']}" if summary.get("windows_file") else ""
        sys.stderr.write(f"rankk: warning: {bad} window(s) failed and kept their input order{where}\n")
    if summary.get("note"):
        sys.stderr.write(f"rankk: {summary['note']}\n")


def _tokenizer_truncate(model: str, n: int):
    from rankk_cli import gguf

    model = gguf.resolve(model)  # a .gguf file / packaged alias: the converted directory's tokenizer
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
    except Exception as exc:  # noqa: BLE001 - the user's --model: one line
        raise RankkError(f"--model: expected a model directory or id with a tokenizer (for --truncate), "
                         f"cannot load {model!r}: {' '.join(str(exc).split())[:200]}") from None

    from rankk_cli.rerank.engines.base import truncate_tokens

    return lambda text: truncate_tokens(tok, text, n)


def check_outputs(output: Path, windows_path: Path) -> None:
    """Before any work: both outputs can be written (not an existing directory, inside a writable folder) and
    are different files. One line naming the path and flag otherwise."""
    from rankk_cli.outputs import check_outputs as check

    check({"-o/--output": output, "--windows": windows_path})


def write_outputs(outcome: RerankOutcome, output: Path, windows_path: Path, tag: str) -> None:
    """Both files or neither: each written to a temp file in its own destination folder (so the rename stays on
    one filesystem), then both renamed into place; if the second rename fails the first is undone."""
    import pyarrow.parquet as pq

    from rankk_cli.outputs import commit_outputs
    from rankk_cli.runs import write_run

    output, windows_path = Path(output), Path(windows_path)
    check_outputs(output, windows_path)  # again: the run may have taken long
    from rankk_cli.rerank.records import to_table

    table = to_table(outcome.records)
    commit_outputs([(output, lambda tmp: write_run(outcome.run, tmp, tag=tag)),
                    (windows_path, lambda tmp: pq.write_table(table, tmp))])


@contextlib.contextmanager
def stdout_to_stderr():
    """Send everything written to stdout (Python and C level) to stderr meanwhile, so that stdout carries only the
    command's own output (the --format json summary); vLLM's logger writes to stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real fd 1 (embedded use): only swap the Python object
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    old = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        sys.stdout = old
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def rerank_command(*, run: Path, output: Path | None, method: str, model: str, engine: str = "vllm",
                   depth: int = 100, window: int | None = None, stride: int | None = None, passes: int = 1,
                   truncate: int | None = None, docs: str | None = None, topics: str | None = None,
                   temperature: float | None = None, top_p: float = 1.0, max_tokens: int | None = None,
                   seed: int | None = None, force_max_tokens: int = 256, tensor_parallel: int = 1,
                   max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                   base_urls: tuple[str, ...] = (), windows_out: Path | None = None, dry_run: bool = False,
                   fmt: str = "table", no_cache: bool = False, engine_obj: Engine | None = None,
                   progress: bool = True, qrels: str | None = None, method_opts: tuple[str, ...] = (),
                   timeout: float = 600.0, max_retries: int = 4, concurrency: int = 32,
                   exclude: Path | None = None, schedule: str = "continuous") -> dict:
    """``rankk rerank``: validate, load, rerank (or print requests in a dry run), write, summarise."""
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.rerank.methods.base import method_options

    window_given, stride_given = window is not None, stride is not None
    window, stride = resolve_windowing(depth, window, stride)
    validate(depth, window, stride, passes, truncate, max_tokens)
    if force_max_tokens < 1:
        raise RankkError(f"--force-max-tokens: expected an integer >= 1, found {force_max_tokens}")
    if output is None and not dry_run:
        raise RankkError("-o/--output: expected an output run path, found none")
    if not timeout > 0:
        raise RankkError(f"--timeout: expected seconds > 0, found {timeout}")
    if max_retries < 0:
        raise RankkError(f"--max-retries: expected an integer >= 0, found {max_retries}")
    if concurrency < 1:
        raise RankkError(f"--concurrency: expected an integer >= 1, found {concurrency}")
    from rankk_cli.rerank.scheduler import SCHEDULES

    if schedule not in SCHEDULES:
        raise RankkError(f"--schedule: expected one of {', '.join(SCHEDULES)}, found {schedule!r}")
    windows_path = None
    if output is not None and not dry_run:  # checked before any input is read or any model loads
        windows_path = Path(windows_out) if windows_out else Path(str(output) + WINDOWS_SUFFIX)
        check_outputs(Path(output), windows_path)
        from rankk_cli.outputs import check_not_input

        inputs = [run, docs, topics, qrels, exclude]
        check_not_input(output, "-o/--output", inputs)
        check_not_input(windows_path, "--windows", inputs)
    method_cls = METHODS.get(method)
    given = {"--model": model is not None, "--window": window_given, "--stride": stride_given,
             "--passes": passes != 1}
    ignored = [flag for flag in method_cls.ignores if given.get(flag)]  # warned once every input checked out
    from rankk_cli.rerank.engines import ENGINES

    ENGINES.check(engine)  # also for methods that need no engine: a typo is never silently ignored
    if base_urls:
        from rankk_cli.rerank.engines.openai import normalize_base_url

        for url in base_urls:
            normalize_base_url(url)
    opts = method_options(method_cls, method_opts, qrels=qrels)  # unknown keys / bad values: one line, exit 2
    needs_engine = method_cls.needs_engine
    if needs_engine and engine_obj is None:
        # the method owns its default/aliased model (embed: omitted or "minilm" -> packaged MiniLM); None -> error
        model = method_cls.resolve_model(model)
    from rankk_cli.exclude import describe, load_exclusions

    exclusions = load_exclusions(exclude)
    run_table, texts, queries = load_inputs(run, docs, topics, depth, exclusions)
    excluded = run_table.meta.pop("excluded", None)
    config = RerankConfig(depth=depth, window=window, stride=stride, passes=passes, truncate=truncate,
                          force_max_tokens=force_max_tokens)
    method_cls(config, **opts)  # option values are checked before any model loads
    if temperature is None:
        temperature = method_cls.default_temperature if method_cls.default_temperature is not None else 0.0
    if max_tokens is None:
        max_tokens = method_cls.default_max_tokens or 4096
    sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
    if ignored:
        sys.stderr.write(f"rankk: warning: {', '.join(ignored)} ignored: method {method} does not use "
                         f"{'them' if len(ignored) > 1 else 'it'}\n")

    if dry_run:
        from rankk_cli.rerank.engines import ENGINES

        ENGINES.get(engine)  # unknown engine names fail the same way with or without --dry-run
        truncate_fn = _tokenizer_truncate(model, truncate) if truncate else None

        emitted = [0]

        def emit(call) -> None:
            meta = {k: v for k, v in call.meta.items() if k in ("qid", "pass", "start", "end", "forced", "key")}
            sys.stdout.write(json.dumps({**meta, "request": call.request.to_json()}, ensure_ascii=False) + "\n")
            emitted[0] += 1

        outcome = rerank(run_table, texts, queries, method, None, config, dry_run=emit, progress=False,
                         key_parts=(engine, model, sampling), truncate_fn=truncate_fn, method_options=opts)
        if excluded is not None:
            outcome.summary["excluded"] = excluded
        outcome.summary["dry_run"] = True
        outcome.summary["printed_requests"] = emitted[0]
        if not emitted[0]:
            sizes = [len(c) for _q, _t, c in build_queries(run_table, texts, queries, depth)]
            why = (f"method {method} makes no engine requests" if not needs_engine else
                   f"none of the {len(sizes)} queries needs one (a window of {window} document has nothing to "
                   "order)" if window <= 1 else
                   f"none of the {len(sizes)} queries needs one (at most {max(sizes, default=0)} candidate(s) per "
                   f"query within --depth {depth}: nothing to order)")
            sys.stderr.write(f"rankk: warning: dry run: no request to print: {why}\n")
        if fmt == "json":  # the last line: the summary, so a CI script reads one object at the end
            sys.stdout.write(json.dumps({"summary": outcome.summary}, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return outcome.summary

    try:
        summary, _outcome = _with_engine(
            run_table=run_table, texts=texts, queries=queries, method=method, method_cls=method_cls, model=model,
            engine=engine, engine_obj=engine_obj, needs_engine=needs_engine, sampling=sampling, config=config,
            opts=opts, truncate=truncate, no_cache=no_cache, progress=progress, output=output,
            windows_path=windows_path, schedule=schedule, options=EngineOptions(
                tensor_parallel=tensor_parallel, max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization, base_urls=tuple(base_urls), timeout_s=timeout,
                max_retries=max_retries, concurrency=concurrency))
    except KeyboardInterrupt:  # while the model loads (interrupts during the run are handled inside)
        sys.stderr.write("rankk rerank: interrupted while starting the engine; no output written.\n")
        raise SystemExit(130) from None
    if excluded is not None:
        summary["excluded"] = excluded
        from rankk_cli.exclude import Dropped

        sys.stderr.write(f"rankk rerank: {describe(Dropped(excluded['pairs'], excluded['queries']), exclusions)} "
                         "before reranking\n")
    _render_summary(summary)  # outcome counts always on stderr
    if fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        sys.stdout.flush()
    return summary


def _with_engine(*, run_table, texts, queries, method, method_cls, model, engine, engine_obj, needs_engine,
                 sampling, config, opts, truncate, no_cache, progress, output, windows_path, options, schedule):
    """Build (or take) the engine, run the scheduler with the call cache, write the outputs."""
    with stdout_to_stderr():  # vLLM logs to stdout: keep stdout for our own output
        built = None
        if engine_obj is None and not needs_engine:
            from rankk_cli.rerank.engines.base import NoEngine

            engine_obj = NoEngine(model or "none", sampling, EngineOptions())
        if engine_obj is None:
            from rankk_cli.rerank.engines import ENGINES

            from rankk_cli.rerank.engines.base import LazyEngine

            cls = ENGINES.get(engine)  # an unknown engine name fails here, before any work
            cls.precheck(str(model), options)  # e.g. a --model directory that does not exist
            engine_obj = built = LazyEngine(lambda: cls(model, sampling, options), cls.name, str(model), sampling,
                                            options)
        saved_sampling = engine_obj.sampling
        engine_obj.sampling = sampling  # an injected engine generates with this run's sampling (restored below)
        from rankk_cli.rerank.cache import CallCache

        cache = None if no_cache else CallCache()
        truncate_fn = (lambda text: engine_obj.truncate(text, truncate)) if truncate else None
        try:
            outcome = rerank(run_table, texts, queries, method, engine_obj, config, cache=cache, progress=progress,
                             truncate_fn=truncate_fn, method_options=opts, schedule=schedule)
        except KeyboardInterrupt:
            done = len(cache) if cache is not None else 0
            sys.stderr.write(f"rankk rerank: interrupted; no output written. {done} finished engine requests are in "
                             "the call cache: run the same command again to resume without repeating them.\n")
            sys.stderr.flush()
            raise SystemExit(130) from None
        finally:
            engine_obj.sampling = saved_sampling
            if built is not None:
                with contextlib.suppress(Exception):
                    built.close()
        summary = {**outcome.summary, "output": str(output), "windows_file": str(windows_path),
                   "engine": engine_obj.name, "model": None if model is None else str(model),
                   "sampling": asdict(sampling)}
        if built is not None:
            summary["model_loaded"] = built.loaded
            if not built.loaded and summary["requests"] == 0:
                derived = (f" ({summary['derived_hits']} derived from completions with a larger --max-tokens)"
                           if summary["derived_hits"] else "")
                sys.stderr.write(f"rankk rerank: all {summary['cache_hits'] + summary['derived_hits']} engine "
                                 f"requests answered from the call cache{derived}; the model was not loaded "
                                 "(--no-cache recomputes)\n")
        if summary["engine_errors"]:  # a "reranked" file with failed windows in input order is no result
            first = " ".join(str(summary.get("first_engine_error")).split())[:240]
            kept = (f"the {len(cache)} finished requests are in the call cache: run the same command again (once "
                    "the engine/server is healthy) to make only the failed and missing calls") if cache is not None \
                else "--no-cache: nothing was kept"
            raise EngineFailure(f"{summary['engine_errors']} of {summary['requests']} engine requests failed after "
                                f"retries (first: {first}); no output written; {kept}")
        write_outputs(outcome, Path(output), windows_path, tag=method_cls.tag())  # oracle runs: "oracle"
    return summary, outcome
