"""GroupRank: the golden prompt (Diver's rerank_groupwise.py), the score parser on real and malformed answers,
the merge of scores from different groups into one ranking, and every outcome path with scripted replies."""

from __future__ import annotations

import json

from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods import METHODS
from rankk_cli.rerank.methods.base import FAILED, FORCED, OK, REPAIRED, Candidate, RerankConfig
from rankk_cli.rerank.methods.grouprank import (SYSTEM, GroupRank, group_slices, merge, parse_scores, render)
from test_parsers import cands, drive

USER_GOLDEN = (
    "I will provide you 2 documents, each indicated by a numerical identifier []. Score these documents based on "
    "their Usefulness and Relevance to the query.\nQuery:\nwhat is {x}?\n\nDocuments:\n[1]. alpha {y} two lines"
    "\n\n[2]. beta\n\n\n\n## Final Output Format\nYou must structure your response in exactly two parts: provide "
    "your brief reasoning process first, then output final scores in JSON format like below, with document IDs as "
    "string keys and integer scores as values for all 2 documents. \nThe reasoning process and answer are enclosed "
    "within <reason> </reason> and <answer> </answer> tags, respectively. Do NOT output anything outside the "
    "specified tags. Follow this exact format:\n<reason> \n[Analyze each document's usefulness and relevance to the "
    "query, explaining your scoring rationale]\n</reason>\n<answer> \n```json\n{\"[1]\": 5, \"[2]\": 3, \"[3]\": 8}"
    "\n``` \n</answer>\n")


def test_grouprank_prompt_golden_system_and_user():
    assert render("what is {x}?", ["alpha {y}\n\ntwo lines", "beta"]) == USER_GOLDEN  # newlines collapsed
    req = GroupRank(RerankConfig(window=2, stride=2)).request("what is {x}?", ["alpha {y}\n\ntwo lines", "beta"])
    assert req.messages == (("system", SYSTEM), ("user", USER_GOLDEN))
    assert SYSTEM.startswith("Your task is to evaluate and rank documents") and SYSTEM.endswith("the query\n")
    assert METHODS.get("grouprank") is GroupRank


def test_parse_scores_exact_lenient_and_malformed():
    ok = parse_scores('<reason> x </reason>\n<answer> \n```json\n{"[1]": 6, "[2]": 1, "[3]": 9}\n``` \n</answer>', 3)
    assert ok.scores == {1: 6, 2: 1, 3: 9} and ok.repairs == [] and ok.answer_tag
    bare = parse_scores('scores: {"1": 7, "2": 2}', 2)  # no tags, plain JSON object
    assert bare.scores == {1: 7, 2: 2} and not bare.answer_tag and bare.repairs == []
    lenient = parse_scores('<answer>```json\n{"[1]": 4, "[2]": 9,}\n```</answer>', 2)  # trailing comma
    assert lenient.scores == {1: 4, 2: 9} and "not valid JSON" in lenient.repairs[0]
    messy = parse_scores('<answer>{"[1]": 12, "[4]": 3, "[2]": -1, "[1]": 2, "x": 5}</answer>', 3)
    # JSON keeps the last duplicate key ("[1]": 2); 4 is out of range; 12 / -1 clipped; 3 unscored
    assert messy.scores == {1: 2, 2: 0} and any("dropped 4" in r for r in messy.repairs)
    assert any("3 unscored" in r for r in messy.repairs) and any("clipped 2" in r for r in messy.repairs)
    assert parse_scores("I think document 1 is best.", 2).scores == {}
    assert parse_scores("", 2).scores == {}


def test_groups_and_the_merge_of_scores_across_groups():
    assert group_slices(5, 2, 2) == [(0, 2), (2, 4), (4, 5)]
    assert group_slices(4, 3, 2) == [(0, 3), (2, 4)]  # stride < window: document 3 in two groups
    assert group_slices(3, 3, 1) == [(0, 3)]  # --window = --depth: one group, no shorter tails after it
    assert group_slices(12, 6, 3) == [(0, 6), (3, 9), (6, 12)]
    cs = [Candidate(f"d{i}", "t", 0.0, i + 1) for i in range(5)]
    # d2 is in both groups (8 and 4 -> mean 0.6); d0 and d3 tie at 0.6 with it: first-stage order; d4 unscored
    order, scores = merge(cs, [(["d0", "d1", "d2"], {1: 6, 2: 1, 3: 8}), (["d2", "d3", "d4"], {1: 4, 2: 6})])
    assert order == ["d0", "d2", "d3", "d1", "d4"]
    assert abs(scores["d2"] - 0.6) < 1e-12 and scores["d4"] < min(scores[d] for d in ("d0", "d1", "d2", "d3"))


def test_grouprank_outcomes_each_path():
    good = '<reason>r</reason>\n<answer>\n```json\n{"[1]": 2, "[2]": 9}\n```\n</answer>'

    def replies(calls, step):
        if step == 1:
            return [Completion(good, "stop"),                                       # ok
                    Completion('{"[1]": 1, "[2]": 3}', "stop"),                     # no <answer>: repaired
                    Completion("<reason>long thinking", "length"),                  # cut off: forced
                    Completion("<reason>I do not know.</reason>", "stop"),          # no scores: forced -> failed
                    Completion("", "error", error="HTTP 500")]                      # failed
        assert [c.meta["start"] for c in calls] == [4, 6]
        assert calls[0].request.messages[-1] == ("assistant", "<reason>\nlong thinking"
                                                              "\n</reason>\n<answer>\n```json\n")
        return [Completion('{"[1]": 7, "[2]": 8}\n```\n</answer>', "stop"), Completion("nothing", "stop")]

    res, steps = drive(GroupRank(RerankConfig(window=2, stride=2)), cands(10), replies)
    assert [len(s) for s in steps] == [5, 2]  # every group in ONE round
    recs = res.records
    assert [r["outcome"] for r in recs] == [OK, REPAIRED, FORCED, FAILED, FAILED]
    assert recs[0]["parsed"] == [2, 1] and json.loads(recs[0]["scores"]) == {"1": 2, "2": 9}
    assert recs[0]["reasoning"] == "r" and "no <answer> tag" in recs[1]["repairs"]
    assert "cut off" in recs[2]["repairs"] and recs[2]["forced_raw"].startswith('{"[1]": 7')
    assert "HTTP 500" in recs[4]["repairs"] and "scores" not in recs[3] and "no scores either" in recs[3]["repairs"]
    assert res.order[:6] == ["d1", "d5", "d4", "d3", "d0", "d2"]  # 0.9, 0.8, 0.7, 0.3, 0.2, 0.1
    assert res.order[6:] == ["d6", "d7", "d8", "d9"]  # unscored groups: first-stage order, below
    assert sorted(res.order) == sorted(c.docid for c in cands(10))


def test_passes_shuffle_deterministically_and_average():
    m = GroupRank(RerankConfig(window=3, stride=3, passes=2))
    assert m.planned_windows(6) == 4
    seen = []

    def replies(calls, step):
        seen.extend(c.request.messages[1][1] for c in calls)
        return [Completion('<answer>{"[1]": 5, "[2]": 5, "[3]": 5}</answer>', "stop") for _ in calls]

    res, steps = drive(m, cands(6), replies)
    assert len(steps[0]) == 4 and len(set(seen)) == 4
    again = []
    drive(GroupRank(RerankConfig(window=3, stride=3, passes=2)), cands(6),
          lambda calls, step: again.extend(c.request.messages[1][1] for c in calls) or replies(calls, step))
    assert again[:4] == seen[:4]  # the same seed: the same shuffle, so a re-run is answered from the cache
    assert res.order == [c.docid for c in cands(6)]  # all 0.5: first-stage order breaks the tie


# SmolLM2-135M-Instruct on GroupRank's prompt (DL19, BM25 top 6 in groups of 3, greedy, through rankk's vLLM
# engine): it copies the prompt's example answer, in the reply or in the forced follow-up, every time.
SMOLLM2_EXAMPLE_FIRST = ('```json\n{\n    "1": 5,\n    "2": 3,\n    "3": 8\n}\n```\n\nYour answer should be a JSON '
                         'string with the following structure:\n\n```json\n{\n    "1": {\n        "2": {\n            '
                         '"3": 8\n        }\n    }\n}\n```')
SMOLLM2_NESTED_CUT = ('```json\n{\n    "1": {\n        "2": 3,\n        "3": 8\n    },\n    "4": {\n        "5": 5,'
                      '\n        "6": 5,\n        "7": 5,')
SMOLLM2_FORCED = ('{"[1]": 5, "[2]": 3, "[3]": 8}\n```\n```json\n{"[1]": 5, "[2]": 3, "[3]": 8}\n```\n```json\n'
                  '{"[1]": 5,')
SMOLLM2_CHATTER = ("I'm ready to assist you with your request. Please go ahead and provide the documents you'd like "
                   "to compare.")


# SmolLM2 on GroupRank's prompt, DL19 query 1037798 group [6, 10] (5 documents, 160 tokens, cut off): the
# example nested under "1" and "4", then ids past the group's 5. Nothing here scores a document of the group.
SMOLLM2_NESTED_PARTIAL = ('```json\n{\n    "1": {\n        "2": 3, "3": 8\n    },\n    "4": {\n        "5": 8,\n'
                          '        "6": 8\n    },\n    "7": 8,\n    "8": 8,\n    "9": 8,\n    "10": 8,\n    "11": 8,'
                          '\n    "12": 8,\n    "13": 8,\n    "14": 8,\n    "15": 8,\n    "16": 8,\n    "17": 8,\n'
                          '    "18": 8,\n    "19": 8,\n    "20": 8,\n    "21": 8,')


def test_pairs_inside_nested_objects_are_not_scores():
    real = parse_scores(SMOLLM2_NESTED_PARTIAL, 5)
    assert real.scores == {} and not real.copied
    assert "4 pair(s) inside nested objects not read as scores" in real.repairs
    mixed = parse_scores('<answer>```json\n{"[1]": 4, "x": {"[2]": 9}, "[3]": 7,', 3)  # cut: not valid JSON
    assert mixed.scores == {1: 4, 3: 7} and "1 pair(s) inside nested objects not read as scores" in mixed.repairs
    assert any("2 unscored" in r for r in mixed.repairs)
    # JSON that loads was already read at its own level: a nested object is no score
    loaded = parse_scores('<answer>{"[1]": 4, "[2]": {"[3]": 9}}</answer>', 3)
    assert loaded.scores == {1: 4}


def test_real_smollm2_copies_of_the_prompts_example_are_no_answer():
    first = parse_scores(SMOLLM2_EXAMPLE_FIRST, 3)  # last block {"1": {"2": {...}}}: no number; the first is 5,3,8
    assert first.scores == {} and first.copied
    assert parse_scores(SMOLLM2_NESTED_CUT, 3).copied  # lenient read finds "2": 3, "3": 8: the example again
    forced = parse_scores("<answer>\n```json\n" + SMOLLM2_FORCED, 3)
    assert forced.scores == {} and forced.copied
    real = parse_scores('<answer>```json\n{"[1]": 5, "[2]": 3, "[3]": 7}\n```</answer>', 3)  # one value differs
    assert real.scores == {1: 5, 2: 3, 3: 7} and not real.copied and real.repairs == []
    later = parse_scores('```json\n{"[1]": 2, "[2]": 9}\n```\n```json\n{"[1]": 4,', 2)
    assert later.scores == {1: 2, 2: 9} and "an earlier one read" in later.repairs[0]

    def replies(calls, step):
        if step == 1:
            return [Completion(SMOLLM2_EXAMPLE_FIRST, "stop"), Completion(SMOLLM2_CHATTER, "stop")]
        return [Completion(SMOLLM2_FORCED, "length"), Completion(SMOLLM2_FORCED, "length")]

    res, steps = drive(GroupRank(RerankConfig(window=3, stride=3)), cands(6), replies)
    assert [len(s) for s in steps] == [2, 2]
    assert [r["outcome"] for r in res.records] == [FAILED, FAILED]
    assert res.records[0]["repairs"] == ("the reply's scores are the prompt's example copied; forced answer had "
                                         "the prompt's example copied; group unscored")
    assert res.records[1]["repairs"].startswith("no scores in the reply; forced answer had the prompt's example")
    assert res.order == [c.docid for c in cands(6)]  # nothing scored: first-stage order
