"""FIRST (Reddy et al. 2024; castorini/rank_llm ``FirstMistral``, gangiswag/llm-reranker): single-token listwise.

Instead of generating a whole permutation, FIRST reads the log-probabilities of the FIRST generated identifier
and ranks the window's passages by them. Identifiers are letters ``A, B, C, ...`` (rank_llm ``--use-alpha``,
template ``rank_zephyr_alpha_template.yaml``), so a window holds at most 26 passages.

Prompt (rank_llm's alpha template, byte for byte):
- **system**: ``You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the
  query`` (no final period, as in the template);
- **user**: ``I will provide you with {num} passages, each indicated by an alphabetical identifier []. Rank the
  passages based on their relevance to the search query: {query}.\\n`` then ``[A] {passage}\\n`` per passage,
  then ``Search Query: {query}.\\nRank the {num} passages above ... e.g., [B] > [A], Answer concisely and
  directly and only respond with the ranking results, do not say any word or explain.``;
- the assistant turn is started with ``[`` and continued (``continue_final``) for exactly ONE token with the top
  ``logprobs`` alternatives (default 20, vLLM's default cap; rank_llm asks 30 of a 2-token generation and reads
  position 1, i.e. the token after ``[``; gangiswag appends ``[`` to the prompt and reads position 0, as here).

Ranking: letters of this window found among the top-``logprobs`` tokens (whitespace stripped, best logprob per
letter) sorted by logprob; letters not among them are appended in window order (repaired, counted); no letter
at all (or no logprobs) -> the window keeps its order (failed). ``[n]`` inside passages is rewritten to ``(n)``.
"""

from __future__ import annotations

import json
import string
from typing import Generator

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import (FAILED, OK, REPAIRED, Call, Candidate, Method, Option, QueryResult,
                                           RerankConfig)
from rankk_cli.rerank.records import new_record
from rankk_cli.rerank.text import replace_number
from rankk_cli.rerank.windows import schedule

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
LETTERS = string.ascii_uppercase



def user_message(query: str, passages: list[str]) -> str:
    query = replace_number(query)
    num = len(passages)
    text = (f"I will provide you with {num} passages, each indicated by an alphabetical identifier []. "
            f"Rank the passages based on their relevance to the search query: {query}.\n")
    for i, passage in enumerate(passages):
        text += f"[{LETTERS[i]}] {replace_number(passage.strip())}\n"
    text += (f"Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
             "All the passages should be included and listed using identifiers, in descending order of relevance. "
             "The output format should be [] > [], e.g., [B] > [A], Answer concisely and directly and only respond "
             "with the ranking results, do not say any word or explain.")
    return text


def parse_logprobs(completion: Completion, n: int) -> dict:
    """Window order (0-based) from the first position's top logprobs; outcome, repairs, letter logprobs."""
    if completion.error or not completion.logprobs:
        why = f"engine error: {completion.error}" if completion.error else "no logprobs returned"
        return {"order": list(range(n)), "outcome": FAILED, "repairs": [why + ": window keeps its order"],
                "scores": {}}
    best: dict[int, float] = {}
    for token, logprob in completion.logprobs[0].items():
        t = token.strip()
        if len(t) == 1 and t in LETTERS[:n]:
            i = LETTERS.index(t)
            if i not in best or logprob > best[i]:
                best[i] = logprob
    if not best:
        return {"order": list(range(n)), "outcome": FAILED, "scores": {},
                "repairs": ["no identifier among the top logprobs: window keeps its order"]}
    ranked = sorted(best, key=lambda i: (-best[i], i))
    missing = [i for i in range(n) if i not in best]
    repairs = [f"{len(missing)} identifier(s) not among the top logprobs appended"] if missing else []
    return {"order": ranked + missing, "outcome": REPAIRED if missing else OK, "repairs": repairs,
            "scores": {LETTERS[i]: best[i] for i in ranked}}


class First(Method):
    name = "first"
    kind = "listwise"
    default_temperature = 0.0
    default_max_tokens = 1
    options = (Option("logprobs", int, 20, "top log-probabilities read at the first generated position", minimum=1),)

    def __init__(self, config: RerankConfig, **opts):
        super().__init__(config, **opts)
        if config.window > len(LETTERS):
            raise RankkError(f"first: identifiers are letters A-Z, so --window must be at most 26, "
                             f"found {config.window}")

    def request(self, query: str, passages: list[str]) -> Request:
        return Request(messages=(("system", SYSTEM), ("user", user_message(query, passages)), ("assistant", "[")),
                       continue_final=True, max_tokens=1, temperature=0.0, logprobs=self.logprobs)

    def planned_windows(self, n: int) -> int:
        return len(schedule(n, self.config.window, self.config.stride, self.config.passes))

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        cfg = self.config
        order = list(candidates)
        records = []
        for w in schedule(len(order), cfg.window, cfg.stride, cfg.passes):
            win = order[w.start:w.end]
            rec = new_record(w.pass_, w.start, w.end, [c.docid for c in win])
            records.append(rec)
            if len(win) < 2:
                rec.update(repairs="single candidate: nothing to rank, no call", parsed=[1] if win else [])
                continue
            call = Call(self.request(query, [c.text for c in win]),
                        {"qid": qid, "pass": w.pass_, "start": w.start, "end": w.end, "window": True})
            (done,) = yield [call]
            rec["calls"].append(call)
            parsed = parse_logprobs(done, len(win))
            order[w.start:w.end] = [win[i] for i in parsed["order"]]
            rec.update(raw=done.text, outcome=parsed["outcome"], parsed=[i + 1 for i in parsed["order"]],
                       repairs="; ".join(parsed["repairs"]), logprobs=json.dumps(parsed["scores"]))
        return QueryResult(order=[c.docid for c in order], records=records)
