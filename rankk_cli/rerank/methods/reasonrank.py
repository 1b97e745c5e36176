"""ReasonRank (8421BCD/ReasonRank): listwise reasoning reranker, ``<think>...</think> <answer>[3] > [1] > ...</answer>``.

Format (the reference's ``listwise_prompt_r1.toml`` + ``utils.py``, prompt mode ``rank_GPT_reasoning``):

- a **system** message asking for the ``<think>`` / ``<answer>`` tags (``SYSTEM`` below, byte for byte);
- one **user** message: ``I will provide you with {num} passages, each indicated by a numerical identifier [].
  Rank the passages based on their relevance to the search query: {query}.\\n`` + ``\\n`` (the reference joins
  prefix and body with one more newline), then ``[i] {passage}\\n`` per passage, then ``Search Query:
  {query}.\\nRank the {num} passages above ... e.g., [2] > [1].`` (no trailing newline);
- ``[n]`` inside the query and the passages is rewritten to ``(n)`` so it cannot pass for an identifier;
  passages are stripped. (The reference also runs ``ftfy.fix_text`` over the prompt; rankk passes text as given.)
- sampling as the reference: temperature 0, max_tokens 3072 + 100 (reasoning budget + answer).

Parsing, the reference's repair: the ``<answer>`` span (the text after the last ``<answer>``, up to
``</answer>``), dedupe, drop out-of-range ids, append the missing ones in window order (each repair is
recorded). The span must hold a ranking: a chain of ids (``[2] > [1]``) or ids and separators only (the
reference's "digits only" reading, which rankk does not apply to prose: "3000 psi" is not an id). Unlike the reference, a reply with no ``<answer>`` is NOT parsed from the digits of its thinking:
it is *forced* like rankk -- the assistant turn is continued after ``reasoning + "\\n</think>\\n<answer>"`` with
``RerankConfig.force_max_tokens`` tokens -- and if that gives no ranking either, the window keeps its order
(``failed``). Windows: CORE's sliding schedule (bottom-up, top window clamped), ``passes`` times.
"""

from __future__ import annotations

import re

from rankk_cli.rerank.engines.base import Request
from rankk_cli.rerank.methods.listwise import ListwiseMethod, ranking_line
from rankk_cli.rerank.text import THINK_END, replace_number, split_reasoning, to_ascii_digits

SYSTEM = (
    "You are RankLLM, an intelligent assistant that can rank passages based on their relevance to the query. "
    "Given a query and a passage list, you first thinks about the reasoning process in the mind and then provides "
    "the answer (i.e., the reranked passage list). The reasoning process and answer are enclosed within <think> "
    "</think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> "
    "answer here </answer>."
)
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"



def user_message(query: str, passages: list[str]) -> str:
    query = replace_number(query).strip()
    num = len(passages)
    text = (f"I will provide you with {num} passages, each indicated by a numerical identifier []. "
            f"Rank the passages based on their relevance to the search query: {query}.\n\n")
    for i, passage in enumerate(passages, start=1):
        text += f"[{i}] {replace_number(passage.strip())}\n"
    text += (f"Search Query: {query}.\nRank the {num} passages above based on their relevance to the search query. "
             "All the passages should be included and listed using identifiers, in descending order of relevance. "
             "The format of the answer should be [] > [], e.g., [2] > [1].")
    return text


def answer_span(text: str) -> str | None:
    """The ``<answer>`` span of a reply (case-insensitive); a forced continuation has only the closing tag."""
    low = text.lower()
    if ANSWER_OPEN in low:
        span = text[low.rindex(ANSWER_OPEN) + len(ANSWER_OPEN):]
        end = span.lower().find(ANSWER_CLOSE)
        return span if end < 0 else span[:end]
    if ANSWER_CLOSE in low and THINK_END not in low:  # the forced continuation of "...</think>\n<answer>"
        return text[:low.index(ANSWER_CLOSE)]
    return None


_IDS_ONLY = re.compile(r"[\s\[\]\d>=,;.]*")


def digits_line(span: str | None) -> str | None:
    """The ranking in an ``<answer>`` span as ``[a] > [b] > ...``, or None when the span holds none.

    A ranking chain (two or more distinct ids joined by ``>``/``=``/``,``, see ``listwise.ranking_line``) is
    read as it is. ReasonRank's own "digits only" reading (every run of digits an id) is kept only for a span
    that holds nothing but ids and separators (``[3] [1] [2]``, one id per line): applied to prose or a copied
    passage it would turn "3000 psi" into ids."""
    if span is None:
        return None
    span = to_ascii_digits(span)
    line = ranking_line(span)
    if line:
        return line
    ids = re.findall(r"\d+", span)
    if _IDS_ONLY.fullmatch(span) and ids:  # "<answer>[3]</answer>": one id, the rest appended (a stated repair)
        return " > ".join(f"[{i}]" for i in ids)
    return None


class ReasonRank(ListwiseMethod):
    name = "reasonrank"
    reasoning = True
    default_temperature = 0.0
    default_max_tokens = 3072 + 100

    def build_request(self, query: str, texts: list[str]) -> Request:
        return Request(messages=(("system", SYSTEM), ("user", user_message(query, texts))))

    def extract_answer(self, text: str) -> tuple[str, str | None]:
        reasoning, _answer, _closed = split_reasoning(text)
        if not reasoning and ANSWER_OPEN in text.lower():
            reasoning = text[:text.lower().rindex(ANSWER_OPEN)].replace("<think>", "").strip()
        return reasoning, digits_line(answer_span(text))

    def force_request(self, request: Request, text: str) -> Request:
        reasoning = text.split(THINK_END)[0].rstrip()
        messages = tuple(request.messages or ()) + (("assistant", reasoning + "\n" + THINK_END + "\n" + ANSWER_OPEN),)
        return Request(messages=messages, max_tokens=self.config.force_max_tokens, temperature=request.temperature,
                       stop=request.stop, continue_final=True)
