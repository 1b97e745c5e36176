"""Shared listwise machinery: parsing ``[3] > [1] = [2]`` answers with stated repairs, and the sliding-window driver.

A listwise method subclasses ``ListwiseMethod`` and supplies ``build_request(query, texts)`` (the prompt) and,
if it reasons, ``reasoning = True`` (a cut-off or answer-less reply is then *forced*: a follow-up request
continues the assistant turn with the reasoning so far + ``"\\n</think>\\n\\n"`` under a small token budget).
``extract_answer(text)`` picks the part of the reply holding the ranking (default: after the last ``</think>``,
the last line that holds a ranking chain -- two or more distinct ids joined by ``>``, ``=`` or ``,``, never a
copied passage that starts with ``[1]``); override it for other formats (e.g. ``<answer>...</answer>``).

Repair rules (always recorded in the window's ``repairs`` field, never silent):
- exotic digits (full-width, Arabic-Indic, ...) and full-width brackets/operators are mapped to ASCII;
- ids outside 1..n are dropped; an id seen again is dropped (its first place is kept);
- ids never mentioned are appended after the ranked ones, in input order.
A window with no usable id at all keeps its input order (outcome ``failed``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import (FAILED, FORCED, OK, REPAIRED, Call, Candidate, Method, QueryResult)
from rankk_cli.rerank.records import new_record
from rankk_cli.rerank.text import THINK_END, split_reasoning, to_ascii_digits  # noqa: F401 - re-exported
from rankk_cli.rerank.windows import schedule

# ----------------------------------------------------------------------------------------------------------
# text helpers


_BRACKETED = re.compile(r"\[\s*(\d+)\s*\]")
# A ranking is a CHAIN: two or more ids joined by ">", "=" or ",". Bracketed ids may be joined by any of the
# three ("[2] > [1]", "[2], [1]"); bare numbers only by ">" or "=" ("2 > 1": "2, 3" is ordinary prose).
_ID_BR = r"\[\s*\d+\s*\]"
# (a reply cut off inside its last id, "[4] > [2] > [1", keeps that id)
_CHAIN_BRACKETED = re.compile(_ID_BR + r"(?:\s*[>=,]\s*" + _ID_BR + r")+(?:\s*[>=,]\s*\[\s*\d+\s*$)?")
_CHAIN_BARE = re.compile(r"(?<![\w.])\[?\s*\d+\s*\]?(?:\s*[>=]\s*\[?\s*\d+\s*\]?)+")


def ranking_chains(text: str) -> list[str]:
    """The ranking chains in ``text`` (see ``ranking_line``), in order of appearance."""
    text = to_ascii_digits(text)
    spans = [(m.start(), m.end()) for m in _CHAIN_BRACKETED.finditer(text)]
    for m in _CHAIN_BARE.finditer(text):
        if not any(a <= m.start() < b or m.start() <= a < m.end() for a, b in spans):
            spans.append((m.start(), m.end()))
    chains = []
    for a, b in sorted(spans):
        chain = text[a:b]
        if len(set(int(i) for i in re.findall(r"\d+", chain))) >= 2:  # "[1] = [1]" is no ranking
            chains.append(chain.strip())
    return chains


def ranking_line(answer: str) -> str | None:
    """The ranking in ``answer``: the longest chain of the LAST line that holds one, else None.

    A chain is two or more distinct ids joined by ``>``, ``=`` or ``,`` (``[3] > [1] = [2]``, ``[3], [1]``,
    ``3 > 1``). A line that merely starts with an id -- a passage copied back as ``[1] Fleas have...`` -- holds
    no chain and is not a ranking (small models echo their input; reading such a line as "1 first, the rest
    appended" would label an echo as a repaired ranking). Commas are returned as ``>`` (order, not ties).
    """
    for line in reversed(to_ascii_digits(answer).strip().split("\n")):
        chains = ranking_chains(line)
        if chains:
            best = max(chains, key=lambda c: len(re.findall(r"\d+", c)))
            return best.replace(",", ">")
    return None


@dataclass
class Parsed:
    """A parsed window answer: ``groups`` of 1-based ids, best first (ids in one group are tied)."""

    groups: list[list[int]] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    found: bool = False  # at least one valid id was read

    @property
    def order(self) -> list[int]:
        return [i for g in self.groups for i in g]

    @property
    def repaired(self) -> bool:
        return bool(self.repairs)


def _ids_in(token: str) -> list[int]:
    ids = [int(m) for m in _BRACKETED.findall(token)]
    if ids:
        return ids
    bare = re.findall(r"\d+", token)  # an unbracketed token counts only when it holds exactly one number
    return [int(bare[0])] if len(bare) == 1 else []


def parse_ranking(line: str | None, n: int) -> Parsed:
    """Parse ``[3] > [1] = [2] > ...`` over ids 1..n: ``>`` separates ranks, ``=`` ties; repairs stated."""
    result = Parsed()
    seen: set[int] = set()
    dropped_range: list[int] = []
    dropped_dup: list[int] = []
    if line:
        line = to_ascii_digits(line)
        for part in line.split(">"):
            group = []
            for token in part.split("="):
                for i in _ids_in(token):
                    if not 1 <= i <= n:
                        dropped_range.append(i)
                    elif i in seen:
                        dropped_dup.append(i)
                    else:
                        seen.add(i)
                        group.append(i)
            if group:
                result.groups.append(group)
    result.found = bool(seen)
    if dropped_range:
        result.repairs.append(f"dropped out-of-range {','.join(map(str, dropped_range))}")
    if dropped_dup:
        result.repairs.append(f"dropped repeated {','.join(map(str, dropped_dup))} (first place kept)")
    missing = [i for i in range(1, n + 1) if i not in seen]
    if missing and result.found:
        result.repairs.append(f"appended missing {','.join(map(str, missing))} in input order")
        result.groups.extend([i] for i in missing)
    elif not result.found:
        result.groups = [[i] for i in range(1, n + 1)]
    return result


def group_scores(groups: list[list[int]]) -> dict[int, float]:
    """1-based id -> score: tied ids share the score of their group (1 / (group index + 1), as Rank-K)."""
    return {i: 1.0 / (g + 1) for g, ids in enumerate(groups) for i in ids}


# ----------------------------------------------------------------------------------------------------------
# the sliding-window driver


class ListwiseMethod(Method):
    """Sliding windows over the candidate list; one call per window (plus a forced follow-up when needed)."""

    kind = "listwise"
    reasoning: bool = False  # True: cut-off / answer-less replies are forced to answer after </think>

    # ---- what subclasses supply
    def build_request(self, query: str, texts: list[str]) -> Request:
        raise NotImplementedError

    def extract_answer(self, text: str) -> tuple[str, str | None]:
        """(reasoning, ranking text or None) from a reply."""
        reasoning, answer, _closed = split_reasoning(text)
        return reasoning, ranking_line(answer)

    def force_request(self, request: Request, text: str) -> Request:
        """Follow-up for a cut-off reasoning reply: continue the assistant turn after closing the thinking."""
        reasoning = text.split(THINK_END)[0].rstrip()
        messages = tuple(request.messages or ()) + (("assistant", reasoning + "\n" + THINK_END + "\n\n"),)
        return Request(messages=messages, max_tokens=self.config.force_max_tokens, temperature=request.temperature,
                       stop=request.stop, continue_final=True)

    # ---- the driver
    def planned_windows(self, n: int) -> int:
        return len(schedule(n, self.config.window, self.config.stride, self.config.passes))

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        order = list(range(len(candidates)))  # indices into candidates, current ranking
        records = []
        for w in schedule(len(candidates), self.config.window, self.config.stride, self.config.passes):
            idx = order[w.start:w.end]
            rec = new_record(w.pass_, w.start, w.end, [candidates[i].docid for i in idx])
            records.append(rec)
            if len(idx) < 2:
                rec["repairs"] = "single candidate: nothing to rank, no call"
                rec["parsed"] = [1] if idx else []
                continue
            request = self.build_request(query, [candidates[i].text for i in idx])
            call = Call(request, {"qid": qid, "pass": w.pass_, "start": w.start, "end": w.end, "window": True})
            (completion,) = yield [call]
            rec["calls"].append(call)
            rec["raw"] = completion.text
            parsed, outcome, notes = None, OK, []
            if completion.finish_reason == "error":
                outcome = FAILED
                notes.append(f"engine error: {completion.error or 'unknown'}; input order kept")
            else:
                reasoning, line = self.extract_answer(completion.text)
                rec["reasoning"] = reasoning
                if self.reasoning and (line is None or (completion.cut_off and THINK_END not in completion.text)):
                    why = "reply cut off at max tokens" if completion.cut_off else "no ranking in the reply"
                    forced = Call(self.force_request(request, completion.text),
                                  {"qid": qid, "pass": w.pass_, "start": w.start, "end": w.end, "forced": True})
                    (fc,) = yield [forced]
                    rec["calls"].append(forced)
                    rec["forced_raw"] = fc.text
                    if not rec["reasoning"]:
                        rec["reasoning"] = completion.text.split(THINK_END)[0].strip()
                    if fc.finish_reason == "error":
                        outcome = FAILED
                        notes.append(f"{why}; forced answer failed: engine error: {fc.error or 'unknown'}")
                    else:
                        _r, fline = self.extract_answer(fc.text)
                        parsed = parse_ranking(fline, len(idx))
                        if parsed.found:
                            outcome = FORCED
                            notes.append(f"{why}; forced an answer after </think> "
                                         f"(max {self.config.force_max_tokens} tokens)")
                        else:
                            outcome = FAILED
                            notes.append(f"{why}; forced answer had no ranking either; input order kept")
                else:
                    parsed = parse_ranking(line, len(idx))
                    if not parsed.found:
                        outcome = FAILED
                        notes.append(("reply cut off at max tokens, " if completion.cut_off else "")
                                     + "no ranking in the reply; input order kept")
                    elif parsed.repaired or completion.cut_off:
                        outcome = REPAIRED
                        if completion.cut_off:
                            notes.append("reply cut off at max tokens")
            if parsed is not None and parsed.found:
                notes.extend(parsed.repairs)
                rec["parsed"] = parsed.order
                rec["ties"] = [g for g in parsed.groups]
                order[w.start:w.end] = [idx[i - 1] for i in parsed.order]
            else:
                rec["parsed"] = list(range(1, len(idx) + 1))
            rec["outcome"] = outcome
            rec["repairs"] = "; ".join(notes)
        return QueryResult([candidates[i].docid for i in order], None, records)
