"""The scheduler: drives every query's method generator against the engine, continuously or in lockstep.

Each query's method is a generator (see ``methods/base.py``) that yields the calls it waits on -- its next
window, its forced follow-up, or all of its pointwise pairs -- and receives their completions.

- ``continuous`` (the default): a query's calls are submitted (``Engine.submit``) the moment its previous ones
  are answered, so no query waits for another's slowest window; the engine batches whatever is in flight (vLLM's
  own continuous batching; the openai engine's request pool). Finished completions come back one by one
  (``Engine.poll``) and each goes into the call cache at once (``CallCache.append``: a journal line, compacted
  into Parquet chunks).
- ``lockstep``: rounds. A round collects the calls every live query is waiting on and sends them to the engine in
  ONE ``generate`` call, so Q queries at depth 100, window 20, stride 10 take 9 engine calls, not 9 x Q; ragged
  lists finish early. Each round's completions are written as one cache chunk.

Either way the call cache answers first (a miss looks once more at chunks other processes wrote meanwhile), and
greedy decoding gives the same answers: only batch composition differs. A request the cache does not hold may
still be DERIVED from a cached completion of the same request with a larger token budget (``derive.py``: the
same reply, or its first tokens cut off at this budget); such answers count as ``derived_hits``, not
``cache_hits``, and are marked ``derived`` in the window records. They are not stored again.

``engine_calls`` counts the times the engine handed back a batch of finished answers: under lockstep one per
round (one ``generate``), under continuous one per ``poll`` that returned answers (vLLM: an engine step in which
at least one request finished; openai: a wake-up with at least one answer in). Each window's ``engine_call``
holds the index of the batch that answered each of its calls; ``requests`` counts requests sent, the same under
both schedules.

The scheduler owns the bookkeeping of each call (cache key, engine-call index, tokens, seconds, cached) and
folds it into the method's per-window records when a query finishes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from rankk_cli.rerank.engines.base import Completion, Engine
from rankk_cli.rerank.methods.base import Call, Candidate, Method, QueryResult

DRY_RUN_ERROR = "dry run: no engine called"
SCHEDULES = ("continuous", "lockstep")
REFRESH_S = 0.5  # continuous: look for other processes' new cache entries at most this often


@dataclass
class RunStats:
    engine_calls: int = 0  # batches of answers: generate() calls (lockstep), polls that returned answers (continuous)
    requests: int = 0  # requests sent to the engine
    cache_hits: int = 0
    derived_hits: int = 0  # answered by derivation from a cached completion with a larger budget (derive.py)
    input_tokens: int = 0
    output_tokens: int = 0
    engine_seconds: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
    errors: int = 0  # requests the engine answered with finish_reason "error" (never cached)
    first_error: str | None = None


class Scheduler:
    """Drive ``method`` over many queries against ``engine`` (or print requests, in a dry run).

    ``schedule``: "continuous" or "lockstep" (see the module doc). ``cache``: a CallCache or None.
    ``on_progress(windows_done, tokens)`` is called after every round (lockstep) or every query step
    (continuous), with the tokens generated (or embedded) meanwhile.
    ``dry_run``: a callable receiving each Call (with ``meta["key"]``); no engine is called and every
    completion is an error completion (windows keep their input order); a dry run is always lockstep, so the
    requests print round by round.
    """

    def __init__(self, engine: Engine | None, cache=None, on_progress: Callable[[int, int], None] | None = None,
                 dry_run: Callable[[Call], None] | None = None, key_parts: tuple | None = None,
                 schedule: str = "continuous"):
        if engine is None and dry_run is None:
            raise ValueError("an engine is needed unless dry_run is given")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {', '.join(SCHEDULES)}, found {schedule!r}")
        self.schedule = "lockstep" if dry_run is not None else schedule
        self.engine = engine
        self.cache = cache
        self.on_progress = on_progress
        self.dry_run = dry_run
        # (engine name, model, sampling) for cache keys; taken from the engine unless given (dry run)
        self.key_parts = key_parts or (engine.name, engine.model, engine.sampling)
        self.stats = RunStats()

    def key(self, call: Call) -> str:
        """The call-cache key of ``call``; also sets ``meta["prefix"]``: (prefix key, budget) for derivation, or
        None where nothing may be derived (unseeded sampling)."""
        name, model, sampling = self.key_parts
        pk = call.request.prefix_key(name, model, sampling)
        call.meta["prefix"] = (pk, call.request.budget(sampling)) if pk is not None else None
        return call.request.key(name, model, sampling)

    def _derive(self, call: Call) -> Completion | None:
        """The answer derived from a cached completion of the same request with a larger budget, or None."""
        prefix = call.meta.get("prefix")
        if prefix is None or self.cache is None:
            return None
        row = self.cache.derivable(*prefix)
        if row is None:
            return None
        from rankk_cli.rerank import derive

        tokenizer = derive.tokenizer_for(self.key_parts[1]) if len(row["token_ids"]) > prefix[1] else None
        return derive.derive(row, call.request, prefix[1], tokenizer)

    def _answer(self, calls: list[Call]) -> list[Completion]:
        """Answer one round's calls: cache first, then ONE engine call for the rest."""
        out: list[Completion | None] = [None] * len(calls)
        misses = []
        for i, call in enumerate(calls):
            call.meta["key"] = self.key(call)
            if self.dry_run is not None:
                self.dry_run(call)
                out[i] = Completion("", "error", error=DRY_RUN_ERROR)
                call.meta.update(engine_call=-1, cached=False)
                continue
            misses.append(i)
        if misses and self.cache is not None:
            for attempt in range(2):  # a miss may be a chunk another process wrote meanwhile: look once more
                if attempt and not self.cache.refresh():
                    break
                misses = self._lookup(calls, out, misses)
                if not misses:
                    break
        if misses:
            t0 = time.perf_counter()
            completions = self.engine.generate([calls[i].request for i in misses])
            elapsed = time.perf_counter() - t0
            if len(completions) != len(misses):
                raise RuntimeError(f"engine {self.engine.name!r} returned {len(completions)} completions for "
                                   f"{len(misses)} requests")
            index = self.stats.engine_calls
            self.stats.engine_calls += 1
            self.stats.requests += len(misses)
            self.stats.engine_seconds += elapsed
            self.stats.batch_sizes.append(len(misses))
            for i, c in zip(misses, completions):
                if c.finish_reason == "error":
                    self.stats.errors += 1
                    self.stats.first_error = self.stats.first_error or (c.error or "unknown engine error")
                if not c.seconds:
                    c.seconds = elapsed / len(misses)
                out[i] = c
                calls[i].meta.update(engine_call=index, cached=False)
            if self.cache is not None:  # right away: a run killed after this line repeats nothing
                self.cache.put_many([(calls[i].meta["key"], out[i], calls[i].meta["prefix"]) for i in misses],
                                    engine=self.key_parts[0], model=self.key_parts[1])
        for call, c in zip(calls, out):
            call.meta.update(input_tokens=c.input_tokens, output_tokens=c.output_tokens, seconds=c.seconds)
            if not c.cached:
                self.stats.input_tokens += c.input_tokens
                self.stats.output_tokens += c.output_tokens
        return out  # type: ignore[return-value]

    def run(self, method: Method, queries: list[tuple[str, str, list[Candidate]]]) -> dict[str, QueryResult]:
        """Rerank every (qid, query, candidates); returns {qid: QueryResult} with records completed."""
        if self.schedule == "continuous":
            return self._run_continuous(method, queries)
        results: dict[str, QueryResult] = {}
        live: dict[str, tuple] = {}  # qid -> (generator, calls it waits on)
        for qid, query, cands in queries:
            gen = method.rerank(qid, query, cands)
            try:
                live[qid] = (gen, next(gen))
            except StopIteration as stop:
                results[qid] = self._finish(qid, stop.value)
        while live:
            batch: list[Call] = []
            spans = {}
            for qid, (_gen, calls) in live.items():
                spans[qid] = (len(batch), len(batch) + len(calls))
                batch.extend(calls)
            completions = self._answer(batch)
            done_windows = sum(1 for c in batch if c.meta.get("window"))
            # tokens/s on the bar: generated tokens, or for embedding requests the tokens embedded
            tokens = sum(c.input_tokens if c.embedding is not None else c.output_tokens
                         for c in completions if not c.cached)
            for qid in list(live):
                gen, _calls = live[qid]
                a, b = spans[qid]
                try:
                    live[qid] = (gen, gen.send(completions[a:b]))
                except StopIteration as stop:
                    del live[qid]
                    results[qid] = self._finish(qid, stop.value)
            if self.on_progress is not None:
                self.on_progress(done_windows, tokens)
        return {qid: results[qid] for qid, _q, _c in queries}

    # ------------------------------------------------------------------------------------------------------
    # continuous

    def _lookup(self, calls: list[Call], out: list, idx: list[int]) -> list[int]:
        """Answer ``calls[i]`` for i in ``idx`` from the cache; returns the indices still missing."""
        misses = []
        for i in idx:
            hit = self.cache.get(calls[i].meta["key"]) if self.cache is not None else None
            derived = hit is None and (hit := self._derive(calls[i])) is not None
            if hit is None:
                misses.append(i)
                continue
            out[i] = hit
            calls[i].meta.update(engine_call=-1, cached=True, derived=derived)
            if derived:
                self.stats.derived_hits += 1
            else:
                self.stats.cache_hits += 1
        return misses

    def _run_continuous(self, method: Method, queries) -> dict[str, QueryResult]:
        results: dict[str, QueryResult] = {}
        waiting: dict[str, list] = {}  # qid -> [generator, calls, completions, unanswered count]
        tickets: dict[int, tuple[str, int]] = {}  # engine ticket -> (qid, index of the call)
        ready: deque[str] = deque()  # queries whose calls are all answered
        last_refresh = [time.monotonic()]
        t_engine = [0.0]
        name, model = self.key_parts[0], self.key_parts[1]

        def dispatch(qid: str, gen, calls: list[Call]) -> None:
            out: list[Completion | None] = [None] * len(calls)
            for call in calls:
                call.meta["key"] = self.key(call)
            misses = self._lookup(calls, out, list(range(len(calls))))
            if misses and self.cache is not None and time.monotonic() - last_refresh[0] >= REFRESH_S:
                last_refresh[0] = time.monotonic()  # another process may have answered them meanwhile
                if self.cache.refresh():
                    misses = self._lookup(calls, out, misses)
            waiting[qid] = [gen, calls, out, len(misses)]
            if not misses:
                ready.append(qid)
                return
            t0 = time.perf_counter()
            got = self.engine.submit([calls[i].request for i in misses])
            t_engine[0] += time.perf_counter() - t0
            if len(got) != len(misses):
                raise RuntimeError(f"engine {self.engine.name!r} returned {len(got)} tickets for "
                                   f"{len(misses)} requests")
            self.stats.requests += len(misses)
            for i, ticket in zip(misses, got):
                tickets[ticket] = (qid, i)

        def advance(qid: str) -> None:
            gen, calls, out, _left = waiting.pop(qid)
            for call, c in zip(calls, out):
                call.meta.update(input_tokens=c.input_tokens, output_tokens=c.output_tokens, seconds=c.seconds)
            if self.on_progress is not None:
                self.on_progress(sum(1 for c in calls if c.meta.get("window")),
                                 sum(c.input_tokens if c.embedding is not None else c.output_tokens
                                     for c in out if not c.cached))
            try:
                nxt = gen.send(out)
            except StopIteration as stop:
                results[qid] = self._finish(qid, stop.value)
                return
            dispatch(qid, gen, nxt)

        try:
            for qid, query, cands in queries:
                gen = method.rerank(qid, query, cands)
                try:
                    first = next(gen)
                except StopIteration as stop:
                    results[qid] = self._finish(qid, stop.value)
                    continue
                dispatch(qid, gen, first)
            while ready or tickets:
                while ready:
                    advance(ready.popleft())
                if not tickets:
                    continue
                t0 = time.perf_counter()
                finished = self.engine.poll()
                elapsed = time.perf_counter() - t0
                t_engine[0] += elapsed
                if not finished:
                    raise RuntimeError(f"engine {self.engine.name!r} returned nothing with {len(tickets)} "
                                       "requests outstanding")
                index = self.stats.engine_calls
                self.stats.engine_calls += 1
                self.stats.batch_sizes.append(len(finished))
                store = []
                for ticket, c in finished:
                    if ticket not in tickets:
                        raise RuntimeError(f"engine {self.engine.name!r} answered an unknown request ({ticket})")
                    qid, i = tickets.pop(ticket)
                    state = waiting[qid]
                    call = state[1][i]
                    if c.finish_reason == "error":
                        self.stats.errors += 1
                        self.stats.first_error = self.stats.first_error or (c.error or "unknown engine error")
                    if not c.seconds:
                        c.seconds = elapsed / len(finished)
                    state[2][i] = c
                    call.meta.update(engine_call=index, cached=False)
                    self.stats.input_tokens += c.input_tokens
                    self.stats.output_tokens += c.output_tokens
                    store.append((call.meta["key"], c, call.meta["prefix"]))
                    state[3] -= 1
                    if state[3] == 0:
                        ready.append(qid)
                if self.cache is not None:  # at once: a run killed after this line repeats none of these
                    self.cache.append(store, engine=name, model=model)
        finally:
            self.stats.engine_seconds += t_engine[0]
            if tickets:
                self.engine.cancel(list(tickets))
            if self.cache is not None:
                self.cache.flush()
        return {qid: results[qid] for qid, _q, _c in queries}

    @staticmethod
    def _finish(qid: str, result: QueryResult) -> QueryResult:
        from rankk_cli.rerank.records import finish_record

        for rec in result.records:
            finish_record(rec, qid)
        return result
