"""ir_datasets ids as sources of queries, qrels and documents -- through the real ir_datasets code.

ir_datasets downloads what it lacks; offline it fails with a connection error deep inside an iterator, after
printing banners and progress bars. Here every call into ir_datasets runs with its stdout/stderr captured. On
failure the capture is dropped and the problem becomes one line (RankkError): an unknown id, or a download that
failed and how to pre-seed ``$IR_DATASETS_HOME`` so that nothing has to be downloaded. On success only
ir_datasets' warnings reach stderr (everything, progress included, with RANKK_IRDS_VERBOSE=1); nothing ever
reaches stdout.

ir_datasets fixes its home folder when it is first imported: IR_DATASETS_HOME must be set before that (the CLI
runs each command in a fresh process, so setting it in the shell is enough).

Not thread-safe: while ir_datasets runs, sys.stdout/sys.stderr are redirected process-wide (call it before
starting threads that print, as the pipeline does when it loads its inputs).

``is_dataset_id`` is cheap for things that look like file paths: it does not import ir_datasets for them.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import io
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from rankk_cli.errors import RankkError, check_found

# file name endings that no ir_datasets id has (ids look like "msmarco-passage/trec-dl-2019/judged")
_FILE_SUFFIXES = (".tsv", ".txt", ".jsonl", ".json", ".gz", ".bz2", ".zip", ".tar", ".trec", ".run", ".parquet",
                  ".qrels", ".csv", ".xml", ".topics", ".lz4", ".zst")


def looks_like_path(spec: str | Path) -> bool:
    """True for strings that are clearly file paths rather than ir_datasets ids."""
    if isinstance(spec, Path):
        return True
    s = str(spec)
    if not s or s.startswith(("/", ".", "~")) or "\\" in s or any(ch.isspace() for ch in s):
        return True
    return s.rsplit("/", 1)[-1].lower().endswith(_FILE_SUFFIXES)


def _ir_datasets():
    _home()  # a file where its data folder should be: one line, before ir_datasets tries to create it
    with _captured():
        import ir_datasets  # noqa: PLC0415 (heavy-ish; only when an id is really used)
    return ir_datasets


def _lookup(spec: str):
    """The registered Dataset for ``spec``, or None."""
    ir_datasets = _ir_datasets()
    try:
        with _captured():
            return ir_datasets.registry[spec]
    except KeyError:
        return None


def is_dataset_id(spec: str | Path) -> bool:
    """Is ``spec`` a registered ir_datasets id? (No import of ir_datasets for path-like specs.)"""
    if looks_like_path(spec):
        return False
    return _lookup(str(spec)) is not None


def unknown_id_error(spec: str, what: str = "") -> RankkError:
    hint = ""
    if not looks_like_path(spec):
        names = list(_ir_datasets().registry)
        close = difflib.get_close_matches(spec, names, n=3, cutoff=0.75)
        if close:
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)"
    also = f", and no {what} file of that name" if what else ""
    return RankkError(f"unknown ir_datasets id {spec!r}{also}{hint}")


def load_dataset(spec: str):
    dataset = _lookup(str(spec)) if not looks_like_path(spec) else None
    if dataset is None:
        raise unknown_id_error(str(spec))
    return dataset


# ----------------------------------------------------------------------------------------------------------
# running ir_datasets quietly, turning its failures into one line


@contextlib.contextmanager
def _captured() -> Iterator[io.StringIO]:
    """Capture stdout and stderr (ir_datasets' banners, log lines and tqdm bars) while ir_datasets runs."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        yield buf


def _is_download_failure(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        mod = type(exc).__module__ or ""
        text = str(exc)
        if mod.startswith(("requests", "urllib3", "socket")) or isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if "download" in text.lower() or "Max retries" in text or "Failed to resolve" in text:
            return True
        if isinstance(exc, FileNotFoundError) and "downloads" in str(getattr(exc, "filename", "") or text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    # requests' messages are long: keep the host/url part
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _home() -> Path:
    home = Path(os.environ.get("IR_DATASETS_HOME", Path.home() / ".ir_datasets"))
    if home.exists() and not home.is_dir():
        raise RankkError(f"IR_DATASETS_HOME={home}: expected ir_datasets' data directory, found a file")
    return home


def _failed_url(exc: BaseException) -> str | None:
    import re

    match = re.search(r"https?://[^\s'\"(),]+", str(exc))
    if match:
        return match.group(0)
    for attr in ("__cause__", "__context__"):
        inner = getattr(exc, attr, None)
        if inner is not None and inner is not exc:
            return _failed_url(inner)
    return None


def _failure(spec: str, what: str, exc: BaseException) -> RankkError:
    if _is_download_failure(exc):
        top = spec.split("/", 1)[0]
        url = _failed_url(exc)
        detail = f"could not fetch {url}" if url else _short(exc)
        return RankkError(
            f"ir_datasets id {spec!r}: could not load its {what}: the download failed ({detail}); this machine "
            f"may be offline: pre-seed {_home() / top}/ with the files ir_datasets expects there (or point "
            f"IR_DATASETS_HOME at a copy that has them)")
    return RankkError(f"ir_datasets id {spec!r}: could not load its {what}: {type(exc).__name__}: {_short(exc)}")


@contextlib.contextmanager
def _guard(spec: str, what: str):
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    except RankkError:
        raise
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # anything ir_datasets raises becomes one line
        raise _failure(spec, what, exc) from None
    _replay(buf.getvalue())


def _replay(log: str) -> None:
    """After a successful call: ir_datasets' warnings go to stderr; its INFO lines and progress bars (which would
    arrive late anyway) only with RANKK_IRDS_VERBOSE=1."""
    if not log:
        return
    verbose = os.environ.get("RANKK_IRDS_VERBOSE", "") in ("1", "true")
    lines = [line for line in log.replace("\r", "\n").split("\n") if line.strip()]
    keep = lines if verbose else [line for line in lines if line.startswith(("[WARNING]", "[ERROR]", "[CRITICAL]"))]
    if keep:
        sys.stderr.write("\n".join(keep) + "\n")


# ----------------------------------------------------------------------------------------------------------
# queries, qrels, documents


def _text_of(obj) -> str:
    if hasattr(obj, "default_text"):
        return str(obj.default_text())
    if hasattr(obj, "text"):
        return str(obj.text)
    fields = [str(v) for k, v in obj._asdict().items() if k not in ("query_id", "doc_id") and isinstance(v, str)]
    return " ".join(fields)


def load_queries(spec: str) -> dict[str, str]:
    """``{qid: text}`` of an ir_datasets id (``default_text()`` where the dataset's query type has it)."""
    dataset = load_dataset(spec)
    if not dataset.has_queries():
        raise RankkError(f"ir_datasets id {spec!r} has no queries")
    topics: dict[str, str] = {}
    with _guard(spec, "queries"):
        for query in dataset.queries_iter():
            topics.setdefault(str(query.query_id), _text_of(query).strip())
    if not topics:
        raise RankkError(f"ir_datasets id {spec!r}: its queries are empty")
    return topics


def load_qrels(spec: str) -> pd.DataFrame:
    """Qrels of an ir_datasets id: DataFrame(qid str, docid str, relevance int64)."""
    dataset = load_dataset(spec)
    if not dataset.has_qrels():
        raise RankkError(f"ir_datasets id {spec!r} has no qrels")
    qids, docids, rels = [], [], []
    with _guard(spec, "qrels"):
        for qrel in dataset.qrels_iter():
            qids.append(str(qrel.query_id))
            docids.append(str(qrel.doc_id))
            rels.append(int(qrel.relevance))
    if not qids:
        raise RankkError(f"ir_datasets id {spec!r}: its qrels are empty")
    df = pd.DataFrame({"qid": qids, "docid": docids, "relevance": np.array(rels, dtype=np.int64)})
    dup = df.duplicated(["qid", "docid"], keep="last")
    if dup.any():
        # a qrels file of our own with repeats is an error; a published dataset's is not ours to fix: say so
        first = df[dup].iloc[0]
        sys.stderr.write(f"rankk: warning: ir_datasets id {spec!r}: {int(dup.sum())} repeated (qid, docid) "
                         f"judgement(s), e.g. qid {first['qid']!r} docid {first['docid']!r}; keeping the last\n")
        df = df[~dup].reset_index(drop=True)
    return df


_OPEN_STORES: list = []


@atexit.register
def _close_stores() -> None:
    # ir_datasets' lz4 docstore closes itself in __del__, which at interpreter exit prints a traceback
    # ("import of mmap halted"); close them while the interpreter is still whole.
    for store in _OPEN_STORES:
        with contextlib.suppress(Exception), _captured():
            lookup = getattr(store, "lookup", None)
            if lookup is not None and hasattr(lookup, "close"):
                lookup.close()
    _OPEN_STORES.clear()


def docs_store(spec: str):
    """The ir_datasets docstore of an id (``get_many(ids) -> {id: doc}``)."""
    dataset = load_dataset(spec)
    if not dataset.has_docs():
        raise RankkError(f"ir_datasets id {spec!r} has no documents")
    with _guard(spec, "documents"):
        store = dataset.docs_store()
    _OPEN_STORES.append(store)
    return store


class IrdsDocs:
    """Document texts from an ir_datasets docstore (``default_text()`` of each doc)."""

    def __init__(self, spec: str):
        self.spec = spec
        self.source = f"ir_datasets id {spec!r}"
        self._store = docs_store(spec)

    def get(self, docids) -> dict[str, str]:
        docids = [str(d) for d in docids]
        with _guard(self.spec, "documents"):
            found = self._store.get_many(docids)
        out = {d: _text_of(found[d]) for d in docids if d in found}
        check_found(out, docids, self.source)
        return out
