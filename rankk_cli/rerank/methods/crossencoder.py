"""Cross-encoder (monoBERT / bge-reranker style): (query, passage) pairs scored jointly via vLLM's score API.

Each pair is scored by a sequence-classification model with one label, through ``LLM.score``.

Reference format: the model's own pair encoding -- ``[CLS] query [SEP] passage [SEP]`` for BERT-style models
(Nogueira & Cho, "Passage Re-ranking with BERT", arXiv 1901.04085, Section 3: the query as sentence A, the
passage as sentence B, truncated to the model's 512 tokens; sentence-transformers' ``CrossEncoder.predict`` and
FlagEmbedding's ``FlagReranker.compute_score`` send the same ``tokenizer(query, passage)`` pair), which vLLM's
score API builds from the model's tokenizer; score = the single logit through the model's activation (vLLM
applies sigmoid for one-label classifiers, as sentence-transformers does). No prompt text is added by rankk.

All pairs of all queries go out in ONE round (the scheduler batches them into one engine call). Each pair is
one record with its ``score``; a pair cut at the model's context (``finish_reason`` "length": the passage's end
is lost, as in monoBERT) says so in ``note``. A pair whose score did not come back is ``failed`` and placed
below the scored ones in first-stage order. ``--model`` is required: a cross-encoder directory or id (on a GPU:
``BAAI/bge-reranker-v2-m3``, ``cross-encoder/ms-marco-MiniLM-L6-v2``); an embedding or generative model is one
line saying it is not a cross-encoder.
"""

from __future__ import annotations

from typing import Generator

from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import FAILED, Call, Candidate, Method, QueryResult, scores_below
from rankk_cli.rerank.records import new_record


class CrossEncoder(Method):
    name = "crossencoder"
    kind = "pointwise"
    ignores = ("--window", "--stride", "--passes")  # no sliding windows (warned when given)

    def planned_windows(self, n: int) -> int:
        return n

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        calls = [Call(Request(pair=(query, c.text)), {"qid": qid, "pass": 1, "start": i, "end": i + 1,
                                                      "window": True}) for i, c in enumerate(candidates)]
        completions = (yield calls) if calls else []
        records, scores, missing = [], {}, []
        for i, (cand, call, comp) in enumerate(zip(candidates, calls, completions)):
            rec = new_record(1, i, i + 1, [cand.docid])
            rec["calls"].append(call)
            records.append(rec)
            if comp.finish_reason == "error" or not comp.embedding:
                rec["outcome"] = FAILED
                rec["repairs"] = (f"no score ({comp.error or 'none returned'}); placed below the scored pairs "
                                  "in first-stage order")
                missing.append(rec)
                continue
            rec["score"] = scores[cand.docid] = float(comp.embedding[0])
            if comp.cut_off:
                rec["note"] = f"pair cut at the model's context ({comp.input_tokens} tokens)"
        below = scores_below(scores, [rec["docids"][0] for rec in missing])
        for rec in missing:
            rec["score"] = scores[rec["docids"][0]] = below[rec["docids"][0]]
        position = {c.docid: k for k, c in enumerate(candidates)}
        order = sorted(scores, key=lambda d: (-scores[d], position[d]))
        return QueryResult(order, scores, records)
