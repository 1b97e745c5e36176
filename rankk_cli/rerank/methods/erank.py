"""ERank (Alibaba-NLP/ERank-4B/14B/32B): pointwise reasoning reranker with fine-grained integer scores 0..10.

Reference: arXiv 2509.00520, Figure 5 ("Prompt for scoring with integers from 0 to 10") for the prompt and
Section 3.2 ("Generative Fine-Grained Scoring") for the score; the Alibaba-NLP/ERank-4B model card's usage
(``reranker.rerank(query, docs, instruction)`` with a task instruction, Qwen3 chat models). The prompt below is
Figure 5's text with its line breaks as the figure lays them out, sent as ONE user message through the model's
chat template; ``{instruction}`` is ``--method-opt instruction=...`` (the model card passes one per task; the
figure leaves it a placeholder, so the default -- a web-search relevance definition -- is rankk's choice).

The model thinks, closes ``</think>`` and writes ``<answer>N</answer>``. Each (query, passage) pair takes:

1. the reasoning call: generation stopped on the string ``<answer>`` (vLLM's ``stop_reason`` says it matched);
2. the answer call: the assistant turn continued after ``<answer>`` (``continue_final``) for 3 tokens with the
   top ``logprobs`` alternatives: the integer the model writes is read from its text, the score distribution
   from the top log-probabilities of its first position. Splitting the reply at ``<answer>`` is what lets the
   score token's position be known exactly; greedy, it continues as the one uninterrupted generation would
   (up to the chat template's re-rendering of the reasoning so far).

Score (``--method-opt score=``): ``expected`` (default) = the expected value of the integer under the
probabilities of the score tokens ``0``..``10`` among the first answer position's top log-probabilities
(renormalised over those found); ``paper`` = s x Pr(token = s), Section 3.2's ``s_i x Pr(token = s_i)`` with s
the integer written. A tokenizer that writes 10 as ``1`` ``0`` (Qwen's digit splitting) is handled: when the
written integer starts with ``1`` and no single ``10`` token is listed, p(``1``) is split into p(1) and p(10) by
the next position's p(``0``). Without log-probabilities (an engine that returns none) the score is the plain
parsed integer (said in the record's ``note``). The distribution read is stored as the record's ``logprobs``
(JSON {integer: logprob}); the reasoning (text before ``</think>``) as ``reasoning``, like rank1.

Outcomes: ``ok`` -- the reasoning call stopped on ``<answer>`` after a closed ``</think>`` and the answer call
wrote an integer 0..10. ``repaired`` -- no ``<answer>``, but the reply's first line is an integer 0..10 alone
(the answer, out of format: SmolLM2 writes ``0`` and a sentence): that integer is the score, the record's
``repairs`` says so. Otherwise the answer is FORCED: the reasoning so far + ``"\\n</think>\\n<answer>"``
(or, when the reasoning did close, the text up to ``<answer>``), one token restricted to the score tokens
(``Request.allowed``) with their log-probabilities: outcome ``forced``, the score its expected value (a
one-token forced answer cannot tell 1 from 10 under a digit-splitting tokenizer: ``1`` counts as 1). An engine
error, or a forced answer without any score token, is ``failed`` with the midpoint score 5.
"""

from __future__ import annotations

import json
import math
import re
from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods import rank1
from rankk_cli.rerank.methods.base import FAILED, FORCED, REPAIRED, Call, Candidate, Method, Option, QueryResult
from rankk_cli.rerank.records import new_record
from rankk_cli.rerank.text import THINK_END

PROMPT = ("Given a query and a document, please give a relevance score of 0 to 10.\n"
          "The goal or relevance definition is: {instruction}\n"
          "\n"
          "Here is the query:\n"
          "{query}\n"
          "\n"
          "Here is the document:\n"
          "{document}\n"
          "\n"
          "After thinking, directly choose a relevance score from [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].\n"
          "- 0 represents completely not related.\n"
          "- 10 means perfectly related.\n"
          "\n"
          "Desired output format:\n"
          "<think>put your thinking here</think><answer>Only allows an integer here</answer>\n"
          "\n"
          "Your output:")
INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query."
ANSWER_OPEN = "<answer>"
SCORES = tuple(range(11))
SCORE_TOKENS = tuple(str(s) for s in SCORES)
MIDPOINT = 5.0
_LEADING_INT = re.compile(r"\s*(\d+)")


def render(query: str, document: str, instruction: str = INSTRUCTION) -> str:
    # str.replace, not str.format: braces in queries or passages must come through untouched
    return (PROMPT.replace("{instruction}", instruction, 1).replace("{query}", query, 1)
            .replace("{document}", document, 1))


_BARE_LINE = re.compile(r"\s*(\d{1,2})[ \t]*(?:\n|\Z)")


def _score_of(pattern: re.Pattern, text: str) -> int | None:
    m = pattern.match(text)
    value = int(m.group(1)) if m else None
    return value if value is not None and 0 <= value <= 10 else None


def written_score(text: str) -> int | None:
    """The integer the answer call wrote (leading, after optional whitespace) when it is 0..10, else None."""
    return _score_of(_LEADING_INT, text)


def bare_score(text: str) -> int | None:
    """The integer 0..10 a reply wrote ALONE on its first line, without ``<think>`` or ``<answer>`` (SmolLM2 on
    ERank's prompt: ``"0\n\nThe document is not related..."``), else None: the answer is there, out of format."""
    return _score_of(_BARE_LINE, text)


def score_logprobs(logprobs: list[dict[str, float]] | None, written: int | None = None) -> dict[int, float]:
    """{integer: logprob} of the score tokens among the FIRST position's top log-probabilities (best per
    integer). Under a digit-splitting tokenizer (no ``10`` token listed) and a written integer that starts with
    ``1``, p(``1``) is split into p(1) = p(``1``)(1 - q) and p(10) = p(``1``) q, q = the next position's
    p(``0``) (0 when ``0`` is not listed there)."""
    if not logprobs:
        return {}
    out: dict[int, float] = {}
    for token, lp in logprobs[0].items():
        t = token.strip()
        if t in SCORE_TOKENS and (int(t) not in out or lp > out[int(t)]):
            out[int(t)] = lp
    if 10 not in out and 1 in out and written is not None and str(written).startswith("1") and len(logprobs) > 1:
        q = max((math.exp(lp) for tok, lp in logprobs[1].items() if tok.strip() == "0"), default=0.0)
        p1 = math.exp(out[1])
        if q > 0:
            out[10] = math.log(p1 * q)
        out[1] = math.log(p1 * (1.0 - q)) if q < 1 else -math.inf
    return out


def expected_score(dist: dict[int, float]) -> float | None:
    """Expected integer under ``dist`` ({integer: logprob}) renormalised over the integers listed."""
    finite = {v: lp for v, lp in dist.items() if lp > -math.inf}
    if not finite:
        return None
    m = max(finite.values())
    weights = {v: math.exp(lp - m) for v, lp in finite.items()}
    total = sum(weights.values())
    return sum(v * w for v, w in weights.items()) / total


def reasoning_stopped(comp: Completion) -> bool:
    """The reasoning call ended ON ``<answer>`` (vLLM's ``stop_reason``) after a closed ``</think>``."""
    return comp.finish_reason == "stop" and comp.stop_reason == ANSWER_OPEN and THINK_END in comp.text


def unanswered_why(comp: Completion) -> str:
    if comp.stop_reason == ANSWER_OPEN and not comp.cut_off:
        return "'<answer>' written before closing '</think>'"
    return rank1.unanswered_why(comp, "'<answer>'")


class ERank(Method):
    name = "erank"
    kind = "pointwise"
    ignores = ("--window", "--stride", "--passes")  # no sliding windows (warned when given)
    default_temperature = 0.0
    default_max_tokens = 2048  # the paper's SFT data keeps outputs under 2,048 tokens
    options = (
        Option("instruction", str, INSTRUCTION, "the task's relevance definition (the prompt's {instruction})"),
        Option("score", str, "expected", "expected: expected integer under the score-token probabilities; "
                                         "paper: s x Pr(token = s) (arXiv 2509.00520, Section 3.2)",
               choices=("expected", "paper")),
        Option("logprobs", int, 20, "top log-probabilities read at the answer's first position", minimum=1),
    )

    def planned_windows(self, n: int) -> int:
        return n

    def _score(self, dist: dict[int, float], written: int | None) -> float | None:
        if self.score == "paper":
            return written * math.exp(dist[written]) if written in dist else None
        return expected_score(dist)

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        def meta(pos: int, **extra) -> dict:
            return {"qid": qid, "pass": 1, "start": pos, "end": pos + 1, **extra}

        user = [("user", render(query, c.text, self.instruction)) for c in candidates]
        calls = [Call(Request(messages=(u,), stop=(ANSWER_OPEN,)), meta(pos, window=True))
                 for pos, u in enumerate(user)]
        completions = (yield calls) if calls else []
        records, scores, answer_calls, forced = [], {}, [], []
        for pos, (cand, call, comp) in enumerate(zip(candidates, calls, completions)):
            rec = new_record(1, pos, pos + 1, [cand.docid])
            rec["calls"].append(call)
            rec["raw"] = comp.text
            rec["reasoning"] = comp.text.split(THINK_END)[0].strip().removeprefix("<think>").lstrip()
            records.append(rec)
            if comp.finish_reason == "error":
                rec["outcome"], rec["repairs"] = FAILED, f"engine error: {comp.error or 'unknown'}; score 5"
                scores[cand.docid] = MIDPOINT
            elif reasoning_stopped(comp):
                req = Request(messages=(user[pos], ("assistant", comp.text + ANSWER_OPEN)), continue_final=True,
                              max_tokens=3, temperature=0.0, logprobs=self.logprobs)
                answer_calls.append((pos, Call(req, meta(pos))))
            elif comp.stop_reason != ANSWER_OPEN and (bare := bare_score(comp.text)) is not None:
                # the answer is there, out of format: read it, and say so (no score-token log-probabilities); a
                # reply that went on to write '<answer>' meant its answer to come there, not in a first line
                rec["outcome"], rec["parsed"] = REPAIRED, [bare]
                rec["repairs"] = (f"no '<answer>' tag: the reply's first line is the bare integer {bare}, read as "
                                  f"the answer; score {bare} (no score-token log-probabilities for it)")
                scores[cand.docid] = float(bare)
            else:
                forced.append((pos, unanswered_why(comp), comp.text.split(THINK_END)[0].rstrip() + "\n"
                               + THINK_END + "\n" + ANSWER_OPEN))
        if answer_calls:
            answers = yield [c for _p, c in answer_calls]
            for (pos, call), comp in zip(answer_calls, answers):
                rec = records[pos]
                rec["calls"].append(call)
                rec["raw"] += ANSWER_OPEN + comp.text
                written = written_score(comp.text) if comp.finish_reason != "error" else None
                if written is None:
                    why = (f"answer call failed: engine error: {comp.error or 'unknown'}"
                           if comp.finish_reason == "error" else f"no integer 0..10 after '<answer>' "
                                                                 f"({comp.text.strip()[:20]!r})")
                    forced.append((pos, why, completions[pos].text + ANSWER_OPEN))
                    continue
                dist = score_logprobs(comp.logprobs, written)
                score = self._score(dist, written)
                if score is None:
                    score = float(written)
                    rec["note"] = "the written integer not among the log-probabilities: score is the parsed integer"
                rec["parsed"] = [written]
                rec["logprobs"] = json.dumps({str(v): lp for v, lp in sorted(dist.items())})
                rec["score"] = scores[candidates[pos].docid] = score
        if forced:
            fcalls = [Call(Request(messages=(user[pos], ("assistant", text)), continue_final=True, max_tokens=1,
                                   temperature=0.0, logprobs=self.logprobs, allowed=SCORE_TOKENS),
                           meta(pos, forced=True)) for pos, _why, text in forced]
            fcomps = yield fcalls
            for (pos, why, _text), call, comp in zip(forced, fcalls, fcomps):
                rec = records[pos]
                rec["calls"].append(call)
                rec["forced_raw"] = comp.text
                dist = {} if comp.finish_reason == "error" else score_logprobs(comp.logprobs)
                score = expected_score(dist)
                if score is None:
                    note = f"engine error: {comp.error}" if comp.finish_reason == "error" else "no score token"
                    rec["outcome"], score = FAILED, MIDPOINT
                    rec["repairs"] = f"{why}; forced one-token answer unusable ({note}); score 5"
                else:
                    rec["outcome"] = FORCED
                    rec["repairs"] = f"{why}; forced one-token score after '<answer>' (expected value)"
                    rec["logprobs"] = json.dumps({str(v): lp for v, lp in sorted(dist.items())})
                    w = written_score(comp.text)
                    rec["parsed"] = [w] if w is not None else []
                rec["score"] = scores[candidates[pos].docid] = score
        for rec in records:
            rec.setdefault("score", scores.get(rec["docids"][0]))
        positions = {c.docid: i for i, c in enumerate(candidates)}
        order = sorted(scores, key=lambda d: (-scores[d], positions[d]))
        return QueryResult(order, scores, records)
