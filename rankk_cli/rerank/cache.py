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

Columns: key, engine, model, text, finish_reason, input_tokens, output_tokens, logprobs (JSON string or null),
seconds, created, embedding (list of float32 or null; for ``Request.embed`` calls; absent in older chunks).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from rankk_cli.paths import cache_root
from rankk_cli.rerank.engines.base import Completion

CHUNK_GLOB = "chunk-*.parquet"
JOURNAL_GLOB = "journal-*.jsonl"
COMPACT_ROWS = 512  # journal rows per chunk


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


class CallCache:
    def __init__(self, root: str | Path | None = None):
        self.dir = Path(root) if root is not None else cache_root() / "calls"
        self._seen: set[str] = set()  # chunk file names already loaded
        self._entries: dict[str, dict] = {}
        self._offsets: dict[str, int] = {}  # other processes' journals: bytes of complete lines already read
        self._journal: Path | None = None  # this process's journal (None until the first append)
        self._fd: int | None = None
        self._journal_rows: list[dict] = []  # rows in our journal, not yet in a chunk
        self.refresh()
        self._adopt_orphans()

    def __len__(self) -> int:
        return len(self._entries)

    def refresh(self) -> int:
        """Load chunks that appeared since the last look; returns how many entries were added."""
        if not self.dir.is_dir():
            return 0
        import pyarrow.parquet as pq

        added = 0
        for path in sorted(self.dir.glob(CHUNK_GLOB)):
            if path.name in self._seen:
                continue
            try:
                rows = pq.read_table(path).to_pylist()
            except Exception:  # a foreign or damaged file: skip it (it is never half-written by us)
                self._seen.add(path.name)
                continue
            self._seen.add(path.name)
            for row in rows:
                if row["key"] not in self._entries:
                    self._entries[row["key"]] = row
                    added += 1
        live = set()
        for path in sorted(self.dir.glob(JOURNAL_GLOB)):
            if self._journal is not None and path.name == self._journal.name:
                continue
            live.add(path.name)
            for row in self._read_journal(path):
                if row["key"] not in self._entries:
                    self._entries[row["key"]] = row
                    added += 1
        for name in set(self._offsets) - live:  # compacted since: its rows are in a chunk (read above)
            del self._offsets[name]
        return added

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
            in_chunks: set[str] = set()
            for chunk in self.dir.glob(CHUNK_GLOB):  # a kill between chunk rename and journal unlink: no dupes
                try:
                    import pyarrow.parquet as pq

                    in_chunks.update(pq.read_table(chunk, columns=["key"]).column("key").to_pylist())
                except Exception:  # noqa: BLE001 - a damaged chunk: skip it, as refresh does
                    continue
            rows, keys = [], set()
            for row in self._read_journal(path):
                if row["key"] not in in_chunks and row["key"] not in keys:
                    keys.add(row["key"])
                    rows.append(row)
            self._offsets.pop(path.name, None)
            if rows:
                self._write_chunk(rows)
            try:
                path.unlink()
            except FileNotFoundError:  # another process adopted it first
                pass

    def get(self, key: str) -> Completion | None:
        row = self._entries.get(key)
        if row is None:
            return None
        return Completion(text=row["text"], finish_reason=row["finish_reason"],
                          input_tokens=int(row["input_tokens"] or 0), output_tokens=int(row["output_tokens"] or 0),
                          logprobs=json.loads(row["logprobs"]) if row["logprobs"] else None,
                          seconds=float(row["seconds"] or 0.0), cached=True,
                          embedding=list(row["embedding"]) if row.get("embedding") is not None else None)

    def _rows(self, items: list[tuple[str, Completion]], engine: str, model: str) -> list[dict]:
        rows, keys = [], set()
        now = time.time()
        for key, c in items:
            if c.finish_reason == "error" or key in self._entries or key in keys:
                continue
            keys.add(key)
            rows.append({"key": key, "engine": engine, "model": model, "text": c.text,
                         "finish_reason": c.finish_reason, "input_tokens": int(c.input_tokens),
                         "output_tokens": int(c.output_tokens),
                         "logprobs": json.dumps(c.logprobs, ensure_ascii=False) if c.logprobs is not None else None,
                         "seconds": float(c.seconds), "created": now, "embedding": c.embedding})
        return rows

    def put_many(self, items: list[tuple[str, Completion]], engine: str = "", model: str = "") -> Path | None:
        """Store completions (skipping errors and keys already present) as ONE new chunk file, atomically."""
        rows = self._rows(items, engine, model)
        if not rows:
            return None
        path = self._write_chunk(rows)
        for row in rows:
            self._entries[row["key"]] = row
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
            self._entries[row["key"]] = row
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

    def _write_chunk(self, rows: list[dict]) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from rankk_cli.runs import atomic_path

        schema = pa.schema([("key", pa.string()), ("engine", pa.string()), ("model", pa.string()),
                            ("text", pa.string()), ("finish_reason", pa.string()), ("input_tokens", pa.int64()),
                            ("output_tokens", pa.int64()), ("logprobs", pa.string()), ("seconds", pa.float64()),
                            ("created", pa.float64()), ("embedding", pa.list_(pa.float32()))])
        table = pa.Table.from_pylist(rows, schema=schema)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        name = f"chunk-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        path = self.dir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:  # temp name starts with "." and ends ".tmp": invisible to CHUNK_GLOB
            pq.write_table(table, tmp)
        self._seen.add(name)
        return path
