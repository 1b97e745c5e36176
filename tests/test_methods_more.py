"""ReasonRank, Rank-R1, FIRST, PRP and the oracle: golden prompts, parsers on realistic replies, and the
generators driven by hand with fake completions (no engine). End-to-end runs through vLLM are at the bottom."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.methods.base import FAILED, FORCED, OK, REPAIRED, Candidate, RerankConfig


def cands(n: int, texts=None) -> list[Candidate]:
    texts = texts or [f"passage number {i}" for i in range(1, n + 1)]
    return [Candidate(f"d{i}", texts[i - 1], float(100 - i), i) for i in range(1, n + 1)]


def drive(gen, answer):
    """Run a method generator; ``answer(calls) -> completions``. Returns (QueryResult, rounds of calls)."""
    rounds = []
    try:
        calls = next(gen)
        while True:
            rounds.append(calls)
            calls = gen.send([answer(c) for c in calls])
    except StopIteration as stop:
        return stop.value, rounds


def done(text: str, reason: str = "stop", logprobs=None) -> Completion:
    return Completion(text=text, finish_reason=reason, input_tokens=10, output_tokens=5, logprobs=logprobs)


# ----------------------------------------------------------------------------------------------------------
# ReasonRank

from rankk_cli.rerank.methods import reasonrank as rr  # noqa: E402

REASONRANK_GOLDEN = (
    "I will provide you with 2 passages, each indicated by a numerical identifier []. Rank the passages based on "
    "their relevance to the search query: what is (1) rust?.\n"
    "\n"
    "[1] Rust is a language (2).\n"
    "[2] Iron {oxide} forms [when] wet.\n"
    "Search Query: what is (1) rust?.\n"
    "Rank the 2 passages above based on their relevance to the search query. All the passages should be included "
    "and listed using identifiers, in descending order of relevance. The format of the answer should be [] > [], "
    "e.g., [2] > [1]."
)


def test_reasonrank_golden_prompt():
    method = METHODS.get("reasonrank")(RerankConfig())
    req = method.build_request("what is [1] rust?", ["Rust is a language [2].", "  Iron {oxide} forms [when] wet. "])
    assert req.messages[0] == ("system", rr.SYSTEM)
    assert rr.SYSTEM.startswith("You are RankLLM, an intelligent assistant that can rank passages based on their "
                                "relevance to the query. Given a query and a passage list, you first thinks")
    assert rr.SYSTEM.endswith("<think> reasoning process here </think> <answer> answer here </answer>.")
    assert req.messages[1] == ("user", REASONRANK_GOLDEN)
    assert len(req.messages) == 2 and req.prompt is None
    assert (method.default_temperature, method.default_max_tokens) == (0.0, 3172)


@pytest.mark.parametrize("reply, n, order, outcome", [
    ("<think>The query asks about rust. Passage [2] mentions oxidation, passage 1 is about a language.</think>\n"
     "<answer>[2] > [1] > [3]</answer>", 3, [2, 1, 3], OK),
    ("<think>ok</think> <answer> [3] > [3] > [9] > [1] </answer>", 3, [3, 1, 2], REPAIRED),   # dup, range, missing
    ("<think>ok</think> <ANSWER>2, 1, 3</ANSWER>", 3, [2, 1, 3], OK),                        # digits only
    ("<think>hmm</think>\n<answer>[２] > [1]</answer>", 2, [2, 1], OK),                        # full-width digit
])
def test_reasonrank_parser(reply, n, order, outcome):
    method = METHODS.get("reasonrank")(RerankConfig(window=20))
    result, rounds = drive(method.rerank("q1", "query", cands(n)), lambda call: done(reply))
    rec = result.records[0]
    assert rec["parsed"] == order and rec["outcome"] == outcome
    assert result.order == [f"d{i}" for i in order]
    assert len(rounds) == 1
    if outcome == OK:
        assert rec["reasoning"] and "<answer>" not in rec["reasoning"] and "<think>" not in rec["reasoning"]


def test_reasonrank_repairs_are_stated():
    method = METHODS.get("reasonrank")(RerankConfig())
    result, _ = drive(method.rerank("q", "query", cands(3)),
                      lambda c: done("<think>x</think><answer>[3] > [3] > [9]</answer>"))
    repairs = result.records[0]["repairs"]
    assert "out-of-range 9" in repairs and "repeated 3" in repairs and "missing 1,2" in repairs


def test_reasonrank_cut_off_is_forced_after_think():
    method = METHODS.get("reasonrank")(RerankConfig(force_max_tokens=77))

    def answer(call):
        if call.meta.get("forced"):
            return done("[2] > [3] > [1]</answer>")
        return done("<think>Passage 2 looks relevant because", reason="length")

    result, rounds = drive(method.rerank("q", "query", cands(3)), answer)
    assert len(rounds) == 2
    forced = rounds[1][0].request
    assert forced.continue_final and forced.max_tokens == 77
    assert forced.messages[:2] == rounds[0][0].request.messages
    assert forced.messages[-1] == ("assistant", "<think>Passage 2 looks relevant because\n</think>\n<answer>")
    rec = result.records[0]
    assert rec["outcome"] == FORCED and rec["parsed"] == [2, 3, 1]
    assert result.order == ["d2", "d3", "d1"]


def test_reasonrank_no_answer_never_reads_thinking_digits():
    method = METHODS.get("reasonrank")(RerankConfig())
    result, rounds = drive(method.rerank("q", "query", cands(3)),
                           lambda c: done("[9] nonsense" if c.meta.get("forced")
                                          else "<think>3 beats 1 and 2</think> I think it is fine."))
    assert len(rounds) == 2  # forced once, then failed
    assert result.records[0]["outcome"] == FAILED and result.order == ["d1", "d2", "d3"]


def test_reasonrank_sliding_windows_bottom_up():
    method = METHODS.get("reasonrank")(RerankConfig(window=20, stride=10))
    # the model puts the passage with the highest number first
    def answer(call):
        shown = re.findall(r"^\[(\d+)\] passage number (\d+)$", call.request.messages[1][1], flags=re.M)
        return done(f"<think>x</think><answer>[{max(shown, key=lambda s: int(s[1]))[0]}]</answer>")

    result, rounds = drive(method.rerank("q", "query", cands(30)), answer)
    spans = [(c[0].meta["start"], c[0].meta["end"]) for c in rounds]
    assert spans == [(10, 30), (0, 20)]
    assert result.order[0] == "d30"  # carried from the bottom window to the top
    assert sorted(result.order) == sorted(f"d{i}" for i in range(1, 31))


# ----------------------------------------------------------------------------------------------------------
# Rank-R1

from rankk_cli.rerank.methods import rankr1  # noqa: E402

RANKR1_GOLDEN = (
    'Given the query: "cats {meow}", which of the following documents is most relevant?\n'
    "[1] first doc\n"
    "[2] second doc\n"
    "[3] third [4] doc\n"
    "After completing the reasoning process, please provide only the label of the most relevant document to the "
    "query, enclosed in square brackets, within the answer tags. For example, if the third document is the most "
    "relevant, the answer should be: <think> reasoning process here </think> <answer>[3]</answer>."
)


def test_rankr1_golden_prompt():
    method = METHODS.get("rankr1")(RerankConfig())
    req = method.build_request("cats {meow}", ["first doc", "second doc", "third [4] doc"])
    assert req.messages == (("system", rankr1.SYSTEM), ("user", RANKR1_GOLDEN))
    assert rankr1.SYSTEM.startswith("A conversation between User and Assistant. The user asks a question")
    assert (method.num_child, method.k, method.default_max_tokens) == (19, 10, 2048)


@pytest.mark.parametrize("reply, n, best, exact", [
    ("<think>Doc 3 directly answers.</think>\n<answer>[3]</answer>", 5, 2, True),
    ("<think>x</think> <answer> [1] </answer>", 5, 0, True),
    ("<think>x</think><answer>3</answer>", 5, 2, False),          # no brackets: lenient
    ("<answer>[2]</answer>", 5, 1, False),                         # no think block: lenient
    ("<think>x</think><answer>[7]</answer>", 5, None, False),      # out of range
    ("<think>x</think><answer>[1] > [2]</answer>", 5, None, False),  # not a single label
    ("<think>still thinking about [2]", 5, None, False),
    ("<think>x</think><answer>Document 4.</answer>", 5, 3, False),  # the label alone, with a word: lenient
    # SmolLM2's forced answers (DL19): a passage copied back after its label is no answer; the label alone is
    ("<answer>[2] Flea Pupa. The flea life cycle discussed - the flea life", 5, None, False),
    ("<answer>[3] The cost of concrete is a very important part of plannin", 5, None, False),
    ("<answer>[3]</answer>", 5, 2, False),
    ("<answer>\n[3]", 5, 2, False),
])
def test_rankr1_parser(reply, n, best, exact):
    got, note = rankr1.parse_choice(reply, n)
    assert got == best
    assert (note == "") == exact


def relevance_model(relevance: dict[str, float], style: str = "r1"):
    """A fake engine that always picks the truly best shown document (texts are 'doc <id>')."""

    def answer(call):
        user = [c for r, c in call.request.messages if r == "user"][0]
        if style == "prp":
            a = re.search(r'Passage A: "doc (\w+)"', user).group(1)
            b = re.search(r'Passage B: "doc (\w+)"', user).group(1)
            return done(" A" if relevance[a] > relevance[b] else " B")
        shown = re.findall(r"^\[(\d+)\] doc (\w+)$", user, flags=re.M)
        label = max(shown, key=lambda s: relevance[s[1]])[0]
        return done(f"<think>doc is best</think>\n<answer>[{label}]</answer>")

    return answer


def test_rankr1_heap_finds_true_top_k_in_order():
    import random

    rng = random.Random(5)
    ids = [f"x{i}" for i in range(50)]
    relevance = {d: rng.random() for d in ids}
    candidates = [Candidate(d, f"doc {d}", 0.0, i + 1) for i, d in enumerate(ids)]
    method = METHODS.get("rankr1")(RerankConfig())  # num_child 19, k 10: 20 documents per prompt
    result, rounds = drive(method.rerank("q", "query", candidates), relevance_model(relevance))
    best = sorted(ids, key=lambda d: -relevance[d])
    assert result.order[:10] == best[:10]
    # below the top-k: first-stage order
    assert result.order[10:] == [d for d in ids if d not in set(best[:10])]
    assert all(len(r) == 1 for r in rounds)  # one call per comparison; batching is across queries
    sizes = {len(re.findall(r"^\[\d+\] ", c[0].request.messages[1][1], flags=re.M)) for c in rounds}
    assert max(sizes) == 20 and all(s >= 2 for s in sizes)
    assert all(r["outcome"] == OK for r in result.records)
    assert len(result.records) == len(rounds)


def test_rankr1_shuffle_is_seeded_and_failed_keeps_parent():
    method = METHODS.get("rankr1")(RerankConfig(), num_child=3, k=2)
    a, ra = drive(method.rerank("q7", "query", cands(8)), lambda c: done("<think>no idea"))
    b, rb = drive(method.rerank("q7", "query", cands(8)), lambda c: done("<think>no idea"))
    assert [c[0].request for c in ra] == [c[0].request for c in rb]  # deterministic: cacheable
    # every comparison failed (even the forced answer): parents win, so the first-stage order survives at top
    assert all(r["outcome"] == FAILED for r in a.records)
    assert a.order[0] == "d1"
    unshuffled = METHODS.get("rankr1")(RerankConfig(), num_child=3, k=2, shuffle=False)
    _r, rounds = drive(unshuffled.rerank("q7", "query", cands(8)), lambda c: done("<think>x</think><answer>[1]</answer>"))
    first_user = rounds[0][0].request.messages[1][1]
    assert "[1] passage number 3\n[2] passage number 8" in first_user  # node 2 with its child 8 (i=2, n//3)


def test_rankr1_cut_off_forced():
    method = METHODS.get("rankr1")(RerankConfig(force_max_tokens=20), num_child=3, k=1, shuffle=False)

    def answer(call):
        return done("[2]</answer>") if call.meta.get("forced") else done("<think>long", reason="length")

    result, rounds = drive(method.rerank("q", "query", cands(4)), answer)
    assert rounds[1][0].request.messages[-1] == ("assistant", "<think>long\n</think>\n<answer>")
    assert result.records[0]["outcome"] == FORCED and result.order[0] == "d2"


# ----------------------------------------------------------------------------------------------------------
# FIRST


FIRST_GOLDEN = (
    "I will provide you with 3 passages, each indicated by an alphabetical identifier []. Rank the passages based "
    "on their relevance to the search query: how (2) tall.\n"
    "[A] Mount Everest is 8849 m (1).\n"
    "[B] K2.\n"
    "[C] Kilimanjaro.\n"
    "Search Query: how (2) tall.\n"
    "Rank the 3 passages above based on their relevance to the search query. All the passages should be included "
    "and listed using identifiers, in descending order of relevance. The output format should be [] > [], e.g., "
    "[B] > [A], Answer concisely and directly and only respond with the ranking results, do not say any word or "
    "explain."
)


def test_first_golden_request():
    method = METHODS.get("first")(RerankConfig())
    req = method.request("how [2] tall", ["Mount Everest is 8849 m [1].", "K2.", "Kilimanjaro."])
    assert req.messages == (
        ("system", "You are RankLLM, an intelligent assistant that can rank passages based on their relevancy to "
                   "the query"),
        ("user", FIRST_GOLDEN), ("assistant", "["))
    assert req.continue_final and req.max_tokens == 1 and req.logprobs == 20 and req.temperature == 0.0


def test_first_ranks_by_first_token_logprobs():
    method = METHODS.get("first")(RerankConfig(window=4, stride=2))
    lps = [{"C": -0.2, "A": -1.5, " B": -2.0, "D": -0.9, "E": -0.1, "the": -0.05}]
    result, rounds = drive(method.rerank("q", "query", cands(4)), lambda c: done("C", logprobs=lps))
    assert result.order == ["d3", "d4", "d1", "d2"]  # E is out of range, "the" is not an identifier
    assert result.records[0]["outcome"] == OK and len(rounds) == 1


def test_first_missing_letters_appended_and_no_letters_fail():
    method = METHODS.get("first")(RerankConfig(window=5, stride=5))
    result, _ = drive(method.rerank("q", "query", cands(5)), lambda c: done("B", logprobs=[{"B": -0.1, "D": -3.0}]))
    assert result.order == ["d2", "d4", "d1", "d3", "d5"]
    assert result.records[0]["outcome"] == REPAIRED and "3 identifier(s)" in result.records[0]["repairs"]
    result, _ = drive(method.rerank("q", "query", cands(5)), lambda c: done("x", logprobs=[{"x": -0.1}]))
    assert result.order == [f"d{i}" for i in range(1, 6)] and result.records[0]["outcome"] == FAILED
    result, _ = drive(method.rerank("q", "query", cands(5)), lambda c: done("B", logprobs=None))
    assert result.records[0]["outcome"] == FAILED


def test_first_sliding_windows_and_window_limit():
    method = METHODS.get("first")(RerankConfig(window=20, stride=10))
    def answer(call):  # prefers the passage with the highest number
        shown = re.findall(r"^\[([A-Z])\] passage number (\d+)$", call.request.messages[1][1], flags=re.M)
        return done("x", logprobs=[{max(shown, key=lambda s: int(s[1]))[0]: -0.1}])

    result, rounds = drive(method.rerank("q", "query", cands(30)), answer)
    assert [(r[0].meta["start"], r[0].meta["end"]) for r in rounds] == [(10, 30), (0, 20)]
    assert result.order[0] == "d30"
    with pytest.raises(RankkError, match="at most 26"):
        METHODS.get("first")(RerankConfig(window=30, stride=10))


# ----------------------------------------------------------------------------------------------------------
# PRP

from rankk_cli.rerank.methods import prp  # noqa: E402

PRP_GOLDEN = ('Given a query "q {x}", which of the following two passages is more relevant to the query?\n\n'
              'Passage A: "alpha"\n\nPassage B: "beta"\n\nOutput Passage A or Passage B:')


def test_prp_golden_prompt_both_orders():
    method = METHODS.get("prp")(RerankConfig())
    calls = method._calls("q1", "q {x}", Candidate("a", "alpha", 0, 1), Candidate("b", "beta", 0, 2), {"pass": 1})
    assert calls[0].request.messages == (("user", PRP_GOLDEN), ("assistant", "Passage:"))
    assert calls[1].request.messages[0][1] == PRP_GOLDEN.replace("alpha", "@").replace("beta", "alpha").replace("@", "beta")
    assert all(c.request.continue_final and c.request.max_tokens == 1 for c in calls)


@pytest.mark.parametrize("text, label", [(" A", "A"), ("B", "B"), (" Passage B", "B"), ("b", "B"), (" C", None),
                                         ("", None),
                                         # what SmolLM2-135M writes after "Passage:" (DL19): no answers
                                         (' "', None), ("\n", None), (" D", None)])
def test_prp_label_parser(text, label):
    assert prp.parse_label(text) == label


@pytest.mark.parametrize("variant", ["sliding", "sorting", "allpair"])
def test_prp_variants_find_true_top_k(variant):
    import random

    rng = random.Random(11)
    ids = [f"x{i}" for i in range(12)]
    relevance = {d: rng.random() for d in ids}
    candidates = [Candidate(d, f"doc {d}", 0.0, i + 1) for i, d in enumerate(ids)]
    method = METHODS.get("prp")(RerankConfig(), variant=variant, k=3)
    result, rounds = drive(method.rerank("q", "query", candidates), relevance_model(relevance, "prp"))
    best = sorted(ids, key=lambda d: -relevance[d])
    assert result.order[:3] == best[:3]
    assert sorted(result.order) == sorted(ids)
    assert all(len(r) % 2 == 0 for r in rounds)  # both orders of every comparison in the same round
    assert all(r["outcome"] == OK for r in result.records)
    if variant == "allpair":
        assert len(rounds) == 1 and len(rounds[0]) == 2 * 66 and result.order == best
    if variant == "sliding":
        assert len(rounds) == 11 + 10 + 9


def test_prp_position_bias_is_a_tie_and_garbage_is_failed():
    method = METHODS.get("prp")(RerankConfig(), variant="sliding", k=2)
    result, _ = drive(method.rerank("q", "query", cands(5)), lambda c: done(" A"))  # always the first shown
    assert result.order == [f"d{i}" for i in range(1, 6)]
    assert all(r["outcome"] == OK and r["parsed"] == [0] and "disagree" in r["repairs"] for r in result.records)
    result, _ = drive(method.rerank("q", "query", cands(3)), lambda c: done("zz"))
    assert all(r["outcome"] == FAILED for r in result.records) and result.order == ["d1", "d2", "d3"]
    with pytest.raises(RankkError, match="variant"):
        METHODS.get("prp")(RerankConfig(), variant="bubble")


def test_prp_logprobs_answer_reads_a_against_b():
    method = METHODS.get("prp")(RerankConfig(), variant="allpair", answer="logprobs")
    calls = method._calls("q", "query", Candidate("a", "x", 0, 1), Candidate("b", "y", 0, 2), {"pass": 1})
    assert all(c.request.logprobs == 20 and c.request.max_tokens == 1 for c in calls)
    assert prp.label_from_logprobs([{"\n": -0.1, " A": -2.0, "B": -3.0}]) == ("A", "")
    assert prp.label_from_logprobs([{" B": -1.0, "A": -1.5, " A": -4.0}]) == ("B", "")
    label, note = prp.label_from_logprobs([{"\n": -0.1, " B": -5.0}])
    assert label == "B" and "only B" in note
    assert prp.label_from_logprobs([{"\n": -0.1, ' "': -1.0}])[0] is None
    assert prp.label_from_logprobs(None)[0] is None
    # generated '"' in both orders, but the logprobs prefer d1 in both: d1 wins, ok (the answer is the A/B scores)
    def reply(call):  # favours the passage shown first in AB order, i.e. d1 in both orders
        favour_a = call.meta["order"] == "AB"
        return done(' "', logprobs=[{' "': -0.1, " A": -1.0 if favour_a else -2.0, " B": -2.0 if favour_a else -1.0}])

    result, _ = drive(method.rerank("q", "query", cands(3)), reply)
    assert result.order == ["d1", "d2", "d3"] and all(r["outcome"] == OK for r in result.records)
    with pytest.raises(RankkError, match="answer must be one of"):
        METHODS.get("prp")(RerankConfig(), answer="maybe")


# ----------------------------------------------------------------------------------------------------------
# oracle


def test_oracle_orders_by_grade_then_first_stage(tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("q1 0 d3 1\nq1 0 d4 2\nq1 0 d1 0\nq1 0 d5 1\nq2 0 zz 1\n")
    method = METHODS.get("oracle")(RerankConfig(), qrels=str(qrels))
    result, rounds = drive(method.rerank("q1", "query", cands(5)), lambda c: pytest.fail("oracle called an engine"))
    assert rounds == [] and result.order == ["d4", "d3", "d5", "d1", "d2"]
    assert METHODS.get("oracle").trec_tag == "oracle"
    result, _ = drive(method.rerank("q9", "query", cands(3)), lambda c: None)
    assert result.order == ["d1", "d2", "d3"] and "no judgements" in result.records[0]["repairs"]
    with pytest.raises(RankkError, match="--qrels"):
        METHODS.get("oracle")(RerankConfig())


# ----------------------------------------------------------------------------------------------------------
# method options (--method-opt KEY=VALUE, --qrels)


def test_method_options_are_typed_and_validated():
    from rankk_cli.rerank.methods.base import method_options

    rankr1_cls = METHODS.get("rankr1")
    assert method_options(rankr1_cls, ["k=5", "shuffle=false", "num_child=3"]) == \
        {"k": 5, "shuffle": False, "num_child": 3}
    assert method_options(METHODS.get("prp"), ["variant=sorting"]) == {"variant": "sorting"}
    assert method_options(METHODS.get("oracle"), [], qrels="q.txt") == {"qrels": "q.txt"}
    for bad, msg in ((["kk=1"], "takes no option 'kk'"), (["k=ten"], "expected int"), (["k"], "KEY=VALUE"),
                     (["shuffle=maybe"], "true or false")):
        with pytest.raises(RankkError, match=msg):
            method_options(rankr1_cls, bad)
    with pytest.raises(RankkError, match="--qrels: method 'rankk' takes no option"):
        method_options(METHODS.get("rankk"), [], qrels="q.txt")


# ----------------------------------------------------------------------------------------------------------
# end to end: the rerank stage through real vLLM on the tiny random model (session engine, loaded once)


@pytest.fixture
def small3(tmp_path, data):
    """3 DL19 queries x 12 BM25 candidates with text, + topics."""
    import json

    d = data / "trec-dl" / "dl19"
    keep, seen = [], {}
    for line in (d / "candidates" / "bm25.jsonl").read_text().splitlines():
        obj = json.loads(line)
        seen.setdefault(obj["qid"], 0)
        if len(seen) <= 3 and seen[obj["qid"]] < 12:
            seen[obj["qid"]] += 1
            keep.append(line)
    path = tmp_path / "cands.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path, d / "topics.tsv"


E2E = {  # method -> (options, expected windows per query or None when data dependent)
    "reasonrank": ((), 3),
    "first": ((), 3),
    "rankr1": (("num_child=3", "k=2"), None),
    "prp": (("variant=sliding", "k=1"), 11),
    "erank": ((), 12),  # one record per pair
    "grouprank": ((), 3),  # groups of 6 every 3 over 12: starts 0, 3, 6 (the last reaches the end)
}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(E2E))
def test_tiny_vllm_end_to_end(method, small3, tmp_path, tiny_vllm, capsys):
    import pandas as pd

    from rankk_cli.docs import read_candidates
    from rankk_cli.rerank.pipeline import rerank_command
    from rankk_cli.runs import read_run

    cands, topics = small3
    opts, per_query = E2E[method]
    out = tmp_path / f"{method}.trec"
    kw = dict(run=cands, output=out, method=method, model=tiny_vllm.model, topics=str(topics), depth=12,
              window=6, stride=3, max_tokens=24, force_max_tokens=16, truncate=48, engine_obj=tiny_vllm,
              progress=False, fmt="json", method_opts=opts)
    summary = rerank_command(**kw)
    capsys.readouterr()
    win = pd.read_parquet(Path(str(out) + ".windows.parquet"))
    assert len(win) == summary["windows"] and sum(summary["outcomes"].values()) == len(win)
    if per_query is not None:
        assert len(win) == 3 * per_query
    assert set(win["outcome"]) <= {"ok", "repaired", "forced", "failed"}
    assert (win.loc[win["outcome"] != "ok", "repairs"].str.len() > 0).all()  # never silent
    # batched across queries: every engine call carries one request per live query (3 here)
    assert summary["requests"] >= 2 * summary["engine_calls"] > 0
    assert (win["input_tokens"] > 0).all() and win["prompt_hash"].str.len().gt(0).all()
    run = read_run(out)
    assert set(run.df["tag"] if "tag" in run.df else ["rankk-" + method]) == {"rankk-" + method}
    src = read_candidates(cands)[0]
    for qid, group in run.df.groupby("qid", sort=False):
        assert sorted(group.docid) == sorted(src.df[src.df.qid == qid].docid) and group.docid.is_unique
    rerun = rerank_command(**{**kw, "output": tmp_path / "again.trec"})
    # (identical passages can make a request repeat within the first run: those were cache hits already)
    assert rerun["engine_calls"] == 0 and rerun["cache_hits"] == summary["requests"] + summary["cache_hits"]
    assert (tmp_path / "again.trec").read_text() == out.read_text()


@pytest.mark.slow
def test_full_ranking_tiny_vllm_one_window_per_query(small3, tmp_path, tiny_vllm, capsys):
    """--window equal to --depth through real vLLM: one call per query over all its 12 candidates."""
    import pandas as pd

    from rankk_cli.rerank.pipeline import rerank_command

    cands, topics = small3
    out = tmp_path / "full.trec"
    summary = rerank_command(run=cands, output=out, method="rankzephyr", model=tiny_vllm.model, topics=str(topics),
                             depth=12, window=12, max_tokens=24, truncate=48, engine_obj=tiny_vllm, progress=False,
                             fmt="json")
    win = pd.read_parquet(Path(str(out) + ".windows.parquet"))
    assert summary["ranking"] == "full" and summary["windows"] == 3 == summary["requests"]
    assert win[["start", "end"]].values.tolist() == [[0, 12]] * 3
    assert "rankk: full ranking: one window of all 12 candidates per query" in capsys.readouterr().err


def test_oracle_end_to_end_cli(rankk, data, tmp_path):
    d = data / "trec-dl" / "dl19"
    out = tmp_path / "oracle.trec"
    proc = rankk("rerank", d / "candidates" / "bm25.jsonl", "--method", "oracle", "--qrels", d / "qrels.txt",
                 "--topics", d / "topics.tsv", "-o", out, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert '"note": "oracle: reranked by the qrels' in proc.stdout
    lines = out.read_text().splitlines()
    assert {ln.split()[5] for ln in lines} == {"oracle"}
    ev = rankk("eval", out, d / "runs" / "bm25.trec", "--qrels", d / "qrels.txt", "-m", "nDCG@10", "-m", "R@100",
               "--format", "json")
    assert ev.returncode == 0, ev.stderr
    import json

    res = {(r["run"], r["measure"]): r["value"] for r in json.loads(ev.stdout)}
    # the ceiling beats BM25 at the top, and reranking the same 100 documents cannot change R@100
    assert res[("oracle", "nDCG@10")] == pytest.approx(0.8922, abs=1e-4)
    assert res[("bm25", "nDCG@10")] == pytest.approx(0.5058, abs=1e-4)
    assert res[("oracle", "R@100")] == res[("bm25", "R@100")]
    bad = rankk("rerank", d / "candidates" / "bm25.jsonl", "--method", "oracle", "--topics", d / "topics.tsv",
                "-o", tmp_path / "x.trec")
    assert bad.returncode == 2 and "needs relevance judgements: pass --qrels" in bad.stderr
    assert not (tmp_path / "x.trec").exists()
