"""The engine-call cache: every finished completion, keyed by ``Request.key(engine, model, sampling)``.

Layout: ``cache_root()/calls/chunk-<utc>-<pid>-<random>.parquet``, append-only. Two ways in:

- ``put_many`` (lockstep: one batched engine call's completions) writes them as one new chunk, atomically
  (temp file + rename), right after the call returns.
- ``append`` (continuous scheduling: completions finish one by one) writes each one at once as a JSON line to
  this process's journal ``journal-<host>-<pid>-<random>.jsonl`` (one ``write`` per call, O_APPEND: a finished
  completion survives a kill -9 of the process the moment ``append`` returns), and every ``COMPACT_ROWS`` rows
  and on ``flush`` (the scheduler calls it when a run ends, however it ends) the journal becomes one chunk and is
  deleted -- the chunk is renamed into place before the journal goes, so no row is ever out of sight. A journal
  left by a killed process (same host, pid no longer alive) is compacted by the next process that opens the cache.

Either way a run killed at any moment resumes without repeating a finished call, without one file per
completion. Several processes may share the directory: chunk and journal names are unique, chunks appear whole or
not at all, readers take only complete journal lines, and they pick up chunks and journal lines that appear while
they run (``refresh``). Completions with ``finish_reason == "error"`` (server failures) are never stored.

Lookups cost what the run uses, not what the cache holds: opening reads only the ``key`` column of each chunk
into a sorted numpy index (a 36-bit key prefix packed with the row's position: 8 bytes per entry), and a hit
reads just the row group that holds the row (chunks are written in row groups of ``ROW_GROUP`` rows; the last
few row groups read are kept). Many small chunks (lockstep writes one per round) are merged into larger ones
when a cache is opened (``compact``: at most one process at a time, under ``.compact.lock``; the merged chunk is
renamed into place before the small ones are deleted, and a reader that meets a chunk deleted meanwhile
re-indexes once).

Columns: key, engine, model, text, finish_reason, input_tokens, output_tokens, logprobs (JSON string or null),
seconds, created, embedding (list of float32 or null; for ``Request.embed`` calls; absent in older chunks),
stop_reason (the stop string that ended a "stop" completion, null for end-of-sequence; absent in older chunks,
read as null), stack (the digest of the stack that produced it, ``rankk_cli.rerank.stack``; absent in older
chunks, read as null). Each chunk's schema metadata ``rankk.stacks`` holds the records of the digests it holds.

The stack (``use_stack``): a completion stored under one stack digest answers a lookup only under the same digest
(a row under another digest, or none -- older chunks -- is not reused; its key is counted in ``other_stack``)
unless ``reuse_other_stacks`` is set. One key may then hold one row per stack; a lookup prefers the row of the
current stack.

Derivation columns (``derive.py``; absent in older chunks, whose rows are then never derived from): prefix_key
(``Request.prefix_key``: the key without the token budget; null where nothing may be derived), budget (the
request's token budget), token_ids (the generated token ids, list of int32). ``derivable`` is the one lookup:
a completion of the same prefix key with a larger budget; its prefix-key index is built on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections import OrderedDict
from pathlib import Path

from rankk_cli.paths import cache_root
from rankk_cli.rerank.engines.base import Completion

CHUNK_GLOB = "chunk-*.parquet"
JOURNAL_GLOB = "journal-*.jsonl"
COMPACT_ROWS = 512  # journal rows per chunk
ROW_GROUP = 256  # rows per Parquet row group: a hit reads one group
POS_BITS = 28  # index entry: key prefix (36 bits) << POS_BITS | position of the row among all indexed rows
PREFIX_BITS = 64 - POS_BITS
SMALL_CHUNK_BYTES = 1 << 20  # chunks below this size (on disk) are merged ...
COMPACT_MIN_SMALL = 32  # ... once there are this many of them ...
COMPACT_TARGET_BYTES = 16 << 20  # ... into chunks of about this size
LOCK_STALE_S = 600.0
KEEP_GROUPS = 16  # decoded row groups kept
KEEP_FILES = 64  # open ParquetFile objects kept
STACKS_KEY = b"rankk.stacks"  # chunk schema metadata: {stack digest: stack record} of the chunk's rows


def _host() -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists
        return True
    return True


def _prefix(key: str) -> int:
    """The index prefix of a key: its first hex digits for sha256 hex keys (what Request.key makes), else of
    sha256(key)."""
    if len(key) == 64:
        try:
            head = bytes.fromhex(key[:16])
        except ValueError:
            head = b""
        if len(head) == 8:
            return int.from_bytes(head, "big") >> POS_BITS
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") >> POS_BITS


def _prefixes(column):
    """``_prefix`` of every key of an Arrow string column, vectorised when all are 64-character hex."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    if arr.null_count == 0 and pc.all(pc.equal(pc.utf8_length(arr), 64)).as_py():
        head = pc.utf8_slice_codeunits(arr, 0, 16).cast(pa.large_string())
        offsets = np.frombuffer(head.buffers()[1], dtype=np.int64)[head.offset:head.offset + n + 1]
        data = head.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]
        try:
            raw = bytes.fromhex(data.decode("ascii"))
        except ValueError:
            raw = None
        if raw is not None and len(raw) == 8 * n:
            return np.frombuffer(raw, dtype=">u8").astype(np.uint64) >> np.uint64(POS_BITS)
    return np.array([_prefix(k) if k is not None else 0 for k in arr.to_pylist()], dtype=np.uint64)


class CallCache:
    def __init__(self, root: str | Path | None = None, compact: bool = True):
        import numpy as np

        self.dir = Path(root) if root is not None else cache_root() / "calls"
        self._np = np
        self._recent: dict[str, dict] = {}  # rows written by this process, and other processes' journal rows
        self._offsets: dict[str, int] = {}  # other processes' journals: bytes of complete lines already read
        self._journal: Path | None = None  # this process's journal (None until the first append)
        self._fd: int | None = None
        self._journal_rows: list[dict] = []  # rows in our journal, not yet in a chunk
        self._files: OrderedDict = OrderedDict()  # chunk name -> (ParquetFile, row-group starts)
        self._groups: OrderedDict = OrderedDict()  # (chunk name, group) -> pyarrow Table
        self.stack: str | None = None  # digest stored with new rows and required of hits (None: no check)
        self.stack_records: dict[str, dict] = {}  # digest -> record, written to the metadata of our chunks
        self.reuse_other_stacks = False
        self.other_stack: set[str] = set()  # keys found cached only under another stack (reused or not)
        self._precent: dict[str, list[dict]] = {}  # prefix_key -> rows of _recent (derivable)
        self._precent_n = 0  # rows of _recent already in _precent
        self._reset_index()
        if compact:
            self.compact()
        self.refresh()
        self._adopt_orphans()

    def use_stack(self, record: dict, reuse_other_stacks: bool = False) -> str:
        """Store new completions under ``record``'s digest and answer only from rows of that digest (unless
        ``reuse_other_stacks``); returns the digest."""
        from rankk_cli.rerank import stack

        self.stack = stack.digest(record)
        self.stack_records[self.stack] = record
        self.reuse_other_stacks = reuse_other_stacks
        return self.stack

    def _reset_index(self) -> None:
        np = self._np
        self._seen: set[str] = set()  # chunk names indexed, written by us, or unreadable
        self._names: list[str] = []  # indexed chunks, in index order
        self._starts = np.zeros(1, dtype=np.int64)  # position of each indexed chunk's first row; last = total
        self._index = np.empty(0, dtype=np.uint64)  # sorted packed entries
        self._pindex = np.empty(0, dtype=np.uint64)  # the same for prefix_key (derivable), built on first use
        self._pdone = 0  # chunks of self._names already in _pindex

    def __len__(self) -> int:
        np = self._np
        indexed = np.unique(self._index >> np.uint64(POS_BITS))
        extra = [k for k in self._recent if not self._in_index(k)]
        return int(len(indexed)) + len(extra)

    # ------------------------------------------------------------------------------------------------------
    # reading

    def refresh(self) -> int:
        """Index chunks and read journal lines that appeared since the last look; returns how many entries
        were added (chunk rows counted as indexed, duplicates included)."""
        if not self.dir.is_dir():
            return 0
        import pyarrow.parquet as pq

        np = self._np
        added = 0
        new_entries = []
        for path in sorted(self.dir.glob(CHUNK_GLOB)):
            if path.name in self._seen:
                continue
            self._seen.add(path.name)
            try:
                keys = pq.ParquetFile(path).read(columns=["key"]).column("key")  # (read_table imports pyarrow.dataset)
            except Exception:  # noqa: BLE001 - a foreign or damaged file: skip it (never half-written by us)
                continue
            base = int(self._starts[-1])
            if base + len(keys) >= 1 << POS_BITS:
                raise RuntimeError(f"call cache {self.dir}: more than {1 << POS_BITS} rows")
            pos = np.arange(base, base + len(keys), dtype=np.uint64)
            new_entries.append((_prefixes(keys) << np.uint64(POS_BITS)) | pos)
            self._names.append(path.name)
            self._starts = np.append(self._starts, base + len(keys))
            added += len(keys)
        if new_entries:
            self._index = np.sort(np.concatenate([self._index, *new_entries]))
        live = set()
        for path in sorted(self.dir.glob(JOURNAL_GLOB)):
            if self._journal is not None and path.name == self._journal.name:
                continue
            live.add(path.name)
            for row in self._read_journal(path):
                old = self._recent.get(row["key"])
                if old is None or (old.get("stack") != self.stack and row.get("stack") == self.stack):
                    self._recent[row["key"]] = row
                    added += 1
        for name in set(self._offsets) - live:  # compacted since: its rows are in a chunk (indexed above)
            del self._offsets[name]
        return added

    def _candidates(self, key: str, index=None):
        np = self._np
        index = self._index if index is None else index
        p = np.uint64(_prefix(key))
        lo = np.searchsorted(index, p << np.uint64(POS_BITS), side="left")
        hi = np.searchsorted(index, (p + np.uint64(1)) << np.uint64(POS_BITS), side="left") \
            if int(p) + 1 < (1 << PREFIX_BITS) else len(index)
        mask = np.uint64((1 << POS_BITS) - 1)
        return [int(v & mask) for v in index[lo:hi]]

    def _in_index(self, key: str) -> bool:
        return self._lookup(key) is not None

    def _has(self, key: str, stack: str | None) -> bool:
        """A row of ``key`` under ``stack`` is stored (in our rows, a journal read, or a chunk)."""
        row = self._recent.get(key)
        return (row is not None and row.get("stack") == stack) or self._indexed(key, stack)

    def _indexed(self, key: str, stack: str | None) -> bool:
        """A row of ``key`` under ``stack`` is in a chunk."""
        row = self._lookup(key, stack)
        return row is not None and row.get("stack") == stack

    def _reindexed(self, look):
        """``look()``; a chunk compacted away by another process meanwhile (OSError): index again and look once
        more (None if that fails too)."""
        for attempt in range(2):
            try:
                return look()
            except OSError:
                if attempt:
                    return None
                self._files.clear()
                self._groups.clear()
                self._reset_index()
                self.refresh()
        return None

    def _lookup(self, key: str, stack: str | None = None) -> dict | None:
        """The indexed row of ``key``: the one under ``stack`` when there is one, else the first found."""
        def look():
            first = None
            for pos in self._candidates(key):
                row = self._row(pos)
                if row["key"] == key:
                    if row.get("stack") == stack:
                        return row
                    first = first or row
            return first

        return self._reindexed(look)

    def _file(self, name: str):
        """(ParquetFile, row-group starts) of an indexed chunk, kept open (the last KEEP_FILES)."""
        import pyarrow.parquet as pq

        np = self._np
        if name not in self._files:
            pf = pq.ParquetFile(self.dir / name)
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
            self._files[name] = (pf, np.cumsum([0, *sizes]))
            while len(self._files) > KEEP_FILES:
                self._files.popitem(last=False)
        self._files.move_to_end(name)
        return self._files[name]

    def _row(self, pos: int) -> dict:
        np = self._np
        cid = int(np.searchsorted(self._starts, pos, side="right")) - 1
        name, i = self._names[cid], pos - int(self._starts[cid])
        pf, starts = self._file(name)
        g = int(np.searchsorted(starts, i, side="right")) - 1
        table = self._groups.get((name, g))
        if table is None:
            table = self._groups[(name, g)] = pf.read_row_group(g)
            while len(self._groups) > KEEP_GROUPS:
                self._groups.popitem(last=False)
        self._groups.move_to_end((name, g))
        return table.slice(i - int(starts[g]), 1).to_pylist()[0]

    def _read_journal(self, path: Path) -> list[dict]:
        """Complete lines of another process's journal past what was read before (a line still being written,
        or a journal deleted meanwhile, is left for the next look)."""
        start = self._offsets.get(path.name, 0)
        try:
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self._offsets[path.name] = start + end
        rows = []
        for line in data[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a torn line (a writer killed mid-write, then more appended): skip it
                continue
            if isinstance(row, dict) and isinstance(row.get("key"), str):
                rows.append(row)
        return rows

    def get(self, key: str) -> Completion | None:
        row = self._recent.get(key)
        if row is None or row.get("stack") != self.stack:
            found = self._lookup(key, self.stack)
            if found is not None and (row is None or found.get("stack") == self.stack):
                row = found
        if row is None:
            return None
        if self.stack is not None and row.get("stack") != self.stack:  # another stack made it (or unknown)
            self.other_stack.add(key)
            if not self.reuse_other_stacks:
                return None
        return Completion(text=row["text"], finish_reason=row["finish_reason"],
                          input_tokens=int(row["input_tokens"] or 0), output_tokens=int(row["output_tokens"] or 0),
                          logprobs=json.loads(row["logprobs"]) if row["logprobs"] else None,
                          seconds=float(row["seconds"] or 0.0), cached=True,
                          embedding=list(row["embedding"]) if row.get("embedding") is not None else None,
                          stop_reason=row.get("stop_reason"))

    def derivable(self, prefix_key: str, budget: int) -> dict | None:
        """The cached row (a dict with token_ids) of ``prefix_key`` whose budget is the smallest one >= ``budget``
        (ties: the earliest written), or None. The derivation lookup (``derive.derive`` makes the answer)."""
        np = self._np

        def look():
            recent = list(self._recent.values())[self._precent_n:]  # rows that arrived since the last look
            self._precent_n += len(recent)
            for r in recent:
                if r.get("prefix_key") is not None:
                    self._precent.setdefault(r["prefix_key"], []).append(r)
            while self._pdone < len(self._names):  # index the prefix keys of chunks not seen yet
                cid = self._pdone
                pf = self._file(self._names[cid])[0]
                self._pdone += 1
                if "prefix_key" not in pf.schema_arrow.names:
                    continue  # an older chunk: no token ids, never derived from
                col = pf.read(columns=["prefix_key"]).column("prefix_key").combine_chunks()
                keep = np.flatnonzero(col.is_valid().to_numpy(zero_copy_only=False))
                if len(keep):
                    pos = keep.astype(np.uint64) + np.uint64(int(self._starts[cid]))
                    entries = (_prefixes(col.take(keep)) << np.uint64(POS_BITS)) | pos
                    self._pindex = np.sort(np.concatenate([self._pindex, entries]))
            return list(self._precent.get(prefix_key, ())) + [
                r for r in (self._row(p) for p in self._candidates(prefix_key, self._pindex))
                if r.get("prefix_key") == prefix_key]

        rows = self._reindexed(look) or []
        fits = [r for r in rows if r.get("token_ids") is not None and r.get("budget") is not None
                and int(r["budget"]) >= budget and r.get("finish_reason") != "error"
                # only what this stack generated (another stack's tokens are another answer), as for hits
                and (self.stack is None or self.reuse_other_stacks or r.get("stack") == self.stack)]
        if not fits:
            return None
        return min(fits, key=lambda r: (int(r["budget"]), float(r.get("created") or 0.0)))

    # ------------------------------------------------------------------------------------------------------
    # writing

    def _rows(self, items: list[tuple], engine: str, model: str) -> list[dict]:
        """Rows to store for items ``(key, completion)`` or ``(key, completion, (prefix_key, budget) or None)``."""
        rows, keys = [], set()
        now = time.time()
        for key, c, *derivation in items:
            prefix_key, budget = derivation[0] if derivation and derivation[0] else (None, None)  # None: not derivable
            if c.finish_reason == "error" or key in keys or self._has(key, self.stack):
                continue
            keys.add(key)
            rows.append({"key": key, "engine": engine, "model": model, "text": c.text,
                         "finish_reason": c.finish_reason, "input_tokens": int(c.input_tokens),
                         "output_tokens": int(c.output_tokens),
                         "logprobs": json.dumps(c.logprobs, ensure_ascii=False) if c.logprobs is not None else None,
                         "seconds": float(c.seconds), "created": now, "embedding": c.embedding,
                         "stop_reason": c.stop_reason, "stack": self.stack, "prefix_key": prefix_key,
                         "budget": budget, "token_ids": c.token_ids if prefix_key is not None else None})
        return rows

    def put_many(self, items: list[tuple[str, Completion]], engine: str = "", model: str = "") -> Path | None:
        """Store completions (skipping errors and keys already present) as ONE new chunk file, atomically."""
        rows = self._rows(items, engine, model)
        if not rows:
            return None
        path = self._write_chunk(rows)
        for row in rows:
            self._recent[row["key"]] = row
        return path

    def append(self, items: list[tuple[str, Completion]], engine: str = "", model: str = "") -> int:
        """Store completions (skipping errors and keys already present) in this process's journal at once (one
        ``write``); every COMPACT_ROWS rows the journal becomes a chunk. Returns the rows stored."""
        rows = self._rows(items, engine, model)
        if not rows:
            return 0
        if self._fd is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"journal-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}.jsonl"
            self._journal = self.dir / name
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        blob = b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)
        view = memoryview(blob)
        while view:  # a regular file takes it in one write; loop in case it does not
            view = view[os.write(self._fd, view):]
        for row in rows:
            self._recent[row["key"]] = row
        self._journal_rows.extend(rows)
        if len(self._journal_rows) >= COMPACT_ROWS:
            self.flush()
        return len(rows)

    def flush(self) -> Path | None:
        """Turn this process's journal into one chunk (renamed into place first), then delete the journal."""
        if self._fd is None:
            return None
        rows, self._journal_rows = self._journal_rows, []
        path = self._write_chunk(rows) if rows else None
        os.close(self._fd)
        self._fd = None
        journal, self._journal = self._journal, None
        try:
            journal.unlink()
        except FileNotFoundError:
            pass
        return path

    @staticmethod
    def schema():
        import pyarrow as pa

        return pa.schema([("key", pa.string()), ("engine", pa.string()), ("model", pa.string()),
                          ("text", pa.string()), ("finish_reason", pa.string()), ("input_tokens", pa.int64()),
                          ("output_tokens", pa.int64()), ("logprobs", pa.string()), ("seconds", pa.float64()),
                          ("created", pa.float64()), ("embedding", pa.list_(pa.float32())),
                          ("stop_reason", pa.string()), ("stack", pa.string()), ("prefix_key", pa.string()),
                          ("budget", pa.int64()), ("token_ids", pa.list_(pa.int32()))])

    def _write_chunk(self, rows_or_table, stacks: dict | None = None) -> Path:
        """One chunk, atomically; its metadata holds the records of its rows' stacks (``stacks``, else those this
        cache knows)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from rankk_cli.runs import atomic_path

        table = rows_or_table if isinstance(rows_or_table, pa.Table) else \
            pa.Table.from_pylist(rows_or_table, schema=self.schema())
        if stacks is None:
            digests = set(table.column("stack").to_pylist())
            stacks = {d: self.stack_records[d] for d in digests if d in self.stack_records}
        if stacks:
            table = table.replace_schema_metadata({STACKS_KEY: json.dumps(stacks, sort_keys=True).encode()})
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"chunk-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        path = self.dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # temp name starts with "." and ends ".tmp": invisible to CHUNK_GLOB
            pq.write_table(table, tmp, row_group_size=ROW_GROUP)
        self._seen.add(name)
        return path

    # ------------------------------------------------------------------------------------------------------
    # maintenance

    def _adopt_orphans(self) -> None:
        """Compact journals left by killed processes of this host into chunks (rows not already in a chunk)."""
        if not self.dir.is_dir():
            return
        host = _host()
        for path in sorted(self.dir.glob(JOURNAL_GLOB)):
            parts = path.stem.split("-")  # journal-<host>-<pid>-<random>
            if len(parts) != 4 or parts[1] != host or not parts[2].isdigit() or _alive(int(parts[2])):
                continue
            self._offsets.pop(path.name, None)
            rows, keys = [], set()
            for row in self._read_journal(path):  # a kill between chunk rename and journal unlink: no dupes
                ident = (row["key"], row.get("stack"))
                if ident not in keys and not self._indexed(*ident):
                    keys.add(ident)
                    rows.append(row)
            self._offsets.pop(path.name, None)
            if rows:
                self._write_chunk(rows)
                for row in rows:
                    self._recent.setdefault(row["key"], row)
            try:
                path.unlink()
            except FileNotFoundError:  # another process adopted it first
                pass

    def compact(self) -> int:
        """Merge small chunks (under SMALL_CHUNK_BYTES) into chunks of about COMPACT_TARGET_BYTES once there are
        COMPACT_MIN_SMALL of them, keeping the first row of each (key, stack); one process at a time. Returns the
        chunks merged away."""
        if not self.dir.is_dir():
            return 0
        small = []
        for path in sorted(self.dir.glob(CHUNK_GLOB)):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < SMALL_CHUNK_BYTES:
                small.append((path, size))
        if len(small) < COMPACT_MIN_SMALL:
            return 0
        lock = self.dir / ".compact.lock"
        try:
            if time.time() - lock.stat().st_mtime > LOCK_STALE_S:  # its holder died
                lock.unlink()
        except FileNotFoundError:
            pass
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return 0  # another process is at it
        merged = 0
        try:
            os.close(fd)
            group, size = [], 0
            for path, n in small + [(None, 0)]:
                if path is not None:
                    group.append(path)
                    size += n
                if group and (path is None or size >= COMPACT_TARGET_BYTES):
                    merged += self._merge(group)
                    group, size = [], 0
        finally:
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
        return merged

    def _merge(self, paths: list[Path]) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if len(paths) < 2:
            return 0
        schema = self.schema()
        tables, done, stacks = [], [], {}
        for path in paths:
            try:
                t = pq.ParquetFile(path).read()
            except FileNotFoundError:
                continue
            except Exception:  # noqa: BLE001 - damaged or foreign: leave it where it is
                continue
            stacks.update(chunk_stacks(t.schema.metadata))
            for name in schema.names:  # older chunks lack columns (embedding)
                if name not in t.column_names:
                    t = t.append_column(name, pa.nulls(len(t), schema.field(name).type))
            tables.append(t.select(schema.names).cast(schema))
            done.append(path)
        if len(done) < 2:
            return 0
        table = pa.concat_tables(tables)
        keys = list(zip(table.column("key").to_pylist(), table.column("stack").to_pylist()))
        first, seen = [], set()
        for i, k in enumerate(keys):
            if k not in seen:
                seen.add(k)
                first.append(i)
        if len(first) < len(keys):
            table = table.take(first)
        new = self._write_chunk(table, stacks)  # renamed into place before the small ones go: no row ever out of sight
        self._seen.discard(new.name)  # to be indexed like any other chunk
        for path in done:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        return len(done)


def chunk_stacks(schema_metadata: dict | None) -> dict[str, dict]:
    """{stack digest: record} of a chunk's schema metadata (empty for older chunks)."""
    raw = (schema_metadata or {}).get(STACKS_KEY)
    try:
        value = json.loads(raw) if raw is not None else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
