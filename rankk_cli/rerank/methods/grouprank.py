"""GroupRank (AQ-MedAI Diver-GroupRank; arXiv 2511.11653): groupwise reasoning, 0..10 per document per group.

A group of documents is scored jointly, one integer 0..10 per document, scores comparable across groups.

Reference: the AQ-MedAI/Diver repository, ``Reranker/rerank_groupwise.py`` (``GroupReranker``): its system
prompt and user prompt byte for byte (``group_system_prompt`` / ``group_user_prompt``), passages as
``"[i]. text\\n\\n"`` concatenated with newlines inside a passage collapsed to one space, the reply
``<reason> ... </reason>`` then ``<answer> ```json {"[1]": 5, "[2]": 3} ``` </answer>``, scores divided by 10
and every document's scores averaged over the groups it was shown in (``avg_scores``).

Groups are rankk's windows: ``--window`` documents per group (Diver's ``group_size``, default 10 there) starting
every ``--stride`` positions from the top (its ``interval``) until a group reaches the end of the list (see
``group_slices``), so ``--stride`` < ``--window`` shows a document in several groups; ``--passes`` are Diver's ``repeat_num`` epochs. Every group of every pass is independent, so all
go out in ONE round. Differences, on purpose: pass 1 keeps the first-stage order (Diver shuffles every epoch
with ``random.seed(666)``); passes 2.. shuffle with a seeded RNG (``--method-opt seed=``), so ``--passes 1`` is
deterministic and cached.

Merging (stated and tested): a document's score is the MEAN of ``score / 10`` over the groups that scored it;
ties, and documents no group scored (failed groups), fall back to first-stage order, unscored ones below every
scored one (Diver scores a failed group's documents 0).

Parsing (``parse_scores``): the ``<answer>`` span (else the whole reply), the last ```` ```json ```` block in it
(else the last ``{...}``), read as JSON; keys ``"[n]"``, ``"n"`` or ``n``; values numbers. Repairs, each stated:
JSON that does not load is read leniently as ``"[n]": v`` pairs at the answer object's own level (pairs inside
nested objects are not scores, as for JSON that loads); ids outside 1..n dropped; repeated ids keep
the first score; values outside 0..10 clipped; ids left unscored get no score from this group; the last
```` ```json ```` block that loads as an object holding numbers is read when the very last does not. Scores that only repeat the prompt's own
example (``"[1]": 5, "[2]": 3, "[3]": 8``, or part of it) are no answer: SmolLM2 copies the example verbatim
in every group on DL19 (the same rule as a copied passage is no ranking). Outcomes: ``ok``
-- an ``<answer>`` whose JSON loaded and scores every id 1..n once with an integer 0..10; ``repaired`` -- scores
read with a named repair; ``forced`` -- a cut-off reply or one without any score, continued after
``"</reason>\\n<answer>\\n```json\\n"`` (``--force-max-tokens``) and read from that; ``failed`` -- no score at all.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import (FAILED, FORCED, OK, REPAIRED, Call, Candidate, Method, Option,
                                           QueryResult, scores_below)
from rankk_cli.rerank.records import new_record

SYSTEM = (
    "Your task is to evaluate and rank documents based on how well they help answer the given query. Follow this "
    "evaluation priority:\n1. PRIMARY: Usefulness & Helpfulness - Does the document provide actionable "
    "information, solutions, or direct answers that help address the user's needs?\n2. SECONDARY: Relevance - "
    "Does the document contain information related to the query topic?\n\nEvaluation Process:\n1. First, "
    "identify the user's core intent and what kind of help they need from the query\n2. For each document, "
    "assess:\n   - How directly it addresses the user's intent\n   - What actionable information or answers it "
    "provides\n   - How much it helps solve the user's problem or need\n3. Compare documents against each other to "
    "ensure proper ranking\n4. Assign scores that reflect the relative usefulness ranking\n\nScoring Scale "
    "(0-10):\n- 9-10: Extremely helpful, directly answers the query with actionable information\n- 7-8: Very "
    "helpful, provides substantial useful information for the query\n- 5-6: Moderately helpful, contains some "
    "useful information but incomplete\n- 3-4: Minimally helpful, limited useful information despite topic "
    "relevance\n- 1-2: Barely helpful, mentions related topics but provides little useful information\n- 0: Not "
    "helpful at all, cannot assist with answering the query\n")
USER = (
    "I will provide you {TOPK} documents, each indicated by a numerical identifier []. Score these documents based "
    "on their Usefulness and Relevance to the query.\nQuery:\n{QUERY}\n\nDocuments:\n{PASSAGES}\n\n## Final Output "
    "Format\nYou must structure your response in exactly two parts: provide your brief reasoning process first, "
    "then output final scores in JSON format like below, with document IDs as string keys and integer scores as "
    "values for all {TOPK} documents. \nThe reasoning process and answer are enclosed within <reason> </reason> "
    "and <answer> </answer> tags, respectively. Do NOT output anything outside the specified tags. Follow this "
    "exact format:\n<reason> \n[Analyze each document's usefulness and relevance to the query, explaining your "
    "scoring rationale]\n</reason>\n<answer> \n```json\n{\"[1]\": 5, \"[2]\": 3, \"[3]\": 8}\n``` \n</answer>\n")
FORCE_PREFIX = "\n</reason>\n<answer>\n```json\n"
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_FENCED = re.compile(r"```json\s*([\s\S]+?)\s*(?:```|$)")
_BRACED = re.compile(r"\{[\s\S]*?\}")
_PAIR = re.compile(r"\"?\[?\s*(\d+)\s*\]?\"?\s*:\s*(-?\d+(?:\.\d+)?)")
_REASON = re.compile(r"<reason>(.*?)(?:</reason>|<answer>|$)", re.S | re.I)


def passages_block(texts: list[str]) -> str:
    return "".join(f"[{i}]. {re.sub(chr(10) + '+', ' ', t)}\n\n" for i, t in enumerate(texts, start=1))


def render(query: str, texts: list[str]) -> str:
    # str.replace, not str.format: braces in queries or passages must come through untouched
    topk = str(len(texts))
    return (USER.replace("{TOPK}", topk).replace("{QUERY}", query, 1)
            .replace("{PASSAGES}", passages_block(texts), 1))


# the prompt's own example answer: a reply that only repeats it (SmolLM2 does, in every group) answers nothing
EXAMPLE = {1: 5.0, 2: 3.0, 3: 8.0}


@dataclass
class GroupScores:
    scores: dict[int, float] = field(default_factory=dict)  # 1-based id -> score 0..10
    repairs: list[str] = field(default_factory=list)
    answer_tag: bool = False
    copied: bool = False  # the scores read were the prompt's example, dropped


def _key_id(key) -> int | None:
    m = re.fullmatch(r"\s*\[?\s*(\d+)\s*\]?\s*\.?\s*", str(key))
    return int(m.group(1)) if m else None


def _outer_level(text: str) -> str:
    """``text`` without what lies inside nested braces (depth >= 2): the top level of the answer object."""
    out, depth = [], 0
    for ch in text:
        if ch == "{":
            depth += 1
        if depth <= 1:
            out.append(ch)
        if ch == "}":
            depth = max(0, depth - 1)
    return "".join(out)


def _only_example(pairs: list[tuple[str, str]], n: int) -> bool:
    """The ids 1..n these pairs score (first score per id) are only the prompt's example answer."""
    seen: dict[int, float] = {}
    for key, value in pairs:
        i = _key_id(key)
        if i is not None and 1 <= i <= n and i not in seen:
            seen[i] = float(value)
    return bool(seen) and all(EXAMPLE.get(i) == v for i, v in seen.items())


def parse_scores(text: str, n: int) -> GroupScores:
    """The group's scores from a reply (see the module docstring for the rules and repairs)."""
    out = GroupScores()
    m = _ANSWER.search(text)
    out.answer_tag = m is not None
    span = m.group(1) if m else text
    blocks = _FENCED.findall(span) or _BRACED.findall(span) or [span]
    pairs: list[tuple[object, object]] = []
    for blob in reversed(blocks):  # the last block that loads as a JSON object of numbers (Diver: the last block)
        try:
            loaded = json.loads(blob)
        except ValueError:
            continue
        if isinstance(loaded, dict) and any(isinstance(v, (int, float)) for v in loaded.values()):
            pairs = list(loaded.items())
            if blob is not blocks[-1]:
                out.repairs.append("last JSON block holds no scores: an earlier one read")
            break
    else:
        # read leniently at the answer object's own level, as json.loads would: a pair inside a nested object
        # is not a document's score (SmolLM2 nests the example: {"1": {"2": 3, "3": 8}, "4": {...}})
        everything = _PAIR.findall(blocks[-1])
        pairs = _PAIR.findall(_outer_level(blocks[-1]))
        if len(pairs) < len(everything) and _only_example(everything, n):
            pairs = everything  # the example copied, nested: named as such below
        elif len(pairs) < len(everything):
            out.repairs.append(f"{len(everything) - len(pairs)} pair(s) inside nested objects not read as scores")
        if pairs:
            out.repairs.append("answer is not valid JSON: read as \"[n]\": score pairs")
    dropped, repeated, clipped, non_int = [], [], [], []
    for key, value in pairs:
        i = _key_id(key)
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = None
        if i is None or v is None:
            dropped.append(str(key))
            continue
        if not 1 <= i <= n:
            dropped.append(str(i))
            continue
        if i in out.scores:
            repeated.append(str(i))
            continue
        if not 0 <= v <= 10:
            clipped.append(str(i))
            v = min(10.0, max(0.0, v))
        if v != int(v):
            non_int.append(str(i))
        out.scores[i] = v
    if dropped:
        out.repairs.append(f"dropped {','.join(dropped)} (not an id 1..{n} with a number)")
    if repeated:
        out.repairs.append(f"dropped repeated {','.join(repeated)} (first score kept)")
    if clipped:
        out.repairs.append(f"clipped {','.join(clipped)} to 0..10")
    if non_int:
        out.repairs.append(f"non-integer score for {','.join(non_int)} kept")
    if out.scores and all(EXAMPLE.get(i) == v for i, v in out.scores.items()):
        out.scores, out.copied = {}, True
        out.repairs = ["the scores read are the prompt's example ({\"[1]\": 5, \"[2]\": 3, \"[3]\": 8}) copied"]
        return out
    missing = [i for i in range(1, n + 1) if i not in out.scores]
    if out.scores and missing:
        out.repairs.append(f"{','.join(map(str, missing))} unscored in this group")
    return out


def merge(candidates: list[Candidate], shown: list[tuple[list[str], dict[int, float]]]
          ) -> tuple[list[str], dict[str, float]]:
    """Mean of score/10 per document over the groups that scored it; ties and unscored documents in first-stage
    order, unscored below every scored one (their score: below the lowest, in that order)."""
    sums: dict[str, list[float]] = {}
    for docids, scores in shown:
        for i, s in scores.items():
            sums.setdefault(docids[i - 1], []).append(s)
    position = {c.docid: k for k, c in enumerate(candidates)}
    mean = {d: sum(v) / len(v) / 10.0 for d, v in sums.items()}  # /10 last: equal means compare equal
    order = sorted(mean, key=lambda d: (-mean[d], position[d]))
    unscored = [c.docid for c in candidates if c.docid not in mean]
    return order + unscored, {**mean, **scores_below(mean, unscored)}


def group_slices(n: int, size: int, interval: int) -> list[tuple[int, int]]:
    """Diver's groups ``[i, i + size)`` for i = 0, interval, 2 interval, ..., up to the first group that reaches
    the end of the list (Diver goes on to every i < n: with interval < size its last groups are ever shorter
    tails of the one before, down to one document; here ``--window`` = ``--depth`` is ONE group)."""
    out = []
    for i in range(0, n, interval):
        out.append((i, min(i + size, n)))
        if i + size >= n:
            break
    return out


class GroupRank(Method):
    name = "grouprank"
    kind = "groupwise"
    default_temperature = 0.3  # rerank_groupwise.py's SamplingParams (top_p 0.8 there)
    default_max_tokens = 8000  # idem
    options = (Option("seed", int, 666, "seed of the shuffle of passes 2.. (Diver: random.seed(666))"),)

    def planned_windows(self, n: int) -> int:
        return len(group_slices(n, self.config.window, self.config.stride)) * self.config.passes

    def request(self, query: str, texts: list[str]) -> Request:
        return Request(messages=(("system", SYSTEM), ("user", render(query, texts))))

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        cfg = self.config
        groups = []  # (pass, start, end, docs)
        for p in range(1, cfg.passes + 1):
            docs = list(candidates)
            if p > 1:
                random.Random(f"{self.seed}:{qid}:{p}").shuffle(docs)
            groups += [(p, s, e, docs[s:e]) for s, e in group_slices(len(docs), cfg.window, cfg.stride)]
        records = [new_record(p, s, e, [c.docid for c in g]) for p, s, e, g in groups]
        calls = [Call(self.request(query, [c.text for c in g]),
                      {"qid": qid, "pass": p, "start": s, "end": e, "window": True}) for p, s, e, g in groups]
        completions = (yield calls) if calls else []
        parsed: list[GroupScores | None] = []
        retry = []
        for k, (rec, call, comp) in enumerate(zip(records, calls, completions)):
            rec["calls"].append(call)
            rec["raw"] = comp.text
            m = _REASON.search(comp.text)
            rec["reasoning"] = (m.group(1) if m else comp.text.split("<answer>")[0]).strip()
            if comp.finish_reason == "error":
                parsed.append(None)
                rec["outcome"], rec["repairs"] = FAILED, f"engine error: {comp.error or 'unknown'}; group unscored"
                continue
            gs = parse_scores(comp.text, len(rec["docids"]))
            parsed.append(gs)
            if not gs.scores:
                retry.append(k)
        if retry:
            forced = []
            for k in retry:
                req = calls[k].request
                reason = records[k]["reasoning"] or completions[k].text.strip()
                messages = tuple(req.messages) + (("assistant", "<reason>\n" + reason + FORCE_PREFIX),)
                forced.append(Call(Request(messages=messages, continue_final=True, max_tokens=cfg.force_max_tokens,
                                           temperature=req.temperature),
                                   {"qid": qid, "pass": records[k]["pass"], "start": records[k]["start"],
                                    "end": records[k]["end"], "forced": True}))
            fcomps = yield forced
            for k, call, comp in zip(retry, forced, fcomps):
                rec = records[k]
                rec["calls"].append(call)
                rec["forced_raw"] = comp.text
                first = parsed[k]
                why = ("reply cut off at max tokens" if completions[k].cut_off else
                       "the reply's scores are the prompt's example copied" if first and first.copied else
                       "no scores in the reply")
                gs = None if comp.finish_reason == "error" else parse_scores(FORCE_PREFIX + comp.text,
                                                                              len(rec["docids"]))
                if gs is None or not gs.scores:
                    rec["outcome"] = FAILED
                    either = "the prompt's example copied" if gs and gs.copied else "no scores either"
                    rec["repairs"] = f"{why}; forced answer had {either}; group unscored"
                    parsed[k] = None
                else:
                    rec["outcome"] = FORCED
                    gs.repairs.insert(0, f"{why}; forced the answer after </reason> "
                                         f"(max {cfg.force_max_tokens} tokens)")
                    parsed[k] = gs
        shown = []
        for k, (rec, gs) in enumerate(zip(records, parsed)):
            if gs is None:
                continue
            if not gs.scores:
                rec["outcome"] = FAILED
                rec["repairs"] = "no scores in the reply; group unscored"
                continue
            if rec["outcome"] == OK:
                exact = (gs.answer_tag and not gs.repairs and len(gs.scores) == len(rec["docids"])
                         and not completions[k].cut_off)
                rec["outcome"] = OK if exact else REPAIRED
                if not exact and not gs.repairs:
                    gs.repairs.append("no <answer> tag: scores read from the reply" if not gs.answer_tag
                                      else "reply cut off at max tokens")
            rec["repairs"] = "; ".join(gs.repairs)
            rec["parsed"] = sorted(gs.scores, key=lambda i: (-gs.scores[i], i))
            rec["scores"] = json.dumps({str(i): s for i, s in sorted(gs.scores.items())})
            shown.append((rec["docids"], gs.scores))
        order, scores = merge(candidates, shown)
        return QueryResult(order, scores, records)
