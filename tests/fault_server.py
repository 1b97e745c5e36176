"""A fake OpenAI-compatible server that misbehaves on purpose (tests only; 127.0.0.1, ephemeral port).

``FaultServer(plan)`` serves ``GET /v1/models`` and ``POST /v1/chat/completions`` from a ThreadingHTTPServer in a
daemon thread. For every chat request, ``plan(query, attempt)`` picks what happens -- ``query`` is the text after
``Query: `` in the last user message (or ""), ``attempt`` counts earlier arrivals of the very same body (0 on the
first) -- one of:

- ``"ok"``: a deterministic listwise answer, the window reversed: ``"</think>\\n\\n[n] > ... > [1]"``;
- ``"drop"``: the connection is closed without a response;
- ``"500"`` / ``"429"`` (with ``Retry-After: 0``): an error status with a JSON error body;
- ``"stall"``: no answer for ``stall_s`` seconds (bounded: a stopped server stops stalling at once), then a
  dropped connection.

``delay_s`` seconds of wait before every "ok" answer (a slow server: it still answers, later).
``log`` records (query, attempt, action) per chat request; ``answered`` counts "ok" replies. Use it as a context
manager; ``stop()`` is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

ACTIONS = ("ok", "drop", "500", "429", "stall")


def always_ok(query: str, attempt: int) -> str:
    return "ok"


def reversed_ranking(user: str) -> str:
    n = len(set(re.findall(r"^\[(\d+)\] ", user, flags=re.M)))
    return " > ".join(f"[{i}]" for i in range(n, 0, -1))


class FaultServer:
    def __init__(self, plan: Callable[[str, int], str] = always_ok, *, stall_s: float = 5.0,
                 model: str = "fake-model", delay_s: float = 0.0):
        self.plan = plan
        self.stall_s = stall_s
        self.delay_s = delay_s
        self.model = model
        self.log: list[tuple[str, int, str]] = []
        self.answered = 0
        self._seen: Counter = Counter()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    # ---- lifecycle
    def start(self) -> "FaultServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- bookkeeping
    def actions(self, action: str | None = None) -> list[tuple[str, int, str]]:
        with self._lock:
            return [e for e in self.log if action is None or e[2] == action]

    def _decide(self, body: bytes, query: str) -> tuple[int, str]:
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            attempt = self._seen[digest]
            self._seen[digest] += 1
            action = self.plan(query, attempt)
            if action not in ACTIONS:
                raise ValueError(f"plan returned {action!r}, expected one of {ACTIONS}")
            self.log.append((query, attempt, action))
            if action == "ok":
                self.answered += 1
        return attempt, action

    # ---- HTTP
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                body = json.loads(raw)
                user = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"][-1]
                m = re.search(r"^Query: (.*)$", user, flags=re.M)
                _attempt, action = server._decide(raw, m.group(1).strip() if m else "")
                if action == "ok":
                    if server.delay_s:
                        server._stopped.wait(server.delay_s)
                    text = "</think>\n\n" + reversed_ranking(user)
                    self._json(200, {"id": "cmpl-fake", "object": "chat.completion", "model": server.model,
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": text}}],
                                     "usage": {"prompt_tokens": len(user.split()),
                                               "completion_tokens": len(text.split())}})
                elif action == "500":
                    self._json(500, {"error": {"message": "injected internal error"}})
                elif action == "429":
                    self._json(429, {"error": {"message": "injected rate limit"}}, {"Retry-After": "0"})
                else:  # drop, or stall then drop
                    if action == "stall":
                        server._stopped.wait(server.stall_s)
                    self.close_connection = True
                    import socket

                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        return Handler

