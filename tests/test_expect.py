"""`rankk eval --expect`: pinned values reproduced (exit 0) or not (exit 1, one line per value), through the CLI."""

from __future__ import annotations

import json

import pytest

from rankk_cli.errors import RankkError
from rankk_cli.expect import read_expect


@pytest.fixture
def dl19(data):
    root = data / "trec-dl" / "dl19"
    return root / "runs" / "bm25.trec", root / "runs" / "splade-pp-ed.trec", root / "qrels.txt"


def expect_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rankk: expect: ")]


def test_json_pins_reproduce_and_a_change_of_1e3_fails_with_one_line(tmp_path, rankk, dl19):
    bm25, splade, qrels = dl19
    common = ["eval", bm25, splade, "--qrels", qrels, "-m", "nDCG@10", "-m", "map", "-m", "R(rel=2)@100"]
    pinned = rankk(*common, "--format", "json")
    assert pinned.returncode == 0, pinned.stderr
    rows = json.loads(pinned.stdout)
    assert len(rows) == 6
    good = tmp_path / "expected.json"
    good.write_text(pinned.stdout)
    ok = rankk(*common, "--expect", good)
    assert ok.returncode == 0, ok.stderr
    assert expect_lines(ok.stderr) == [f"rankk: expect: all 6 pinned values of {good} reproduced within 0.0001"]
    assert "bm25" in ok.stdout and "0.5058" in ok.stdout  # the usual output is still printed

    changed = [dict(r) for r in rows]
    changed[4]["value"] += 1e-3  # splade-pp-ed AP
    bad = tmp_path / "changed.json"
    bad.write_text(json.dumps(changed))
    fail = rankk(*common, "--expect", bad)
    assert fail.returncode == 1, fail.stderr
    [line] = expect_lines(fail.stderr)
    assert line.startswith("rankk: expect: splade-pp-ed AP: expected ") and f"{bad}: entry 5" in line
    assert f"{changed[4]['value']:.6f}" in line and f"{rows[4]['value']:.6f}" in line
    assert "Traceback" not in fail.stderr

    # within the tolerance: 1e-5 off passes by default, 1e-3 off passes with --tolerance 2e-3
    near = [dict(r) for r in rows]
    near[0]["value"] += 1e-5
    (tmp_path / "near.json").write_text(json.dumps(near))
    assert rankk(*common, "--expect", tmp_path / "near.json").returncode == 0
    loose = rankk(*common, "--expect", bad, "--tolerance", "2e-3")
    assert loose.returncode == 0, loose.stderr
    strict = rankk(*common, "--expect", tmp_path / "near.json", "--tolerance", "1e-6")
    assert strict.returncode == 1 and len(expect_lines(strict.stderr)) == 1


def test_tsv_pins_per_query_and_every_differing_value_is_a_line(tmp_path, rankk, dl19):
    bm25, _, qrels = dl19
    common = ["eval", bm25, "--qrels", qrels, "-m", "ndcg_cut.10", "-m", "P.10"]
    pinned = rankk(*common, "--format", "tsv", "--per-query")
    assert pinned.returncode == 0, pinned.stderr
    lines = pinned.stdout.splitlines()
    assert lines[0] == "run\tqid\tmeasure\tvalue" and len(lines) == 1 + 44 * 2
    good = tmp_path / "pinned.tsv"
    good.write_text(pinned.stdout)
    ok = rankk(*common, "--expect", good)
    assert ok.returncode == 0, ok.stderr  # 4 printed decimals are within the default 1e-4

    edited = list(lines)
    targets = [i for i, line in enumerate(lines) if line.endswith(("\tnDCG@10\t0.8238", "\tall\tP@10\t0.6186"))]
    assert len(targets) == 2
    for i in targets:
        run, qid, measure, value = edited[i].split("\t")
        edited[i] = "\t".join([run, qid, measure, f"{float(value) + 1e-3:.4f}"])
    bad = tmp_path / "edited.tsv"
    bad.write_text("# pinned from rankk eval --format tsv --per-query\n" + "\n".join(edited) + "\n")
    fail = rankk(*common, "--expect", bad)
    assert fail.returncode == 1
    found = expect_lines(fail.stderr)
    assert len(found) == 2
    assert found[0].startswith("rankk: expect: bm25 qid 104861 nDCG@10: expected 0.824800, found 0.8238")
    assert found[1].startswith("rankk: expect: bm25 P@10: expected 0.619600, found 0.6186")
    assert f"{bad}:{targets[0] + 2}" in found[0]  # FILE:LINE (the comment is line 1)


def test_hand_written_object_with_trec_names_evaluates_the_pinned_measures(tmp_path, rankk, dl19):
    bm25, splade, qrels = dl19
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"bm25": {"ndcg_cut_10": 0.5058, "recall_100": 0.4531},
                                "splade-pp-ed": {"nDCG@10": 0.7308}}))
    # no -m: the pinned measures are what is evaluated
    ok = rankk("eval", bm25, splade, "--qrels", qrels, "--expect", pins, "--format", "tsv")
    assert ok.returncode == 0, ok.stderr
    plain = rankk("eval", bm25, splade, "--qrels", qrels, "-m", "nDCG@10", "-m", "R@100", "--format", "tsv")
    assert ok.stdout == plain.stdout and "bm25\tR@100\t0.4531" in ok.stdout.splitlines()
    # a pinned run this call does not evaluate is a failed check, not silence
    only = rankk("eval", bm25, "--qrels", qrels, "--expect", pins)
    assert only.returncode == 1
    [line] = expect_lines(only.stderr)
    assert "splade-pp-ed nDCG@10" in line and "no run of that name" in line


@pytest.mark.parametrize("text,message", [
    ('[{"run": "bm25", "measure": "nDCG@10", "value": 0.5}, {"run": "bm25", "measure": "nDCG@10"}]',
     "entry 2: expected the keys"),
    ('{"bm25": {"nDCG@10": "high"}}', "expected a number as the value of run 'bm25' measure 'nDCG@10'"),
    ('[{"run": "bm25", "measure": "nDCG@10", "value": 0.5},\n {"run": ', ":2: expected a JSON expect file"),
    ("bm25\tnDCG@10\n", ":1: expected 'run<TAB>measure<TAB>value'"),
    ("bm25\tnDCG@ten\t0.5\n", ":1: expected a measure rankk eval -m accepts, found 'nDCG@ten'"),
    ("bm25\tP\t0.5\n", ":1: expected one measure, found 'P', which stands for 9"),
    ("bm25\tnDCG@10\t0.5\nbm25\tndcg_cut.10\t0.6\n", ":2: expected each (run, qid, measure) once"),
    ("bm25\tnDCG@10\tinf\n", ":1: expected a finite number"),
    ("\n\n# only a comment\n", "expected at least one pinned value"),
])
def test_malformed_expect_files(tmp_path, text, message):
    path = tmp_path / "e.txt"
    path.write_text(text)
    with pytest.raises(RankkError) as info:
        read_expect(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value), str(info.value)
