"""Nothing silent (issue 15): numbers over dropped, missing, mismatched or undefined data come with one
``rankk: warning:`` line that says what and how much; a number that cannot be computed is null in JSON (never
NaN) and ``–`` in tables. Every case runs through the REAL CLI in a subprocess.
"""

from __future__ import annotations

import json
import shutil

import pytest

RUN = "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq1 Q0 d3 3 1.0 t\nq2 Q0 d1 1 5.0 t\nq2 Q0 d4 2 4.0 t\n"
OTHER = "q1 Q0 d3 1 3.0 t\nq1 Q0 d1 2 2.0 t\nq2 Q0 d4 1 5.0 t\nq2 Q0 d1 2 4.0 t\n"
QRELS = "q1 0 d1 1\nq1 0 d3 0\nq2 0 d4 2\n"


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rankk: warning:")]


def no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr


def write(root, files: dict) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)


def windows_bytes(qids, docids=None) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"qid": pa.array(qids), "engine_call": pa.array([[i] for i in range(len(qids))], pa.list_(pa.int64())),
            "input_tokens": pa.array([10] * len(qids), pa.int64()),
            "output_tokens": pa.array([1] * len(qids), pa.int64()), "seconds": pa.array([0.5] * len(qids))}
    if docids is not None:
        cols["docids"] = pa.array(docids, pa.list_(pa.string()))
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# 1. report says what eval would warn about


def test_report_dl20_runs_scored_with_dl19_qrels_warn(rankk, tmp_path, data):
    root = tmp_path / "paper"
    (root / "dl20").mkdir(parents=True)
    for name in ("bm25", "splade-pp-ed"):
        shutil.copy(data / f"trec-dl/dl20/runs/{name}.trec", root / "dl20" / f"{name}.trec")
    proc = rankk("report", root, "--qrels", f"dl20={data / 'trec-dl/dl19/qrels.txt'}")
    assert proc.returncode == 0, proc.stderr
    no_traceback(proc)
    warned = warnings(proc.stderr)
    for system in ("bm25", "splade-pp-ed"):
        line = next(w for w in warned if f"dl20/{system}:" in w)
        assert "none of the run's 54 queries is judged" in line and "43 judged queries count as 0" in line


def test_report_run_missing_queries_and_unjudged_queries_warn(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN,
                     "root/dl/half.trec": "q1 Q0 d1 1 3.0 t\nq9 Q0 d1 1 3.0 t\n",
                     "root/dl/qrels.txt": QRELS})
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    warned = warnings(proc.stderr)
    assert any("dl/half: 1 of 2 judged queries are missing from the run and count as 0" in w and "q2" in w
               for w in warned), warned
    assert any("dl/half: 1 of the run's 2 queries have no judgements" in w and "q9" in w for w in warned), warned
    assert not any("dl/bm25" in w for w in warned), warned


def test_report_grade_zero_qrels_warn(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/other.trec": OTHER,
                     "root/dl/qrels.txt": "q1 0 d1 0\nq2 0 d4 0\n"})
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    assert any("no judgement has a grade above 0 (2 judgements of 2 queries)" in w
               for w in warnings(proc.stderr)), proc.stderr
    # one judged query with nothing relevant: said with the count
    write(tmp_path, {"root/dl/qrels.txt": "q1 0 d1 0\nq2 0 d4 2\n"})
    proc = rankk("report", tmp_path / "root")
    assert any("1 of 2 judged queries have no relevant judgement" in w and "q1" in w
               for w in warnings(proc.stderr)), proc.stderr


def test_report_folders_and_files_it_does_not_read_warn(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/qrels.txt": QRELS,
                     "root/a/dl19/bm25.trec": RUN, "root/dl/old/bm25.trec": RUN, "root/stray.trec": RUN,
                     "root/dl/notes.md": "x"})
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    warned = warnings(proc.stderr)
    folders = next(w for w in warned if "folder(s)" in w)
    assert "3 folder(s)" in folders and "root/a/dl19" in folders and "root/dl/old" in folders
    files = next(w for w in warned if "file(s)" in w)
    assert "2 file(s)" in files and "stray.trec" in files and "notes.md" in files


def test_report_orphan_and_mismatched_windows_files_warn(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/other.trec": OTHER, "root/dl/qrels.txt": QRELS,
                     "root/dl/gone.trec.windows.parquet": windows_bytes(["q1"]),
                     # another dataset's windows beside this run: its cost would be credited to "other"
                     "root/dl/other.trec.windows.parquet": windows_bytes(["1037798", "1129237", "q1"])})
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    warned = warnings(proc.stderr)
    assert any("1 windows file(s) have no run beside them" in w and "gone.trec.windows.parquet" in w
               for w in warned), warned
    assert any("other.trec.windows.parquet: 2 of its 3 queries are not in other.trec" in w for w in warned), warned
    # same queries, documents of another run
    write(tmp_path, {"root/dl/other.trec.windows.parquet": windows_bytes(["q1", "q2"], [["d1", "d3"], ["x7"]])})
    proc = rankk("report", tmp_path / "root")
    assert any("1 of its 2 windows show documents that are not in other.trec" in w
               for w in warnings(proc.stderr)), proc.stderr


def test_report_clean_folder_says_nothing(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/other.trec": RUN.replace("3.0", "0.5"),
                     "root/dl/qrels.txt": "q1 0 d1 1\nq1 0 d3 1\nq2 0 d4 2\nq2 0 d1 1\n",
                     "root/dl/other.trec.windows.parquet": windows_bytes(["q1", "q2"], [["d1", "d2"], ["d4"]])})
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    assert warnings(proc.stderr) == [], proc.stderr


# ----------------------------------------------------------------------------------------------------------
# 3. NaN never on stdout as JSON


def test_eval_mean_over_zero_queries_is_null_and_warned(rankk, tmp_path):
    write(tmp_path, {"run.trec": "q9 Q0 d1 1 3.0 t\n", "qrels.txt": QRELS})
    proc = rankk("eval", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.txt", "--run-queries-only",
                 "--format", "json", "-m", "nDCG@10", "-m", "P@5")
    assert proc.returncode == 0, proc.stderr
    assert "NaN" not in proc.stdout
    rows = json.loads(proc.stdout)  # strict: NaN would not even parse in most parsers
    assert [r["value"] for r in rows] == [None, None]
    assert all(r["n"] == 0 and r["averaging"] == "run queries only" for r in rows)
    assert any("the mean is over zero queries" in w for w in warnings(proc.stderr)), proc.stderr
    for fmt in ("tsv", "table"):
        proc = rankk("eval", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.txt", "--run-queries-only",
                     "--format", fmt)
        assert "nan" not in proc.stdout.lower() and "–" in proc.stdout, proc.stdout


def test_eval_json_says_n_and_averaging(rankk, tmp_path):
    write(tmp_path, {"run.trec": "q1 Q0 d1 1 3.0 t\n", "qrels.txt": QRELS})
    proc = rankk("eval", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.txt", "--format", "json")
    row = json.loads(proc.stdout)[0]
    assert row["n"] == 2 and row["averaging"] == "trec_eval -c"
    proc = rankk("eval", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.txt", "--format", "json",
                 "--run-queries-only")
    row = json.loads(proc.stdout)[0]
    assert row["n"] == 1 and row["averaging"] == "run queries only" and row["value"] == 1.0


# ----------------------------------------------------------------------------------------------------------
# 4. undefined statistics


def test_compare_one_query_has_no_p_value(rankk, tmp_path):
    write(tmp_path, {"a.trec": "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\n", "b.trec": "q1 Q0 d2 1 3.0 t\nq1 Q0 d1 2 2.0 t\n",
                     "qrels.txt": "q1 0 d1 1\n"})
    for test in ("t", "permutation", "wilcoxon"):
        proc = rankk("compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt",
                     "--format", "json", "--test", test)
        assert proc.returncode == 0, proc.stderr
        row = json.loads(proc.stdout)[0]
        assert row["n"] == 1 and row["p_value"] is None and row["p_corrected"] is None
        assert row["significant"] is False
        assert any("no p-value (n = 1 query" in w for w in warnings(proc.stderr)), proc.stderr
    proc = rankk("compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt")
    assert "nan" not in proc.stdout.lower() and "–" in proc.stdout


def test_compare_identical_deltas_t_test_is_undefined(rankk, tmp_path):
    write(tmp_path, {"a.trec": "q1 Q0 d2 1 3.0 t\nq1 Q0 d1 2 2.0 t\nq2 Q0 d4 1 3.0 t\nq2 Q0 d3 2 2.0 t\n",
                     "b.trec": "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq2 Q0 d3 1 3.0 t\nq2 Q0 d4 2 2.0 t\n",
                     "qrels.txt": "q1 0 d1 1\nq2 0 d3 1\n"})
    proc = rankk("compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt",
                 "--format", "json", "-m", "RR")
    row = json.loads(proc.stdout)[0]
    assert row["delta"] == pytest.approx(0.5) and row["p_value"] is None and row["significant"] is False
    assert any("zero variance" in w for w in warnings(proc.stderr)), proc.stderr
    proc = rankk("compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt",
                 "--format", "tsv", "-m", "RR")
    assert "\t–\t–\t" in proc.stdout and "nan" not in proc.stdout


def test_report_undefined_p_value_warns_and_marks_nothing(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": "q1 Q0 d2 1 3.0 t\nq1 Q0 d1 2 2.0 t\n",
                     "root/dl/other.trec": "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\n",
                     "root/dl/qrels.txt": "q1 0 d1 1\n"})
    proc = rankk("report", tmp_path / "root", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    other = next(s for s in rep["systems"] if s["system"] == "other")
    assert other["pvalues"]["dl"]["nDCG@10"] is None and other["markers"]["dl"]["nDCG@10"] is None
    assert any("dl: other vs bm25, nDCG@10: no p-value (n = 1 query" in w for w in warnings(proc.stderr))


def test_rel_threshold_above_every_grade_warns(rankk, tmp_path):
    write(tmp_path, {"run.trec": RUN, "qrels.txt": QRELS})
    proc = rankk("eval", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.txt", "-m", "R(rel=9)@10")
    assert proc.returncode == 0, proc.stderr
    assert any("R(rel=9)@10: rel=9 is above every grade" in w and "highest 2" in w
               for w in warnings(proc.stderr)), proc.stderr
    proc = rankk("eval", tmp_path / "run.trec", "--qrels", tmp_path / "qrels.txt", "-m", "R(rel=2)@10")
    assert warnings(proc.stderr) == [], proc.stderr


# ----------------------------------------------------------------------------------------------------------
# 6. the one-line contract


def one_line_error(proc, *needles) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    no_traceback(proc)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rankk: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_compare_plot_checked_before_the_work(rankk, tmp_path):
    write(tmp_path, {"a.trec": RUN, "b.trec": OTHER, "qrels.txt": QRELS, "afile": "x"})
    proc = rankk("compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt",
                 "--plot", tmp_path / "afile" / "deltas.png")
    one_line_error(proc, "--plot", "afile")
    assert "reused" not in proc.stderr and proc.stdout == ""  # nothing scored: the check came first
    proc = rankk("compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt",
                 "--plot", "/dev/full")
    one_line_error(proc, "--plot", "/dev/full")


@pytest.mark.parametrize("command", ["report", "compare", "rerank", "retrieve"])
def test_overlong_output_name_fails_up_front(rankk, tmp_path, command):
    long = "x" * 236 + ".trec"  # legal (241 bytes), but its temp name beside it would pass 255
    write(tmp_path, {"a.trec": RUN, "b.trec": OTHER, "qrels.txt": QRELS, "root/dl/bm25.trec": RUN,
                     "root/dl/qrels.txt": QRELS, "topics.tsv": "q1\tfirst query\nq2\tsecond query\n",
                     "corpus.jsonl": "".join(json.dumps({"id": d, "contents": f"apple {d}"}) + "\n"
                                             for d in ("d1", "d2", "d3", "d4"))})
    out = tmp_path / long
    args = {"report": ["report", tmp_path / "root", "-o", out],
            "compare": ["compare", tmp_path / "a.trec", tmp_path / "b.trec", "--qrels", tmp_path / "qrels.txt",
                        "--plot", out],
            "rerank": ["rerank", tmp_path / "a.trec", "--topics", tmp_path / "topics.tsv", "--docs",
                       tmp_path / "corpus.jsonl", "--method", "oracle", "--qrels", tmp_path / "qrels.txt", "-o",
                       tmp_path / ("y" * 212 + ".trec")],  # its windows file: 233 bytes
            "retrieve": ["retrieve", "--topics", tmp_path / "topics.tsv", "--corpus", tmp_path / "corpus.jsonl",
                         "-o", out]}[command]
    proc = rankk(*args)
    line = one_line_error(proc, "expected a file name", "at most 231 bytes")
    assert ".rankk-" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.trec", "b.trec", "qrels.txt", "root", "topics.tsv", "corpus.jsonl"])
    assert not (tmp_path / "rankk-cache" / "indexes").exists()  # retrieve: failed before indexing


def test_stdout_on_a_full_device_names_stdout(rankk, tmp_path):
    write(tmp_path, {"a.trec": RUN, "qrels.txt": QRELS})
    for fmt in ("json", "table"):
        with open("/dev/full", "w") as full:
            import subprocess
            import sys

            proc = subprocess.run([sys.executable, "-m", "rankk_cli", "eval", str(tmp_path / "a.trec"), "--qrels",
                                   str(tmp_path / "qrels.txt"), "--format", fmt], stdout=full,
                                  stderr=subprocess.PIPE, text=True)
        proc.stdout = ""
        one_line_error(proc, "stdout", "No space left on device")


def test_unwritable_cache_is_one_line_naming_rankk_cache(rankk, tmp_path):
    """A cache root that cannot be made (EPERM under /sys; a read-only mount behaves alike): eval, a dry run and
    the oracle warn once naming RANKK_CACHE and still do their work; retrieve, which must build its index in
    the cache, fails with one line naming RANKK_CACHE."""
    import os

    if not os.path.isdir("/sys/fs"):
        pytest.skip("needs /sys/fs, a folder nothing can be created in")
    env = {"RANKK_CACHE": "/sys/fs/rankk-test-cache"}
    write(tmp_path, {"a.trec": RUN, "qrels.txt": QRELS, "topics.tsv": "q1\tfirst query\nq2\tsecond query\n",
                     "corpus.jsonl": "".join(json.dumps({"id": d, "contents": f"apple {d}"}) + "\n"
                                             for d in ("d1", "d2", "d3", "d4"))})
    rerank = ["rerank", tmp_path / "a.trec", "--topics", tmp_path / "topics.tsv", "--docs",
              tmp_path / "corpus.jsonl", "--method", "oracle", "--qrels", tmp_path / "qrels.txt"]
    for args in (["eval", tmp_path / "a.trec", "--qrels", tmp_path / "qrels.txt"], [*rerank, "--dry-run"],
                 [*rerank, "-o", tmp_path / "out.trec"]):
        proc = rankk(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        warned = [w for w in warnings(proc.stderr) if "cache" in w]
        assert warned and all("RANKK_CACHE=/sys/fs/rankk-test-cache" in w for w in warned), proc.stderr
    proc = rankk("retrieve", "--topics", tmp_path / "topics.tsv", "--corpus", tmp_path / "corpus.jsonl", "-o",
                 tmp_path / "bm25.trec", env=env)
    one_line_error(proc, "RANKK_CACHE=/sys/fs/rankk-test-cache")
    assert not (tmp_path / "bm25.trec").exists()


# ----------------------------------------------------------------------------------------------------------
# 7. names


@pytest.mark.parametrize("bad", ["a\tb", "a\nb", "a|b"])
def test_run_names_are_escaped_in_tsv_and_markdown(rankk, tmp_path, bad):
    write(tmp_path, {f"{bad}.trec": RUN, "qrels.txt": QRELS, f"root/dl/{bad}.trec": RUN,
                     "root/dl/bm25.trec": OTHER, "root/dl/qrels.txt": QRELS})
    proc = rankk("eval", tmp_path / f"{bad}.trec", "--qrels", tmp_path / "qrels.txt", "--format", "tsv")
    assert proc.returncode == 0, proc.stderr
    rows = proc.stdout.rstrip("\n").split("\n")
    assert len(rows) == 2 and all(len(r.split("\t")) == 3 for r in rows), rows
    proc = rankk("compare", tmp_path / f"{bad}.trec", tmp_path / f"{bad}.trec", "--qrels", tmp_path / "qrels.txt",
                 "--format", "tsv")
    rows = proc.stdout.rstrip("\n").split("\n")
    assert len(rows) == 2 and len({len(r.split("\t")) for r in rows}) == 1, rows
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    table = [line for line in proc.stdout.split("\n") if line.startswith("|")]
    cells = {len(line.replace("\\|", "").split("|")) for line in table}
    assert len(table) == 4 and len(cells) == 1, proc.stdout


def test_json_run_key_is_consistent(rankk, tmp_path):
    write(tmp_path, {"x/run.trec": RUN, "y/run.trec": OTHER, "qrels.txt": QRELS})
    x, y = tmp_path / "x" / "run.trec", tmp_path / "y" / "run.trec"
    rows = json.loads(rankk("eval", x, y, "--qrels", tmp_path / "qrels.txt", "--format", "json").stdout)
    assert [r["run"] for r in rows] == [str(x), str(y)]  # both by path, not one basename and one path
    rows = json.loads(rankk("compare", x, y, "--qrels", tmp_path / "qrels.txt", "--format", "json").stdout)
    assert (rows[0]["baseline"], rows[0]["run"]) == (str(x), str(y))
    # a run compared with itself: the same name, numbered
    rows = json.loads(rankk("compare", x, x, "--qrels", tmp_path / "qrels.txt", "--format", "json").stdout)
    assert (rows[0]["baseline"], rows[0]["run"]) == ("run", "run (2)")


def oracle_files(tmp_path, qrels=QRELS):
    write(tmp_path, {"a.trec": RUN, "qrels.txt": qrels, "topics.tsv": "q1\tfirst query\nq2\tsecond query\n",
                     "corpus.jsonl": "".join(json.dumps({"id": d, "contents": f"apple {d}"}) + "\n"
                                             for d in ("d1", "d2", "d3", "d4"))})
    return ["rerank", tmp_path / "a.trec", "--topics", tmp_path / "topics.tsv", "--docs", tmp_path / "corpus.jsonl",
            "--method", "oracle", "--qrels", tmp_path / "qrels.txt"]


def test_oracle_summary_model_is_null_and_no_empty_progress_bar(rankk, tmp_path):
    args = oracle_files(tmp_path)
    proc = rankk(*args, "-o", tmp_path / "out.trec", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] is None and "0/0" not in proc.stderr


# ----------------------------------------------------------------------------------------------------------
# 8. CI shapes


def test_dry_run_json_ends_with_the_summary(rankk, tmp_path):
    args = oracle_files(tmp_path)
    proc = rankk(*args, "--dry-run", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().split("\n")[-1])
    assert last["summary"]["dry_run"] is True and last["summary"]["queries"] == 2
    assert last["summary"]["printed_requests"] == 0


def test_report_format_json(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/other.trec": OTHER, "root/dl/qrels.txt": QRELS})
    proc = rankk("report", tmp_path / "root", "--format", "json", "-m", "nDCG@10", "-m", "P@1")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["datasets"] == ["dl"] and rep["baseline"] == "bm25" and rep["queries"] == {"dl": 2}
    bm25, other = rep["systems"]
    assert bm25["system"] == "bm25" and bm25["baseline"] and bm25["pvalues"] == {}
    assert other["values"]["dl"]["P@1"] == 0.5 and bm25["values"]["dl"]["P@1"] == 0.5
    assert other["values"]["dl"]["nDCG@10"] == pytest.approx(0.8154648767857288)
    assert set(other["pvalues"]["dl"]) == {"nDCG@10", "P@1"} and other["cost"] is None


def test_retrieve_format_json(rankk, tmp_path):
    write(tmp_path, {"topics.tsv": "q1\tapple\nq2\tbanana\n",
                     "corpus.jsonl": "".join(json.dumps({"id": d, "contents": f"apple {d}"}) + "\n"
                                             for d in ("d1", "d2"))})
    proc = rankk("retrieve", "--topics", tmp_path / "topics.tsv", "--corpus", tmp_path / "corpus.jsonl", "-o",
                 tmp_path / "bm25.trec", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["queries"] == 1 and out["hits"] == 2 and out["queries_without_hits"] == ["q2"]
    assert out["output"] == str(tmp_path / "bm25.trec") and out["cached"] is False and out["k1"] == 0.9
    assert any("1 of 2 queries returned no hits" in w for w in warnings(proc.stderr))
    again = rankk("retrieve", "--topics", tmp_path / "topics.tsv", "--corpus", tmp_path / "corpus.jsonl", "-o",
                  tmp_path / "bm25.trec", "--format", "json")
    assert json.loads(again.stdout)["cached"] is True
    assert any("1 of 2 queries returned no hits" in w for w in warnings(again.stderr))  # from the cache too


# ----------------------------------------------------------------------------------------------------------
# 2. the oracle


@pytest.mark.parametrize("qrels, expect", [
    ("q1 0 d1 1\n", "oracle: 1 of 2 queries have no judgements"),
    ("q7 0 d1 1\n", "oracle: none of the 2 queries is judged"),
    ("q1 0 d1 0\nq2 0 d4 0\n", "oracle: 2 of 2 queries have no relevant judgement"),
])
def test_oracle_qrels_coverage_warns(rankk, tmp_path, qrels, expect):
    args = oracle_files(tmp_path, qrels)
    proc = rankk(*args, "-o", tmp_path / "out.trec")
    assert proc.returncode == 0, proc.stderr
    assert any(expect in w for w in warnings(proc.stderr)), proc.stderr


def test_oracle_full_coverage_says_nothing(rankk, tmp_path):
    args = oracle_files(tmp_path, "q1 0 d1 1\nq2 0 d4 2\n")
    proc = rankk(*args, "-o", tmp_path / "out.trec")
    assert proc.returncode == 0 and warnings(proc.stderr) == [], proc.stderr


def test_oracle_ignored_flags_warn(rankk, tmp_path):
    args = oracle_files(tmp_path, "q1 0 d1 1\nq2 0 d4 2\n")
    proc = rankk(*args, "-o", tmp_path / "out.trec", "--model", "some/model", "--window", "5", "--stride", "2",
                 "--passes", "2")
    assert proc.returncode == 0, proc.stderr
    assert warnings(proc.stderr) == ["rankk: warning: --model, --window, --stride, --passes ignored: method oracle "
                                     "does not use them"]


def test_dry_run_that_prints_nothing_says_why(rankk, tmp_path):
    args = oracle_files(tmp_path)
    proc = rankk(*args, "--dry-run")
    assert proc.returncode == 0 and proc.stdout == ""
    assert any("dry run: no request to print: method oracle makes no engine requests" in w
               for w in warnings(proc.stderr)), proc.stderr
    listwise = [*args[:6], "--method", "rankzephyr", "--model", str(tmp_path / "no-model"), "--dry-run"]
    write(tmp_path, {"one.trec": "q1 Q0 d1 1 3.0 t\nq2 Q0 d4 1 3.0 t\n"})  # one document per query
    for extra, why in ((["--depth", "1"], "a window of 1 document has nothing to order"),
                       (["--window", "1"], "a window of 1 document has nothing to order"),
                       (["--depth", "5"], "at most 1 candidate(s) per query within --depth 5")):
        run = tmp_path / ("one.trec" if extra == ["--depth", "5"] else "a.trec")
        proc = rankk(listwise[0], run, *listwise[2:], *extra)
        assert proc.returncode == 0 and proc.stdout == "", proc.stderr
        assert any("dry run: no request to print" in w and why in w for w in warnings(proc.stderr)), proc.stderr


# ----------------------------------------------------------------------------------------------------------
# 5. SIGTERM


def test_sigterm_during_indexing_cleans_up_like_ctrl_c(tmp_path, data):
    import os
    import signal
    import subprocess
    import sys
    import time

    cache = tmp_path / "rankk-cache"
    stale = cache / "indexes" / ".deadbeef.4000000.abc_123.building"  # a killed run's leftover (no such pid)
    stale.mkdir(parents=True)
    (stale / "junk").write_text("x")
    write(tmp_path, {"topics.tsv": "q1\tapple\n"})
    env = dict(os.environ, RANKK_CACHE=str(cache))
    proc = subprocess.Popen([sys.executable, "-m", "rankk_cli", "retrieve", "--topics", str(tmp_path / "topics.tsv"),
                             "--corpus", str(data / "trec-dl/dl19/corpus.jsonl"), "-o", str(tmp_path / "bm25.trec")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not any((cache / "indexes").glob(f".*.{proc.pid}.*.building")):
        time.sleep(0.05)
    assert not stale.exists()  # removed by the run that started: its builder is gone
    assert any((cache / "indexes").glob(f".*.{proc.pid}.*.building")), "indexing never started"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rankk: interrupted" in err and "Traceback" not in err
    assert list((cache / "indexes").glob(".*.building")) == []
    assert not (tmp_path / "bm25.trec").exists()


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes in a read-only (mode 555) folder: needs an ordinary user")
def test_read_only_folder_wording(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/qrels.txt": QRELS})
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = rankk("report", tmp_path / "root", "-o", ro / "table.md")
        one_line_error(proc, "-o/--output", str(ro), "read-only")
    finally:
        ro.chmod(0o755)


def test_eval_missing_queries_is_a_warning_with_the_count(rankk, tmp_path):
    write(tmp_path, {"half.trec": "q1 Q0 d1 1 3.0 t\n", "qrels.txt": QRELS})
    proc = rankk("eval", tmp_path / "half.trec", "--qrels", tmp_path / "qrels.txt")
    assert any("half: 1 of 2 judged queries are missing from the run and count as 0" in w
               for w in warnings(proc.stderr)), proc.stderr
    proc = rankk("eval", tmp_path / "half.trec", "--qrels", tmp_path / "qrels.txt", "--run-queries-only")
    assert any("the mean is over the run's 1 judged queries only" in w for w in warnings(proc.stderr)), proc.stderr


def test_report_qrels_it_does_not_read_and_systems_without_a_run_warn(rankk, tmp_path):
    write(tmp_path, {"root/dl/bm25.trec": RUN, "root/dl/other.trec": OTHER, "root/dl/qrels.txt": QRELS,
                     "root/dl/qrels-old.txt": "q1 0 d2 1\n", "root/dl2/bm25.trec": RUN, "root/dl2/qrels.txt": QRELS,
                     "given.txt": QRELS})
    proc = rankk("report", tmp_path / "root")
    assert proc.returncode == 0, proc.stderr
    warned = warnings(proc.stderr)
    assert any("dl: 2 qrels files in the folder, qrels-old.txt is used and qrels.txt not read" in w
               for w in warned), warned
    assert any("1 system/dataset cell group(s) have no run" in w and "other in dl2" in w for w in warned), warned
    proc = rankk("report", tmp_path / "root", "--qrels", f"dl2={tmp_path / 'given.txt'}")
    assert any(f"dl2: --qrels {tmp_path / 'given.txt'} is used" in w and "not read" in w
               for w in warnings(proc.stderr)), proc.stderr


def test_latex_names_keep_their_escapes(rankk, tmp_path):
    write(tmp_path, {"a\\b_c.trec": RUN, "base.trec": OTHER, "qrels.txt": QRELS,
                     "root/dl/bm25.trec": OTHER, "root/dl/a\tb.trec": RUN, "root/dl/qrels.txt": QRELS})
    proc = rankk("compare", tmp_path / "base.trec", tmp_path / "a\\b_c.trec", "--qrels", tmp_path / "qrels.txt",
                 "--format", "latex")
    assert r"a\textbackslash{}b\_c &" in proc.stdout, proc.stdout
    proc = rankk("report", tmp_path / "root", "--latex", tmp_path / "t.tex", "-o", tmp_path / "t.md")
    assert proc.returncode == 0, proc.stderr
    assert r"a\textbackslash{}tb &" in (tmp_path / "t.tex").read_text()


@pytest.mark.parametrize("method", ["prp", "rank1", "rankr1"])
def test_methods_without_windows_warn_about_window_flags(rankk, tmp_path, method):
    args = oracle_files(tmp_path)
    proc = rankk(*args[:6], "--method", method, "--model", tmp_path / "no-model", "--dry-run", "--window", "2",
                 "--passes", "3")
    assert proc.returncode == 0, proc.stderr
    assert f"rankk: warning: --window, --passes ignored: method {method} does not use them" in warnings(proc.stderr)
