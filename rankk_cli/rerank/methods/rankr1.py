"""Rank-R1 (ielab/llm-rankers, ``Rank-R1/``): setwise reasoning reranker with a heap.

Format (``Rank-R1/prompts/prompt_setwise-R1.toml`` and ``run_setwise.py``):

- **system**: the R1 "A conversation between User and Assistant ..." prompt (``SYSTEM`` below, byte for byte);
- **user**: ``Given the query: "{query}", which of the following documents is most relevant?\\n{docs}\\nAfter
  completing the reasoning process, ... <answer>[3]</answer>.`` with ``{docs}`` = ``[i] {text}`` joined by ``\\n``;
- the documents of one comparison are shown in a random order (the reference shuffles them with
  ``random.sample`` even with one permutation); rankk seeds that shuffle per query (option ``seed``, default 929
  as the reference) so reruns and the call cache are deterministic; ``shuffle=false`` turns it off;
- answer: ``<think>.*?</think>\\s*<answer>(.*?)</answer>`` on the lower-cased reply, which must be exactly one
  shown label ``[j]``. A label found only leniently (no ``<think>`` block, missing brackets, spaces, a leading
  ``Document``; the span must hold the label alone -- a passage copied back after ``[2]`` is no answer) is
  *repaired*; no label at all is *failed* and, as in the reference, the parent (first document) wins.
  A reply cut off by max_tokens is forced like rankk (``</think>`` appended, answer continued).

Heap (``SetwiseLlmRanker.heapSort``): a ``num_child``-ary max-heap over the candidate list. ``heapify(i)`` shows
the node and its up to ``num_child`` children in one prompt (``num_child + 1`` documents: 20 with the
published ``--num_child 19``), swaps the winner up and recurses into the swapped child. Build: ``i`` from
``n // num_child`` down to 0; then ``k`` extractions (published ``--k 10``). Output: the ``k`` extracted
documents, then the others in first-stage order. Each comparison is one engine call; the scheduler batches the
calls of all queries per round.
"""

from __future__ import annotations

import random
import re
import zlib
from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import (FAILED, FORCED, OK, REPAIRED, Call, Candidate, Method, Option,
                                           QueryResult, heap_top_k)
from rankk_cli.rerank.methods.reasonrank import ANSWER_OPEN, answer_span
from rankk_cli.rerank.records import new_record
from rankk_cli.rerank.text import THINK_END, split_reasoning, to_ascii_digits

SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)

USER = (
    'Given the query: "{query}", which of the following documents is most relevant?\n{docs}\nAfter completing the '
    "reasoning process, please provide only the label of the most relevant document to the query, enclosed in "
    "square brackets, within the answer tags. For example, if the third document is the most relevant, the answer "
    "should be: <think> reasoning process here </think> <answer>[3]</answer>."
)

PATTERN = re.compile(r"<think>.*?</think>\s*<answer>(.*?)</answer>", re.DOTALL)
# a lenient answer is the label alone (``3``, ``[3]``, ``Document 3.``), never a passage copied back after its
# label (``[2] Flea Pupa. The flea life cycle...``, what SmolLM2 writes when forced): that is no answer
LABEL_ONLY = re.compile(r"\s*(?:(?:document|doc|passage)\s*)?\[?\s*(\d+)\s*\]?\s*\.?\s*", re.IGNORECASE)


def user_message(query: str, passages: list[str]) -> str:
    docs = "\n".join(f"[{i + 1}] {text}" for i, text in enumerate(passages))
    return USER.format(query=query, docs=docs)


def parse_choice(text: str, n: int) -> tuple[int | None, str]:
    """(0-based index of the chosen document among ``n`` shown or None, repair note); "" note = exact format."""
    match = PATTERN.search(text.lower())
    if match and match.group(1).strip() in {f"[{i}]" for i in range(1, n + 1)}:
        return int(match.group(1).strip()[1:-1]) - 1, ""
    span = answer_span(text)
    if span is None:
        return None, "no <answer> span"
    label = LABEL_ONLY.fullmatch(to_ascii_digits(span))
    if label and 1 <= int(label.group(1)) <= n:
        return int(label.group(1)) - 1, f"label read leniently from {span.strip()[:40]!r}"
    return None, f"no single valid label in {span.strip()[:40]!r}"


def reasoning_of(text: str) -> str:
    reasoning, _a, closed = split_reasoning(text)
    if closed:
        return reasoning
    low = text.lower()
    head = text[:low.rindex(ANSWER_OPEN)] if ANSWER_OPEN in low else text
    return head.replace("<think>", "").strip()


class RankR1(Method):
    name = "rankr1"
    kind = "setwise"
    ignores = ("--window", "--stride", "--passes")  # no sliding windows (warned when given)
    default_temperature = 0.0
    default_max_tokens = 2048  # run_setwise.py's SamplingParams
    options = (
        Option("num_child", int, 19, "children per heap node: num_child + 1 documents per prompt", minimum=1),
        Option("k", int, 10, "documents extracted from the heap (the reranked top k)", minimum=1),
        Option("shuffle", bool, True, "show each comparison's documents in a seeded random order (as the reference)"),
        Option("seed", int, 929, "seed of that shuffle (per query)"),
    )

    def build_request(self, query: str, texts: list[str]) -> Request:
        return Request(messages=(("system", SYSTEM), ("user", user_message(query, texts))))

    def force_request(self, request: Request, text: str) -> Request:
        reasoning = text.split(THINK_END)[0].rstrip()
        messages = tuple(request.messages or ()) + (("assistant", reasoning + "\n" + THINK_END + "\n" + ANSWER_OPEN),)
        return Request(messages=messages, max_tokens=self.config.force_max_tokens, temperature=request.temperature,
                       continue_final=True)

    def planned_windows(self, n: int) -> None:
        return None  # data dependent: how far each heapify sinks depends on the answers

    def compare(self, qid: str, query: str, docs: list[Candidate], meta: dict, records: list[dict]):
        """One setwise comparison (plus a forced follow-up when cut off); returns the chosen index or None."""
        rec = new_record(meta["pass"], meta["start"], meta["end"], [d.docid for d in docs])
        rec["step"] = meta["step"]
        records.append(rec)
        request = self.build_request(query, [d.text for d in docs])
        call = Call(request, {"qid": qid, **meta, "window": True})
        (done,) = yield [call]
        rec["calls"].append(call)
        rec["raw"] = done.text
        rec["reasoning"] = reasoning_of(done.text)
        if done.finish_reason == "error":
            rec.update(outcome=FAILED, repairs=f"engine error: {done.error or 'unknown'}; the parent is kept")
            return None
        best, note = parse_choice(done.text, len(docs))
        if best is None and ANSWER_OPEN not in done.text.lower():
            why = "reply cut off at max tokens" if done.cut_off else "no answer in the reply"
            forced = Call(self.force_request(request, done.text), {"qid": qid, **meta, "forced": True})
            (fc,) = yield [forced]
            rec["calls"].append(forced)
            rec["forced_raw"] = fc.text
            if fc.finish_reason != "error":
                best, note = parse_choice(ANSWER_OPEN + fc.text, len(docs))
            if best is None:
                rec.update(outcome=FAILED, repairs=f"{why}; forced answer had no valid label either; "
                                                   "the parent is kept")
                return None
            rec.update(outcome=FORCED, parsed=[best + 1],
                       repairs=f"{why}; forced an answer after </think> (max {self.config.force_max_tokens} "
                               "tokens)" + (f"; {note}" if note else ""))
            return best
        if best is None:
            rec.update(outcome=FAILED, repairs=f"{note}; the parent is kept (as the reference)")
            return None
        rec.update(outcome=REPAIRED if note else OK, parsed=[best + 1], repairs=note)
        return best

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        rng = random.Random(zlib.crc32(f"{self.seed}:{qid}".encode()))
        arr = list(candidates)
        records: list[dict] = []
        nc = self.num_child

        def heapify(n: int, i: int, step: str):
            while nc * i + 1 < n:
                inds = [i] + list(range(nc * i + 1, min(nc * (i + 1) + 1, n)))
                shown = rng.sample(range(len(inds)), len(inds)) if self.shuffle else list(range(len(inds)))
                meta = {"pass": 1, "step": step, "start": i, "end": inds[-1] + 1}
                best = yield from self.compare(qid, query, [arr[inds[j]] for j in shown], meta, records)
                largest = inds[shown[best]] if best is not None else i  # failed: the parent wins
                if largest == i:
                    return
                arr[i], arr[largest] = arr[largest], arr[i]
                i = largest

        order = yield from heap_top_k(arr, self.k, heapify, len(arr) // nc)
        return QueryResult(order=order, records=records)
