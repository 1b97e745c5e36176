"""A scripted fake Engine for rerank unit tests (no model): deterministic replies, counts batched calls."""

from __future__ import annotations

import math
import re
import time

from rankk_cli.rerank.engines.base import Completion, Engine, EngineOptions, Request, Sampling


class FakeEngine(Engine):
    """Listwise requests: answers ``</think>\\n[n] > ... > [1]`` (reverses the window) unless ``cut_off(req)``
    says to reply with a cut-off reasoning; forced requests (continue_final) answer the reversal too.
    Raw prompts (rank1): ``"...</think>"`` with logprobs favouring passages whose text holds "relevant".
    ``fail(req)`` -> an error completion. ``delay`` seconds of sleep per call."""

    name = "fake"

    def __init__(self, model="fake-model", sampling=None, cut_off=None, fail=None, delay=0.0):
        super().__init__(model, sampling or Sampling(), EngineOptions())
        self.cut_off = cut_off or (lambda req: False)
        self.fail = fail or (lambda req: False)
        self.delay = delay
        self.batches: list[int] = []

    def generate(self, requests: list[Request]) -> list[Completion]:
        self.batches.append(len(requests))
        if self.delay:
            time.sleep(self.delay)
        return [self._one(r) for r in requests]

    def _one(self, req: Request) -> Completion:
        if self.fail(req):
            return Completion("", "error", error="fake server failure")
        if req.prompt is not None:
            if req.allowed:
                return Completion(" true", "stop", 5, 1, logprobs=[{" true": math.log(0.7), " false": math.log(0.3)}])
            if self.cut_off(req):
                return Completion("thinking thinking", "length", 10, self.sampling.max_tokens)
            p = 0.9 if "relevant" in req.prompt.split("Passage:")[-1] else 0.2
            return Completion("it seems so.", "stop", 10, 4, stop_reason="</think> true" if p > 0.5 else "</think> false",
                              logprobs=[{"x": -0.1}, {" true": math.log(p), " false": math.log(1 - p)}])
        user = [c for r, c in req.messages if r == "user"][-1]
        n = len(set(re.findall(r"^\[(\d+)\] ", user, flags=re.M)))
        ranking = " > ".join(f"[{i}]" for i in range(n, 0, -1))
        if req.continue_final:
            return Completion(ranking, "stop", 20, 5)
        if self.cut_off(req):
            return Completion("Let me think about passage [1] and", "length", 20, self.sampling.max_tokens)
        return Completion(f"reasoning</think>\n\n{ranking}", "stop", 20, 8)
