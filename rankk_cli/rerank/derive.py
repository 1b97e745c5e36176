"""Answers at a smaller token budget, derived from a cached completion of the same request at a larger one.

The rule (exact, for the vllm engine):

- the request, the run's sampling, engine and model are the same except the token budget (``max_tokens``): that
  is ``Request.prefix_key``, stored with every cached completion beside its generated token ids and its budget;
- the cached completion had a LARGER budget and kept its token ids (chunks written before the ids were kept are
  never used);
- it ended within the new budget B (n <= B generated tokens): the answer at B is that same completion (its stop
  reason, text, log-probabilities);
- it went past B: the answer at B is its first B tokens, detokenized as vLLM detokenizes (``decode_prefix``),
  finish_reason "length", stop_reason None, the first B positions of its log-probabilities -- what a direct run
  at budget B returns (the scheduler then forces a cut-off reply as usual).

This holds because a generation's first B tokens do not depend on its budget: greedy decoding (temperature 0)
and seeded sampling draw the same tokens step by step. It does NOT hold for sampling without a seed (temperature
> 0 and no ``--seed``): ``prefix_key`` is None there and nothing is derived. On stacks whose numerics depend on
the batch composition (GPU kernels that pick a different reduction order for a different batch), a direct run
at B may differ from the larger run's prefix exactly as two direct runs in different batches may differ.

Derivation needs the model's tokenizer only (``tokenizer_for``), never the model: a sweep answered entirely from
the cache and derivation loads no model. A derivation that cannot be made exactly (a tokenizer without the fast
incremental decoder vLLM uses, or a decoded prefix that is not a prefix of the cached text) returns None and the
request is generated.
"""

from __future__ import annotations

import json

from rankk_cli.rerank.engines.base import Completion, Request

_TOKENIZERS: dict[str, object] = {}


def tokenizer_for(model: str):
    """The Hugging Face tokenizer vLLM loads for ``model`` (a .gguf file / packaged alias: its converted
    directory), loaded once per process; None when it cannot be loaded (then nothing is derived)."""
    if model not in _TOKENIZERS:
        try:
            from rankk_cli import gguf
            from rankk_cli.quiet import captured

            with captured():
                from transformers import AutoTokenizer

                _TOKENIZERS[model] = AutoTokenizer.from_pretrained(gguf.resolve(model))
        except Exception:  # noqa: BLE001 - no tokenizer: no derivation (the request is generated, never wrong)
            _TOKENIZERS[model] = None
    return _TOKENIZERS[model]


def decode_prefix(tokenizer, prompt_ids: list[int], token_ids: list[int]) -> str | None:
    """The text vLLM returns for generated ``token_ids`` after ``prompt_ids``: its fast incremental detokenizer
    (``tokenizers.decoders.DecodeStream`` primed with the prompt, special tokens kept, each step's piece
    appended; a step that completes no character adds nothing). None for tokenizers vLLM decodes another way."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return None
    from tokenizers.decoders import DecodeStream

    stream = DecodeStream(ids=list(prompt_ids), skip_special_tokens=False)
    out = []
    for tid in token_ids:
        piece = stream.step(backend, int(tid))
        if piece:
            out.append(piece)
    return "".join(out)


def derive(row: dict, request: Request, budget: int, tokenizer) -> Completion | None:
    """The completion at ``budget`` from a cached ``row`` (a call-cache row with token ids and a larger budget),
    or None when it cannot be derived exactly."""
    ids = row.get("token_ids")
    if ids is None or row.get("budget") is None or int(row["budget"]) < budget or row["finish_reason"] == "error":
        return None
    ids = [int(t) for t in ids]
    logprobs = json.loads(row["logprobs"]) if row.get("logprobs") else None
    common = dict(input_tokens=int(row["input_tokens"] or 0), cached=True, derived=True, seconds=0.0)
    if len(ids) <= budget:  # it ended within the budget: the same answer
        return Completion(text=row["text"], finish_reason=row["finish_reason"], output_tokens=len(ids),
                          logprobs=logprobs, stop_reason=row.get("stop_reason"), token_ids=ids, **common)
    if tokenizer is None:
        return None
    from rankk_cli.rerank.engines.vllm import render_ids

    try:
        text = decode_prefix(tokenizer, render_ids(tokenizer, request), ids[:budget])
    except Exception:  # noqa: BLE001 - a template/tokenizer this cannot reproduce: generate instead
        return None
    if text is None:
        return None
    if row.get("stop_reason") is None and not row["text"].startswith(text):
        return None  # no stop string cut the cached text: its first B tokens' text must be a prefix of it
    return Completion(text=text, finish_reason="length", output_tokens=budget,
                      logprobs=logprobs[:budget] if logprobs is not None else None, stop_reason=None,
                      token_ids=ids[:budget], **common)
