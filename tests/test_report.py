"""``rankk report``: a folder of runs -> Markdown/LaTeX table with markers and cost columns, and a PNG."""

from __future__ import annotations

import shutil

import pytest

from rankk_cli.errors import RankkError


def _windows(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
        ("qid", pa.string()), ("engine_call", pa.list_(pa.int64())), ("input_tokens", pa.int64()),
        ("output_tokens", pa.int64()), ("seconds", pa.float64()), ("reasoning", pa.string()),
        ("outcome", pa.string())])), path)


@pytest.fixture
def report_dir(tmp_path, data):
    root = tmp_path / "paper"
    dl19 = root / "dl19"
    dl19.mkdir(parents=True)
    shutil.copy(data / "trec-dl/dl19/runs/bm25.trec", dl19 / "bm25.trec")
    shutil.copy(data / "trec-dl/dl19/runs/splade-pp-ed.trec", dl19 / "splade.trec")
    # a "reranked" run: BM25 reversed within each query, with a windows file (2 windows per query)
    lines = (dl19 / "bm25.trec").read_text().split("\n")
    by_q: dict[str, list[str]] = {}
    for line in filter(None, lines):
        q, _z, d, *_ = line.split()
        by_q.setdefault(q, []).append(d)
    out, rows = [], []
    for q, docs in by_q.items():
        for r, d in enumerate(reversed(docs), 1):
            out.append(f"{q} Q0 {d} {r} {1000 - r} rev")
        rows += [{"qid": q, "engine_call": [0], "input_tokens": 100, "output_tokens": 40, "seconds": 0.5,
                  "reasoning": "one two three", "outcome": "ok"},
                 {"qid": q, "engine_call": [1, 2], "input_tokens": 50, "output_tokens": 10, "seconds": 0.25,
                  "reasoning": "four five", "outcome": "forced"}]
    (dl19 / "reverse.trec").write_text("\n".join(out) + "\n")
    _windows(dl19 / "reverse.trec.windows.parquet", rows)
    nov = root / "noveleval"
    nov.mkdir()
    shutil.copy(data / "noveleval/runs/given-order.trec", nov / "bm25.trec")
    shutil.copy(data / "noveleval/qrels.txt", nov / "qrels.txt")  # found by the folder convention
    return root, len(by_q)


def test_report_table_markers_and_cost(report_dir, data):
    from rankk_cli.report import BETTER, WORSE, build_report

    root, nq = report_dir
    rep = build_report(root, [f"dl19={data / 'trec-dl/dl19/qrels.txt'}"], ["nDCG@10", "R@100"])
    assert rep.datasets == ["dl19", "noveleval"] and rep.systems == ["bm25", "reverse", "splade"]
    assert rep.values[("bm25", "dl19", "nDCG@10")] == pytest.approx(0.5058, abs=5e-5)  # published figure
    assert rep.values[("splade", "dl19", "nDCG@10")] == pytest.approx(0.7308, abs=5e-5)
    assert rep.markers[("splade", "dl19", "nDCG@10")] == BETTER
    assert rep.markers[("reverse", "dl19", "nDCG@10")] == WORSE
    assert ("reverse", "dl19", "R@100") not in rep.markers  # same documents: recall identical, no marker
    assert rep.pvalues[("reverse", "dl19", "R@100")] == 1.0
    assert ("splade", "noveleval", "nDCG@10") not in rep.values  # system absent there
    assert rep.cost["reverse"] == {"requests": 3 * nq, "engine calls": 3, "tokens in": 150 * nq,
                                   "tokens out": 50 * nq, "generate s": pytest.approx(0.75 * nq)}
    assert "bm25" not in rep.cost

    md = rep.to_markdown()
    lines = md.splitlines()
    assert lines[0] == ("| system | dl19 nDCG@10 | dl19 R@100 | noveleval nDCG@10 | noveleval R@100 | requests | "
                        "engine calls | tokens in | tokens out | generate s |")
    splade_row = next(line for line in lines if line.startswith("| splade"))
    assert f"**0.7308{BETTER}**" in splade_row and "| – |" in splade_row
    assert lines[2].startswith("| bm25 (baseline) | 0.5058 |")
    assert f"| {3 * nq:,} | 3 | {150 * nq:,} |" in md
    assert "Holm" in md

    tex = rep.to_latex()
    assert r"\begin{tabular}{lrrrrrrrrr}" in tex and r"\textbf{0.7308}$^\dagger$" in tex
    assert r"$^\ddagger$" in tex and r"\multicolumn{2}{c}{noveleval}" in tex and "--" in tex


def test_report_cli_writes_markdown_latex_png(report_dir, data, rankk, tmp_path):
    root, _nq = report_dir
    md, tex, png = tmp_path / "t.md", tmp_path / "t.tex", tmp_path / "t.png"
    proc = rankk("report", root, "--qrels", f"dl19={data / 'trec-dl/dl19/qrels.txt'}", "-m", "nDCG@10",
                 "--baseline", "splade", "-o", md, "--latex", tex, "--plot", png)
    assert proc.returncode == 0, proc.stderr
    text = md.read_text()
    assert "| splade (baseline) |" in text and "‡" in text  # bm25 and reverse are worse than splade
    assert tex.read_text().count(r"\\") >= 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    proc = rankk("report", root, "-m", "nDCG@10")  # dl19 has no qrels file and no --qrels
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--qrels dl19=FILE" in proc.stderr
    proc = rankk("report", root, "--qrels", f"dl19={data / 'trec-dl/dl19/qrels.txt'}", "--baseline", "nope")
    assert proc.returncode == 2 and "no system 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_report_errors(tmp_path):
    from rankk_cli.report import build_report

    with pytest.raises(RankkError, match="found nothing"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty" / "ds").mkdir(parents=True)
    with pytest.raises(RankkError, match="found none"):
        build_report(tmp_path / "empty")
    with pytest.raises(RankkError, match="--test"):
        build_report(tmp_path / "empty", test="z")
