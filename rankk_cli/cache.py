"""Stage cache: every stage's output is also kept as Parquet, keyed by a hash of its inputs and parameters.

    key = sha256(stage, parameters, content digests of the input files)

The same command with the same inputs finds its output here and says so instead of recomputing; ``--no-cache``
skips the lookup (and still stores the fresh result). Entries are written atomically, so a killed run never
leaves a half-written entry, and two processes computing the same key simply both write the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from rankk_cli.paths import cache_root
from rankk_cli.runs import PARQUET_COMPRESSION, atomic_path

_DIGESTS: dict[tuple, str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised per process by path, size and mtime)."""
    from rankk_cli.errors import check_input_file

    path = check_input_file(path)
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _DIGESTS:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        except OSError as exc:
            from rankk_cli.errors import file_error

            raise file_error(path, None, f"cannot read the file: {exc.strerror or exc}") from None
        _DIGESTS[memo_key] = h.hexdigest()
    return _DIGESTS[memo_key]


def dir_digest(path: str | Path) -> str:
    """Digest of a directory tree (names, sizes and mtimes; cheap for Lucene indexes)."""
    path = Path(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def stage_key(stage: str, **parts) -> str:
    """A stable hash of a stage name and its (JSON-serialisable) parameters and input digests."""
    blob = json.dumps({"stage": stage, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class StageCache:
    """Parquet files under ``<root>/stages/<stage>/<key>.parquet``."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_root()

    def path(self, stage: str, key: str) -> Path:
        return self.root / "stages" / stage / f"{key}.parquet"

    def get(self, stage: str, key: str) -> pd.DataFrame | None:
        path = self.path(stage, key)
        if not path.exists():
            return None
        try:
            return pd.read_parquet(path)
        except Exception:  # a damaged entry is a miss, and is replaced by the next put
            return None

    def get_table(self, stage: str, key: str):
        """The cached pyarrow Table (with its schema metadata), or None."""
        import pyarrow.parquet as pq

        path = self.path(stage, key)
        if not path.exists():
            return None
        try:
            return pq.read_table(path)
        except Exception:
            return None

    def put(self, stage: str, key: str, data) -> Path | None:
        """Store a DataFrame or pyarrow Table atomically. A cache that cannot be written (read-only, full) is
        one warning naming RANKK_CACHE, the same for every stage, and None: the result is still the command's,
        only not kept."""
        import sys

        import pyarrow as pa
        import pyarrow.parquet as pq

        path = self.path(stage, key)
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        try:
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
        except OSError as exc:
            from rankk_cli.paths import cache_label

            what = " ".join(str(exc.strerror or exc).split())
            sys.stderr.write(f"rankk: warning: {cache_label()}: cannot write the {stage} cache ({what}); results "
                             "are not cached\n")
            return None
        return path


def enabled(no_cache: bool) -> bool:
    return not no_cache and os.environ.get("RANKK_NO_CACHE", "") not in ("1", "true")
