"""Thinking-budget sweeps (``rankk rerank --max-tokens 8,16,32 -o DIR``) and the derivation rule behind them.

The rule (rerank/derive.py) is checked where it must hold byte for byte: a sweep's run and windows file at every
budget equal a DIRECT run at that budget in a fresh call cache, on the tiny model and on the real SmolLM2
(fields that legitimately differ: ``engine_call`` (-1 for derived/cached calls), ``seconds`` (0 for them),
``cached`` and ``derived``). The sweep generates fewer tokens than the direct runs together (counted from each
run's ``generated_tokens`` = tokens the engine produced, and cross-checked against the direct runs' windows), a
run answered entirely by derivation loads no model, and bad budget lists are one line, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rankk_cli.errors import RankkError
from rankk_cli.rerank.cache import CallCache
from rankk_cli.rerank.curves import count_rankings
from rankk_cli.rerank.engines.base import Completion, EngineOptions, LazyEngine, Request, Sampling
from rankk_cli.rerank.pipeline import rerank_command
from rankk_cli.rerank.sweep import SWEEP_FILE, parse_budgets, report_sweep, sweep_command

N_QUERIES, DEPTH = 2, 6
# fields of a windows row that differ between a derived and a direct run, and why: engine_call is -1 for calls
# answered from the cache, seconds counts engine time of calls made, cached/derived say where the answer came from
LEGIT = ("engine_call", "seconds", "cached", "derived")


@pytest.fixture(scope="module")
def few(data, tmp_path_factory) -> dict:
    """N_QUERIES DL19 queries x DEPTH BM25 candidates with passage text."""
    from conftest import dl19_candidates

    d = data / "trec-dl" / "dl19"
    path = dl19_candidates(data, tmp_path_factory.mktemp("sweep") / "cands.jsonl", N_QUERIES, DEPTH)
    return {"cands": path, "topics": str(d / "topics.tsv"), "qrels": str(d / "qrels.txt")}


def args(engine, few, method: str, **kw) -> dict:
    base = dict(run=few["cands"], method=method, model=str(engine.model), topics=few["topics"], depth=DEPTH,
                engine_obj=engine, progress=False, temperature=0.0, force_max_tokens=8)
    if method != "rank1":
        base.update(window=4, stride=2)
    return {**base, **kw}


def same_windows(a: Path, b: Path) -> None:
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.column_names == tb.column_names
    keep = [c for c in ta.column_names if c not in LEGIT]
    assert ta.select(keep).to_pylist() == tb.select(keep).to_pylist(), a


def sweep_equals_direct(engine, few, method, budgets, tmp_path, monkeypatch, **kw) -> tuple[dict, dict]:
    """Sweep, then each smaller budget directly, each in a FRESH cache of its own (so nothing is derived or cached
    there); files compared; returns (sweep entry, direct summaries). The sweep's largest budget, run first in this
    test's own fresh cache, is itself a direct run (nothing cached, nothing derived): it is not run twice."""
    folder = tmp_path / "sweep"
    out = sweep_command(budgets=budgets, output=folder, qrels=few["qrels"], **args(engine, few, method, **kw))
    entry = next(iter(out["systems"].values()))
    largest = entry["budgets"][-1]
    assert largest["max_tokens"] == max(budgets) and largest["derived_hits"] == largest["cache_hits"] == 0
    direct = {max(budgets): largest}
    for row in entry["budgets"][:-1]:
        b = row["max_tokens"]
        monkeypatch.setenv("RANKK_CACHE", str(tmp_path / f"fresh-cache-{b}"))
        target = tmp_path / "direct" / f"b{b}.trec"
        direct[b] = rerank_command(output=target, max_tokens=b, **args(engine, few, method, **kw))
        assert (folder / row["run"]).read_bytes() == target.read_bytes(), f"run at --max-tokens {b}"
        same_windows(folder / row["windows_file"], Path(str(target) + ".windows.parquet"))
        win = pq.read_table(Path(str(target) + ".windows.parquet")).to_pandas()
        assert not win["derived"].any()
        # the direct run's own count agrees with its windows (fresh cache, every request generated)
        assert direct[b]["cache_hits"] == 0 and direct[b]["generated_tokens"] == int(win["output_tokens"].sum())
    sweep_generated = sum(r["generated_tokens"] for r in entry["budgets"])
    direct_generated = sum(s["generated_tokens"] for s in direct.values())
    assert sweep_generated < direct_generated, (sweep_generated, direct_generated)
    smaller = [r for r in entry["budgets"] if r["max_tokens"] < max(budgets)]
    assert all(r["derived_hits"] > 0 for r in smaller)
    for r in smaller:  # marked in the windows records
        assert pq.read_table(folder / r["windows_file"]).to_pandas()["derived"].any()
    return entry, direct


# ---------------------------------------------------------------------------------------------- the rule, pure


def test_prefix_key_drops_only_the_budget_and_never_serves_unseeded_sampling():
    r = Request(prompt="p", stop=("x",))
    greedy = Sampling(temperature=0.0, max_tokens=100)
    assert r.prefix_key("vllm", "m", greedy) == r.prefix_key("vllm", "m", Sampling(temperature=0.0, max_tokens=7))
    assert r.prefix_key("vllm", "m", greedy) == Request(prompt="p", stop=("x",), max_tokens=3).prefix_key(
        "vllm", "m", greedy)
    assert r.key("vllm", "m", greedy) != r.key("vllm", "m", Sampling(temperature=0.0, max_tokens=7))
    assert r.prefix_key("vllm", "m", greedy) != Request(prompt="q").prefix_key("vllm", "m", greedy)
    assert r.prefix_key("vllm", "other", greedy) != r.prefix_key("vllm", "m", greedy)
    assert r.prefix_key("vllm", "m", Sampling(temperature=0.7)) is None  # unseeded: never derived
    seeded = r.prefix_key("vllm", "m", Sampling(temperature=0.7, seed=1))
    assert seeded is not None and seeded != r.prefix_key("vllm", "m", Sampling(temperature=0.7, seed=2))
    assert Request(prompt="p", temperature=0.5).prefix_key("vllm", "m", greedy) is None
    assert Request(embed="t").prefix_key("vllm", "m", greedy) is None
    assert r.budget(greedy) == 100 and Request(prompt="p", max_tokens=5).budget(greedy) == 5


def _done(n: int, text: str = "t") -> Completion:
    return Completion(text=text, finish_reason="length", output_tokens=n, token_ids=list(range(n)))


@pytest.mark.parametrize("how", ["chunk", "journal"])
def test_cache_finds_the_smallest_larger_budget_and_skips_old_chunks(tmp_path, how):
    import pyarrow as pa

    cache = CallCache(tmp_path)
    store = cache.put_many if how == "chunk" else cache.append
    store([("k512", _done(512, "a"), ("P", 512)), ("k128", _done(128, "b"), ("P", 128)),
           ("kq", _done(64, "c"), ("Q", 64)), ("knone", _done(64, "d"), None)])
    cache.flush()
    for reader in (cache, CallCache(tmp_path)):  # this process, and a fresh one reading the chunks
        assert reader.derivable("P", 100)["text"] == "b"
        assert reader.derivable("P", 128)["text"] == "b"
        assert reader.derivable("P", 200)["text"] == "a"
        assert reader.derivable("P", 513) is None and reader.derivable("R", 1) is None
        assert reader.derivable("Q", 64)["token_ids"] == list(range(64))
    # a chunk written before token ids were kept (no derivation columns) is never derived from
    old = CallCache.schema()
    old = pa.schema([f for f in old if f.name not in ("prefix_key", "budget", "token_ids")])
    pq.write_table(pa.Table.from_pylist([{"key": "x" * 64, "text": "old", "finish_reason": "length"}], schema=old),
                   tmp_path / "chunk-old-1-1.parquet")
    fresh = CallCache(tmp_path)
    assert fresh.get("x" * 64).text == "old" and fresh.derivable("P", 100)["text"] == "b"


GOLDEN = [
    ("", 0),
    ("Passage [2] is better than [1]. So [2] > [1].", 0),  # a pairwise comparison, not a ranking
    ("First guess: [3] > [1] > [2] > [4].\nWait, [1] mentions the cause. Revised: [1] > [3] > [2] > [4].", 2),
    ("Ranking so far: [5] > [2] = [4]. Then later [5] > [2] > [4] > [1] > [3]", 2),
    ("The top three are [2], [6], [1]; the rest do not answer.", 1),  # comma-joined chain of three ids
    ("Ranking: 3 > 1 > 2 in my head, and 4 > 2 too", 1),  # bare ids join by > only; "4 > 2" is a comparison
    ("I count 1, 2, 3 passages about fleas.", 0),  # bare numbers with commas are prose
    ("[1] = [1] = [1] and [7] > [7]", 0),  # one distinct id is no ranking
    ("Draft [4] > [2] > [1]\nDraft [4] > [2] > [1]", 2),  # a restated ranking counts again
    ("Ｒanking: ［２］ > ［１］ > ［３］", 1),  # full-width forms read as ASCII, as the parser does
]


@pytest.mark.parametrize("text,expected", GOLDEN)
def test_rankings_counted_in_reasoning(text, expected):
    assert count_rankings(text) == expected


def test_bad_budget_lists_are_one_line():
    with pytest.raises(RankkError, match="found 'x' in '256,x'"):
        parse_budgets("256,x")
    with pytest.raises(RankkError, match="distinct budgets, found 256 twice"):
        parse_budgets("256, 256")
    with pytest.raises(RankkError, match="found '' in '256,'"):
        parse_budgets("256,")
    with pytest.raises(RankkError, match="found '0'"):
        parse_budgets("0")
    assert parse_budgets("1024, 256,512") == [1024, 256, 512] and parse_budgets(None) is None


@pytest.mark.parametrize("value,needle", [("256,-1", "found '-1' in '256,-1'"), ("256,,512", "found ''"),
                                          ("2e3", "found '2e3'")])
def test_cli_bad_budget_list_exit_2(rankk, tmp_path, value, needle):
    proc = rankk("rerank", tmp_path / "none.trec", "--method", "rank1", "--max-tokens", value, "-o", tmp_path / "o")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rankk: error: --max-tokens: ") and needle in lines[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_sweep_refuses_flags_it_cannot_honour(tmp_path):
    with pytest.raises(RankkError, match="--windows: not used by a --max-tokens sweep"):
        sweep_command(budgets=[4, 8], output=tmp_path / "o", method="rank1", windows_out=tmp_path / "w")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RankkError, match="expected a folder for the sweep"):
        sweep_command(budgets=[4, 8], output=tmp_path / "file", method="rank1")
    with pytest.raises(RankkError, match="generates nothing"):
        sweep_command(budgets=[4, 8], output=tmp_path / "o", method="oracle")


# ---------------------------------------------------------------------------------------------- real engines


@pytest.mark.slow
@pytest.mark.parametrize("method,sampling", [("rank1", {}), ("rankk", {}),
                                             ("rank1", {"temperature": 0.8, "seed": 5})],  # seeded sampling too
                         ids=["rank1", "rankk", "rank1-seeded"])
def test_tiny_sweep_equals_direct_runs(method, sampling, tiny_vllm, few, tmp_path, monkeypatch):
    entry, _direct = sweep_equals_direct(tiny_vllm, few, method, [6, 24, 12], tmp_path, monkeypatch, **sampling)
    assert entry["sampling"]["temperature"] == sampling.get("temperature", 0.0)
    assert [r["max_tokens"] for r in entry["budgets"]] == [6, 12, 24]
    if method == "rank1":  # pointwise: every pair of every smaller budget derived from the largest
        for r in entry["budgets"][:-1]:
            assert r["derived_hits"] == N_QUERIES * DEPTH
    # the folder: sweep.json and three non-empty PNGs; rankk report shows the cost beside the measures
    folder = tmp_path / "sweep"
    assert json.loads((folder / SWEEP_FILE).read_text())["systems"].keys() == {f"{method}-{tiny_vllm.model.split('/')[-1]}"}
    for name in ("curve.png", "gain.png", "rankings.png"):
        blob = (folder / name).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000, name
    report = tmp_path / "report.md"
    report_sweep(folder, output=report, plot_path=tmp_path / "curve.png")
    text = report.read_text()
    assert "| max tokens | thinking tok/query" in text and "generated tok" in text and "nDCG@10" in text
    for r in entry["budgets"]:
        assert f"| {r['max_tokens']} | " in text
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_a_run_answered_by_derivation_loads_no_model(tiny_vllm, few, tmp_path):
    """rankzephyr with one window per query never forces: a smaller budget is answered by derivation alone."""
    kw = args(tiny_vllm, few, "rankzephyr", window=DEPTH, stride=DEPTH)
    sweep_command(budgets=[16, 4], output=tmp_path / "s1", **kw)

    def never():
        raise AssertionError("the model was loaded")

    lazy = LazyEngine(never, "vllm", str(tiny_vllm.model), Sampling(temperature=0.0), EngineOptions())
    again = sweep_command(budgets=[8, 4], output=tmp_path / "s2", **{**kw, "engine_obj": lazy})
    rows = next(iter(again["systems"].values()))["budgets"]
    assert all(r["requests"] == 0 and r["generated_tokens"] == 0 for r in rows)
    # derived answers are not stored again: budget 4 is derived again (from 16), not a cache hit
    assert [r["derived_hits"] for r in rows] == [N_QUERIES, N_QUERIES] and sum(r["cache_hits"] for r in rows) == 0
    assert not lazy.loaded


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rank1", "rankk"])
def test_smollm2_sweep_equals_direct_runs(method, smollm2_vllm, few, tmp_path, monkeypatch):
    """The real model at depth 3 (rankk: one window per query), budgets 12 and 32."""
    kw = {"depth": 3} if method == "rank1" else {"depth": 3, "window": 3, "stride": 3}
    entry, _direct = sweep_equals_direct(smollm2_vllm, few, method, [12, 32], tmp_path, monkeypatch, **kw)
    small, large = (pq.read_table(tmp_path / "sweep" / r["windows_file"]).to_pandas() for r in entry["budgets"])
    assert small["derived"].all()  # every window's first request at 12 derived from its reply at 32
    if method == "rank1":  # the real model ends some replies within 12 tokens (the same reply) and runs past in others
        assert (large["reply_tokens"] <= 12).any() and (large["reply_tokens"] > 12).any()


@pytest.mark.slow
def test_unseeded_sampling_is_never_derived(tiny_vllm, few, tmp_path, capsys):
    out = sweep_command(budgets=[4, 8], output=tmp_path / "s", **args(tiny_vllm, few, "rank1", temperature=0.9,
                                                                        depth=3))
    rows = next(iter(out["systems"].values()))["budgets"]
    assert [r["derived_hits"] for r in rows] == [0, 0] and all(r["generated_tokens"] > 0 for r in rows)
    err = capsys.readouterr().err
    assert "rankk rerank: warning: --temperature 0.9 without --seed: unseeded sampling is never derived" in err
