"""ERank: the golden prompt, the score read from the score tokens' log-probabilities, and every outcome path with
scripted replies (real SmolLM2 replies among them). The real-model run is in test_real_model.py."""

from __future__ import annotations

import json
import math

import pytest

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.methods.base import FAILED, FORCED, OK, REPAIRED, RerankConfig, method_options
from rankk_cli.rerank.methods.erank import (ERank, bare_score, expected_score, render, score_logprobs,
                                           written_score)
from test_parsers import cands, drive

ERANK_GOLDEN = (
    "Given a query and a document, please give a relevance score of 0 to 10.\n"
    "The goal or relevance definition is: Find {it}.\n\nHere is the query:\nwhat is {x}?\n\n"
    "Here is the document:\nalpha {y}\n\nAfter thinking, directly choose a relevance score from "
    "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].\n- 0 represents completely not related.\n- 10 means perfectly related.\n\n"
    "Desired output format:\n<think>put your thinking here</think><answer>Only allows an integer here</answer>\n\n"
    "Your output:")


def test_erank_prompt_golden_one_user_message_stopped_on_answer():
    assert render("what is {x}?", "alpha {y}", "Find {it}.") == ERANK_GOLDEN
    m = ERank(RerankConfig(), **method_options(ERank, ["instruction=Find {it}."]))
    gen = m.rerank("q1", "what is {x}?", [cands(1)[0].__class__("d0", "alpha {y}", 1.0, 1)])
    (call,) = next(gen)
    assert call.request.messages == (("user", ERANK_GOLDEN),) and call.request.stop == ("<answer>",)
    assert METHODS.get("erank") is ERank


def test_score_tokens_and_expected_value():
    lp = {"7": math.log(0.5), " 8": math.log(0.3), "x": math.log(0.1), "6": math.log(0.1)}
    dist = score_logprobs([lp])
    assert set(dist) == {6, 7, 8}
    assert abs(expected_score(dist) - (7 * 0.5 + 8 * 0.3 + 6 * 0.1) / 0.9) < 1e-9
    assert expected_score({}) is None and score_logprobs(None) == {}
    # a digit-splitting tokenizer writes 10 as "1" "0": p("1") is split by the next position's p("0")
    split = score_logprobs([{"1": math.log(0.8), "9": math.log(0.2)}, {"0": math.log(0.75), "5": -3.0}], written=10)
    assert abs(math.exp(split[10]) - 0.6) < 1e-9 and abs(math.exp(split[1]) - 0.2) < 1e-9
    # ... but not when the integer written does not start with 1 (position 2 is then about another number)
    assert set(score_logprobs([{"1": -1.0, "9": -0.5}, {"0": -0.1}], written=9)) == {1, 9}
    assert [written_score(t) for t in ("7</answer>", " 10<", "11", "seven", "")] == [7, 10, None, None, None]


def reply(text, reason, **kw):
    return Completion(text, "length" if reason == "length" else "stop", stop_reason=reason if reason not in
                      ("length", None) else None, **kw)


def test_erank_outcomes_each_path():
    lp7 = [{"7": math.log(0.6), "5": math.log(0.4)}, {"</": -0.01}]

    def replies(calls, step):
        if step == 1:
            return [reply("<think>fine</think>", "<answer>"),          # ok after the answer call
                    reply("thinking forever", "length"),               # cut off -> forced
                    reply("It is relevant.", None),                    # ended (EOS) without <answer> -> forced
                    reply("</think>", "<answer>"),                     # answer call writes no integer -> forced
                    Completion("", "error", error="HTTP 500"),         # failed, midpoint
                    reply("<think>a</think>", "<answer>")]             # ok, answer without logprobs
        if step == 2:
            assert [c.meta["start"] for c in calls] == [0, 3, 5]
            return [Completion("7</", "stop", logprobs=lp7), Completion("high", "stop", logprobs=[{"h": -0.1}]),
                    Completion("3", "length")]
        assert [c.meta["start"] for c in calls] == [1, 2, 3] and all(c.request.allowed for c in calls)
        return [Completion("9", "length", logprobs=[{"9": math.log(0.9), "2": math.log(0.1)}]),
                Completion("", "length", logprobs=[{"a": -0.1}]),  # no score token at all
                Completion("4", "length", logprobs=[{"4": 0.0}])]

    res, steps = drive(ERank(RerankConfig()), cands(6), replies)
    assert [len(s) for s in steps] == [6, 3, 3]
    ans = steps[1][0].request
    assert ans.continue_final and ans.messages[-1] == ("assistant", "<think>fine</think><answer>")
    assert ans.max_tokens == 3 and ans.logprobs == 20 and not ans.allowed
    forced = steps[2][0].request
    assert forced.messages[-1] == ("assistant", "thinking forever\n</think>\n<answer>") and forced.max_tokens == 1
    assert steps[2][2].request.messages[-1] == ("assistant", "</think><answer>")
    recs = res.records
    assert [r["outcome"] for r in recs] == [OK, FORCED, FAILED, FORCED, FAILED, OK]
    assert abs(res.scores["d0"] - 6.2) < 1e-9 and recs[0]["parsed"] == [7] and recs[0]["repairs"] == ""
    assert recs[0]["raw"] == "<think>fine</think><answer>7</" and recs[0]["reasoning"] == "fine"
    assert json.loads(recs[0]["logprobs"]) == {"5": math.log(0.4), "7": math.log(0.6)}
    assert abs(res.scores["d1"] - 8.3) < 1e-9 and "cut off" in recs[1]["repairs"] and recs[1]["forced_raw"] == "9"
    assert res.scores["d2"] == 5.0 and "end of sequence" in recs[2]["repairs"] and "unusable" in recs[2]["repairs"]
    assert "no integer 0..10 after '<answer>'" in recs[3]["repairs"] and res.scores["d3"] == 4.0
    assert res.scores["d4"] == 5.0 and "HTTP 500" in recs[4]["repairs"]
    assert res.scores["d5"] == 3.0 and "parsed integer" in recs[5]["note"]
    assert res.order == ["d1", "d0", "d2", "d4", "d3", "d5"]  # 8.3, 6.2, 5 (input order breaks the tie), 4, 3
    assert all(r["score"] == res.scores[r["docids"][0]] for r in recs)


def test_erank_paper_score_is_s_times_p_s():
    def replies(calls, step):
        if step == 1:
            return [reply("</think>", "<answer>")]
        return [Completion("8", "stop", logprobs=[{"8": math.log(0.5), "9": math.log(0.5)}])]

    res, _ = drive(ERank(RerankConfig(), score="paper"), cands(1), replies)
    assert abs(res.scores["d0"] - 4.0) < 1e-9 and res.records[0]["outcome"] == OK
    with pytest.raises(RankkError, match="score must be one of expected, paper"):
        method_options(ERank, ["score=mean"])


# SmolLM2-135M-Instruct on ERank's prompt (DL19, BM25 top passages, greedy, through rankk's vLLM engine): it
# writes a bare "0" and a sentence and stops at end of sequence -- never <answer>, never </think>. The answer is
# there, out of format: it is read (outcome repaired, the repair named, score 0), not forced. A reply without
# such a line is forced, and the forced one-token answer's score-token log-probabilities (below, as vLLM returned
# them on that real run: every allowed token, "10" splits into "1" "0" on this tokenizer, so no "10") give the
# expected value.
SMOLLM2_REPLY = "0\n\nThe document is not related to the query."
SMOLLM2_FORCED_LOGPROBS = {"0": -6.100621223449707, "1": -4.350621223449707, "2": -3.350621223449707,
                           "3": -4.350621223449707, "4": -5.850621223449707, "5": -4.350621223449707,
                           "6": -7.225621223449707, "7": -7.350621223449707, "8": -7.975621223449707,
                           "9": -7.725621223449707}


def test_real_smollm2_bare_integer_is_a_repaired_answer_no_forced_call():
    def replies(calls, step):
        assert step == 1, "a bare integer answer needs no further call"
        return [Completion(SMOLLM2_REPLY, "stop", stop_reason=None)]

    res, steps = drive(ERank(RerankConfig()), cands(1), replies)
    (rec,) = res.records
    assert [len(s) for s in steps] == [1]
    assert rec["outcome"] == REPAIRED and rec["parsed"] == [0] and res.scores["d0"] == 0.0
    assert "bare integer 0" in rec["repairs"] and "no '<answer>' tag" in rec["repairs"]
    assert [bare_score(t) for t in ("0\n\nx", " 7", "10\n", "11\n", "1. The", "3 is", "<think>5", "")] == [
        0, 7, 10, None, None, None, None, None]


def test_a_bare_first_line_before_an_early_answer_tag_is_not_read_as_the_answer():
    """A reply that stopped on '<answer>' (before closing '</think>') meant its answer to come there: its leading
    integer line is not taken as the answer; the pair is forced, as before the bare-integer rule."""
    def replies(calls, step):
        if step == 1:
            return [reply("7\nthe passage mentions fleas", "<answer>")]
        return [Completion("3", "length", logprobs=[{"3": 0.0}])]

    res, steps = drive(ERank(RerankConfig()), cands(1), replies)
    (rec,) = res.records
    assert [len(s) for s in steps] == [1, 1]
    assert rec["outcome"] == FORCED and "before closing '</think>'" in rec["repairs"] and res.scores["d0"] == 3.0


def test_real_smollm2_prose_without_answer_is_forced_and_scored_by_expected_value():
    prose = SMOLLM2_REPLY.split("\n\n", 1)[1]  # the same reply without its bare "0" line

    def replies(calls, step):
        if step == 1:
            return [Completion(prose, "stop", stop_reason=None)]
        return [Completion("2", "length", logprobs=[SMOLLM2_FORCED_LOGPROBS])]

    res, steps = drive(ERank(RerankConfig()), cands(1), replies)
    assert [len(s) for s in steps] == [1, 1]  # no answer call: the reply never reached <answer>
    (rec,) = res.records
    assert rec["outcome"] == FORCED and "end of sequence" in rec["repairs"] and rec["parsed"] == [2]
    p = {int(k): math.exp(v) for k, v in SMOLLM2_FORCED_LOGPROBS.items()}
    want = sum(k * v for k, v in p.items()) / sum(p.values())
    assert abs(res.scores["d0"] - want) < 1e-9 and abs(want - 2.6324) < 1e-3  # as the real run recorded
    assert steps[1][0].request.messages[-1] == ("assistant", prose + "\n</think>\n<answer>")
