"""Prompts (golden) and reply parsing of the listwise and pointwise methods."""

from __future__ import annotations

import math

from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods.base import FAILED, FORCED, OK, REPAIRED, Candidate, RerankConfig
from rankk_cli.rerank.methods.listwise import parse_ranking, ranking_line, split_reasoning, to_ascii_digits
from rankk_cli.rerank.methods.rank1 import Rank1, true_probability
from rankk_cli.rerank.methods.rank1 import render as rank1_render
from rankk_cli.rerank.methods.rankk import RankK
from rankk_cli.rerank.methods.rankzephyr import RankZephyr

RANK_K_GOLDEN = (
    "\nDetermine a ranking of the passages based on how relevant they are to the query. \nIf the query is a "
    "question, how relevant a passage is depends on how well it answers the question. \nIf not, try analyze the "
    "intent of the query and assess how well each passage satisfy the intent. \nThe query may have typos and "
    "passages may contain contradicting information. \nHowever, we do not get into fact-checking. We just rank the "
    "passages based on they relevancy to the query. \n\nSort them from the most relevant to the least. \nAnswer "
    "with the passage number using a format of `[3] > [2] > [4] = [1] > [5]`. \nTies are acceptable if they are "
    "equally relevant. \nI need you to be accurate but overthinking it is unnecessary.\nOutput only the ordering "
    "without any other text.\n\nQuery: what is {x}?\n\n[1] alpha {y}\n\n[2] beta\n\n[3] gamma\n"
)


def cands(n):
    return [Candidate(f"d{i}", f"text {i}", float(n - i), i + 1) for i in range(n)]


def drive(method, candidates, replies, query="q"):
    """Run a method's generator with scripted replies (a list per yielded step); returns (result, steps)."""
    gen = method.rerank("q1", query, candidates)
    steps = []
    calls = next(gen)
    try:
        while True:
            steps.append(calls)
            calls = gen.send(replies(calls, len(steps)))
    except StopIteration as stop:
        return stop.value, steps


# ---------------------------------------------------------------------------------------------- golden prompts


def test_rank_k_prompt_is_byte_exact_one_user_message():
    req = RankK(RerankConfig()).build_request("what is {x}?", ["alpha {y}", "beta", "gamma"])
    assert req.prompt is None
    assert len(req.messages) == 1 and req.messages[0][0] == "user"
    assert req.messages[0][1] == RANK_K_GOLDEN


def test_rankzephyr_prompt_golden():
    req = RankZephyr(RerankConfig()).build_request("who [1] won", ["a  b\nc", "see [2] here"])
    assert req.messages[0] == ("system", "You are RankLLM, an intelligent assistant that can rank passages based "
                                         "on their relevancy to the query")
    assert req.messages[1] == ("user", (
        "I will provide you with 2 passages, each indicated by a numerical identifier []. Rank the passages based "
        "on their relevance to the search query: who (1) won.\n\n[1] a b c\n[2] see (2) here\nSearch Query: who (1) "
        "won.\nRank the 2 passages above based on their relevance to the search query. All the passages should be "
        "included and listed using identifiers, in descending order of relevance. The output format should be "
        "[] > [], e.g., [2] > [1], Answer concisely and directly and only respond with the ranking results, do not "
        "say any word or explain."))


def test_rank1_prompt_golden():
    assert rank1_render("q?", "p.") == ("Determine if the following passage is relevant to the query. Answer only "
                                        "with 'true' or 'false'.\nQuery: q?\nPassage: p.\n<think>")


# ---------------------------------------------------------------------------------------------- parsing


def test_long_reasoning_then_ranking_with_ties_and_trailing_text():
    reply = ("Let me look at [1]... passage [4] mentions it. Maybe [2] > [1]? No.\n" * 50
             + "</think>\n\n[3] > [1] = [4] > [2]\n\nThat is my final answer.")
    reasoning, answer, closed = split_reasoning(reply)
    assert closed and reasoning.startswith("Let me look") and "final answer" in answer
    line = ranking_line(answer)
    assert line == "[3] > [1] = [4] > [2]"
    p = parse_ranking(line, 4)
    assert p.groups == [[3], [1, 4], [2]] and p.repairs == [] and p.found


def test_repeated_missing_and_out_of_range_ids_are_repaired_and_stated():
    p = parse_ranking("[2] > [23] > [2] > [1] > [0]", 5)
    assert p.order == [2, 1, 3, 4, 5]
    assert "dropped out-of-range 23,0" in p.repairs
    assert any(r.startswith("dropped repeated 2") for r in p.repairs)
    assert "appended missing 3,4,5 in input order" in p.repairs


def test_full_width_and_exotic_digits():
    assert to_ascii_digits("［３］＞［１］") == "[3]>[1]"
    assert parse_ranking(ranking_line("［２］ ＞ ［１］ ＞ [٣]"), 3).order == [2, 1, 3]


def test_bare_numbers_and_no_ranking():
    assert parse_ranking(ranking_line("ranking: 2 > 3 > 1"), 3).order == [2, 3, 1]
    assert ranking_line("I think the passages are all good.") is None
    p = parse_ranking(None, 3)
    assert not p.found and p.order == [1, 2, 3]


# ---------------------------------------------------------------------------------------------- outcomes


def listwise_replies(texts):
    """Replies by step: texts[k] is (text, finish_reason) for the k-th step."""
    def reply(calls, k):
        text, finish = texts[k - 1]
        return [Completion(text, finish) for _ in calls]
    return reply


def test_rankk_ok_window_applies_the_permutation():
    m = RankK(RerankConfig(window=3, stride=3))
    res, steps = drive(m, cands(3), listwise_replies([("think</think>\n[3] > [1] > [2]", "stop")]))
    assert res.order == ["d2", "d0", "d1"]
    (rec,) = res.records
    assert rec["outcome"] == OK and rec["parsed"] == [3, 1, 2] and rec["reasoning"] == "think"


def test_rankk_cut_off_reply_is_forced_with_continued_assistant_turn():
    m = RankK(RerankConfig(window=3, stride=3, force_max_tokens=17))
    res, steps = drive(m, cands(3), listwise_replies([("I am still thinking about [2] and", "length"),
                                                      ("[2] > [3] > [1]", "stop")]))
    assert len(steps) == 2
    forced = steps[1][0].request
    assert forced.continue_final and forced.max_tokens == 17
    assert forced.messages[-1] == ("assistant", "I am still thinking about [2] and\n</think>\n\n")
    assert forced.messages[:-1] == steps[0][0].request.messages
    (rec,) = res.records
    assert rec["outcome"] == FORCED and "cut off" in rec["repairs"]
    assert res.order == ["d1", "d2", "d0"]


def test_rankk_failed_when_forcing_gives_nothing_keeps_input_order():
    m = RankK(RerankConfig(window=3, stride=3))
    res, _ = drive(m, cands(3), listwise_replies([("hmm", "length"), ("no idea", "stop")]))
    assert res.records[0]["outcome"] == FAILED and res.order == ["d0", "d1", "d2"]


def test_rankk_repaired_outcome_records_rule():
    m = RankK(RerankConfig(window=4, stride=4))
    res, _ = drive(m, cands(4), listwise_replies([("</think>[4] > [4] > [9]", "stop")]))
    rec = res.records[0]
    assert rec["outcome"] == REPAIRED
    assert "dropped out-of-range 9" in rec["repairs"] and "appended missing 1,2,3 in input order" in rec["repairs"]
    assert res.order == ["d3", "d0", "d1", "d2"]


def test_rankzephyr_cut_off_is_repaired_not_forced():
    m = RankZephyr(RerankConfig(window=4, stride=4))
    res, steps = drive(m, cands(4), listwise_replies([("[2] > [4] > [", "length")]))
    assert len(steps) == 1
    assert res.records[0]["outcome"] == REPAIRED and res.order == ["d1", "d3", "d0", "d2"]


def test_engine_error_is_a_failed_window():
    m = RankZephyr(RerankConfig(window=4, stride=4))
    res, _ = drive(m, cands(4), lambda calls, k: [Completion("", "error", error="HTTP 500") for _ in calls])
    assert res.records[0]["outcome"] == FAILED and "HTTP 500" in res.records[0]["repairs"]


# ---------------------------------------------------------------------------------------------- rank1


def test_true_probability_from_last_position():
    p, note = true_probability([{"x": -0.1}, {" true": math.log(0.75), " false": math.log(0.25)}])
    assert abs(p - 0.75) < 1e-9 and note == ""
    p, note = true_probability([{" false": -0.01, " no": -5.0}])
    assert p < 0.01 and "bounded" in note
    assert true_probability([{"foo": -1.0}])[0] is None


def test_rank1_answers_forced_follow_up_and_fallback():
    lp = lambda t, f: [{" true": math.log(t), " false": math.log(f)}]  # noqa: E731

    def reply(calls, step):
        if step == 1:
            return [Completion("reasoning... ", "stop", logprobs=lp(0.9, 0.1), stop_reason="</think> true"),
                    Completion("long long", "length"),
                    Completion("short</think>", "stop", logprobs=[{"\n": -0.1}]),
                    Completion("cut", "length"),
                    # ended at end-of-sequence: its last position's logprobs are NOT an answer (seen on SmolLM2)
                    Completion("Yes, it is relevant.", "stop", logprobs=lp(0.99, 0.01), stop_reason=None)]
        return [Completion(" false", "stop", logprobs=lp(0.2, 0.8)),
                Completion(" true", "stop", logprobs=lp(0.6, 0.4)),
                Completion("", "stop", logprobs=[]),
                Completion(" false", "stop", logprobs=lp(0.3, 0.7))]

    res, steps = drive(Rank1(RerankConfig()), cands(5), reply)
    assert [len(s) for s in steps] == [5, 4]  # all pairs in one step, all forced answers in one step
    forced = steps[1][0].request
    assert forced.prompt.endswith("long long\n</think>") and forced.allowed == (" true", " false")
    assert forced.max_tokens == 1 and forced.logprobs
    assert steps[1][1].request.prompt.endswith("<think>short\n</think>")
    assert steps[1][3].request.prompt.endswith("Yes, it is relevant.\n</think>")
    assert [r["outcome"] for r in res.records] == [OK, FORCED, FORCED, FAILED, FORCED]
    assert "end of sequence" in res.records[4]["repairs"]
    want = {"d0": 0.9, "d1": 0.2, "d2": 0.6, "d3": 0.5, "d4": 0.3}
    assert all(abs(res.scores[k] - v) < 1e-9 for k, v in want.items()) and set(res.scores) == set(want)
    assert res.order == ["d0", "d2", "d3", "d4", "d1"]


# ------------------------------------------------------------------- real model output (SmolLM2-135M, DL19)
# Replies that broke the parsers when a real model first met them: each is a golden case now.

ECHO_ZEPHYR = ("[1] Day's Concrete Floors, Inc is the name of my company. We pour a lot of 3000 psi. concrete for "
               "interior concrete floors and 4000 psi concrete for exterior concrete. The concrete cost per yard of "
               "concrete is $92.00 for 3000 3/4 psi concrete and $100.00 for 4000 3/4 psi concrete.\n[2] The cost "
               "of concrete is a very impor")
ECHO_NUMBERED = ("1) The flea life cycle diagram - a complete step-by-step diagram of animal host flea infestation; "
                 "flea reproduction.\n2) 2) 2a) Fleas life cycle 1 - The adult flea lays her eggs on the host "
                 "animal. 2b) Fleas life cycle 2 - The egg falls off the host animal")


def test_real_echoed_passages_are_no_ranking():
    for text in (ECHO_ZEPHYR, ECHO_NUMBERED, "[1] A declaratory judgment is a legal remedy. [1] It is a remedy."):
        assert ranking_line(text) is None, text
    m = RankZephyr(RerankConfig(window=10, stride=10))
    res, _ = drive(m, cands(10), listwise_replies([(ECHO_ZEPHYR, "length")]))
    (rec,) = res.records
    assert rec["outcome"] == FAILED and rec["parsed"] == list(range(1, 11)) and res.order == [f"d{i}" for i in range(10)]
    assert "no ranking" in rec["repairs"]


def test_a_ranking_chain_is_read_wherever_it_sits():
    assert ranking_line("The ranking is: [4], [2], [1].") == "[4]> [2]> [1]"
    assert parse_ranking(ranking_line("[4] > [2] > [1"), 4).order == [4, 2, 1, 3]  # cut inside its last id
    # an echoed passage after the ranking line does not hide it
    assert ranking_line("[2] > [1] > [3]\n[3] Fleas have six legs.") == "[2] > [1] > [3]"
    # a chain inside prose is still the answer; the prose's numbers are not ids
    assert parse_ranking(ranking_line("It costs 300 dollars, so [2] > [1]."), 2).order == [2, 1]


def test_real_rank1_reply_that_ended_without_answering_is_forced():
    reply = "\nTrue\nFalse\n\nThe answer is:\nTrue"  # SmolLM2 on rank1's prompt, ended at end-of-sequence
    lp = [{" true": math.log(0.95), " false": math.log(0.05)}]

    def replies(calls, step):
        if step == 1:
            return [Completion(reply, "stop", logprobs=lp, stop_reason=None)]
        return [Completion(" false", "stop", logprobs=[{" true": math.log(0.4), " false": math.log(0.6)}])]

    res, steps = drive(Rank1(RerankConfig()), cands(1), replies)
    assert len(steps) == 2 and res.records[0]["outcome"] == FORCED
    assert abs(res.scores["d0"] - 0.4) < 1e-9  # the forced answer's p(true), not the EOS position's 0.95
