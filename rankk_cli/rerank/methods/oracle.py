"""Oracle: rerank a first-stage run by its relevance judgements -- the ceiling any reranker can reach on it.

Order: grade descending (unjudged documents count as grade 0), ties by first-stage order. No engine calls, no
model. The output is marked: TREC tag ``oracle`` and a summary line saying it is an oracle, not a system.
The qrels come from the ``rerank --qrels`` option (a TREC qrels file or an ir_datasets id), passed to the method
as its ``qrels`` option (``--method-opt qrels=FILE`` works too).
"""

from __future__ import annotations

from typing import Generator

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods.base import OK, Call, Candidate, Method, Option, QueryResult, RerankConfig, answered
from rankk_cli.rerank.records import new_record

NOTE = "oracle: reranked by the qrels (an upper bound for this first-stage run, not a system)"


class Oracle(Method):
    name = "oracle"
    kind = "oracle"
    needs_engine = False
    trec_tag = "oracle"
    note = NOTE
    options = (Option("qrels", str, "", "relevance judgements: a TREC qrels file or an ir_datasets id (--qrels)"),)
    ignores = ("--model", "--window", "--stride", "--passes")  # no model, no windows: one record per query

    def planned_windows(self, n: int) -> int:
        return 0

    def __init__(self, config: RerankConfig, qrels: str = "", grades: "dict[str, dict[str, int]] | None" = None):
        super().__init__(config, qrels=qrels)
        if grades is None:
            if not qrels:
                raise RankkError("method oracle needs relevance judgements: pass --qrels FILE "
                                 "(a TREC qrels file or an ir_datasets id)")
            from rankk_cli.sources import load_qrels

            df = load_qrels(qrels)
            grades = {}
            for qid, docid, rel in zip(df["qid"].astype(str), df["docid"].astype(str), df["relevance"]):
                grades.setdefault(qid, {})[docid] = int(rel)
        self.grades = grades

    def input_warnings(self, qids: list[str]) -> list[str]:
        """How much of the run the qrels cover: unjudged queries keep their first-stage order, and queries judged
        only with grade <= 0 cannot move either (every candidate counts as grade 0)."""
        n = len(qids)
        unjudged = [q for q in qids if str(q) not in self.grades]
        flat = [q for q in qids if str(q) in self.grades and max(self.grades[str(q)].values(), default=0) <= 0]
        out = []
        if n and len(unjudged) == n:
            out.append(f"oracle: none of the {n} queries is judged in {self.qrels or 'the qrels'} (qrels of another "
                       "dataset?): the output is the first-stage order")
        elif unjudged:
            out.append(f"oracle: {len(unjudged)} of {n} queries have no judgements in {self.qrels or 'the qrels'}: "
                       f"their first-stage order is kept ({', '.join(map(str, unjudged[:5]))}"
                       f"{', ...' if len(unjudged) > 5 else ''})")
        if flat:
            out.append(f"oracle: {len(flat)} of {n} queries have no relevant judgement (grade > 0) in "
                       f"{self.qrels or 'the qrels'}: their first-stage order is kept "
                       f"({', '.join(map(str, flat[:5]))}{', ...' if len(flat) > 5 else ''})")
        return out

    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        judged = self.grades.get(str(qid), {})
        grade = [judged.get(c.docid, 0) for c in candidates]
        idx = sorted(range(len(candidates)), key=lambda i: (-grade[i], i))
        repairs = [] if judged else ["query has no judgements: first-stage order kept"]
        record = new_record(1, 0, len(candidates), [c.docid for c in candidates])
        record.update(outcome=OK, parsed=[i + 1 for i in idx], repairs="; ".join(repairs), note=NOTE)
        return answered(QueryResult(order=[candidates[i].docid for i in idx],
                                    scores={candidates[i].docid: float(grade[i]) for i in idx}, records=[record]))
