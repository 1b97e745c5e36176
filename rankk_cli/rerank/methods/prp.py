"""PRP, pairwise ranking prompting (Qin et al. 2024; prompt and sorts as ielab/llm-rankers ``pairwise.py``).

Prompt (one **user** message, byte for byte as llm-rankers)::

    Given a query "{query}", which of the following two passages is more relevant to the query?

    Passage A: "{doc1}"

    Passage B: "{doc2}"

    Output Passage A or Passage B:

The assistant turn is started with ``Passage:`` and continued for ONE token (llm-rankers appends ``" Passage:"``
to the rendered chat prompt and generates one token). What is read as the answer (option ``answer``):
- ``generate`` (default, llm-rankers' generation mode): the generated token, ``A`` or ``B`` after stripping
  whitespace and an optional ``Passage`` (case-insensitive). Anything else -- a quote, a newline, ``D`` -- is
  no answer;
- ``logprobs`` (llm-rankers' scoring of ``A`` against ``B`` for Flan-T5): the more probable of ``A``/``B`` among
  the answer position's top 20 log-probabilities; one alone among them wins (noted); neither is no answer.
Every comparison asks BOTH orders (A=d1,B=d2 and A=d2,B=d1) in the same round: d1 beats d2 only when both
answers agree (``A`` then ``B``). Two valid answers that disagree (``A`` in both orders: position bias) are a
TIE: outcome ``ok`` (both answers are there), no swap, 0.5 point each in allpair, recorded as "the two orders
disagree: a tie". A comparison missing the answer of either order is ``failed`` and also treated as a tie.

Variants (option ``variant``):
- ``sliding`` (default; PRP-Sliding-K): ``k`` bubble passes from the bottom of the list; pass ``i`` compares
  each adjacent pair from the bottom up to position ``i`` and swaps when the lower document wins, so after
  ``k`` passes the top ``k`` are settled. (The plain passes of the paper; llm-rankers' skip of unchanged bottom
  pairs is not applied.)
- ``sorting`` (PRP-Sorting): binary max-heap (heapify/extract as llm-rankers ``heapSort``), top ``k`` extracted;
  the rest keeps its first-stage order.
- ``allpair`` (PRP-Allpair): every pair in one round; score = wins + 0.5 per tie, ties broken by first-stage order.
Calls of all queries are batched per round by the scheduler (two calls per comparison).
"""

from __future__ import annotations

from itertools import combinations
from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import FAILED, OK, Call, Candidate, Method, Option, QueryResult, heap_top_k
from rankk_cli.rerank.records import new_record

PROMPT = ('Given a query "{query}", which of the following two passages is more relevant to the query?\n\n'
          'Passage A: "{doc1}"\n\nPassage B: "{doc2}"\n\nOutput Passage A or Passage B:')
ASSISTANT_PREFIX = "Passage:"
VARIANTS = ("sliding", "sorting", "allpair")


ANSWERS = ("generate", "logprobs")
TOP_LOGPROBS = 20


def parse_label(text: str) -> str | None:
    """The generated answer: ``A`` or ``B`` after stripping whitespace and an optional leading ``Passage``
    (case-insensitive), else None. Nothing else is read as an answer: a quote, a newline or ``D`` (what
    SmolLM2 writes after "Passage:") is no answer."""
    label = text.strip().upper()
    if label.startswith("PASSAGE"):
        label = label[len("PASSAGE"):].strip()
    return label if label in ("A", "B") else None


def label_from_logprobs(logprobs: list[dict[str, float]] | None) -> tuple[str | None, str]:
    """(``A``/``B``, note) from the answer position's top log-probabilities: the label whose token (whitespace
    stripped, case kept: ``A``, `` A``) is more probable; one label alone among the top-k wins with a note;
    neither (or no logprobs): (None, why)."""
    if not logprobs:
        return None, "no log-probabilities returned"
    best: dict[str, float] = {}
    for token, value in logprobs[0].items():
        t = token.strip()
        if t in ("A", "B") and (t not in best or value > best[t]):
            best[t] = value
    if not best:
        return None, f"neither A nor B among the top {len(logprobs[0])} log-probabilities"
    if len(best) == 1:
        (label,) = best
        return label, f"only {label} among the top {len(logprobs[0])} log-probabilities"
    if best["A"] == best["B"]:
        return None, "A and B equally probable"
    return ("A" if best["A"] > best["B"] else "B"), ""


def judge(first: str | None, second: str | None) -> int:
    """+1: d1 wins (A then B), -1: d2 wins (B then A), 0: tie or unparseable."""
    if first == "A" and second == "B":
        return 1
    if first == "B" and second == "A":
        return -1
    return 0


class PRP(Method):
    name = "prp"
    kind = "pairwise"
    ignores = ("--window", "--stride", "--passes")  # no sliding windows (warned when given)
    default_temperature = 0.0
    default_max_tokens = 1
    options = (
        Option("variant", str, "sliding", "PRP-Sliding-k, PRP-Sorting (heap, top k) or PRP-Allpair", choices=VARIANTS),
        Option("k", int, 10, "top k settled (sliding passes / heap extractions)", minimum=1),
        Option("answer", str, "generate", "read the generated A/B token, or compare A and B log-probabilities",
               choices=ANSWERS),
    )

    def request(self, query: str, doc1: str, doc2: str) -> Request:
        return Request(messages=(("user", PROMPT.format(query=query, doc1=doc1, doc2=doc2)),
                                 ("assistant", ASSISTANT_PREFIX)),
                       continue_final=True, max_tokens=1, temperature=0.0,
                       logprobs=TOP_LOGPROBS if self.answer == "logprobs" else None)

    def label(self, comp: Completion) -> tuple[str | None, str]:
        """(A/B or None, note) of one order's completion, by the ``answer`` option."""
        if comp.finish_reason == "error":
            return None, f"engine error: {comp.error or 'unknown'}"
        if self.answer == "logprobs":
            return label_from_logprobs(comp.logprobs)
        label = parse_label(comp.text)
        return label, "" if label else f"unparseable answer {comp.text[:20]!r}"

    def planned_windows(self, n: int) -> int | None:
        if self.variant == "allpair":
            return n * (n - 1) // 2
        if self.variant == "sliding":
            return sum(n - 1 - i for i in range(min(self.k, n)))
        return None  # sorting: data dependent (the bar counts without a total)

    def _calls(self, qid, query, d1: Candidate, d2: Candidate, meta) -> list[Call]:
        base = {"qid": qid, **meta}
        return [Call(self.request(query, d1.text, d2.text), dict(base, order="AB", window=True)),
                Call(self.request(query, d2.text, d1.text), dict(base, order="BA"))]

    def _record(self, meta, d1, d2, calls, comps) -> tuple[dict, int]:
        """One comparison's record (both orders) and its verdict."""
        read = [self.label(c) for c in comps]
        labels = [lab for lab, _note in read]
        verdict = judge(*labels)
        rec = new_record(meta["pass"], meta["start"], meta["end"], [d1.docid, d2.docid])
        bad = any(lab is None for lab in labels)
        notes = [f"{o}: {note}" for o, (lab, note) in zip(("AB", "BA"), read) if note]
        if labels[0] and labels[1] and not verdict:
            notes.append("the two orders disagree: a tie")
        if bad:
            notes.append("counted as a tie")
        rec.update(raw=" | ".join(c.text for c in comps), outcome=FAILED if bad else OK, parsed=[verdict],
                   repairs="; ".join(notes), calls=list(calls), step=meta.get("step", ""))
        return rec, verdict

    def compare(self, qid, query, d1, d2, meta, records):
        calls = self._calls(qid, query, d1, d2, meta)
        comps = yield calls
        rec, verdict = self._record(meta, d1, d2, calls, comps)
        records.append(rec)
        return verdict

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        records: list[dict] = []
        ranking = list(candidates)
        n = len(ranking)
        if self.variant == "allpair":
            pairs = list(combinations(range(n), 2))
            calls = []
            for a, b in pairs:
                calls += self._calls(qid, query, ranking[a], ranking[b], {"pass": 1, "start": a, "end": b + 1})
            comps = (yield calls) if calls else []
            points = [0.0] * n
            for p, (a, b) in enumerate(pairs):
                rec, verdict = self._record({"pass": 1, "start": a, "end": b + 1}, ranking[a], ranking[b],
                                            calls[2 * p: 2 * p + 2], comps[2 * p: 2 * p + 2])
                records.append(rec)
                if verdict > 0:
                    points[a] += 1
                elif verdict < 0:
                    points[b] += 1
                else:
                    points[a] += 0.5
                    points[b] += 0.5
            idx = sorted(range(n), key=lambda i: (-points[i], i))
            return QueryResult(order=[ranking[i].docid for i in idx],
                               scores={ranking[i].docid: points[i] for i in idx}, records=records)

        if self.variant == "sliding":
            for i in range(min(self.k, n)):
                for j in range(n - 1, i, -1):
                    meta = {"pass": i + 1, "start": j - 1, "end": j + 1}
                    verdict = yield from self.compare(qid, query, ranking[j], ranking[j - 1], meta, records)
                    if verdict > 0:
                        ranking[j - 1], ranking[j] = ranking[j], ranking[j - 1]
            return QueryResult(order=[c.docid for c in ranking], records=records)

        # sorting: binary max-heap, top-k extracted (llm-rankers heapSort with a pairwise __gt__)
        arr = ranking

        def greater(a: int, b: int, step: str):
            meta = {"pass": 1, "step": step, "start": min(a, b), "end": max(a, b) + 1}
            return (yield from self.compare(qid, query, arr[a], arr[b], meta, records)) > 0

        def heapify(size: int, i: int, step: str):
            while True:
                largest, left, right = i, 2 * i + 1, 2 * i + 2
                if left < size and (yield from greater(left, i, step)):
                    largest = left
                if right < size and (yield from greater(right, largest, step)):
                    largest = right
                if largest == i:
                    return
                arr[i], arr[largest] = arr[largest], arr[i]
                i = largest

        order = yield from heap_top_k(arr, self.k, heapify, n // 2)
        return QueryResult(order=order, records=records)
