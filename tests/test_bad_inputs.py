"""A table of malformed inputs, each run through the REAL CLI in a subprocess.

Every case must: exit with code 2; print exactly one line on stderr; that line names the file (with the line
number where one applies) or the flag; print no traceback; leave no output file (nor any other new file) behind.

Accepted on purpose (tested at the end): CRLF line ends, a UTF-8 BOM and blank lines between lines parse exactly
like the clean file; a file of only blank lines is "empty".
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from dataclasses import dataclass, field

import pytest

from rankk_cli import docs, sources

RUN = "q1 Q0 d1 1 3.0 t\nq1 Q0 d2 2 2.0 t\nq1 Q0 d3 3 1.0 t\nq2 Q0 d1 1 5.0 t\nq2 Q0 d4 2 4.0 t\n"
QRELS = "q1 0 d1 1\nq1 0 d3 0\nq2 0 d4 2\n"
TOPICS = "q1\tfirst query\nq2\tsecond query\n"
CANDS = "".join(json.dumps({"qid": q, "docid": d, "rank": r, "score": s, "text": f"text of {d}"}) + "\n"
                for q, d, r, s in [("q1", "d1", 1, 3.0), ("q1", "d2", 2, 2.0), ("q2", "d1", 1, 5.0),
                                   ("q2", "d4", 2, 4.0)])
CORPUS = "".join(json.dumps({"id": d, "contents": f"text of {d}"}) + "\n" for d in ("d1", "d2", "d3", "d4"))

MODULES = {"eval": "rankk_cli.evaluate", "compare": "rankk_cli.compare", "retrieve": "rankk_cli.retrieve",
           "rerank": "rankk_cli.rerank.pipeline", "report": "rankk_cli.report"}
JRUN = json.dumps({"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0}, "q2": {"d1": 5.0, "d4": 4.0}})


def gz(text: str) -> bytes:
    return gzip.compress(text.encode(), mtime=0)


def corrupt_gz(text: str) -> bytes:
    data = bytearray(gzip.compress((text * 50).encode(), mtime=0))
    for i in range(12, 40):
        data[i] ^= 0xFF
    return bytes(data)


@dataclass
class Case:
    id: str
    args: list[str]                     # {w} = the case's work folder
    expect: str                         # must appear in the one stderr line ({w} expanded)
    files: dict[str, str | bytes] = field(default_factory=dict)
    output: str | None = None           # must not exist afterwards
    dirs: tuple[str, ...] = ()
    unreadable: str | None = None       # chmod 000 this file
    xfail: str | None = None            # a known gap, owned by another area (strict: fixing it flags the mark)


def EVAL(bad_run=None, bad_qrels=None, run_name="run.trec", qrels_name="qrels.txt", extra=()):
    files = {run_name: RUN if bad_run is None else bad_run, qrels_name: QRELS if bad_qrels is None else bad_qrels}
    return files, ["eval", f"{{w}}/{run_name}", "--qrels", f"{{w}}/{qrels_name}", *extra]


def case_eval(id, expect, bad_run=None, bad_qrels=None, run_name="run.trec", qrels_name="qrels.txt", extra=(),
              **kw):
    files, args = EVAL(bad_run, bad_qrels, run_name, qrels_name, extra)
    files.update(kw.pop("files", {}))
    return Case(id, args, expect, files, **kw)


def case_compare(id, expect, baseline=RUN, other=RUN, extra=()):
    return Case(id, ["compare", "{w}/base.trec", "{w}/other.trec", "--qrels", "{w}/qrels.txt",
                     "--plot", "{w}/deltas.png", *extra], expect,
                {"base.trec": baseline, "other.trec": other, "qrels.txt": QRELS}, output="deltas.png")


def case_retrieve(id, expect, topics=TOPICS, corpus=CORPUS, extra=(), topics_name="topics.tsv",
                  corpus_name="corpus.jsonl"):
    return Case(id, ["retrieve", "--topics", f"{{w}}/{topics_name}", "--corpus", f"{{w}}/{corpus_name}",
                     "-o", "{w}/out.trec", *extra], expect,
                {topics_name: topics, corpus_name: corpus}, output="out.trec")


def case_json(id, expect, bad_run, extra=()):
    """A bad JSON score run through rankk eval."""
    return case_eval(id, expect, bad_run=bad_run, run_name="run.json", extra=extra)


def case_exclude(id, expect, bad, name="excluded.tsv", command="eval"):
    """A bad --exclude file through eval, compare, report or rerank (each must refuse it before any work)."""
    if command == "compare":
        case = case_compare(id, expect, extra=("--exclude", f"{{w}}/{name}"))
    elif command == "report":
        case = Case(id, ["report", "{w}/r", "--exclude", f"{{w}}/{name}", "-o", "{w}/table.md"], expect,
                    {"r": None, "r/ds": None, "r/ds/bm25.trec": RUN, "r/ds/qrels.txt": QRELS}, output="table.md")
    elif command == "rerank":
        case = case_rerank(id, expect, extra=("--exclude", f"{{w}}/{name}", "--method", "oracle", "--qrels",
                                              "{w}/qrels.txt"), files={"qrels.txt": QRELS})
    else:
        case = case_eval(id, expect, extra=("--exclude", f"{{w}}/{name}"))
    case.files[name] = bad
    return case


def case_rerank(id, expect, run=CANDS, topics=TOPICS, extra=(), run_name="cands.jsonl", files=None):
    all_files = {run_name: run, "topics.tsv": topics, **(files or {})}
    return Case(id, ["rerank", f"{{w}}/{run_name}", "--topics", "{w}/topics.tsv", "--method", "rankk",
                     "--model", "{w}/no-model", "-o", "{w}/out.trec", *extra], expect, all_files, output="out.trec")


CASES = [
    # ---- run files (rankk eval RUN --qrels QRELS)
    case_eval("run: 5 columns", "{w}/run.trec:2: expected 6 columns", bad_run="q1 Q0 d1 1 3 t\nq1 Q0 d2 2 1\n"),
    case_eval("run: 7 columns", "{w}/run.trec:1: expected 6 columns", bad_run="q1 Q0 d1 1 3 t extra\n"),
    case_eval("run: one column", "{w}/run.trec:4: expected 6 columns", bad_run=RUN[:17] + "\n\nhello\n"),
    case_eval("run: score not a number", "{w}/run.trec:2: expected a finite number as score",
              bad_run="q1 Q0 d1 1 3 t\nq1 Q0 d2 2 high t\n"),
    case_eval("run: NaN score", "{w}/run.trec:1: expected a finite number", bad_run="q1 Q0 d1 1 nan t\n"),
    case_eval("run: inf score", "{w}/run.trec:2: expected a finite number",
              bad_run="q1 Q0 d1 1 3 t\nq1 Q0 d2 2 -Infinity t\n"),
    case_eval("run: score with comma", "{w}/run.trec:1: expected a finite number", bad_run="q1 Q0 d1 1 3,5 t\n"),
    case_eval("run: rank not an integer", "{w}/run.trec:1: expected an integer rank",
              bad_run="q1 Q0 d1 first 3 t\n"),
    case_eval("run: duplicate (qid, docid)", "{w}/run.trec:4: expected each (qid, docid) once",
              bad_run="q1 Q0 d1 1 3 t\nq1 Q0 d2 2 2 t\n\nq1 Q0 d1 3 1 t\n"),
    case_eval("run: empty file", "{w}/run.trec: empty run file", bad_run=""),
    case_eval("run: only blank lines", "{w}/run.trec: empty run file", bad_run="\n \n\t\n\r\n"),
    case_eval("run: binary data", "{w}/run.trec:2: expected a text run file, found binary",
              bad_run=b"q1 Q0 d1 1 3 t\n\x89PNG\x00\x01"),
    case_eval("run: invalid UTF-8", "{w}/run.trec:2: expected UTF-8 text",
              bad_run="q1 Q0 d1 1 3 t\nq1 Q0 caf\xe9 2 1 t\n".encode("latin-1")),
    case_eval("run: bare carriage return", "{w}/run.trec:1: expected a line ending, found a bare carriage",
              bad_run="q1 Q0 d1 1 3 t\rq1 Q0 d2 2 1 t\n"),
    case_eval("run: corrupt gzip", "{w}/run.trec.gz: corrupt gzip data", bad_run=corrupt_gz(RUN),
              run_name="run.trec.gz"),
    case_eval("run: truncated gzip", "{w}/run.trec.gz: corrupt gzip data", bad_run=gz(RUN * 20)[:60],
              run_name="run.trec.gz"),
    case_eval("run: gzip of garbage", "{w}/run.trec.gz:1: expected a text run file, found binary",
              bad_run=gz("\x00\x01\x02"), run_name="run.trec.gz"),
    case_eval("run: not Parquet", "{w}/run.parquet: expected a Parquet run file", bad_run=b"PAR1 not really",
              run_name="run.parquet"),
    Case("run: missing file", ["eval", "{w}/missing.trec", "--qrels", "{w}/qrels.txt"],
         "{w}/missing.trec: no such run file", {"qrels.txt": QRELS}),
    Case("run: directory", ["eval", "{w}/adir", "--qrels", "{w}/qrels.txt"], "{w}/adir:", {"qrels.txt": QRELS},
         dirs=("adir",)),
    case_eval("run: unreadable (chmod 000)", "{w}/run.trec: cannot read", unreadable="run.trec"),
    # a file whose read fails with an I/O error even for root (Linux): the unreadable case that always runs
    Case("run: read fails with EIO", ["eval", "/proc/self/mem", "--qrels", "{w}/qrels.txt"],
         "/proc/self/mem: cannot read", {"qrels.txt": QRELS}),
    Case("qrels: read fails with EIO", ["eval", "{w}/run.trec", "--qrels", "/proc/self/mem"],
         "/proc/self/mem: cannot read", {"run.trec": RUN}),
    Case("corpus: read fails with EIO", ["retrieve", "--topics", "{w}/topics.tsv", "--corpus", "/proc/self/mem",
                                         "-o", "{w}/out.trec"], "/proc/self/mem: cannot read",
         {"topics.tsv": TOPICS}, output="out.trec"),
    # ---- qrels
    case_eval("qrels: 3 columns", "{w}/qrels.txt:2: expected 4 columns", bad_qrels="q1 0 d1 1\nq1 d3 0\n"),
    case_eval("qrels: relevance not an integer", "{w}/qrels.txt:1: expected an integer relevance",
              bad_qrels="q1 0 d1 high\n"),
    case_eval("qrels: fractional relevance", "{w}/qrels.txt:2: expected an integer relevance",
              bad_qrels="q1 0 d1 1\nq1 0 d2 0.5\n"),
    case_eval("qrels: duplicate judgement", "{w}/qrels.txt:3: expected each (qid, docid) once",
              bad_qrels="q1 0 d1 1\nq2 0 d4 2\nq1 0 d1 0\n"),
    case_eval("qrels: empty", "{w}/qrels.txt: empty qrels file", bad_qrels=""),
    case_eval("qrels: binary", "{w}/qrels.txt:1: expected a text qrels file, found binary",
              bad_qrels=b"\x00\x00\x00"),
    case_eval("qrels: invalid UTF-8", "{w}/qrels.txt:3: expected UTF-8", bad_qrels=b"q1 0 d1 1\n\nq1 0 d\xff 1\n"),
    Case("qrels: missing file", ["eval", "{w}/run.trec", "--qrels", "{w}/nope.txt"], "{w}/nope.txt: no such qrels",
         {"run.trec": RUN}),
    Case("qrels: unknown ir_datasets id", ["eval", "{w}/run.trec", "--qrels", "foo"],
         "unknown ir_datasets id 'foo'", {"run.trec": RUN}),
    Case("qrels: ir_datasets id offline, not seeded",
         ["eval", "{w}/run.trec", "--qrels", "msmarco-passage/trec-dl-2019/judged"],
         "ir_datasets id 'msmarco-passage/trec-dl-2019/judged': could not load its qrels: the download failed",
         {"run.trec": RUN}),
    Case("qrels: pyserini name found nowhere", ["eval", "{w}/run.trec", "--qrels", "beir-v1.0.0-signal1m-test"],
         "pyserini qrels name 'beir-v1.0.0-signal1m-test': expected ", {"run.trec": RUN}),
    # ---- eval flags
    case_eval("flag: bad measure", "-m 'nDCG@ten'", extra=("-m", "nDCG@ten")),
    case_eval("flag: bad --format", "--format: expected one of table, tsv, json, trec, found 'xml'",
              extra=("--format", "xml")),
    case_eval("flag: trec_eval name ir_measures cannot compute", "-m 'gm_map': expected an ir-measures measure",
              extra=("-m", "gm_map")),
    # ---- eval --expect (pinned values)
    case_eval("expect: invalid JSON", "{w}/expected.json:1: expected a JSON expect file, found invalid JSON",
              extra=("--expect", "{w}/expected.json"), files={"expected.json": '[{"run": "run", '}),
    case_eval("expect: TSV line with two fields", "{w}/expected.tsv:2: expected 'run<TAB>measure<TAB>value'",
              extra=("--expect", "{w}/expected.tsv"), files={"expected.tsv": "run\tnDCG@10\t0.5\nrun\t0.5\n"}),
    case_eval("expect: value not a number", "{w}/expected.tsv:1: expected a number as the value",
              extra=("--expect", "{w}/expected.tsv"), files={"expected.tsv": "run\tnDCG@10\thigh\n"}),
    case_eval("expect: unknown measure", "{w}/expected.json: entry 1: expected a measure rankk eval -m accepts",
              extra=("--expect", "{w}/expected.json"),
              files={"expected.json": '[{"run": "run", "measure": "nDCG@@10", "value": 0.5}]'}),
    Case("expect: missing file", ["eval", "{w}/run.trec", "--qrels", "{w}/qrels.txt", "--expect", "{w}/nope.json"],
         "{w}/nope.json: no such expect file", {"run.trec": RUN, "qrels.txt": QRELS}),
    case_eval("flag: negative --tolerance", "--tolerance: expected a finite number >= 0, found -0.1",
              extra=("--expect", "{w}/expected.tsv", "--tolerance", "-0.1"),
              files={"expected.tsv": "run\tnDCG@10\t0.5\n"}),
    case_eval("flag: --tolerance without --expect", "--tolerance: expected --expect FILE beside it",
              extra=("--tolerance", "0.01")),
    case_eval("flag: unknown option", "No such option: --depth", extra=("--depth", "3")),
    # ---- compare
    case_compare("compare: bad baseline run", "{w}/base.trec:2: expected 6 columns", baseline="q1 Q0 d1 1 3 t\nx\n"),
    case_compare("compare: bad second run", "{w}/other.trec:1: expected a finite number",
                 other="q1 Q0 d1 1 NaN t\n"),
    case_compare("compare: bad --test", "--test: expected one of", extra=("--test", "anova")),
    case_compare("compare: bad --correction", "--correction: expected one of", extra=("--correction", "fdr")),
    # ---- retrieve: topics, corpora, flags
    case_retrieve("topics: no tab", "{w}/topics.tsv:2: expected 'qid<TAB>query text', found no tab",
                  topics="q1\tfirst\nq2 second query\n"),
    case_retrieve("topics: duplicate qid", "{w}/topics.tsv:3: expected each qid once",
                  topics="q1\tfirst\nq2\tsecond\nq1\tagain\n"),
    case_retrieve("topics: empty query text", "{w}/topics.tsv:1: expected query text", topics="q1\t  \n"),
    case_retrieve("topics: empty file", "{w}/topics.tsv: empty topics file", topics="\n\n"),
    case_retrieve("topics: invalid UTF-8", "{w}/topics.tsv:2: expected UTF-8",
                  topics=b"q1\tfirst\nq2\tsec\xc3\x28ond\n"),
    case_retrieve("topics: corrupt gzip", "{w}/topics.tsv.gz: corrupt gzip data", topics=corrupt_gz(TOPICS),
                  topics_name="topics.tsv.gz"),
    case_retrieve("topics: unknown ir_datasets id", "unknown ir_datasets id 'beir/nope'",
                  extra=("--topics", "beir/nope")),
    case_retrieve("corpus: invalid JSON", "{w}/corpus.jsonl:3: expected a JSON object",
                  corpus=CORPUS.split("\n", 1)[0] + "\n\n{\"id\": \"d2\", \"contents\": \n"),
    case_retrieve("corpus: missing id", "{w}/corpus.jsonl:2: expected an \"id\" field",
                  corpus=CORPUS.split("\n", 1)[0] + '\n{"contents": "x"}\n'),
    case_retrieve("corpus: duplicate id", "{w}/corpus.jsonl:2: expected each id once",
                  corpus=CORPUS.split("\n", 1)[0] + "\n" + CORPUS.split("\n", 1)[0] + "\n"),
    case_retrieve("corpus: directory instead of file", "{w}/corpus.jsonl: expected a JSONL corpus file, found a "
                  "directory", corpus=None),
    case_retrieve("flag: negative k", "--k: expected a positive number", extra=("-k", "-5")),
    case_retrieve("flag: k not a number", "Invalid value for '--k'", extra=("-k", "ten")),
    case_retrieve("flag: b out of range", "--b: expected a number in [0, 1]", extra=("--b", "1.5")),
    # ---- rerank: runs, candidates, topics, docs, flags
    case_rerank("rerank: stride 0", "--stride: expected an integer >= 1, found 0", extra=("--stride", "0")),
    case_rerank("rerank: window > depth", "--window: expected at most --depth (10), found 30",
                extra=("--window", "30", "--depth", "10")),
    case_rerank("rerank: negative depth", "--depth: expected an integer >= 1", extra=("--depth", "-1")),
    case_rerank("rerank: unknown method", "unknown method 'nope'", extra=("--method", "nope")),
    case_rerank("candidates: invalid JSON", "{w}/cands.jsonl:2: expected a JSON object",
                run=CANDS.split("\n", 1)[0] + "\n{oops}\n"),
    case_rerank("candidates: score not a number", "{w}/cands.jsonl:1: expected a finite number as 'score'",
                run=json.dumps({"qid": "q1", "docid": "d1", "rank": 1, "score": "high", "text": "t"}) + "\n"),
    case_rerank("candidates: missing text", "{w}/cands.jsonl:1: expected a 'text' field",
                run=json.dumps({"qid": "q1", "docid": "d1", "rank": 1, "score": 1.0}) + "\n"),
    case_rerank("candidates: duplicate", "{w}/cands.jsonl:3: expected each (qid, docid) once",
                run=CANDS.split("\n", 1)[0] + "\n\n" + CANDS.split("\n", 1)[0] + "\n"),
    case_rerank("rerank: unknown qids (no topic for q2)", "{w}/cands.jsonl", topics="q1\tfirst query\n"),
    case_rerank("rerank: bad run file", "{w}/run.trec:1: expected 6 columns", run="q1 Q0 d1\n", run_name="run.trec",
                extra=("--docs", "{w}/corpus.jsonl"), files={"corpus.jsonl": CORPUS}),
    case_rerank("docs: corpus with a duplicate id", "{w}/corpus.jsonl:2: expected each id once", run=RUN,
                run_name="run.trec", extra=("--docs", "{w}/corpus.jsonl"),
                files={"corpus.jsonl": CORPUS.split("\n", 1)[0] + "\n" + CORPUS.split("\n", 1)[0] + "\n"}),
    case_rerank("docs: corpus missing a docid", "{w}/small.jsonl: 3 of 4 requested docids not found", run=RUN,
                run_name="run.trec", extra=("--docs", "{w}/small.jsonl"),
                files={"small.jsonl": CORPUS.split("\n", 1)[0] + "\n"}),
    # ---- found by fuzzing the CLI (stop 7): numbers out of range, ids a TREC file cannot hold, special files
    case_eval("run: rank beyond int64", "{w}/run.trec:2: expected an integer rank",
              bad_run="q1 Q0 d1 1 3 t\nq1 Q0 d2 99999999999999999999 2 t\n"),
    case_eval("run: full-width digit rank", "{w}/run.trec:1: expected an integer rank", bad_run="q1 Q0 d1 \uff11 3 t\n"),
    case_eval("run: no-break space as separator", "{w}/run.trec:1: expected 6 columns",
              bad_run="q1\u00a0Q0 d1 1 3 t\n"),
    case_eval("qrels: relevance beyond int64", "{w}/qrels.txt:1: expected an integer relevance",
              bad_qrels="q1 0 d1 99999999999999999999\n"),
    Case("run: a character device", ["eval", "/dev/null", "--qrels", "{w}/qrels.txt"],
         "/dev/null: expected a regular run file, found a character device", {"qrels.txt": QRELS}),
    Case("qrels: a character device", ["eval", "{w}/run.trec", "--qrels", "/dev/null"],
         "/dev/null: expected a regular qrels file, found a character device", {"run.trec": RUN}),
    case_eval("flag: measure cutoff 0 (trec_eval aborts)", "-m 'nDCG@0': expected a cutoff of at least 1",
              extra=("-m", "nDCG@0")),
    case_retrieve("corpus: id with a space", "{w}/corpus.jsonl:2: expected an \"id\" without whitespace",
                  corpus=CORPUS.split("\n", 1)[0] + "\n" + json.dumps({"id": "d 5", "contents": "x"}) + "\n"),
    case_retrieve("corpus: id with a tab", "{w}/corpus.jsonl:1: expected an \"id\" without whitespace",
                  corpus=json.dumps({"id": "d\t6", "contents": "x"}) + "\n"),
    case_retrieve("corpus: integer beyond Python's digit limit", "{w}/corpus.jsonl:1: expected a JSON object",
                  corpus='{"id": "d1", "contents": "x", "n": ' + "9" * 5000 + "}\n"),
    case_retrieve("corpus: JSON nested too deeply", "{w}/corpus.jsonl:1: expected a JSON object",
                  corpus='{"id": "d1", "contents": "x", "n": ' + "[" * 100000 + "]" * 100000 + "}\n"),
    case_retrieve("topics: qid with a space", "{w}/topics.tsv:1: expected a qid without spaces",
                  topics="q 1\tfirst\n"),
    case_retrieve("flag: infinite k1", "--k1: expected a finite number", extra=("--k1", "inf")),
    case_retrieve("flag: k beyond Lucene's int", "--k: expected a positive number of hits, at most",
                  extra=("-k", "3000000000")),
    Case("retrieve: output is the corpus", ["retrieve", "--topics", "{w}/topics.tsv", "--corpus", "{w}/corpus.jsonl",
                                            "-o", "{w}/corpus.jsonl"],
         "-o/--output {w}/corpus.jsonl: expected a new output path, found one of the inputs",
         {"topics.tsv": TOPICS, "corpus.jsonl": CORPUS}),
    Case("compare: --plot is the baseline run", ["compare", "{w}/base.trec", "{w}/other.trec", "--qrels",
                                                 "{w}/qrels.txt", "--plot", "{w}/base.trec"],
         "--plot {w}/base.trec: expected a new output path", {"base.trec": RUN, "other.trec": RUN, "qrels.txt": QRELS}),
    case_rerank("candidates: score beyond float range", "{w}/cands.jsonl:1: expected a finite number as 'score'",
                run='{"qid": "q1", "docid": "d1", "rank": 1, "score": ' + "9" * 400 + ', "text": "t"}\n'),
    case_rerank("candidates: rank beyond int64", "{w}/cands.jsonl:1: expected an integer 'rank'",
                run=json.dumps({"qid": "q1", "docid": "d1", "rank": 10 ** 30, "score": 1.0, "text": "t"}) + "\n"),
    case_rerank("candidates Parquet: docid with a space", "{w}/cands.parquet:2: expected a docid without spaces",
                run=None, run_name="cands.parquet"),
    case_rerank("rerank: negative temperature", "--temperature: expected a number >= 0",
                extra=("--temperature", "-1")),
    case_rerank("rerank: unknown engine, also with a method that needs none", "unknown engine 'foo'",
                extra=("--engine", "foo", "--method", "oracle", "--qrels", "{w}/qrels.txt"),
                files={"qrels.txt": QRELS}),
    case_rerank("rerank: base URL without a scheme", "--base-url: expected http(s)://HOST:PORT",
                extra=("--engine", "openai", "--base-url", "junk")),
    case_rerank("rerank: top-p above 1", "--top-p: expected a number in (0, 1]", extra=("--top-p", "2")),
    case_rerank("docs: unknown ir_datasets id", "unknown ir_datasets id 'nope/nope'", run=RUN, run_name="run.trec",
                extra=("--docs", "nope/nope")),
    # ---- JSON score runs {qid: {docid: score}} (Rank1's score.json, Rank-K's rerank.py output)
    case_json("json run: a list at the top", "{w}/run.json: expected a JSON run {qid: {docid: score}}, found a list",
              '[["q1", "d1", 1.0]]'),
    case_json("json run: qid to a list of docids", "{w}/run.json: expected qid 'q1' to map to an object",
              '{"q1": ["d1", "d2"]}'),
    case_json("json run: nested one level too deep", "{w}/run.json: expected a finite number as the score of qid "
              "'q1', docid 'd1', found an object", '{"q1": {"d1": {"score": 1.0}}}'),
    case_json("json run: score a string", "{w}/run.json: expected a finite number as the score of qid 'q2', docid "
              "'d4', found a string '0.5'", '{"q1": {"d1": 1}, "q2": {"d4": "0.5"}}'),
    case_json("json run: NaN score", "{w}/run.json: expected a finite number as the score of qid 'q1', docid 'd2', "
              "found NaN", '{"q1": {"d1": 1, "d2": NaN}}'),
    case_json("json run: Infinity score", "found Infinity", '{"q1": {"d1": Infinity}}'),
    case_json("json run: score beyond float range", "found a number beyond float range", '{"q1": {"d1": 1e999}}'),
    case_json("json run: boolean score", "found true", '{"q1": {"d1": true}}'),
    case_json("json run: repeated qid", "{w}/run.json: expected each qid once, found qid 'q1' twice",
              '{"q1": {"d1": 1}, "q1": {"d2": 2}}'),
    case_json("json run: repeated docid", "{w}/run.json: expected each docid once per query, found docid 'd1' "
              "twice under qid 'q1'", '{"q1": {"d1": 1, "d1": 2}}'),
    case_json("json run: empty object", "{w}/run.json: empty run file", "{}"),
    case_json("json run: empty file", "{w}/run.json: empty run file", ""),
    case_json("json run: invalid JSON names the line", "{w}/run.json:3: expected a JSON run", '{\n"q1": {"d1": 1},\n'
              '"q2": {"d1": }\n}'),
    case_json("json run: docid with a space", "{w}/run.json: expected each docid without spaces",
              '{"q1": {"d 1": 1}}'),
    case_eval("json run: corrupt gzip", "{w}/run.json.gz: corrupt gzip data", bad_run=corrupt_gz(JRUN),
              run_name="run.json.gz"),
    Case("compare: bad JSON run", ["compare", "{w}/base.json", "{w}/other.json", "--qrels", "{w}/qrels.txt",
                                   "--plot", "{w}/deltas.png"], "{w}/other.json: expected qid 'q1' to map to an object",
         {"base.json": JRUN, "other.json": '{"q1": [1]}', "qrels.txt": QRELS}, output="deltas.png"),
    Case("report: bad JSON run", ["report", "{w}/r", "-o", "{w}/table.md"],
         "{w}/r/ds/rankk.json: expected each docid once per query",
         {"r": None, "r/ds": None, "r/ds/bm25.json": JRUN, "r/ds/rankk.json": '{"q1": {"d1": 1, "d1": 1}}',
          "r/ds/qrels.txt": QRELS}, output="table.md"),
    case_rerank("rerank: bad JSON run", "{w}/run.json: expected a finite number as the score of qid 'q1'",
                run='{"q1": {"d1": "high"}}', run_name="run.json", extra=("--docs", "{w}/corpus.jsonl"),
                files={"corpus.jsonl": CORPUS}),
    case_rerank("rerank: a JSON run as --docs", "{w}/run.json: expected a document source (corpus or candidates "
                "file with text), found a JSON score run", run=JRUN, run_name="run.json",
                extra=("--docs", "{w}/run.json")),
    case_rerank("rerank: -o is the JSON input run", "-o/--output {w}/run.json: expected a new output path",
                run=JRUN, run_name="run.json", extra=("--docs", "{w}/corpus.jsonl", "-o", "{w}/run.json"),
                files={"corpus.jsonl": CORPUS}),
    # ---- --exclude FILE (TSV qid<TAB>docid, JSON {qid: [docid, ...]}, BRIGHT's examples as JSONL)
    case_exclude("exclude: TSV line without a tab", "{w}/excluded.tsv:2: expected 'qid<TAB>docid', found no tab",
                 "q1\td1\nq1 d2\n"),
    case_exclude("exclude: TSV three columns", "{w}/excluded.tsv:1: expected 2 columns 'qid<TAB>docid'",
                 "q1\td1\textra\n"),
    case_exclude("exclude: TSV no docid", "{w}/excluded.tsv:1: expected a docid after the tab", "q1\t \n"),
    case_exclude("exclude: JSON list at the top", "{w}/excluded.json: expected {qid: [docid, ...]} JSON",
                 '["q1", "d1"]', name="excluded.json"),
    case_exclude("exclude: JSON docids not a list", "{w}/excluded.json: expected qid 'q1' to map to a list of docids, "
                 "found a string", '{"q1": "d1"}', name="excluded.json"),
    case_exclude("exclude: JSON docid a number with a fraction", "expected each docid to be a string or integer "
                 "(qid 'q1'), "
                 "found the number '1.5'", '{"q1": [1.5]}', name="excluded.json"),
    case_exclude("exclude: JSON repeated qid", "{w}/excluded.json: expected each qid once, found qid 'q1' twice",
                 '{"q1": ["d1"], "q1": ["d2"]}', name="excluded.json"),
    case_exclude("exclude: invalid JSON", "{w}/excluded.json:1: expected {qid: [docid, ...]} JSON",
                 '{"q1": [d1]}', name="excluded.json"),
    case_exclude("exclude: JSONL without excluded_ids", "{w}/examples.jsonl:2: expected an 'excluded_ids' field",
                 '{"id": "q1", "excluded_ids": ["d1"]}\n{"id": "q2", "gold_ids": []}\n', name="examples.jsonl"),
    case_exclude("exclude: JSONL repeated id", "{w}/examples.jsonl:3: expected each id once, found id 'q1' again",
                 '{"id": "q1", "excluded_ids": []}\n\n{"id": "q1", "excluded_ids": ["d2"]}\n', name="examples.jsonl"),
    case_exclude("exclude: binary", "{w}/excluded.tsv:1: expected a text exclusion file, found binary", b"\x00\x01"),
    Case("exclude: missing file", ["eval", "{w}/run.trec", "--qrels", "{w}/qrels.txt", "--exclude", "{w}/nope.tsv"],
         "{w}/nope.tsv: no such exclusion file", {"run.trec": RUN, "qrels.txt": QRELS}),
    case_exclude("exclude: bad file in compare", "{w}/excluded.tsv:1: expected 'qid<TAB>docid'", "q1 d1\n",
                 command="compare"),
    case_exclude("exclude: bad file in report", "{w}/excluded.tsv:1: expected 'qid<TAB>docid'", "q1 d1\n",
                 command="report"),
    case_exclude("exclude: bad file in rerank", "{w}/excluded.tsv:1: expected 'qid<TAB>docid'", "q1 d1\n",
                 command="rerank"),
    case_exclude("exclude: everything excluded in rerank", "--exclude {w}/excluded.tsv: expected documents left to "
                 "rerank", "q1\td1\nq1\td2\nq2\td1\nq2\td4\n", command="rerank"),
    Case("report: --exclude for an unknown dataset", ["report", "{w}/r", "--exclude", "nope={w}/excluded.tsv"],
         "--exclude: no dataset 'nope'", {"r": None, "r/ds": None, "r/ds/bm25.trec": RUN, "r/ds/qrels.txt": QRELS,
                                          "excluded.tsv": "q1\td1\n"}),
    Case("report: -o is the exclusion file", ["report", "{w}/r", "--exclude", "{w}/excluded.tsv", "-o",
                                              "{w}/excluded.tsv"],
         "-o/--output {w}/excluded.tsv: expected a new output path, found one of the inputs",
         {"r": None, "r/ds": None, "r/ds/bm25.trec": RUN, "r/ds/qrels.txt": QRELS, "excluded.tsv": "q1\td1\n"}),
]


def _candidates_parquet_with_spaced_docid(path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"qid": ["q1", "q1"], "docid": ["d1", "d 2"], "rank": [1, 2], "score": [2.0, 1.0],
                             "text": ["a", "b"]}), path)


def command_missing(case: Case) -> str | None:
    module = MODULES[case.args[0]]
    if importlib.util.find_spec(module) is None:
        return f"`rankk {case.args[0]}` not written yet ({module} missing)"
    return None


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(reason=c.xfail, strict=True)]
                                               if c.xfail else []) for c in CASES])
def test_bad_input(case: Case, tmp_path, rankk):
    missing = command_missing(case)
    if missing:
        pytest.skip(missing)
    if case.unreadable and os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading")
    work = tmp_path / "w"
    work.mkdir()
    for name, content in case.files.items():
        if content is None and name.endswith(".parquet"):
            _candidates_parquet_with_spaced_docid(work / name)
        elif content is None:
            (work / name).mkdir()
        elif isinstance(content, bytes):
            (work / name).write_bytes(content)
        else:
            (work / name).write_text(content, encoding="utf-8", newline="")
    for name in case.dirs:
        (work / name).mkdir()
    if case.unreadable:
        (work / case.unreadable).chmod(0)
    before = sorted(p.name for p in work.iterdir())
    args = [a.replace("{w}", str(work)) for a in case.args]
    try:
        proc = rankk(*args, timeout=300)
    finally:
        if case.unreadable:
            (work / case.unreadable).chmod(0o644)
    expect = case.expect.replace("{w}", str(work))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert len(lines) == 1, f"expected one stderr line, found {len(lines)}:\n{proc.stderr[-3000:]}"
    assert expect in lines[0], f"expected {expect!r} in {lines[0]!r}"
    if case.output:
        assert not (work / case.output).exists()
    after = sorted(p.name for p in work.iterdir())
    assert after == before, f"new files left behind: {sorted(set(after) - set(before))}"


def test_the_table_is_big_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


# ----------------------------------------------------------------------------------------------------------
# accepted and normalised: CRLF, BOM, blank lines between lines


def messy(text: str) -> str:
    return "\ufeff" + text.replace("\n", "\r\n\r\n")


def test_crlf_bom_blank_lines_parse_like_clean_files(tmp_path):
    for name, text in {"topics.tsv": TOPICS, "qrels.txt": QRELS, "corpus.jsonl": CORPUS,
                       "cands.jsonl": CANDS}.items():
        (tmp_path / f"clean.{name}").write_text(text, encoding="utf-8", newline="")
        (tmp_path / f"messy.{name}").write_text(messy(text), encoding="utf-8", newline="")
    assert sources.load_topics(tmp_path / "clean.topics.tsv") == sources.load_topics(tmp_path / "messy.topics.tsv")
    assert sources.load_qrels(tmp_path / "clean.qrels.txt").equals(sources.load_qrels(tmp_path / "messy.qrels.txt"))
    assert docs.parse_jsonl_corpus(tmp_path / "clean.corpus.jsonl").equals(
        docs.parse_jsonl_corpus(tmp_path / "messy.corpus.jsonl"))
    (run_a, texts_a), (run_b, texts_b) = (docs.read_candidates(tmp_path / "clean.cands.jsonl"),
                                          docs.read_candidates(tmp_path / "messy.cands.jsonl"))
    assert run_a.df.equals(run_b.df) and texts_a == texts_b


def test_crlf_bom_run_and_qrels_evaluate_identically(tmp_path, rankk):
    (tmp_path / "clean.trec").write_text(RUN, newline="")
    (tmp_path / "clean.qrels").write_text(QRELS, newline="")
    (tmp_path / "messy.trec").write_text(messy(RUN), encoding="utf-8", newline="")
    (tmp_path / "messy.qrels").write_text(messy(QRELS), encoding="utf-8", newline="")
    outs = []
    for stem in ("clean", "messy"):
        proc = rankk("eval", tmp_path / f"{stem}.trec", "--qrels", tmp_path / f"{stem}.qrels", "-m", "nDCG@10",
                     "-m", "AP", "--per-query", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout))
    clean, messy_out = outs
    assert json.dumps(clean, sort_keys=True).replace("clean", "X") == \
        json.dumps(messy_out, sort_keys=True).replace("messy", "X")


@pytest.mark.parametrize("var,args,expect", [
    ("RANKK_CACHE", ["eval", "{w}/run.trec", "--qrels", "{w}/qrels.txt"],
     "RANKK_CACHE={w}/afile: expected a directory for rankk's caches, found a file"),
    ("IR_DATASETS_HOME", ["eval", "{w}/run.trec", "--qrels", "msmarco-passage/trec-dl-2019/judged"],
     "IR_DATASETS_HOME={w}/afile: expected ir_datasets' data directory, found a file"),
])
def test_an_environment_folder_that_is_a_file_is_one_line(tmp_path, rankk, var, args, expect):
    (tmp_path / "run.trec").write_text(RUN)
    (tmp_path / "qrels.txt").write_text(QRELS)
    (tmp_path / "afile").write_text("not a folder")
    proc = rankk(*[a.replace("{w}", str(tmp_path)) for a in args], env={var: str(tmp_path / "afile")})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [f"rankk: error: {expect.replace('{w}', str(tmp_path))}"]
