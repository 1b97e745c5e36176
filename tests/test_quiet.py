"""A terminal a person can read: by default stderr holds only rankk's own lines (rich progress bars and tables,
``rankk: ...`` lines); ``-v`` brings the third-party output (vLLM, torch, transformers) back."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

TABLE_CHARS = set("│┃┏┓┗┛┡┩└┘┌┐━─╇╈┳┻┼├┤╭╮╰╯")


def foreign_lines(stderr: str) -> list[str]:
    """stderr lines that are not rankk's own: not a 'rankk' line, not a progress bar, not part of a table."""
    out = []
    for line in stderr.splitlines():
        s = line.strip()
        if not s or s.startswith("rankk") or s.startswith("== ") or set(s) & TABLE_CHARS:
            continue
        if s in ("rerank outcomes",):  # the outcome table's title
            continue
        out.append(line)
    return out


@pytest.fixture
def one_query(data, tmp_path):
    lines = (data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl").read_text().splitlines()
    qid = json.loads(lines[0])["qid"]
    path = tmp_path / "one.jsonl"
    path.write_text("\n".join(ln for ln in lines if json.loads(ln)["qid"] == qid) + "\n")
    return path


def test_rerank_stderr_is_rankk_only_and_verbose_brings_the_rest_back(rankk, data, tiny_model, one_query, tmp_path):
    topics = data / "trec-dl" / "dl19" / "topics.tsv"
    args = ["rerank", one_query, "--topics", topics, "--method", "rankzephyr", "--model", tiny_model,
            "--depth", "5", "--max-tokens", "4", "--no-cache"]
    quiet = rankk(*args, "-o", tmp_path / "q.trec")
    assert quiet.returncode == 0, quiet.stderr
    assert foreign_lines(quiet.stderr) == [], quiet.stderr
    loud = rankk("-v", *args, "-o", tmp_path / "v.trec")
    assert loud.returncode == 0, loud.stderr
    assert foreign_lines(loud.stderr), loud.stderr  # vLLM's own lines are back
    assert (tmp_path / "q.trec").read_text() == (tmp_path / "v.trec").read_text()


def test_retrieve_stderr_is_rankk_only(rankk, data, tmp_path):
    d = data / "adi"
    p = rankk("retrieve", "--corpus", d / "corpus.jsonl", "--topics", d / "topics.tsv", "-o", tmp_path / "r.trec",
              "--k", "10")
    assert p.returncode == 0, p.stderr
    assert foreign_lines(p.stderr) == [], p.stderr


def test_doctor_stderr_is_rankk_only(rankk):
    """doctor loads vLLM (the tiny model) and starts Java: neither's own output reaches the terminal."""
    p = rankk("doctor")
    assert p.returncode in (0, 1), p.stderr
    assert foreign_lines(p.stderr) == [], p.stderr
    assert "model loading" in p.stdout
