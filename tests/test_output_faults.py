"""Output paths and side files that are wrong, each run through the REAL CLI in a subprocess (rerank, report).

Every bad case must: exit with code 2; print exactly one line on stderr naming the user's path (never a temp
path like ``.rankk-...``) and, where the problem is an output, its flag; print no traceback; leave nothing behind
(no output, no temp file, no new folder); and leave an existing output untouched.

The legitimate neighbours are tested too: a --windows file on another filesystem (rename stays within each
destination's folder), missing output folders (made at the end), an empty windows file with --plot. The
all-or-nothing commit itself (a failed second write or rename undoes the first) is tested in process.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

from rankk_cli.errors import RankkError

RUN = "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq1 Q0 d3 3 1.0 t\nq2 Q0 d1 1 5.0 t\nq2 Q0 d4 2 4.0 t\n"
OTHER = "q1 Q0 d3 1 3.0 t\nq1 Q0 d1 2 2.0 t\nq2 Q0 d4 1 5.0 t\nq2 Q0 d1 2 4.0 t\n"
QRELS = "q1 0 d1 1\nq1 0 d3 0\nq2 0 d4 2\n"
TOPICS = "q1\tfirst query\nq2\tsecond query\n"
CORPUS = "".join(f'{{"id": "{d}", "contents": "apple banana {d}"}}\n' for d in ("d1", "d2", "d3", "d4"))
KEEP = "an existing output: must survive a failed command\n"

RERANK = ["rerank", "{w}/run.trec", "--topics", "{w}/topics.tsv", "--docs", "{w}/corpus.jsonl", "--method",
          "oracle", "--qrels", "{w}/qrels.txt"]
RERANK_FILES = {"run.trec": RUN, "topics.tsv": TOPICS, "corpus.jsonl": CORPUS, "qrels.txt": QRELS}


def windows_bytes(columns: dict) -> bytes:
    """A windows Parquet with exactly these ``{name: pyarrow array}`` columns."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def good_windows(**override) -> bytes:
    cols = {"qid": pa.array(["q1", "q2"]), "engine_call": pa.array([[0], [1]], pa.list_(pa.int64())),
            "input_tokens": pa.array([10, 20], pa.int64()), "output_tokens": pa.array([1, 2], pa.int64()),
            "seconds": pa.array([0.5, 0.25]), "reasoning": pa.array(["a b", "c"]),
            "cached": pa.array([False, False])}
    cols.update(override)
    return windows_bytes({k: v for k, v in cols.items() if v is not None})


def REPORT_FILES(windows: bytes | None = None) -> dict:
    files = {"root/dl/bm25.trec": RUN, "root/dl/other.trec": OTHER, "root/dl/qrels.txt": QRELS}
    if windows is not None:
        files["root/dl/other.trec.windows.parquet"] = windows
    return files


@dataclass
class Case:
    id: str
    args: list[str]                                   # {w} = the case's work folder
    expect: str                                       # must appear in the one stderr line ({w} expanded)
    files: dict[str, str | bytes | None] = field(default_factory=dict)  # None: a directory
    kept: tuple[str, ...] = ()                        # existing files (content KEEP) that must stay as they were


def rerank_case(id, expect, extra, files=None, kept=()):
    all_files = {**RERANK_FILES, **(files or {})}
    for name in kept:
        all_files[name] = KEEP
    return Case(id, RERANK + list(extra), expect, all_files, kept)


def report_case(id, expect, extra=(), windows=None, files=None, kept=()):
    all_files = {**REPORT_FILES(windows), **(files or {})}
    for name in kept:
        all_files[name] = KEEP
    return Case(id, ["report", "{w}/root", *extra], expect, all_files, kept)


def _windows_case(id, expect, plot=False, **override):
    return report_case(id, "{w}/root/dl/other.trec.windows.parquet: " + expect,
                       ["-o", "{w}/table.md", *(["--plot", "{w}/p.png"] if plot else [])],
                       windows=good_windows(**override))


CASES = [
    # ---- rerank: the run output and the windows output (repro_11)
    rerank_case("rerank: -o an existing directory", "{w}/out.trec: expected an output file path (-o/--output), "
                "found a directory", ["-o", "{w}/out.trec"], files={"out.trec": None}),
    rerank_case("rerank: --windows an existing directory, -o in a new folder",
                "{w}/wdir: expected an output file path (--windows), found a directory",
                ["-o", "{w}/newdir/out.trec", "--windows", "{w}/wdir"], files={"wdir": None}),
    rerank_case("rerank: default windows path is a directory",
                "{w}/out.trec.windows.parquet: expected an output file path (--windows), found a directory",
                ["-o", "{w}/out.trec"], files={"out.trec.windows.parquet": None}),
    rerank_case("rerank: -o under a file", "{w}/run.trec/out.trec: expected {w}/run.trec to be a directory "
                "(-o/--output)", ["-o", "{w}/run.trec/out.trec"]),
    rerank_case("rerank: --windows under a file, existing -o kept",
                "{w}/qrels.txt/new/w.parquet: expected {w}/qrels.txt to be a directory (--windows)",
                ["-o", "{w}/old.trec", "--windows", "{w}/qrels.txt/new/w.parquet"], kept=("old.trec",)),
    rerank_case("rerank: --windows is -o", "{w}/out.trec: expected --windows to name a different file than "
                "-o/--output", ["-o", "{w}/out.trec", "--windows", "{w}/out.trec"]),
    rerank_case("rerank: existing -o kept when --windows is a directory",
                "{w}/wdir: expected an output file path (--windows), found a directory",
                ["-o", "{w}/old.trec", "--windows", "{w}/wdir"], files={"wdir": None}, kept=("old.trec",)),
    # ---- report: every output path checked before anything is written (repro_12)
    report_case("report: --latex under a file", "{w}/root/dl/qrels.txt/t.tex: expected {w}/root/dl/qrels.txt to "
                "be a directory (--latex)", ["-o", "{w}/table.md", "--latex", "{w}/root/dl/qrels.txt/t.tex"]),
    report_case("report: --plot an existing directory", "{w}/pdir: expected an output file path (--plot), found a "
                "directory", ["-o", "{w}/table.md", "--latex", "{w}/t.tex", "--plot", "{w}/pdir"],
                files={"pdir": None}),
    report_case("report: -o an existing directory, existing --latex kept", "{w}/md: expected an output file path "
                "(-o/--output), found a directory", ["-o", "{w}/md", "--latex", "{w}/old.tex"],
                files={"md": None}, kept=("old.tex",)),
    report_case("report: existing -o kept when --plot is bad", "{w}/x.trec/p.png: expected {w}/x.trec to be a "
                "directory (--plot)", ["-o", "{w}/old.md", "--plot", "{w}/x.trec/p.png"],
                files={"x.trec": "not a folder\n"}, kept=("old.md",)),
    report_case("report: --latex is -o", "{w}/t.md: expected --latex to name a different file than -o/--output",
                ["-o", "{w}/t.md", "--latex", "{w}/t.md"]),
    report_case("report: -o would overwrite an input run", "{w}/root/dl/bm25.trec: expected an output path "
                "(-o/--output) that is not one of the report's inputs", ["-o", "{w}/root/dl/bm25.trec"]),
    # ---- report: malformed windows files (repro_13)
    _windows_case("windows: engine_call int", "expected column 'engine_call' as lists of integers",
                  engine_call=pa.array([3, 4], pa.int64())),
    _windows_case("windows: engine_call str", "expected column 'engine_call' as lists of integers",
                  engine_call=pa.array(["0", "1"])),
    _windows_case("windows: engine_call list of str", "expected column 'engine_call' as lists of integers",
                  engine_call=pa.array([["0"], ["1"]])),
    _windows_case("windows: input_tokens str", "expected column 'input_tokens' of numbers, found type string",
                  input_tokens=pa.array(["10", "x"])),
    _windows_case("windows: input_tokens inf", "expected finite numbers in column 'input_tokens', found inf",
                  input_tokens=pa.array([1.0, float("inf")])),
    _windows_case("windows: seconds nan", "expected finite numbers in column 'seconds', found nan",
                  seconds=pa.array([float("nan"), 1.0])),
    _windows_case("windows: output_tokens negative", "expected non-negative numbers in column 'output_tokens'",
                  output_tokens=pa.array([-5, 1], pa.int64())),
    _windows_case("windows: missing qid (with --plot)", "expected a 'qid' column", plot=True, qid=None),
    _windows_case("windows: qid list", "expected column 'qid' of strings", qid=pa.array([["q1"], ["q2"]])),
    _windows_case("windows: null qid", "expected a qid in every row, found 1 null(s)", qid=pa.array(["q1", None])),
    _windows_case("windows: cached str", "expected column 'cached' of booleans", cached=pa.array(["no", "yes"])),
    _windows_case("windows: reasoning int", "expected column 'reasoning' of strings",
                  reasoning=pa.array([1, 2], pa.int64())),
    report_case("windows: not Parquet", "{w}/root/dl/other.trec.windows.parquet: expected rankk rerank's windows "
                "Parquet, cannot read it", ["-o", "{w}/table.md"], windows=b"PAR1 this is not parquet PAR1"),
]


def _setup(work: Path, files: dict) -> None:
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def _tree(work: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(work)): (p.read_bytes() if p.is_file() else None) for p in sorted(work.rglob("*"))}


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_bad_output_or_side_file(case: Case, tmp_path, rankk):
    work = tmp_path / "w"
    work.mkdir()
    _setup(work, case.files)
    before = _tree(work)
    proc = rankk(*[a.replace("{w}", str(work)) for a in case.args], cwd=work, timeout=120)
    expect = case.expect.replace("{w}", str(work))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert len(lines) == 1, f"expected one stderr line, found {len(lines)}:\n{proc.stderr[-3000:]}"
    assert lines[0].startswith("rankk: error: ") and expect in lines[0], f"expected {expect!r} in {lines[0]!r}"
    assert ".rankk-" not in lines[0], lines[0]
    after = _tree(work)
    assert sorted(after) == sorted(before), f"left behind: {sorted(set(after) - set(before))}"
    assert after == before  # nothing clobbered, the inputs and existing outputs included
    for name in case.kept:
        assert (work / name).read_text() == KEEP


def test_the_table_covers_each_fault():
    assert len(CASES) >= 25 and len({c.id for c in CASES}) == len(CASES)


# ---------------------------------------------------------------------------------------------- legitimate neighbours


def _no_temps(*folders: Path) -> None:
    for folder in folders:
        left = [p.name for p in folder.iterdir() if p.name.startswith(".rankk")]
        assert not left, f"temp files left in {folder}: {left}"


def _other_filesystem(tmp_path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        return shm
    return None


def test_rerank_windows_on_another_filesystem_and_new_folders(tmp_path, rankk):
    import pyarrow.parquet as pq

    work = tmp_path / "w"
    work.mkdir()
    _setup(work, RERANK_FILES)
    other = _other_filesystem(tmp_path)
    wdir = Path(__import__("tempfile").mkdtemp(prefix="rankk-test-", dir=other)) if other else tmp_path / "shm"
    try:
        out = work / "new" / "sub" / "out.trec.gz"
        win = wdir / "w.parquet"
        args = [a.replace("{w}", str(work)) for a in RERANK] + ["-o", out, "--windows", win]
        proc = rankk(*args, cwd=work, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        import gzip

        lines = gzip.decompress(out.read_bytes()).decode().splitlines()
        assert [ln.split()[2] for ln in lines if ln.startswith("q2 ")] == ["d4", "d1"]  # oracle: by grade
        assert pq.read_table(win).num_rows == 2
        assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # the usual permissions, not mkstemp's
        _no_temps(out.parent, wdir, work)
        # again, over the existing files: replaced in place, still no temp files
        proc = rankk(*args, cwd=work, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _no_temps(out.parent, wdir)
    finally:
        if other:
            shutil.rmtree(wdir, ignore_errors=True)


def test_report_empty_windows_file_with_plot_and_all_outputs(tmp_path, rankk):
    work = tmp_path / "w"
    work.mkdir()
    empty = windows_bytes({"qid": pa.array([], pa.string()), "engine_call": pa.array([], pa.list_(pa.int64())),
                           "input_tokens": pa.array([], pa.int64()), "reasoning": pa.array([], pa.string())})
    _setup(work, REPORT_FILES(empty))
    md, tex, png = work / "out" / "t.md", work / "out" / "t.tex", work / "p.png"
    proc = rankk("report", work / "root", "-o", md, "--latex", tex, "--plot", png, cwd=work, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    other = next(ln for ln in md.read_text().splitlines() if ln.startswith("| other"))
    assert other.endswith("| 0 | 0 | 0 | 0 | 0.0 |")  # an empty windows file: zero cost, not "-"
    assert tex.read_text().startswith("% ")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _no_temps(work, md.parent)


def test_report_float_tokens_integer_qids_and_categoricals_are_accepted(tmp_path):
    from rankk_cli.report import build_report, render_plot

    root = tmp_path / "root"
    _setup(tmp_path, REPORT_FILES(good_windows(qid=pa.array([1, 2], pa.int64()),
                                               input_tokens=pa.array([10.0, None]),
                                               reasoning=pa.array(["a b", None]).dictionary_encode())))
    rep = build_report(root)
    assert rep.cost["other"]["tokens in"] == 10 and rep.cost["other"]["requests"] == 2
    assert rep.windows["other"]["qid"].tolist() == ["1", "2"]
    assert render_plot(rep)[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------- all or nothing


def test_commit_failed_second_write_keeps_the_first_as_it_was(tmp_path):
    from rankk_cli.outputs import commit_outputs

    first = tmp_path / "a.md"
    first.write_text(KEEP)
    second = tmp_path / "new" / "deeper" / "b.png"

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(RankkError) as err:
        commit_outputs([(first, lambda tmp: tmp.write_text("new")), (second, broken)])
    assert str(err.value) == f"{second}: cannot write the output: No space left on device"
    assert first.read_text() == KEEP
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]  # no temp files, no new folder


def test_commit_failed_second_rename_undoes_the_first(tmp_path, monkeypatch):
    import rankk_cli.report as report

    old, new = tmp_path / "old.md", tmp_path / "fresh.tex"
    old.write_text(KEEP)
    third = tmp_path / "c.png"
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(Path(dst))
        if Path(dst) == third and Path(src).name.startswith(".rankk-"):
            raise OSError(18, "Invalid cross-device link")
        return real_replace(src, dst)

    monkeypatch.setattr(report.os, "replace", replace)
    with pytest.raises(RankkError, match=f"^{third}: cannot write the output: Invalid cross-device link$"):
        report.commit_outputs([(old, lambda t: t.write_text("A")), (new, lambda t: t.write_text("B")),
                               (third, lambda t: t.write_text("C"))])
    assert old.read_text() == KEEP and not new.exists() and not third.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.md"]
    monkeypatch.setattr(report.os, "replace", real_replace)
    report.commit_outputs([(old, lambda t: t.write_text("A")), (new, lambda t: t.write_text("B"))])
    assert old.read_text() == "A" and new.read_text() == "B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.tex", "old.md"]


def test_commit_error_names_the_users_path_not_the_temp(tmp_path):
    from rankk_cli.outputs import commit_outputs

    out = tmp_path / "run.trec"

    def writer(tmp: Path) -> None:
        raise RankkError(f"{tmp}: cannot write a TREC run: qid '' is empty")

    with pytest.raises(RankkError) as err:
        commit_outputs([(out, writer)])
    assert str(err.value) == f"{out}: cannot write a TREC run: qid '' is empty"
    assert list(tmp_path.iterdir()) == []
