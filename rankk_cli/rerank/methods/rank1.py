"""Rank1 (orionw/rank1): pointwise reasoning reranker scored from true/false log-probabilities.

Raw prompt (no chat template), exactly as ``rank1.py``:

    Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\\n
    Query: {query}\\nPassage: {passage}\\n<think>

All (query, passage) pairs of all queries go out in ONE engine call, with ``stop=("</think> true",
"</think> false")`` and 20 top log-probabilities per position. Score = p(true) = exp(lp_true) / (exp(lp_true) +
exp(lp_false)) read at the last generated position (the answer token). When only one of the two is among the
top-k, the other's log-probability is bounded by the smallest one listed (stated in the record).

The answer is there only when the reply STOPPED on one of the two stop strings (``Completion.stop_reason``);
the last position of a reply that ended at end-of-sequence is not an answer, whatever its log-probabilities.
When the answer is missing (cut off by max tokens, or the model stopped without answering) a forced one-token
answer follows, batched across all such pairs: the text so far + ``"\\n</think>"``, generation restricted to
``" true"``/``" false"`` (``Request.allowed``), 1 token, logprobs. If even that yields no true/false
log-probability the score is 0.5 (outcome ``failed``).
"""

from __future__ import annotations

import math
from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import FAILED, FORCED, Call, Candidate, Method, QueryResult
from rankk_cli.rerank.records import new_record
from rankk_cli.rerank.text import THINK_END

PROMPT = ("Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\n"
          "Query: {query}\nPassage: {passage}\n<think>")
STOP = ("</think> true", "</think> false")
ANSWERS = (" true", " false")
TOP_LOGPROBS = 20


def render(query: str, passage: str) -> str:
    return PROMPT.replace("{query}", query, 1).replace("{passage}", passage, 1)


def true_probability(logprobs: list[dict[str, float]] | None) -> tuple[float | None, str]:
    """p(true) from the LAST position's top log-probabilities, or (None, why)."""
    if not logprobs:
        return None, "no log-probabilities returned"
    last = logprobs[-1]
    lp = {"true": None, "false": None}
    for token, value in last.items():
        word = token.strip().lower()
        if word in lp and (lp[word] is None or value > lp[word]):
            lp[word] = value
    if lp["true"] is None and lp["false"] is None:
        return None, "neither true nor false among the last position's top log-probabilities"
    note = ""
    floor = min(last.values())
    for word in ("true", "false"):
        if lp[word] is None:
            lp[word] = floor
            note = f"'{word}' not in the top {len(last)}: bounded by the smallest listed log-probability"
    m = max(lp["true"], lp["false"])
    t, f = math.exp(lp["true"] - m), math.exp(lp["false"] - m)
    return t / (t + f), note


def answered(comp: Completion) -> bool:
    """The reply ended ON one of the answer strings (``</think> true|false``): vLLM's ``stop_reason`` names the
    stop string that matched (and leaves it out of the text). A reply that ended at end-of-sequence, at the token
    budget or on anything else never answered, whatever its last position's log-probabilities say."""
    return comp.finish_reason == "stop" and comp.stop_reason in STOP


def unanswered_why(comp: Completion, wanted: str = "'</think> true|false'") -> str:
    """Why a reply that should have stopped on ``wanted`` is no answer (rank1, erank)."""
    if comp.cut_off:
        return "reply cut off at max tokens"
    if comp.stop_reason is None:
        return f"reply ended (end of sequence) without {wanted}"
    return f"reply stopped on {comp.stop_reason!r}, not on {wanted}"


class Rank1(Method):
    name = "rank1"
    kind = "pointwise"
    ignores = ("--window", "--stride", "--passes")  # no sliding windows (warned when given)
    default_temperature = 0.0
    default_max_tokens = 8192

    def planned_windows(self, n: int) -> int:
        return n

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        calls = []
        for pos, cand in enumerate(candidates):
            req = Request(prompt=render(query, cand.text), logprobs=TOP_LOGPROBS, stop=STOP)
            calls.append(Call(req, {"qid": qid, "pass": 1, "start": pos, "end": pos + 1, "window": True}))
        completions = (yield calls) if calls else []
        records, scores, retry = [], {}, []
        for pos, (cand, call, comp) in enumerate(zip(candidates, calls, completions)):
            rec = new_record(1, pos, pos + 1, [cand.docid])
            rec["calls"].append(call)
            rec["raw"] = comp.text
            rec["reasoning"] = comp.text.split(THINK_END)[0].strip()
            records.append(rec)
            if comp.finish_reason == "error":
                rec["outcome"], rec["repairs"] = FAILED, f"engine error: {comp.error or 'unknown'}; score 0.5"
                scores[cand.docid] = 0.5
                continue
            p, note = (None, "") if not answered(comp) else true_probability(comp.logprobs)
            if p is not None:
                scores[cand.docid] = p
                rec["repairs"] = note
                rec["score"] = p
            else:
                retry.append(pos)
        if retry:
            forced = []
            for pos in retry:
                text = completions[pos].text.split(THINK_END)[0]
                req = Request(prompt=calls[pos].request.prompt + text + "\n" + THINK_END, max_tokens=1,
                              temperature=0.0, logprobs=TOP_LOGPROBS, allowed=ANSWERS)
                forced.append(Call(req, {"qid": qid, "pass": 1, "start": pos, "end": pos + 1, "forced": True}))
            forced_completions = yield forced
            for pos, call, comp in zip(retry, forced, forced_completions):
                rec = records[pos]
                rec["calls"].append(call)
                rec["forced_raw"] = comp.text
                why = unanswered_why(completions[pos])
                p, note = (None, f"engine error: {comp.error}") if comp.finish_reason == "error" \
                    else true_probability(comp.logprobs)
                if p is None:
                    p, rec["outcome"] = 0.5, FAILED
                    rec["repairs"] = f"{why}; forced one-token answer unusable ({note}); score 0.5"
                else:
                    rec["outcome"] = FORCED
                    rec["repairs"] = f"{why}; forced one-token answer after </think>" + (f"; {note}" if note else "")
                scores[candidates[pos].docid] = p
                rec["score"] = p
        for rec in records:
            rec.setdefault("score", scores.get(rec["docids"][0]))
            rec["parsed"] = []
        positions = {c.docid: i for i, c in enumerate(candidates)}
        order = sorted(scores, key=lambda d: (-scores[d], positions[d]))
        return QueryResult(order, scores, records)
