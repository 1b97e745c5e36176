"""The engine-call cache: every finished completion, keyed by ``Request.key(engine, model, sampling)``.

Layout: ``cache_root()/calls/chunk-<utc>-<pid>-<random>.parquet``, append-only. Each engine call's cacheable
completions are written as one new chunk, atomically (temp file + rename), right after the call returns, so a
run killed at any moment resumes without repeating a finished call. Several processes may share the directory:
chunk names are unique, files appear whole or not at all, and readers pick up chunks that appear while they run
(``refresh``). Completions with ``finish_reason == "error"`` (server failures) are never stored.

Columns: key, engine, model, text, finish_reason, input_tokens, output_tokens, logprobs (JSON string or null),
seconds, created, embedding (list of float32 or null; for ``Request.embed`` calls; absent in older chunks),
stop_reason (the stop string that ended a "stop" completion, null for end-of-sequence; absent in older chunks,
read as null).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from rankk_cli.paths import cache_root
from rankk_cli.rerank.engines.base import Completion

CHUNK_GLOB = "chunk-*.parquet"


class CallCache:
    def __init__(self, root: str | Path | None = None):
        self.dir = Path(root) if root is not None else cache_root() / "calls"
        self._seen: set[str] = set()  # chunk file names already loaded
        self._entries: dict[str, dict] = {}
        self.refresh()

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
        return added

    def get(self, key: str) -> Completion | None:
        row = self._entries.get(key)
        if row is None:
            return None
        return Completion(text=row["text"], finish_reason=row["finish_reason"],
                          input_tokens=int(row["input_tokens"] or 0), output_tokens=int(row["output_tokens"] or 0),
                          logprobs=json.loads(row["logprobs"]) if row["logprobs"] else None,
                          seconds=float(row["seconds"] or 0.0), cached=True,
                          embedding=list(row["embedding"]) if row.get("embedding") is not None else None,
                          stop_reason=row.get("stop_reason"))

    def put_many(self, items: list[tuple[str, Completion]], engine: str = "", model: str = "") -> Path | None:
        """Store completions (skipping errors and keys already present) as ONE new chunk file, atomically."""
        rows = []
        now = time.time()
        for key, c in items:
            if c.finish_reason == "error" or key in self._entries:
                continue
            row = {"key": key, "engine": engine, "model": model, "text": c.text, "finish_reason": c.finish_reason,
                   "input_tokens": int(c.input_tokens), "output_tokens": int(c.output_tokens),
                   "logprobs": json.dumps(c.logprobs, ensure_ascii=False) if c.logprobs is not None else None,
                   "seconds": float(c.seconds), "created": now, "embedding": c.embedding,
                   "stop_reason": c.stop_reason}
            rows.append(row)
        if not rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        from rankk_cli.runs import atomic_path

        schema = pa.schema([("key", pa.string()), ("engine", pa.string()), ("model", pa.string()),
                            ("text", pa.string()), ("finish_reason", pa.string()), ("input_tokens", pa.int64()),
                            ("output_tokens", pa.int64()), ("logprobs", pa.string()), ("seconds", pa.float64()),
                            ("created", pa.float64()), ("embedding", pa.list_(pa.float32())),
                            ("stop_reason", pa.string())])
        table = pa.Table.from_pylist(rows, schema=schema)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        name = f"chunk-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:12]}.parquet"
        path = self.dir / name
        with atomic_path(path) as tmp:  # temp name starts with "." and ends ".tmp": invisible to CHUNK_GLOB
            pq.write_table(table, tmp)
        self._seen.add(name)
        for row in rows:
            self._entries[row["key"]] = row
        return path
