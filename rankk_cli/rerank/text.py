"""Text helpers every method family shares: reasoning split at ``</think>``, digit normalisation, and the
``[n]`` -> ``(n)`` rewrite that keeps passage text from forging identifiers (RankLLM's ``replace_number``)."""

from __future__ import annotations

import re
import unicodedata

THINK_END = "</think>"
_BRACKETED_NUMBER = re.compile(r"\[(\d+)\]")
_UNICODE_DIGIT = re.compile(r"(?![0-9])\d")  # a str pattern's \d is any Unicode decimal digit (category Nd)


def replace_number(text: str) -> str:
    """``[12]`` -> ``(12)``: bracketed numbers in a query or passage must not look like identifiers."""
    return _BRACKETED_NUMBER.sub(r"(\1)", text)


def to_ascii_digits(text: str) -> str:
    """Map full-width forms (NFKC: ``１［］＞＝``) and any Unicode decimal digit to ASCII."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return _UNICODE_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group())), text)


def split_reasoning(text: str) -> tuple[str, str, bool]:
    """(reasoning, answer, closed): text before/after the LAST ``</think>``; a leading ``<think>`` is dropped.

    Without ``</think>`` the whole text is the answer and the reasoning is empty (closed=False).
    """
    if THINK_END in text:
        reasoning, _, answer = text.rpartition(THINK_END)
        reasoning = reasoning.strip()
        if reasoning.startswith("<think>"):
            reasoning = reasoning[len("<think>"):].lstrip()
        return reasoning, answer, True
    return "", text, False
