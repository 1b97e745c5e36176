"""The bare-engine floor of the rerank benchmarks (and the step-keyed forced lengths they share): the SAME rendered requests a rankk run sent, replayed by a plain
vLLM loop with nothing of rankk in between, so rankk's own overhead is a measured ratio.

``recording(method_cls)`` wraps a method's ``rerank`` generator (for the length of a ``with`` block) and keeps,
per query, the batches of requests it yielded, in order: a query's step k is what it waited on k-th. That is
what any schedule sends: lockstep's round k is every live query's step k; continuous sends a query's step k+1
the moment its step k is answered. ``render(engine, steps)`` turns those Request objects into what the engine
hands vLLM (prompt token ids and the SamplingParams fields, forced lengths included) -- after the timed run, so
the recording costs the run nothing but a list append per step.

The two replays (``replay``), on an ``LLM`` built with the engine's own ``LLM(**kwargs)``:
- ``lockstep``: one ``LLM.generate`` per round, the round's requests in rankk's order (rankk's lockstep call);
- ``continuous``: one ``llm_engine.add_request`` / ``step`` loop, a query's next step added when its last one
  finished (rankk's continuous schedule without the scheduler, the methods and the call bookkeeping).
Rendering is not in the floor's time (it is in rankk's generate time: its engine renders inside ``generate``).
"""

from __future__ import annotations

import contextlib
import time

PARAM_FIELDS = ("temperature", "top_p", "max_tokens", "min_tokens", "ignore_eos", "seed", "stop", "logprobs",
                "allowed_token_ids", "skip_special_tokens", "logprob_token_ids")


class Log(dict):
    """{qid: [[Request, ...] per step]}, plus ``where[id(request)] = (qid, step, index)`` for every request
    logged (the Request objects are kept alive by the log, so their ids stay unique)."""

    def __init__(self):
        super().__init__()
        self.where: dict[int, tuple[str, int, int]] = {}


@contextlib.contextmanager
def recording(method_cls, log: Log | None = None):
    """Within the block, every ``method_cls.rerank`` generator logs its yielded requests into ``log`` (a new
    ``Log`` unless given; a query seen again, e.g. in a second run, starts its steps over)."""
    log = Log() if log is None else log
    original = method_cls.rerank

    def rerank(self, qid, query, cands):
        gen = original(self, qid, query, cands)
        steps = log[qid] = []
        try:
            calls = next(gen)
            while True:
                steps.append([c.request for c in calls])
                for j, c in enumerate(calls):
                    log.where[id(c.request)] = (qid, len(steps) - 1, j)
                calls = gen.send((yield calls))
        except StopIteration as stop:
            return stop.value

    method_cls.rerank = rerank
    try:
        yield log
    finally:
        method_cls.rerank = original


def step_lengths(log: Log, seed: int, median: float, sigma: float, cap: int):
    """``length_of(request)`` for ``force_lengths``: a lognormal length keyed by (seed, qid, step, index) of a
    request logged in ``log`` -- the k-th call of a query gets the same length whatever its text, so another
    system that sends the same number of calls per query (RankLLM: one per window) can be given the same work."""
    from rankk_cli.testing import lognormal_draw

    def length_of(request) -> int:
        where = log.where.get(id(request))
        if where is None:  # not a method's call (a warm-up request): its own budget
            return request.max_tokens or 1
        return lognormal_draw([seed, *where], median, sigma, cap)

    return length_of


def render(engine, log: dict) -> dict:
    """The recorded requests as vLLM receives them from ``engine`` (a VLLMEngine, forced lengths applied):
    {"queries": [[[{"ids": [...], "params": {...}}, ...] per step] per query], "llm_kwargs": {...}}."""
    queries = []
    for steps in log.values():
        out_steps = []
        for requests in steps:
            out = []
            for r in requests:
                ids = engine.render(r)
                p = engine.sampling_params(r, len(ids))
                params = {k: getattr(p, k) for k in PARAM_FIELDS if getattr(p, k, None) is not None}
                out.append({"ids": ids, "params": params})
            out_steps.append(out)
        queries.append(out_steps)
    return {"queries": queries, "llm_kwargs": engine.llm_kwargs}


def step_meter(llm) -> dict:
    """Instrument a vllm.LLM: ``{"steps", "seconds", "running"}`` -- engine steps, seconds inside them (the
    engine's own work: everything else a system does is its overhead) and the sum over steps of the requests
    running (mean occupancy = running / steps). LLM.generate and add_request/step loops both step
    ``llm.llm_engine``; reset the counts by assigning zeros."""
    core = llm.llm_engine
    step = core.step
    box = {"steps": 0, "seconds": 0.0, "running": 0}

    def metered():
        box["steps"] += 1
        box["running"] += core.get_num_unfinished_requests()
        t0 = time.perf_counter()
        out = step()
        box["seconds"] += time.perf_counter() - t0
        return out

    core.step = metered
    return box


def counts(recorded: dict) -> tuple[int, int, int]:
    """(requests, rounds, prompt tokens) of a rendered recording."""
    reqs = [r for q in recorded["queries"] for step in q for r in step]
    rounds = max((len(q) for q in recorded["queries"]), default=0)
    return len(reqs), rounds, sum(len(r["ids"]) for r in reqs)


def replay(llm, recorded: dict, schedule: str) -> dict:
    """Send the recorded requests to ``llm`` (a vllm.LLM) with a plain loop; returns seconds (generate only),
    engine calls (generate calls or steps that finished something), steps and generated tokens."""
    from vllm import SamplingParams

    def params_of(req):
        return SamplingParams(n=1, **req["params"])

    queries = recorded["queries"]
    tokens = calls = steps = 0
    if schedule == "lockstep":
        rounds = max((len(q) for q in queries), default=0)
        seconds = 0.0
        for k in range(rounds):
            batch = [r for q in queries if k < len(q) for r in q[k]]
            prompts = [{"prompt_token_ids": r["ids"]} for r in batch]
            params = [params_of(r) for r in batch]
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            seconds += time.perf_counter() - t0
            calls += 1
            tokens += sum(len(o.outputs[0].token_ids) for o in outs)
        return {"seconds": seconds, "calls": calls, "steps": None, "tokens": tokens}

    from vllm.sampling_params import RequestOutputKind

    engine = llm.llm_engine
    # everything built before the clock starts, as the lockstep floor does
    built = [[[({"prompt_token_ids": r["ids"]}, params_of(r)) for r in step] for step in q] for q in queries]
    for q in built:
        for step in q:
            for _prompt, p in step:
                p.output_kind = RequestOutputKind.FINAL_ONLY
    nxt = [0] * len(built)
    left: dict[int, int] = {}
    owner: dict[str, int] = {}

    def add(qi: int) -> None:
        step = built[qi][nxt[qi]]
        nxt[qi] += 1
        left[qi] = len(step)
        for j, (prompt, p) in enumerate(step):
            rid = f"floor-{qi}-{nxt[qi]}-{j}"
            owner[rid] = qi
            engine.add_request(rid, prompt, p)

    t0 = time.perf_counter()
    for qi in range(len(built)):
        if built[qi]:
            add(qi)
    while left:
        outs = engine.step()
        steps += 1
        finished = [o for o in outs if o.finished]
        calls += bool(finished)
        for o in finished:
            tokens += len(o.outputs[0].token_ids)
            qi = owner.pop(o.request_id)
            left[qi] -= 1
            if left[qi] == 0:
                del left[qi]
                if nxt[qi] < len(built[qi]):
                    add(qi)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "calls": calls, "steps": steps, "tokens": tokens}
