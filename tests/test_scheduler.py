"""The scheduler: lockstep engine-call counts with a fake engine, ragged lists, forcing, the call cache; continuous
scheduling against an engine that answers out of order; the journal of the call cache."""

from __future__ import annotations

import pandas as pd
import pytest
from fakes import FakeEngine

from rankk_cli.rerank.cache import CallCache
from rankk_cli.rerank.engines.base import Completion, Request, Sampling
from rankk_cli.rerank.methods.base import Candidate, RerankConfig
from rankk_cli.rerank.methods.rank1 import Rank1
from rankk_cli.rerank.methods.rankk import RankK
from rankk_cli.rerank.scheduler import Scheduler


def queries(sizes):
    return [(f"q{k}", f"query {k}", [Candidate(f"q{k}d{i}", f"passage {i} of {k}", 100.0 - i, i + 1)
                                     for i in range(n)]) for k, n in enumerate(sizes)]


def test_q_queries_at_100_20_10_take_nine_engine_calls():
    engine = FakeEngine()
    sched = Scheduler(engine, schedule="lockstep")
    results = sched.run(RankK(RerankConfig()), queries([100] * 7))
    assert engine.batches == [7] * 9
    assert sched.stats.engine_calls == 9 and sched.stats.requests == 63
    for qid, res in results.items():
        assert len(res.records) == 9
        assert sorted(res.order) == sorted(f"{qid}d{i}" for i in range(100))
        assert all(r["outcome"] == "ok" for r in res.records)
        assert [r["engine_call"] for r in res.records] == [[i] for i in range(9)]
        assert all(r["qid"] == qid and len(r["prompt_hash"]) == 64 for r in res.records)


def test_ragged_lists_finish_early_and_still_batch():
    engine = FakeEngine()
    results = Scheduler(engine, schedule="lockstep").run(RankK(RerankConfig()), queries([100, 35, 5, 1, 0]))
    # windows per query: 9, 3, 1, 1 (single candidate: no call), 0
    assert engine.batches == [3, 2, 2] + [1] * 6
    assert [len(results[f"q{k}"].records) for k in range(5)] == [9, 3, 1, 1, 0]
    assert results["q3"].order == ["q3d0"] and results["q4"].order == []


def test_passes_multiply_rounds():
    engine = FakeEngine()
    Scheduler(engine, schedule="lockstep").run(RankK(RerankConfig(depth=40, passes=2)), queries([40, 40]))
    assert engine.batches == [2] * 6


def test_forced_follow_ups_are_batched_with_other_queries_next_windows():
    # queries q0 and q1 get cut off in their first window: both forced answers go out in round 2
    engine = FakeEngine(cut_off=lambda req: "query 0" in req.messages[0][1] or "query 1" in req.messages[0][1])
    sched = Scheduler(engine, schedule="lockstep")
    results = sched.run(RankK(RerankConfig(depth=30)), queries([30, 30, 30]))
    # round 1: 3 first windows; then cut-off queries need 2 more rounds per window (force + next) ...
    assert sched.stats.engine_calls == len(engine.batches)
    assert max(engine.batches) == 3 and sum(engine.batches) == 3 * 2 + 2 * 2  # 6 windows + 4 forced
    assert len(engine.batches) == 4  # r1: w1 x3, r2: forced x2 + q2's w2, r3: w2 x2, r4: forced x2
    outcomes = {q: [r["outcome"] for r in res.records] for q, res in results.items()}
    assert outcomes == {"q0": ["forced", "forced"], "q1": ["forced", "forced"], "q2": ["ok", "ok"]}
    rec = results["q0"].records[0]
    assert len(rec["engine_call"]) == 2 and rec["forced_raw"]


def test_pointwise_sends_all_pairs_of_all_queries_in_one_call():
    engine = FakeEngine(cut_off=lambda req: "passage 3 of" in req.prompt)
    results = Scheduler(engine, schedule="lockstep").run(Rank1(RerankConfig()), queries([10, 4, 7]))
    assert engine.batches == [21, 3]  # all pairs, then the 3 forced one-token answers together
    assert [r["outcome"] for r in results["q1"].records] == ["ok", "ok", "ok", "forced"]


def test_cache_second_run_makes_no_engine_call_and_gives_same_result(tmp_path):
    qs = queries([50, 30])
    first = FakeEngine()
    r1 = Scheduler(first, cache=CallCache(tmp_path / "calls")).run(RankK(RerankConfig(depth=50)), qs)
    second = FakeEngine()
    sched = Scheduler(second, cache=CallCache(tmp_path / "calls"))
    r2 = sched.run(RankK(RerankConfig(depth=50)), qs)
    assert second.batches == [] and sched.stats.cache_hits == sum(first.batches)
    assert {q: r.order for q, r in r1.items()} == {q: r.order for q, r in r2.items()}
    assert all(rec["cached"] and rec["engine_call"] == [-1] for rec in r2["q0"].records)
    # a different sampling is a different key
    other = FakeEngine(sampling=Sampling(temperature=0.5))
    Scheduler(other, cache=CallCache(tmp_path / "calls")).run(RankK(RerankConfig(depth=50)), qs)
    assert other.batches == first.batches


def test_error_completions_are_not_cached(tmp_path):
    engine = FakeEngine(fail=lambda req: True)
    results = Scheduler(engine, cache=CallCache(tmp_path / "calls")).run(RankK(RerankConfig(depth=20)),
                                                                          queries([20]))
    assert results["q0"].records[0]["outcome"] == "failed"
    assert len(CallCache(tmp_path / "calls")) == 0
    retry = FakeEngine()
    Scheduler(retry, cache=CallCache(tmp_path / "calls")).run(RankK(RerankConfig(depth=20)), queries([20]))
    assert retry.batches == [1]


def test_cache_chunks_are_atomic_and_shared_between_processes(tmp_path):
    a, b = CallCache(tmp_path), CallCache(tmp_path)
    logprobs = [{" true": -0.1, " false": -2.5}]
    a.put_many([("k1", Completion("one", "stop", 3, 1, logprobs=logprobs))], engine="e", model="m")
    assert b.get("k1") is None  # not yet seen ...
    assert b.refresh() == 1 and b.get("k1").logprobs == logprobs and b.get("k1").cached
    b.put_many([("k2", Completion("two", "length", 3, 9))])
    a.refresh()
    assert a.get("k2").finish_reason == "length"
    (tmp_path / ".chunk-x.parquet.tmp").write_bytes(b"half-written")  # an in-flight temp file is ignored
    (tmp_path / "chunk-broken.parquet").write_bytes(b"not parquet")  # a damaged chunk is skipped
    c = CallCache(tmp_path)
    assert len(c) == 2
    chunks = sorted(p.name for p in tmp_path.glob("chunk-*.parquet"))
    assert len(chunks) == 3 and len(set(chunks)) == 3
    df = pd.read_parquet(tmp_path / chunks[0]) if chunks[0] != "chunk-broken.parquet" else None
    assert df is None or set(df.columns) >= {"key", "text", "finish_reason", "logprobs", "input_tokens"}


def test_request_key_changes_with_overrides():
    s = Sampling()
    base = Request(messages=(("user", "x"),))
    assert base.key("e", "m", s) == Request(messages=(("user", "x"),)).key("e", "m", s)
    assert base.key("e", "m", s) != Request(messages=(("user", "x"),), max_tokens=5).key("e", "m", s)
    assert base.key("e", "m", s) != base.key("e", "m2", s)


def test_dry_run_needs_no_engine_and_sees_every_window():
    seen = []
    sched = Scheduler(None, dry_run=seen.append, key_parts=("vllm", "m", Sampling()))
    results = sched.run(RankK(RerankConfig()), queries([100, 100]))
    assert len(seen) == 18 and sched.stats.engine_calls == 0
    assert all(r["outcome"] == "failed" for res in results.values() for r in res.records)
    with pytest.raises(ValueError):
        Scheduler(None)


# ---------------------------------------------------------------------------------------------- continuous


class OutOfOrderEngine(FakeEngine):
    """Continuous fake: ``poll`` answers ONE outstanding request at a time, the most recently submitted first
    (the opposite of submission order), and logs every submission (size, what was outstanding then)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.outstanding: list[tuple[int, Request]] = []
        self.submits: list[tuple[int, list[str]]] = []  # (requests, users of the outstanding requests)
        self.next_ticket = 0
        self.polls = 0
        self.on_poll = None

    def submit(self, requests):
        self.submits.append((len(requests), [self._query(r) for _t, r in self.outstanding]))
        tickets = list(range(self.next_ticket, self.next_ticket + len(requests)))
        self.next_ticket += len(requests)
        self.outstanding.extend(zip(tickets, requests))
        return tickets

    def poll(self):
        self.polls += 1
        if self.on_poll:
            self.on_poll(self)
        if not self.outstanding:
            return []
        ticket, request = self.outstanding.pop()
        return [(ticket, self._one(request))]

    def cancel(self, tickets):
        self.outstanding = [(t, r) for t, r in self.outstanding if t not in set(tickets)]

    @staticmethod
    def _query(r: Request) -> str:
        text = r.prompt if r.prompt is not None else r.messages[0][1]
        return next(w for w in ("query 0", "query 1", "query 2", "query 3") if w in text)


def comparable(results):
    """Records without the schedule-dependent fields (which engine batch answered, how long it took)."""
    return {q: (r.order, r.scores, [{k: v for k, v in rec.items() if k not in ("engine_call", "seconds")}
                                    for rec in r.records]) for q, r in results.items()}


@pytest.mark.parametrize("method", [RankK(RerankConfig(depth=30)), Rank1(RerankConfig(depth=10))],
                         ids=["listwise", "pointwise"])
def test_continuous_out_of_order_answers_equal_lockstep(method):
    qs = queries([30, 12, 30, 5])
    cut = lambda req: "query 1" in str(req.messages or req.prompt) or "passage 3 of" in str(req.prompt)  # noqa: E731
    lock = Scheduler(FakeEngine(cut_off=cut), schedule="lockstep")
    want = lock.run(method, qs)
    engine = OutOfOrderEngine(cut_off=cut)
    cont = Scheduler(engine)  # continuous is the default
    got = cont.run(method, qs)
    assert comparable(got) == comparable(want)
    for field_ in ("requests", "input_tokens", "output_tokens", "cache_hits", "errors"):
        assert getattr(cont.stats, field_) == getattr(lock.stats, field_), field_
    # one answer per poll: each is its own engine call; every call of a window names the batch that answered it
    assert cont.stats.engine_calls == cont.stats.requests == engine.polls
    calls = sorted(i for r in got.values() for rec in r.records for i in rec["engine_call"])
    assert calls == list(range(cont.stats.requests))
    if method.kind == "pointwise":  # all of a query's pairs in one submission
        assert [n for n, _ in engine.submits][:4] == [len(c) for _q, _t, c in qs]
    else:  # no barrier: a query's next window went out while other queries' windows were still outstanding
        assert any(n == 1 and others for n, others in engine.submits[len(qs):])


def test_continuous_makes_each_finished_call_durable_before_the_run_ends(tmp_path):
    seen = []

    def look(engine):  # what another process would find in the cache right now
        seen.append(len(CallCache(tmp_path / "calls")))

    engine = OutOfOrderEngine()
    engine.on_poll = look
    sched = Scheduler(engine, cache=CallCache(tmp_path / "calls"))
    first = sched.run(RankK(RerankConfig(depth=30)), queries([30, 30]))
    assert seen == list(range(len(seen))) and len(seen) == 4  # each poll found every earlier answer stored
    # the journal was compacted into ONE chunk at the end, not one file per completion
    assert [p.name.split("-")[0] for p in (tmp_path / "calls").iterdir()] == ["chunk"]
    again = OutOfOrderEngine()
    for schedule in ("continuous", "lockstep"):
        s = Scheduler(again, cache=CallCache(tmp_path / "calls"), schedule=schedule)
        assert comparable(s.run(RankK(RerankConfig(depth=30)), queries([30, 30])))["q0"][0] == first["q0"].order
        assert s.stats.requests == 0 and s.stats.cache_hits == 4 and again.submits == []


def test_continuous_run_that_fails_keeps_what_finished(tmp_path):
    class Crash(OutOfOrderEngine):
        def poll(self):
            if self.polls == 3:
                raise RuntimeError("engine died")
            return super().poll()

    engine = Crash()
    with pytest.raises(RuntimeError, match="engine died"):
        Scheduler(engine, cache=CallCache(tmp_path / "calls")).run(RankK(RerankConfig(depth=30)), queries([30, 30]))
    assert engine.outstanding == []  # the requests left were cancelled
    assert len(CallCache(tmp_path / "calls")) == 3 and not list((tmp_path / "calls").glob("journal-*"))


def test_continuous_error_completions_are_not_cached(tmp_path):
    engine = OutOfOrderEngine(fail=lambda req: "query 1" in req.messages[0][1])
    sched = Scheduler(engine, cache=CallCache(tmp_path / "calls"))
    results = sched.run(RankK(RerankConfig(depth=20)), queries([20, 20]))
    assert results["q1"].records[0]["outcome"] == "failed" and sched.stats.errors == 1
    assert len(CallCache(tmp_path / "calls")) == 1


def test_journal_of_a_killed_process_is_read_and_compacted(tmp_path):
    import json
    import subprocess
    import sys

    from rankk_cli.rerank import cache as cache_mod

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    calls = tmp_path / "calls"
    writer = CallCache(calls)
    writer.append([("k1", Completion("one", "stop", 3, 1)), ("k2", Completion("two", "length", 3, 9))], "e", "m")
    journal = next(calls.glob("journal-*.jsonl"))
    reader = CallCache(calls)  # another process's journal is visible before any chunk exists
    assert reader.get("k2").finish_reason == "length" and len(reader) == 2
    # as if that writer had been killed -9 mid-write: a dead pid, and a torn last line
    orphan = calls / f"journal-{cache_mod._host()}-{dead}-abc.jsonl"
    writer._fd, fd = None, writer._fd
    import os

    os.close(fd)
    journal.rename(orphan)
    with orphan.open("ab") as f:
        f.write(json.dumps({"key": "k3", "text": "thr"}).encode()[:15])
    adopted = CallCache(calls)
    assert not list(calls.glob("journal-*")) and len(list(calls.glob("chunk-*.parquet"))) == 1
    assert len(adopted) == 2 and adopted.get("k1").text == "one" and adopted.get("k3") is None
    assert len(CallCache(calls)) == 2  # adopting again adds nothing twice


def test_vllm_continuous_equals_lockstep_with_long_tailed_lengths(tiny_vllm):
    """Real vLLM (tiny model, greedy): per-request lengths drawn long-tailed and forced, so queries really drift
    apart under continuous scheduling; every record is the same as lockstep's, only the batches differ."""
    from rankk_cli.testing import force_lengths, lognormal_lengths

    force_lengths(tiny_vllm, lognormal_lengths(seed=7, median=12, sigma=1.0, cap=64))
    try:
        qs = [(qid, q, [Candidate(f"{qid}d{i}", f"passage {i} " * (1 + i % 4), 10.0 - i, i + 1) for i in range(n)])
              for qid, q, n in (("a", "first query", 10), ("b", "second", 7), ("c", "third query here", 10))]
        method = RankK(RerankConfig(depth=10, window=4, stride=2, force_max_tokens=6))
        lock = Scheduler(tiny_vllm, schedule="lockstep")
        want = lock.run(method, qs)
        cont = Scheduler(tiny_vllm)
        got = cont.run(method, qs)
    finally:
        del tiny_vllm.sampling_params  # the instance override: back to the class's method
    assert comparable(got) == comparable(want)
    lengths = {rec["output_tokens"] for r in got.values() for rec in r.records}
    assert len(lengths) > 3  # the forced lengths vary ...
    assert cont.stats.batch_sizes != lock.stats.batch_sizes  # ... so continuous answered in other batches
    assert cont.stats.requests == lock.stats.requests and cont.stats.output_tokens == lock.stats.output_tokens


# ---------------------------------------------------------------------------------------------- cache at scale


def _fill(calls, chunks, per_chunk=3, start=0):
    for c in range(chunks):
        CallCache(calls, compact=False).put_many(
            [(Request(prompt=f"p{start + c * per_chunk + i}").key("e", "m", Sampling()),
              Completion(f"text {start + c * per_chunk + i}", "stop", 1, 2)) for i in range(per_chunk)], "e", "m")


def test_cache_open_reads_keys_only_and_fetches_rows_on_a_hit(tmp_path):
    _fill(tmp_path, chunks=4, per_chunk=600)  # row groups of 256: a hit reads one of them
    cache = CallCache(tmp_path)
    assert cache._recent == {} and len(cache._index) == 2400  # nothing but the key index loaded
    for i in (0, 599, 1234, 2399):
        assert cache.get(Request(prompt=f"p{i}").key("e", "m", Sampling())).text == f"text {i}"
    assert cache.get(Request(prompt="p2400").key("e", "m", Sampling())) is None
    assert len(cache._groups) == 4 and len(cache) == 2400


def test_many_small_chunks_are_compacted_once_and_nothing_is_lost(tmp_path):
    from rankk_cli.rerank import cache as cache_mod

    _fill(tmp_path, chunks=cache_mod.COMPACT_MIN_SMALL + 8)
    dup = Request(prompt="p0").key("e", "m", Sampling())
    CallCache(tmp_path, compact=False)._write_chunk(  # the same key again in another chunk (a race)
        [{"key": dup, "engine": "e", "model": "m", "text": "second copy", "finish_reason": "stop",
          "input_tokens": 1, "output_tokens": 2, "logprobs": None, "seconds": 0.0, "created": 0.0,
          "embedding": None}])
    reader = CallCache(tmp_path, compact=False)  # indexed the small chunks ...
    n = (cache_mod.COMPACT_MIN_SMALL + 8) * 3
    cache = CallCache(tmp_path)  # ... then another process compacts them away
    assert len(list(tmp_path.glob("chunk-*.parquet"))) == 1 and not list(tmp_path.glob(".compact.lock"))
    assert len(cache) == n and cache.get(dup).text in ("text 0", "second copy")
    assert pd.read_parquet(next(tmp_path.glob("chunk-*.parquet")))["key"].is_unique
    for i in range(n):  # the reader finds every row although its chunks are gone (it indexes again)
        assert reader.get(Request(prompt=f"p{i}").key("e", "m", Sampling())).text in (f"text {i}", "second copy")
    assert CallCache(tmp_path).compact() == 0  # one chunk left: nothing to do
