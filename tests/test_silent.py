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
