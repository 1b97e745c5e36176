"""The rerank stage: read a run + texts + topics, drive the scheduler (continuous or lockstep), write the reranked run.

``rerank_command`` is what ``rankk rerank`` calls; ``rerank`` is the library entry (it accepts an engine object
that is already built, so tests and notebooks can load a model once and reuse it).

Outputs, both written only when the whole run succeeded (temp files renamed into place at the end):
- the reranked run (TREC/.gz/Parquet by suffix; strictly decreasing scores; candidates below ``depth`` keep
  their first-stage order under the reranked head);
- ``OUT.windows.parquet``: one row per window (per pair for pointwise methods) with qid, pass, start, end, the
  engine-call indices, prompt hash (the call-cache key), raw output, reasoning, parsed order, outcome, repairs,
  tokens, seconds and whether it came from the cache.

Both carry the stack that made them (``stack.py``: versions, device, dtype, tensor parallel, max model length,
model identity): the windows file in its Parquet metadata (``rankk.stack``), a Parquet run in its ``rankk`` meta
(``stack``); the ``--format json`` summary has ``stack``, ``stack_digest`` and ``cache_other_stack`` (cached
answers of another stack, not reused unless ``--reuse-cache-across-stacks``).
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
from rankk_cli.rerank.engines.base import Engine, EngineOptions
from rankk_cli.rerank.methods.base import OUTCOMES, Candidate, Method, QueryResult, RerankConfig
from rankk_cli.runs import Run, run_from_rankings

from rankk_cli.rerank.spec import RerankSpec


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


def is_candidates_input(run_path: Path) -> bool:
    """A candidates file (a run with text) rather than a run: ``.jsonl``; a ``.json``/``.json.gz`` or Parquet
    file only when its content is one (a ``.json`` is otherwise a JSON score run ``{qid: {docid: score}}``)."""
    from rankk_cli import docs as docs_mod
    from rankk_cli.runs import is_json_run_path, looks_like_json_run

    name = str(run_path)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return True
    if is_json_run_path(name):
        from rankk_cli import rankllm

        if run_path.is_file() and rankllm.is_request_file(run_path):  # before the JSON-run sniff: {"query": {
            return True
        return run_path.is_file() and not looks_like_json_run(run_path) and docs_mod.is_candidates_file(run_path)
    if name.endswith(".parquet"):
        return run_path.is_file() and docs_mod.is_candidates_file(run_path)
    return False


def read_input_run(run_path: Path, exclusions=None) -> tuple[Run, dict[str, str]]:
    """The rerank input as reranked: (run, {docid: text} the input carries -- empty for a plain run) of a TREC/
    Parquet/JSON run or a candidates file (JSONL with text, RankLLM requests), ``exclusions`` applied; the run's
    ``meta["excluded"]`` says how many pairs were dropped. Also what a sweep evaluates as its first stage."""
    from rankk_cli import docs as docs_mod
    from rankk_cli.runs import read_run

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
    return run, texts


def load_inputs(run_path: str | Path, docs: str | None, topics: str | None, depth: int, exclusions=None
                ) -> tuple[Run, dict[str, str], dict[str, str]]:
    """(run, {docid: text} for the top ``depth`` of every query, {qid: query text}). ``exclusions``
    (``rankk_cli.exclude.Exclusions``): pairs dropped from the run first, so the top ``depth`` and every window
    hold only allowed documents; the run's ``meta["excluded"]`` then says how many were dropped."""
    from rankk_cli import docs as docs_mod
    from rankk_cli.sources import load_topics

    run_path = Path(run_path)
    run, texts = read_input_run(run_path, exclusions)
    carried = run.meta.get("rankllm", {}).get("queries")  # a RankLLM request file holds its query texts
    if topics is None and carried is None:
        raise RankkError("--topics: expected a topics file or ir_datasets id (runs carry no query text), found none")
    queries = load_topics(topics) if topics is not None else carried
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


def rerank(run: Run, texts: dict[str, str], queries: dict[str, str], method: "str | Method", engine: Engine | None,
           config: RerankConfig, *, cache=None, progress: bool = True, dry_run=None, key_parts=None,
           truncate_fn=None, method_options: dict | None = None, schedule: str = "continuous") -> RerankOutcome:
    """Rerank ``run`` (library entry). ``method``: a built Method (what ``rankk rerank`` passes: the spec's one
    instance) or a registered name, then built here with ``method_options`` (typed constructor options, see
    ``methods.base.method_options``). ``engine`` may be a ready-built Engine."""
    from rankk_cli.rerank.methods import METHODS
    from rankk_cli.rerank.scheduler import Scheduler

    if isinstance(method, str):
        method = METHODS.get(method)(config, **(method_options or {}))
    method_name = method.name
    items = build_queries(run, texts, queries, config.depth, truncate_fn)
    for line in method.input_warnings([q for q, _t, _c in items]):
        sys.stderr.write(f"rankk: warning: {line}\n")
    planned = [method.planned_windows(len(c)) for _q, _t, c in items]
    total = None if any(p is None for p in planned) else sum(planned)
    load0 = engine.load_seconds if engine is not None else 0.0
    own0 = engine.stats.extra.get("own_seconds", 0.0) if engine is not None else 0.0
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
    # calls cost nothing here) and rankk's own code (prompts, tokenising, parsing, scheduling, cache I/O) -- the
    # engine's own rendering of prompts (chat template, tokenising) is rankk's code run inside its calls: rankk's
    load = (engine.load_seconds - load0) if engine is not None else 0.0
    own = (engine.stats.extra.get("own_seconds", 0.0) - own0) if engine is not None else 0.0
    inside = st.engine_seconds
    generate = max(0.0, inside - load - own)
    summary.update(wall_seconds=round(seconds, 3), load_seconds=round(load, 3), generate_seconds=round(generate, 3),
                   rankk_seconds=round(max(0.0, seconds - load - generate), 3), seconds=round(seconds, 3))
    if st.first_error:
        summary["first_engine_error"] = st.first_error
    if method.note:  # e.g. the oracle says it is one
        summary["note"] = method.note
    if "--window" not in method.ignores:  # sliding-window methods: full ranking is one window per query
        summary["ranking"] = "full" if config.window >= config.depth else "sliding"
        summary["window"], summary["stride"], summary["depth"] = config.window, config.stride, config.depth
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
    if summary.get("ranking") == "full":
        sys.stderr.write(f"rankk: full ranking: one window of all {summary['depth']} candidates per query "
                         f"(--window = --depth), no sliding\n")
    elif summary.get("ranking") == "sliding":
        sys.stderr.write(f"rankk: sliding windows: window {summary['window']}, stride {summary['stride']} over "
                         f"the top {summary['depth']}\n")


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


def write_outputs(outcome: RerankOutcome, outputs, tag: str, stack_record: dict | None = None,
                  rankllm_out: tuple[dict, dict] | None = None) -> None:
    """Both files or neither: each written to a temp file in its own destination folder (so the rename stays on
    one filesystem), then both renamed into place; if the second rename fails the first is undone. An output
    named ``.jsonl``/``.jsonl.gz`` is written in RankLLM's result shape from ``rankllm_out`` ({qid: query text},
    {docid: doc object})."""
    import pyarrow.parquet as pq

    from rankk_cli.outputs import commit_outputs
    from rankk_cli.runs import write_run

    output, windows_path = outputs.run, outputs.windows
    outputs.check()  # again: the run may have taken long
    from rankk_cli.rerank.records import to_table

    table = to_table(outcome.records)
    if stack_record is not None:  # the stack in both files: windows metadata, and a Parquet run's meta
        from rankk_cli.rerank import stack

        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **stack.metadata(stack_record)})
        outcome.run.meta["stack"] = {"digest": stack.digest(stack_record), **stack_record}
    from rankk_cli import rankllm

    if rankllm.is_output_path(output):
        if rankllm_out is None:
            raise ValueError(f"{output}: a RankLLM-shaped output needs the query texts and doc objects")
        write = lambda tmp: rankllm.write(outcome.run, tmp, *rankllm_out)  # noqa: E731
    else:
        write = lambda tmp: write_run(outcome.run, tmp, tag=tag)  # noqa: E731
    commit_outputs([(output, write),
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


def rerank_command(*, engine_obj: Engine | None = None, progress: bool = True, **flags) -> dict:
    """``rankk rerank``: build the one validated spec from the flags (``RerankSpec.build`` takes them by their
    CLI names), then run it. ``engine_obj``: an engine already built (tests, notebooks, doctor)."""
    spec = RerankSpec.build(**flags, model_given=engine_obj is None)
    return run_spec(spec, engine_obj=engine_obj, progress=progress)


def run_spec(spec: RerankSpec, *, engine_obj: Engine | None = None, progress: bool = True) -> dict:
    """Load the inputs, rerank (or print the requests in a dry run), write both outputs, summarise."""
    from rankk_cli.exclude import describe, load_exclusions

    inputs = spec.inputs
    exclusions = load_exclusions(inputs.exclude)
    run_table, texts, queries = load_inputs(inputs.run, inputs.docs, inputs.topics, spec.config.depth, exclusions)
    excluded = run_table.meta.pop("excluded", None)
    rankllm_out = _rankllm_out(None if spec.outputs.dry_run else spec.outputs.run, run_table, texts, queries,
                               inputs.docs)
    for line in spec.warnings:
        sys.stderr.write(f"rankk: warning: {line}\n")
    if spec.outputs.dry_run:
        summary = _dry_run(spec, run_table, texts, queries)
    else:
        try:
            summary, _outcome = _with_engine(spec, run_table, texts, queries, engine_obj, progress, rankllm_out)
        except KeyboardInterrupt:  # while the model loads (interrupts during the run are handled inside)
            sys.stderr.write("rankk rerank: interrupted while starting the engine; no output written.\n")
            raise SystemExit(130) from None
    if excluded is not None:
        summary["excluded"] = excluded
        if not spec.outputs.dry_run:
            from rankk_cli.exclude import Dropped

            sys.stderr.write(f"rankk rerank: {describe(Dropped(excluded['pairs'], excluded['queries']), exclusions)} "
                             "before reranking\n")
    if spec.outputs.dry_run:
        if spec.outputs.fmt == "json":  # the last line: the summary, so a CI script reads one object at the end
            sys.stdout.write(json.dumps({"summary": summary}, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return summary
    _render_summary(summary)  # outcome counts always on stderr
    if spec.outputs.fmt == "json":
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        sys.stdout.flush()
    return summary


def _dry_run(spec: RerankSpec, run_table, texts, queries) -> dict:
    """Print every rendered request as a JSON line (no engine); the summary says how many."""
    truncate = spec.config.truncate
    truncate_fn = _tokenizer_truncate(spec.model, truncate) if truncate else None
    emitted = [0]

    def emit(call) -> None:
        meta = {k: v for k, v in call.meta.items() if k in ("qid", "pass", "start", "end", "forced", "key")}
        sys.stdout.write(json.dumps({**meta, "request": call.request.to_json()}, ensure_ascii=False) + "\n")
        emitted[0] += 1

    outcome = rerank(run_table, texts, queries, spec.method, None, spec.config, dry_run=emit, progress=False,
                     key_parts=(spec.engine_name, spec.model, spec.sampling), truncate_fn=truncate_fn)
    summary = {**outcome.summary, "dry_run": True, "printed_requests": emitted[0]}
    if not emitted[0]:
        depth, window = spec.config.depth, spec.config.window
        sizes = [len(c) for _q, _t, c in build_queries(run_table, texts, queries, depth)]
        why = (f"method {spec.method_name} makes no engine requests" if not spec.needs_engine else
               f"none of the {len(sizes)} queries needs one (a window of {window} document has nothing to "
               "order)" if window <= 1 else
               f"none of the {len(sizes)} queries needs one (at most {max(sizes, default=0)} candidate(s) per "
               f"query within --depth {depth}: nothing to order)")
        sys.stderr.write(f"rankk: warning: dry run: no request to print: {why}\n")
    return summary


def _with_engine(spec: RerankSpec, run_table, texts, queries, engine_obj: Engine | None, progress: bool,
                 rankllm_out=None):
    """Build (or take) the engine, run the scheduler with the call cache, write the outputs."""
    sampling, model = spec.sampling, spec.model
    with stdout_to_stderr():  # vLLM logs to stdout: keep stdout for our own output
        built = None
        if engine_obj is None and not spec.needs_engine:
            from rankk_cli.rerank.engines.base import NoEngine

            engine_obj = NoEngine(model or "none", sampling, EngineOptions())
        if engine_obj is None:
            engine_obj = built = spec.lazy_engine()
        saved_sampling = engine_obj.sampling
        engine_obj.sampling = sampling  # an injected engine generates with this run's sampling (restored below)
        from rankk_cli.rerank.cache import CallCache

        cache = None if spec.no_cache else CallCache()
        # what would answer, known before any engine call (the model is not loaded for it)
        stack_record = engine_obj.stack()
        if cache is not None:
            cache.use_stack(stack_record, reuse_other_stacks=spec.reuse_cache_across_stacks)
        truncate = spec.config.truncate
        truncate_fn = (lambda text: engine_obj.truncate(text, truncate)) if truncate else None
        try:
            outcome = rerank(run_table, texts, queries, spec.method, engine_obj, spec.config, cache=cache,
                             progress=progress, truncate_fn=truncate_fn, schedule=spec.schedule)
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
        output, windows_path = spec.outputs.run, spec.outputs.windows
        summary = {**outcome.summary, "output": str(output), "windows_file": str(windows_path),
                   "engine": engine_obj.name, "model": None if model is None else str(model),
                   "sampling": asdict(sampling), **_stack_summary(stack_record, cache)}
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
        write_outputs(outcome, spec.outputs, tag=type(spec.method).tag(),  # oracle runs: "oracle"
                      stack_record=stack_record, rankllm_out=rankllm_out)
    return summary, outcome


def _rankllm_out(output, run_table, texts: dict, queries: dict, docs: str | None) -> tuple[dict, dict] | None:
    """For ``-o X.jsonl``: (query texts, doc objects) of the whole run -- a RankLLM input's own doc objects, else
    ``{"contents": text}`` (a run + --docs has text only for the top --depth so far: the rest is read now);
    None for other outputs."""
    from rankk_cli import docs as docs_mod
    from rankk_cli import rankllm

    source = run_table.meta.pop("rankllm", None)
    if output is None or not rankllm.is_output_path(output):
        return None
    if source is None:
        missing = [d for d in dict.fromkeys(run_table.df["docid"].tolist()) if d not in texts]
        if missing and docs is not None:
            texts = {**texts, **docs_mod.open_docs(docs).get(missing)}
    return queries, rankllm.output_docs(run_table, texts, source["docs"] if source else None)


def _stack_summary(record: dict, cache) -> dict:
    """The summary's stack fields; says on stderr when cached answers of another stack were left alone."""
    from rankk_cli.rerank import stack

    other = len(cache.other_stack) if cache is not None else 0
    reused = cache is not None and cache.reuse_other_stacks
    if other:
        what = ("reused (--reuse-cache-across-stacks)" if reused else
                "not reused but recomputed (--reuse-cache-across-stacks reuses them)")
        sys.stderr.write(f"rankk rerank: {other} cached answer(s) from another stack (rankk, vLLM, torch or "
                         f"transformers version, device, dtype or model differ) {what}\n")
    return {"stack": record, "stack_digest": stack.digest(record), "cache_other_stack": 0 if reused else other,
            "cache_other_stack_reused": other if reused else 0}
