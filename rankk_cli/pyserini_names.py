"""pyserini's names for topics and qrels (``dl19-passage``, ``dl20``, ``msmarco-passage-dev-subset``,
``beir-v1.0.0-scifact-test``, ``bright-biology``, ...), resolved to the same files without pyserini or Java.

pyserini (through Anserini) reads a named topic set or qrels from a file of castorini/anserini-tools'
``topics-and-qrels/`` folder, downloaded once into ``~/.cache/pyserini/topics-and-qrels/``. rankk looks, in order:

1. in ``$RANKK_DATA``: the TREC DL files it already knows (``trec-dl/dl19/topics.tsv``, ...), and the same file
   name in any of its sub-folders (``beir-topics-qrels/topics.beir-v1.0.0-scifact.test.tsv.gz``, ...);
2. in pyserini's cache folder, ``$PYSERINI_CACHE/topics-and-qrels/`` (default ``~/.cache/pyserini/...``);
3. through the ir_datasets id holding the same queries and judgements (``dl19-passage`` ->
   ``msmarco-passage/trec-dl-2019/judged``), where there is one: the real ir_datasets code, so a seeded or
   online ``$IR_DATASETS_HOME`` works.

A name found nowhere is one line saying where it would come from (the ir_datasets id and the anserini-tools URL).
Nothing here downloads anything itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from rankk_cli.errors import RankkError

ANSERINI_TOOLS = "https://raw.githubusercontent.com/castorini/anserini-tools/master/topics-and-qrels/"


@dataclass(frozen=True)
class Named:
    name: str  # as the user typed it
    kind: str  # "topics" | "qrels"
    filename: str  # in anserini-tools' topics-and-qrels/ (and pyserini's cache)
    local: tuple[str, ...] = ()  # paths under $RANKK_DATA rankk already knows for it
    irds: str | None = None  # the ir_datasets id with the same queries / judgements


# name -> (topics file, $RANKK_DATA topics, qrels file, $RANKK_DATA qrels, ir_datasets topics id, qrels id);
# None where pyserini has no such topics or qrels under that name
_TREC = {
    "dl19-passage": ("topics.dl19-passage.txt", "trec-dl/dl19/topics.tsv", "qrels.dl19-passage.txt",
                     "trec-dl/dl19/qrels.txt", "msmarco-passage/trec-dl-2019/judged",
                     "msmarco-passage/trec-dl-2019/judged"),
    # DL20: pyserini's topics are all 200 queries (passage and document tasks share them), its qrels the 54 judged
    "dl20": ("topics.dl20.txt", "trec-dl/dl20/topics.tsv", "qrels.dl20-passage.txt", "trec-dl/dl20/qrels.txt",
             "msmarco-passage/trec-dl-2020", "msmarco-passage/trec-dl-2020/judged"),
    "dl20-passage": ("topics.dl20.txt", "trec-dl/dl20/topics.tsv", "qrels.dl20-passage.txt",
                     "trec-dl/dl20/qrels.txt", "msmarco-passage/trec-dl-2020", "msmarco-passage/trec-dl-2020/judged"),
    "msmarco-passage-dev-subset": ("topics.msmarco-passage.dev-subset.txt", None,
                                   "qrels.msmarco-passage.dev-subset.txt", None, "msmarco-passage/dev/small",
                                   "msmarco-passage/dev/small"),
    "msmarco-passage-dev": ("topics.msmarco-passage.dev-subset.txt", None, "qrels.msmarco-passage.dev-subset.txt",
                            None, "msmarco-passage/dev/small", "msmarco-passage/dev/small"),
}

# BEIR v1.0.0 test sets: pyserini name part -> the ir_datasets id with the same queries and qrels (None: rankk
# knows no ir_datasets id it could vouch for, e.g. Touche's v1/v2 judgements)
_BEIR = {
    "trec-covid": "beir/trec-covid", "bioasq": None, "nfcorpus": "beir/nfcorpus/test", "nq": "beir/nq",
    "hotpotqa": "beir/hotpotqa/test", "fiqa": "beir/fiqa/test", "signal1m": None, "trec-news": None,
    "robust04": None, "arguana": "beir/arguana", "webis-touche2020": None, "quora": "beir/quora/test",
    "dbpedia-entity": "beir/dbpedia-entity/test", "scidocs": "beir/scidocs", "fever": "beir/fever/test",
    "climate-fever": "beir/climate-fever", "scifact": "beir/scifact/test",
    **{f"cqadupstack-{sub}": f"beir/cqadupstack/{sub}" for sub in (
        "android", "english", "gaming", "gis", "mathematica", "physics", "programmers", "stats", "tex", "unix",
        "webmasters", "wordpress")},
}
_BEIR_NAME = re.compile(r"beir-v1\.0\.0-(?P<ds>[a-z0-9-]+?)(?:-test)?")

_BRIGHT = ("aops", "biology", "earth-science", "economics", "leetcode", "pony", "psychology", "robotics",
           "stackoverflow", "sustainable-living", "theoremqa-questions", "theoremqa-theorems")


def lookup(name: str, kind: str) -> Named | None:
    """What pyserini's ``name`` stands for as ``kind`` ("topics" or "qrels"), or None if it is not one."""
    name = str(name)
    topics = kind == "topics"
    if name in _TREC:
        t_file, t_local, q_file, q_local, t_id, q_id = _TREC[name]
        file, local, ident = (t_file, t_local, t_id) if topics else (q_file, q_local, q_id)
        return Named(name, kind, file, (local,) if local else (), ident)
    match = _BEIR_NAME.fullmatch(name)
    if match and match.group("ds") in _BEIR:
        ds = match.group("ds")
        file = f"topics.beir-v1.0.0-{ds}.test.tsv.gz" if topics else f"qrels.beir-v1.0.0-{ds}.test.txt"
        return Named(name, kind, file, (), _BEIR[ds])
    if name.startswith("bright-") and name[len("bright-"):] in _BRIGHT:
        file = f"topics.{name}.tsv.gz" if topics else f"qrels.{name}.txt"
        return Named(name, kind, file)
    return None


def pyserini_cache() -> Path:
    """pyserini's topics-and-qrels cache: $PYSERINI_CACHE/topics-and-qrels, else ~/.cache/pyserini/..."""
    base = os.environ.get("PYSERINI_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "pyserini") / "topics-and-qrels"


def _candidates(named: Named) -> list[Path]:
    from rankk_cli.paths import data_root

    root = data_root()
    out = [root / rel for rel in named.local]
    try:
        subfolders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        subfolders = []
    out += [folder / named.filename for folder in subfolders]
    out.append(pyserini_cache() / named.filename)
    return out


def local_file(spec: str, kind: str) -> Path | None:
    """The file on this machine that pyserini's name ``spec`` stands for, or None (not a name, or not here)."""
    named = lookup(spec, kind)
    if named is None:
        return None
    return next((p for p in _candidates(named) if p.is_file()), None)


def identity(spec: str, kind: str) -> str | None:
    """What identifies a pyserini name in cache keys: its local file's digest, else its ir_datasets id; None when
    ``spec`` is not a name rankk can resolve here without loading it."""
    from rankk_cli.cache import file_digest

    path = local_file(spec, kind)
    if path is not None:
        return "sha256:" + file_digest(path)
    named = lookup(spec, kind)
    return "id:" + named.irds if named is not None and named.irds else None


def load(spec: str, kind: str):
    """Topics ``{qid: text}`` or qrels DataFrame for pyserini's name ``spec``; None when it is not one. A name
    found nowhere is a one-line RankkError saying where it would come from."""
    named = lookup(spec, kind)
    if named is None:
        return None
    from rankk_cli import sources

    path = local_file(spec, kind)
    if path is not None:
        return sources.read_topics_file(path) if kind == "topics" else sources.read_qrels_file(path)
    cache = pyserini_cache()
    why = ""
    if named.irds:
        from rankk_cli import irds

        try:
            return irds.load_queries(named.irds) if kind == "topics" else irds.load_qrels(named.irds)
        except RankkError as exc:
            why = ("its download failed" if "download failed" in str(exc) else str(exc).split(": ", 1)[-1][:120])
    from rankk_cli.paths import data_root

    local = ", ".join(str(data_root() / rel) for rel in named.local)
    where = f"{local}, " if local else ""
    routes = f"ir_datasets id {named.irds!r} ({why}) or " if named.irds else ""
    raise RankkError(
        f"pyserini {kind} name {named.name!r}: expected {where}{data_root()}/*/{named.filename} or "
        f"{cache / named.filename}, found none of them (offline?); it would come from {routes}"
        f"{ANSERINI_TOOLS}{named.filename} (what pyserini downloads into {cache}/)")
