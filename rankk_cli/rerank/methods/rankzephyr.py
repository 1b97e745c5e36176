"""RankZephyr / RankGPT listwise format (castorini/rank_llm's RankZephyr prompt): non-reasoning baseline.

The layout is RankLLM's older one, with an empty line after the prefix; rank-llm 0.25.7's
``rank_zephyr_template.yaml`` has none, and it also runs ftfy over passage text (``Â°F`` -> ``°F``), which rankk
does not (measured side by side in ``benchmarks/rerank_vs_rankllm.py``, which prints both differences).

Messages: the RankLLM system message, then one user message:

    I will provide you with {num} passages, each indicated by a numerical identifier []. Rank the passages based
    on their relevance to the search query: {query}.\\n
    \\n
    [1] passage\\n  ...  [num] passage\\n
    Search Query: {query}.\\nRank the {num} passages above ... e.g., [2] > [1], Answer concisely ... explain.

As in RankLLM: ``[n]`` inside the query/passages is rewritten ``(n)`` (so passage text cannot forge ids), and
each passage is cut to ``300 * 20 / num`` whitespace-separated words (RankLLM's ``max_length``) before any
token truncation (``--truncate``). The reply is the ranking itself (no thinking); a reply cut off by the token
budget is parsed as far as it goes and repaired (missing ids appended), never forced.
"""

from __future__ import annotations

from rankk_cli.rerank.engines.base import Request
from rankk_cli.rerank.methods.listwise import ListwiseMethod
from rankk_cli.rerank.text import replace_number

SYSTEM = "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to the query"
PREFIX = ("I will provide you with {num} passages, each indicated by a numerical identifier []. "
          "Rank the passages based on their relevance to the search query: {query}.\n")
SUFFIX = ("Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
          "All the passages should be included and listed using identifiers, in descending order of relevance. "
          "The output format should be [] > [], e.g., [2] > [1], Answer concisely and directly and only respond "
          "with the ranking results, do not say any word or explain.")




def render_user(query: str, texts: list[str]) -> str:
    num = len(texts)
    query = replace_number(query)
    max_words = int(300 * (20 / num))
    body = "".join(f"[{i}] {replace_number(' '.join(t.split()[:max_words]))}\n"
                   for i, t in enumerate(texts, start=1))
    fill = lambda s: s.replace("{num}", str(num)).replace("{query}", query)  # noqa: E731
    return fill(PREFIX) + "\n" + body + fill(SUFFIX)


class RankZephyr(ListwiseMethod):
    name = "rankzephyr"
    reasoning = False
    default_temperature = 0.0
    default_max_tokens = 200  # about the length of "[1] > [2] > ... > [20]" in most tokenizers, with room

    def build_request(self, query: str, texts: list[str]) -> Request:
        return Request(messages=(("system", SYSTEM), ("user", render_user(query, texts))))
