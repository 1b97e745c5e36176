"""The Run table: TREC/.gz/Parquet round trips, whitespace, ranking order, written scores, atomic writes,
and the pyarrow fast path agreeing with the line-by-line parser."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rankk_cli import runs
from rankk_cli.errors import RankkError
from rankk_cli.runs import Run, read_run, run_from_rankings, write_run

CLEAN = (
    "q1 Q0 d1 1 3.5 bm25\n"
    "q1 Q0 d2 2 2.25 bm25\n"
    "q1 Q0 d3 3 -1e-3 bm25\n"
    "q2 Q0 d9 1 10 bm25\n"
    "q2 Q0 d1 2 9.75 bm25\n"
)


def core(run: Run) -> pd.DataFrame:
    return run.df[["qid", "docid", "rank", "score"]].reset_index(drop=True)


def sample_run(n_queries: int = 4, depth: int = 50, seed: int = 0) -> Run:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        scores = rng.normal(scale=100.0, size=depth)
        # extremes and values with long decimal forms
        if depth >= 4:
            scores[:4] = {0: [1e300, -1e300, 5e-324, -0.0], 1: [1e-300, -1e-300, 0.0, 123456789.123456789],
                          2: [0.1 + 0.2, 1 / 3, -2 / 3, 2.0 ** 60]}.get(q, scores[:4])
        scores = np.sort(scores)[::-1]
        for i, s in enumerate(scores):
            rows.append((f"{1000 + q}", f"doc-{q}-{i}", i + 1, float(s)))
    df = pd.DataFrame(rows, columns=["qid", "docid", "rank", "score"])
    df["rank"] = df["rank"].astype(np.int64)
    return Run(df, "sample", {"k1": 0.9, "note": "x"})


# ----------------------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("suffix", [".trec", ".trec.gz", ".parquet", ".json", ".json.gz"])
def test_round_trip_is_bit_identical(tmp_path, suffix):
    run = sample_run()
    path = tmp_path / f"run{suffix}"
    write_run(run, path)
    back = read_run(path)
    got, want = core(back), core(run)
    assert got["qid"].tolist() == want["qid"].tolist()
    assert got["docid"].tolist() == want["docid"].tolist()
    assert got["rank"].tolist() == want["rank"].tolist()
    got_s, want_s = got["score"].to_numpy(), want["score"].to_numpy()
    if suffix == ".parquet":  # lossless: bit for bit (compare the IEEE-754 words, not a tolerance)
        assert np.array_equal(got_s.view(np.int64), want_s.view(np.int64))
    else:
        # TREC text (and JSON, which pytrec_eval reads the same way) is read by trec_eval as float32: scores that collide there (5e-324, 0.0, -0.0, +-1e-300 all
        # round to 0) are stepped apart; every score distinct from its neighbours in float32 is bit for bit
        with np.errstate(over="ignore"):
            f32 = want_s.astype(np.float32)
        same_q = want["qid"].to_numpy()
        clash = np.zeros(len(f32), dtype=bool)
        tie = (same_q[1:] == same_q[:-1]) & (f32[1:] == f32[:-1])
        clash[1:] |= tie
        keep = ~clash
        assert keep.sum() > 150 and clash.sum() >= 3
        assert np.array_equal(got_s[keep].view(np.int64), want_s[keep].view(np.int64))
        g32 = got_s.astype(np.float32)
        assert all(g32[i] > g32[i + 1] for i in range(len(g32) - 1) if same_q[i] == same_q[i + 1]
                   and np.isfinite(g32[i]))
    if suffix.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"


def test_parquet_keeps_meta_and_extra_columns(tmp_path):
    run = sample_run(2, 5)
    run.df["text"] = [f"passage {i}" for i in range(len(run.df))]
    run.df["first_stage"] = np.arange(len(run.df), dtype=np.float64)
    write_run(run, tmp_path / "r.parquet")
    back = read_run(tmp_path / "r.parquet")
    assert back.meta["k1"] == 0.9 and back.meta["note"] == "x"
    assert back.df["text"].tolist() == run.df["text"].tolist()
    assert back.df["first_stage"].tolist() == run.df["first_stage"].tolist()


def test_gz_output_is_deterministic(tmp_path):
    run = sample_run(1, 10)
    write_run(run, tmp_path / "a.trec.gz")
    write_run(run, tmp_path / "b.trec.gz")
    assert (tmp_path / "a.trec.gz").read_bytes() == (tmp_path / "b.trec.gz").read_bytes()
    assert gzip.decompress((tmp_path / "a.trec.gz").read_bytes()) == \
        (write_run(run, tmp_path / "c.trec") or (tmp_path / "c.trec").read_bytes())


def test_trec_tag_is_written(tmp_path):
    write_run(sample_run(1, 3), tmp_path / "r.trec", tag="my run")
    lines = (tmp_path / "r.trec").read_text().splitlines()
    assert all(line.split()[1] == "Q0" and line.split()[5] == "my_run" for line in lines)


# ----------------------------------------------------------------------------------------------------------
# whitespace, CRLF, BOM, blank lines


VARIANTS = {
    "tabs": CLEAN.replace(" ", "\t"),
    "multiple spaces": CLEAN.replace(" ", "   "),
    "mixed and padded": "".join(f"  {line.replace(' ', chr(9) + ' ', 2)}  \n" for line in CLEAN.splitlines()),
    "crlf": CLEAN.replace("\n", "\r\n"),
    "bom": "\ufeff" + CLEAN,
    "bom+crlf+tabs": "\ufeff" + CLEAN.replace(" ", "\t").replace("\n", "\r\n"),
    "blank lines between": CLEAN.replace("\n", "\n\n", 2) + "\n\n",
    "no final newline": CLEAN.rstrip("\n"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_any_whitespace_parses_like_the_clean_file(tmp_path, variant):
    (tmp_path / "clean.trec").write_text(CLEAN, encoding="utf-8", newline="")
    (tmp_path / "other.trec").write_text(VARIANTS[variant], encoding="utf-8", newline="")
    clean, other = read_run(tmp_path / "clean.trec"), read_run(tmp_path / "other.trec")
    pd.testing.assert_frame_equal(core(clean), core(other))
    assert clean.df["tag"].tolist() == other.df["tag"].tolist() == ["bm25"] * 5


def test_gzipped_input_parses_like_plain(tmp_path):
    (tmp_path / "a.trec").write_text(CLEAN)
    (tmp_path / "a.trec.gz").write_bytes(gzip.compress(CLEAN.encode()))
    pd.testing.assert_frame_equal(core(read_run(tmp_path / "a.trec")), core(read_run(tmp_path / "a.trec.gz")))


# ----------------------------------------------------------------------------------------------------------
# ranking order


def test_ranking_order_score_desc_then_rank_then_file_order(tmp_path):
    text = (
        "q2 Q0 x 1 5 t\n"      # q2 appears first: queries keep first-appearance order
        "q1 Q0 low 1 0.5 t\n"   # rank says 1, but the score is lowest: score wins
        "q1 Q0 tieB 7 2.0 t\n"  # score tie with tieA: rank 3 < 7, so tieA first
        "q1 Q0 tieA 3 2.0 t\n"
        "q1 Q0 top 9 9.0 t\n"
        "q1 Q0 same2 5 1.0 t\n"  # full tie (score and rank): file order
        "q1 Q0 same1 5 1.0 t\n"
    )
    (tmp_path / "r.trec").write_text(text)
    run = read_run(tmp_path / "r.trec")
    assert run.qids == ["q2", "q1"]
    q1 = run.df[run.df["qid"] == "q1"]
    assert q1["docid"].tolist() == ["top", "tieA", "tieB", "same2", "same1", "low"]
    assert q1["rank"].tolist() == [1, 2, 3, 4, 5, 6]  # ranks are renumbered to the ranking order


def trec_eval_order(path: Path) -> list[tuple[str, str]]:
    """Sort a written run the way trec_eval does: per query, score descending, ties by docno (descending)."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: (r[0], -float(r[4]), tuple(-ord(c) for c in r[2])))
    return [(r[0], r[2]) for r in rows]


@pytest.mark.parametrize("suffix", [".trec", ".trec.gz"])
def test_written_scores_strictly_decrease_and_trec_eval_agrees(tmp_path, suffix):
    # ties everywhere, an inversion, ties at the very bottom, and docids whose docno order disagrees with ours
    df = pd.DataFrame({
        "qid": ["b"] * 6 + ["a"] * 4,
        "docid": ["d1", "d9", "d3", "d8", "d2", "d7", "z", "y", "x", "w"],
        "rank": np.arange(1, 11, dtype=np.int64),
        "score": [5.0, 5.0, 5.0, 4.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0],
    })
    run = Run(df, "ties")
    path = tmp_path / f"ties{suffix}"
    write_run(run, path)
    text = gzip.decompress(path.read_bytes()).decode() if suffix.endswith(".gz") else path.read_text()
    plain = tmp_path / "plain.trec"
    plain.write_text(text)
    rows = [line.split() for line in text.splitlines()]
    for qid in ("a", "b"):
        scores = [float(r[4]) for r in rows if r[0] == qid]
        assert all(s1 > s2 for s1, s2 in zip(scores, scores[1:])), scores
    ours = [(r[0], r[2]) for r in rows]
    assert sorted(ours, key=lambda x: x[0]) == trec_eval_order(plain)
    # untied scores are written bit for bit; the first of each tie group keeps its value
    assert float(rows[0][4]) == 5.0 and float(rows[3][4]) == 4.0
    # reading back gives the same order
    assert core(read_run(path))["docid"].tolist() == df["docid"].tolist()


def test_strictly_decreasing_keeps_clean_scores_and_fixes_cascades():
    df = pd.DataFrame({"qid": ["q"] * 5, "docid": list("abcde"), "rank": np.arange(1, 6),
                       "score": [3.0, 3.0, 3.0, 2.0, 2.0]})
    fixed = runs.strictly_decreasing(df)
    assert all(fixed[i] > fixed[i + 1] for i in range(4))
    assert fixed[0] == 3.0 and fixed[3] == 2.0
    clean = pd.DataFrame({"qid": ["q", "q", "r"], "docid": list("abc"), "rank": [1, 2, 1], "score": [2.0, 1.0, 7.0]})
    assert runs.strictly_decreasing(clean).tolist() == [2.0, 1.0, 7.0]


# ----------------------------------------------------------------------------------------------------------
# atomic writes


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("suffix", [".trec", ".trec.gz", ".parquet"])
def test_failed_write_leaves_no_file_and_no_temp_file(tmp_path, monkeypatch, suffix):
    target = tmp_path / f"out{suffix}"

    def broken_replace(src, dst):
        assert Path(src).exists() and Path(src).stat().st_size > 0  # the data was written to the temp file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_run(sample_run(1, 5), target)
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "out.trec"
    target.write_text("previous\n")

    def exploding(path, data):
        with runs.atomic_path(path) as tmp:
            tmp.write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt  # killed half way

    monkeypatch.setattr(runs, "atomic_write_bytes", exploding)
    with pytest.raises(KeyboardInterrupt):
        write_run(sample_run(1, 5), target)
    assert target.read_text() == "previous\n"
    assert leftovers(tmp_path) == []


def test_write_creates_parent_folders(tmp_path):
    write_run(sample_run(1, 2), tmp_path / "a" / "b" / "r.trec")
    assert (tmp_path / "a" / "b" / "r.trec").exists()


# ----------------------------------------------------------------------------------------------------------
# pyarrow fast path == line-by-line path


def big_text(n_queries=30, depth=40, sep=" ", seed=1) -> str:
    rng = np.random.default_rng(seed)
    forms = [lambda x: repr(x), lambda x: f"{x:.3e}", lambda x: f"{x:.6f}", lambda x: str(int(x * 10))]
    lines = []
    for q in range(n_queries):
        for r in range(depth):
            score = forms[(q + r) % len(forms)](float(rng.normal(scale=50)))
            lines.append(sep.join([f"{q * 7 + 1}", "Q0", f"msmarco_doc_{rng.integers(1e9)}_{r}", str(r + 1), score,
                                   "tag-1"]))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("sep", [" ", "\t"])
def test_fast_path_equals_slow_path(tmp_path, sep):
    text = big_text(sep=sep)
    fast = runs._trec_fast(text)
    assert fast is not None, "single-separator input must take the pyarrow path"
    slow = runs._trec_slow(text, tmp_path / "x")
    pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow, check_dtype=False)
    assert np.array_equal(fast["score"].to_numpy().view(np.int64), slow["score"].to_numpy().view(np.int64))
    # the bytes entry point (clean files go straight from disk to pyarrow) gives the same table
    pd.testing.assert_frame_equal(runs._trec_fast(text.encode()), fast)


def test_fast_path_declines_invalid_utf8_bytes(tmp_path):
    raw = "q1 Q0 caf\xe9 1 2.0 t\n".encode("latin-1")
    assert runs._trec_fast(raw) is None


def test_read_run_same_result_through_both_paths(tmp_path):
    text = big_text()
    forced_slow = text.replace(" ", "  ")  # double spaces: the fast path declines, the slow one parses
    assert runs._trec_fast(forced_slow) is None
    (tmp_path / "fast.trec").write_text(text)
    (tmp_path / "slow.trec").write_text(forced_slow)
    pd.testing.assert_frame_equal(read_run(tmp_path / "fast.trec").df, read_run(tmp_path / "slow.trec").df)


@pytest.mark.parametrize("score", ["1e5", "-0.0", "+3", ".5", "5.", "1_000", "0x10", "1e400", "nan", "inf", "1,5",
                                   "1.5e-320", " 2"])
def test_fast_path_never_disagrees_with_slow_path(tmp_path, score):
    text = f"q1 Q0 d1 1 {score} t\nq1 Q0 d2 2 0.25 t\n"
    fast = runs._trec_fast(text)
    try:
        slow = runs._trec_slow(text, tmp_path / "x")
    except RankkError:
        assert fast is None  # what the slow path rejects, the fast path must not accept
        return
    if fast is not None:
        pd.testing.assert_frame_equal(fast.reset_index(drop=True), slow, check_dtype=False)


# ----------------------------------------------------------------------------------------------------------
# the readers' errors (the CLI versions are in test_bad_inputs.py)


ERRORS = {
    "five columns": ("q1 Q0 d1 1 2.0\n", ":1: expected 6 columns"),
    "seven columns on line 2": ("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t x\n", ":2: expected 6 columns"),
    "score not a number": ("q1 Q0 d1 1 high t\n", ":1: expected a finite number as score"),
    "nan score": ("q1 Q0 d1 1 2 t\nq1 Q0 d2 2 NaN t\n", ":2: expected a finite number"),
    "inf score": ("q1 Q0 d1 1 -inf t\n", ":1: expected a finite number"),
    "rank not an integer": ("q1 Q0 d1 1.5 2 t\n", ":1: expected an integer rank"),
    "duplicate": ("q1 Q0 d1 1 2 t\n\nq1 Q0 d1 2 1 t\n", ":3: expected each (qid, docid) once"),
    "empty": ("", "empty run file"),
    "only blank lines": ("\n  \n\t\n", "empty run file"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_reader_errors_name_file_and_line(tmp_path, case):
    text, expected = ERRORS[case]
    path = tmp_path / "bad.trec"
    path.write_text(text)
    with pytest.raises(RankkError) as info:
        read_run(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_binary_and_undecodable_and_missing(tmp_path):
    (tmp_path / "nul.trec").write_bytes(b"q1 Q0 d1 1 2 t\n\x00\x01\x02")
    (tmp_path / "latin1.trec").write_bytes("q1 Q0 d1 1 2 t\nq1 Q0 caf\xe9 2 1 t\n".encode("latin-1"))
    cases = {"nul.trec": ":2: expected a text run file, found binary", "latin1.trec": ":2: expected UTF-8",
             "missing.trec": ": no such run file"}
    for name, expected in cases.items():
        with pytest.raises(RankkError) as info:
            read_run(tmp_path / name)
        assert expected in str(info.value), str(info.value)
    os.mkdir(tmp_path / "dir.trec")
    with pytest.raises(RankkError, match="found a directory"):
        read_run(tmp_path / "dir.trec")


def test_parquet_written_by_rankk_is_marked_checked_and_an_edited_file_is_still_validated(tmp_path):
    """write_parquet_run records that it checked the run (row count); a re-read trusts uniqueness only while the
    row count matches and the ranking order holds: a file edited with pyarrow (metadata kept) is re-validated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankk_cli.runs import CHECKED_KEY

    run = run_from_rankings({"q1": [("a", 3.0), ("b", 2.0), ("c", 1.0)], "q2": [("a", 5.0), ("d", 4.0)]})
    path = tmp_path / "run.parquet"
    write_run(run, path)
    table = pq.read_table(path)
    assert table.schema.metadata[CHECKED_KEY] == b"5"
    back = read_run(path)
    assert back.df[["qid", "docid", "rank"]].values.tolist() == [
        ["q1", "a", 1], ["q1", "b", 2], ["q1", "c", 3], ["q2", "a", 1], ["q2", "d", 2]]
    # same row count, a duplicate docid put in by hand (metadata kept): the marker must not hide it once the
    # order check fails, and an added row invalidates the marker outright
    docid = table.column("docid").to_pylist()
    docid[1] = "a"
    score = table.column("score").to_pylist()
    score[2] = 9.0  # out of order too
    edited = table.set_column(table.schema.get_field_index("docid"), "docid", pa.array(docid, pa.large_string()))
    edited = edited.set_column(edited.schema.get_field_index("score"), "score", pa.array(score))
    bad = tmp_path / "edited.parquet"
    pq.write_table(edited, bad)
    with pytest.raises(RankkError, match="duplicate"):
        read_run(bad)
    grown = pa.concat_tables([table, table.slice(0, 1)])
    bad2 = tmp_path / "grown.parquet"
    pq.write_table(grown, bad2)
    with pytest.raises(RankkError, match="duplicate"):
        read_run(bad2)


def test_written_files_get_normal_permissions_and_a_directory_target_is_one_line(tmp_path):
    run = run_from_rankings({"q1": [("a", 2.0), ("b", 1.0)]})
    for name in ("r.trec", "r.trec.gz", "r.parquet"):
        write_run(run, tmp_path / name)
        mode = (tmp_path / name).stat().st_mode & 0o777
        mask = os.umask(0)
        os.umask(mask)
        assert mode == 0o666 & ~mask, oct(mode)  # not mkstemp's 0600
    (tmp_path / "adir").mkdir()
    with pytest.raises(RankkError, match="adir: expected an output file path, found a directory"):
        write_run(run, tmp_path / "adir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "r.parquet", "r.trec", "r.trec.gz"]


def test_written_scores_decrease_as_float32_too(tmp_path):
    # trec_eval reads scores into C floats: 1.00000002 / 1.00000001 and 0.5 / nextafter(0.5) collapse there, so
    # the writer steps them to distinct float32 values (written exactly) and trec_eval keeps the ranking
    df = pd.DataFrame({"qid": ["q"] * 5, "docid": ["a", "b", "c", "d", "e"], "rank": np.arange(1, 6),
                       "score": [1.00000002, 1.00000001, 0.5, np.nextafter(0.5, 0), 0.25]})
    path = tmp_path / "f32.trec"
    write_run(Run(df, "f32"), path)
    written = [float(line.split()[4]) for line in path.read_text().splitlines()]
    as_f32 = np.array(written).astype(np.float32)
    assert all(as_f32[i] > as_f32[i + 1] for i in range(4)), as_f32
    assert written[0] == 1.00000002 and written[2] == 0.5 and written[4] == 0.25  # clean ones bit for bit
    assert [(q, d) for q, d in trec_eval_order(path)] == [("q", d) for d in "abcde"]
