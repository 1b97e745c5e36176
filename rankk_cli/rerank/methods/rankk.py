"""Rank-K (hltcoe/rank-k): listwise reasoning reranker.

The prompt is Rank-K's, byte for byte (``rerank.py``'s ``rank_k_prompt``; passages joined as ``utils.py``'s
``combine_passages``: ``"[i] text"`` joined by blank lines), sent as ONE user message with no system message.
The model reasons, closes ``</think>`` and writes ``[3] > [2] > [4] = [1] > [5]``; we parse the last line of the
text after ``</think>`` that holds a ranking, ties included (tied ids share a score in the window record).

Differences from the original, on purpose and recorded per window: repeated ids are dropped and parsing goes on
(the original stops at the first repeat); a reply cut off by max tokens is forced to answer (the original keeps
the window's order silently); the top window is clamped to a full window (see ``windows.py``).
"""

from __future__ import annotations

from rankk_cli.rerank.engines.base import Request
from rankk_cli.rerank.methods.listwise import ListwiseMethod

RANK_K_PROMPT = (
    "\n"
    "Determine a ranking of the passages based on how relevant they are to the query. \n"
    "If the query is a question, how relevant a passage is depends on how well it answers the question. \n"
    "If not, try analyze the intent of the query and assess how well each passage satisfy the intent. \n"
    "The query may have typos and passages may contain contradicting information. \n"
    "However, we do not get into fact-checking. We just rank the passages based on they relevancy to the query. \n"
    "\n"
    "Sort them from the most relevant to the least. \n"
    "Answer with the passage number using a format of `[3] > [2] > [4] = [1] > [5]`. \n"
    "Ties are acceptable if they are equally relevant. \n"
    "I need you to be accurate but overthinking it is unnecessary.\n"
    "Output only the ordering without any other text.\n"
    "\n"
    "Query: {query}\n"
    "\n"
    "{docs}\n"
)


def combine_passages(texts: list[str]) -> str:
    return "\n\n".join(f"[{i}] {text}" for i, text in enumerate(texts, start=1))


def render(query: str, texts: list[str]) -> str:
    # str.replace, not str.format: braces in queries or passages must come through untouched
    return RANK_K_PROMPT.replace("{query}", query, 1).replace("{docs}", combine_passages(texts), 1)


class RankK(ListwiseMethod):
    name = "rankk"
    reasoning = True
    default_temperature = 0.7  # rerank.py's default
    default_max_tokens = 4000  # rerank.py's default (its README example uses 8000)

    def build_request(self, query: str, texts: list[str]) -> Request:
        return Request(messages=(("user", render(query, texts)),))
