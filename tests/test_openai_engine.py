"""The openai engine: retries/backoff against a scripted fault server, and real use against vLLM's server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import EngineOptions, Request, Sampling
from rankk_cli.rerank.engines.openai import OpenAIEngine, backoff_delay, normalize_base_url

MODEL = "fake-model"


# ----------------------------------------------------------------------------------------------------------
# a scripted OpenAI-compatible fault server (127.0.0.1 only, bounded)


class FaultServer:
    """POSTs pop the next scripted action: "ok", "500", "429", "400", "drop" (close without answering),
    "stall" (answer after ``stall_s``). An empty script answers "ok"; ``always`` overrides the script."""

    def __init__(self, stall_s: float = 2.0):
        self.script: list[str] = []
        self.always: str | None = None
        self.hits: list[str] = []
        self.stall_s = stall_s
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, obj, headers=()):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": MODEL}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with outer.lock:
                    action = outer.always or (outer.script.pop(0) if outer.script else "ok")
                    outer.hits.append(action)
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if action == "stall":
                    time.sleep(outer.stall_s)
                    action = "ok"
                if action == "500":
                    return self._send(500, {"error": "internal boom"})
                if action == "429":
                    return self._send(429, {"error": "slow down"}, [("Retry-After", "0")])
                if action == "400":
                    return self._send(400, {"error": {"message": "bad model field"}})
                if "messages" in body:
                    text = "chat:" + body["messages"][-1]["content"]
                    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    if body.get("logprobs"):
                        choice["logprobs"] = {"content": [{"token": "chat", "logprob": -0.1,
                                                           "top_logprobs": [{"token": "chat", "logprob": -0.1},
                                                                            {"token": "x", "logprob": -2.5}]}]}
                else:
                    text = "raw:" + body["prompt"]
                    choice = {"text": text, "finish_reason": "length" if body["max_tokens"] < 3 else "stop"}
                    if body.get("logprobs"):
                        choice["logprobs"] = {"tokens": ["raw"], "token_logprobs": [-0.2],
                                              "top_logprobs": [{"raw": -0.2, "y": -3.0}]}
                self._send(200, {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fault():
    srv = FaultServer()
    yield srv
    srv.close()


def engine_for(*urls, retries=3, timeout=0.5, concurrency=4) -> OpenAIEngine:
    eng = OpenAIEngine(MODEL, Sampling(max_tokens=16),
                       EngineOptions(base_urls=tuple(urls), max_retries=retries, timeout_s=timeout,
                                     concurrency=concurrency))
    eng.backoff_base, eng.backoff_cap = 0.01, 0.05
    return eng


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chat_and_raw_requests_hit_their_endpoints(fault):
    eng = engine_for(fault.url)
    out = eng.generate([Request(messages=(("user", "hi"),), logprobs=2), Request(prompt="p", logprobs=2),
                        Request(prompt="q", max_tokens=2)])
    assert out[0].text == "chat:hi" and out[0].logprobs == [{"chat": -0.1, "x": -2.5}]
    assert out[1].text == "raw:p" and out[1].logprobs == [{"raw": -0.2, "y": -3.0}]
    assert out[2].finish_reason == "length"
    assert (out[0].input_tokens, out[0].output_tokens) == (7, 2)
    assert eng.stats.calls == 1 and eng.stats.requests == 3


def test_500_and_429_are_retried_then_succeed(fault):
    fault.script = ["500", "429", "ok"]
    c = engine_for(fault.url).generate([Request(prompt="a")])[0]
    assert c.finish_reason == "stop" and c.text == "raw:a"
    assert fault.hits == ["500", "429", "ok"]


def test_dropped_connection_and_stall_past_timeout_are_retried(fault):
    fault.script = ["drop", "stall", "ok"]
    eng = engine_for(fault.url, timeout=0.5)
    c = eng.generate([Request(prompt="a")])[0]
    assert c.finish_reason == "stop" and c.error is None
    assert fault.hits[:2] == ["drop", "stall"] and eng.stats.extra["retries"] == 2


def test_retries_are_bounded_and_failure_is_reported_not_raised(fault):
    fault.always = "500"
    eng = engine_for(fault.url, retries=2)
    out = eng.generate([Request(prompt="a")])
    assert len(fault.hits) == 3  # 1 try + 2 retries, then stop
    assert out[0].finish_reason == "error"
    assert "HTTP 500" in out[0].error and "gave up after 3 attempts" in out[0].error
    assert eng.stats.extra["failed"] == 1


def test_other_4xx_is_not_retried(fault):
    fault.always = "400"
    c = engine_for(fault.url).generate([Request(prompt="a")])[0]
    assert fault.hits == ["400"]
    assert c.finish_reason == "error" and "HTTP 400" in c.error and "bad model field" in c.error


def test_a_failing_request_does_not_lose_the_finished_ones(fault):
    fault.script = ["ok", "400", "ok"]
    out = engine_for(fault.url, concurrency=1).generate([Request(prompt=f"p{i}") for i in range(3)])
    assert [c.finish_reason for c in out] == ["stop", "error", "stop"]
    assert out[0].text == "raw:p0" and out[2].text == "raw:p2"


def test_load_spreads_over_base_urls_and_survives_a_dead_one():
    a, b = FaultServer(), FaultServer()
    try:
        eng = engine_for(a.url, b.url + "/v1/")
        out = eng.generate([Request(prompt=str(i)) for i in range(10)])
        assert all(c.finish_reason == "stop" for c in out)
        # least outstanding requests, ties round-robin: both used (the exact split depends on answer timing)
        assert len(a.hits) + len(b.hits) == 10 and a.hits and b.hits
        assert eng.stats.extra["sent"] == [len(a.hits), len(b.hits)]
        dead = f"http://127.0.0.1:{free_port()}"
        eng2 = engine_for(dead, a.url)
        out = eng2.generate([Request(prompt=str(i)) for i in range(4)])
        assert [c.text for c in out] == [f"raw:{i}" for i in range(4)]  # requests starting on the dead one move on
    finally:
        a.close()
        b.close()


def test_least_outstanding_routing_sends_a_slow_server_fewer_requests():
    """Two servers, one slowed (every answer waits 0.2 s): continuous scheduling keeps one request per query in
    flight, and each new one goes to the server with fewer in flight, so the slow one gets fewer (round-robin
    would split them evenly). The answers are the same as from one fast server."""
    from fault_server import FaultServer as PlanServer

    from rankk_cli.rerank.methods.base import Candidate, RerankConfig
    from rankk_cli.rerank.methods.rankk import RankK
    from rankk_cli.rerank.scheduler import Scheduler

    qs = [(f"q{k}", f"query {k}", [Candidate(f"q{k}d{i}", f"passage {i}", 20.0 - i, i + 1) for i in range(20)])
          for k in range(5)]
    method = RankK(RerankConfig(depth=20, window=4, stride=2))
    with PlanServer() as fast, PlanServer(delay_s=0.2) as slow, PlanServer() as alone:
        eng = engine_for(fast.url, slow.url, timeout=30)  # a generous bound: a busy machine must not fail it
        got = Scheduler(eng).run(method, qs)
        want = Scheduler(engine_for(alone.url, timeout=30)).run(method, qs)
    total = 5 * 9
    assert fast.answered + slow.answered == total == alone.answered
    assert slow.answered < total / 2 - 5 and fast.answered > slow.answered
    assert eng.stats.extra["sent"] == [fast.answered, slow.answered]
    assert {q: r.order for q, r in got.items()} == {q: r.order for q, r in want.items()}


def test_no_server_is_a_one_line_error():
    with pytest.raises(RankkError, match="cannot reach an OpenAI-compatible server"):
        OpenAIEngine(MODEL, Sampling(), EngineOptions(base_urls=(f"http://127.0.0.1:{free_port()}",), timeout_s=2))


def test_a_model_the_server_does_not_serve_is_a_one_line_error(fault):
    with pytest.raises(RankkError, match="serves fake-model, not 'other'"):
        OpenAIEngine("other", Sampling(), EngineOptions(base_urls=(fault.url,)))


def test_truncate_without_local_tokenizer_is_a_clear_error(fault):
    with pytest.raises(RankkError, match="tokenizer .* cannot be loaded"):
        engine_for(fault.url).truncate("some text", 3)


def test_backoff_is_exponential_capped_and_honours_retry_after():
    assert [backoff_delay(i, 0.5, 8.0) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert backoff_delay(0, 0.5, 8.0, "3") == 3.0
    assert backoff_delay(0, 0.5, 8.0, "120") == 8.0
    assert normalize_base_url("http://h:1/") == "http://h:1/v1" == normalize_base_url("http://h:1/v1")


# ----------------------------------------------------------------------------------------------------------
# the real thing: vLLM's OpenAI-compatible server over a REAL model, SmolLM2-135M-Instruct (one per session)


@pytest.fixture(scope="session")
def vllm_server(smollm2_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(smollm2_model),
           "--host", "127.0.0.1", "--port", str(port), "--gpu-memory-utilization", "0.2", "--max-model-len", "2048",
           "--enforce-eager", "--dtype", "bfloat16"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 240
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server not healthy after 240 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="session")
def served(vllm_server, smollm2_model):
    eng = OpenAIEngine(str(smollm2_model), Sampling(max_tokens=16, temperature=0.0),
                       EngineOptions(base_urls=(vllm_server,), concurrency=8, timeout_s=120))
    yield eng
    eng.close()


CHAT = Request(messages=(("user", "Query: cats\n\n[1] a cat\n\n[2] a dog"),))


def test_real_server_chat_and_raw_in_one_batch(served):
    out = served.generate([CHAT, Request(prompt="Query: cats\nPassage: a cat\n<think>", logprobs=3),
                           Request(prompt="hello", max_tokens=2)])
    assert all(c.error is None for c in out)
    assert out[0].text and out[0].input_tokens > 5 and out[0].output_tokens > 0
    # top-3 (+ the sampled token) per position, keyed by token text: two byte-fallback tokens that both decode to
    # U+FFFD share one key, so a position can hold fewer than 3 entries -- but never none, never more than 4
    lps = out[1].logprobs
    assert len(lps) == out[1].output_tokens and all(1 <= len(p) <= 4 for p in lps)
    assert sum(len(p) >= 3 for p in lps) >= len(lps) // 2
    assert out[2].finish_reason == "length" and out[2].output_tokens == 2


def test_real_server_matches_the_offline_engine_greedy(served, smollm2_vllm):
    online = served.generate([CHAT])[0]
    offline = smollm2_vllm.generate([Request(messages=CHAT.messages, max_tokens=16)])[0]
    assert online.text == offline.text
    assert online.input_tokens == offline.input_tokens


# Log-probabilities through the server and in process agree to LOGPROB_TOL (both bf16 on CPU, same kernels;
# batch composition can move the last bits); the argmax token is the same.
LOGPROB_TOL = 0.05


def _close_logprobs(a: dict, b: dict, tokens) -> None:
    for t in tokens:
        assert t in a and t in b, (t, a, b)
        assert abs(a[t] - b[t]) <= LOGPROB_TOL, (t, a[t], b[t])


def test_real_server_rank1_logprobs_equal_the_offline_engine(served, smollm2_vllm):
    from rankk_cli.rerank.methods.rank1 import ANSWERS, STOP, TOP_LOGPROBS, render

    prompt = render("how long is the life cycle of a flea", "A flea can live up to a year.")
    # rank1's forced answer (" true"/" false" allowed, both logprobs reported) and its free reply's stop reason
    forced = Request(prompt=prompt + "fleas live long\n</think>", max_tokens=1, temperature=0.0,
                     logprobs=TOP_LOGPROBS, allowed=ANSWERS)
    free = Request(prompt=prompt, max_tokens=24, temperature=0.0, stop=STOP, logprobs=TOP_LOGPROBS)
    online = served.generate([forced, free])
    offline = smollm2_vllm.generate([forced, free])
    assert online[0].text == offline[0].text and online[0].text in ANSWERS
    _close_logprobs(online[0].logprobs[0], offline[0].logprobs[0], ANSWERS)
    assert online[1].text == offline[1].text
    assert (online[1].finish_reason, online[1].stop_reason) == (offline[1].finish_reason, offline[1].stop_reason)


def test_real_server_first_logprobs_equal_the_offline_engine(served, smollm2_vllm):
    from rankk_cli.rerank.methods.base import RerankConfig
    from rankk_cli.rerank.methods.first import First

    request = First(RerankConfig(window=4, stride=2)).request(
        "flea life cycle", ["Fleas lay eggs on hosts.", "Cats purr.", "The flea life cycle has four stages.",
                            "Dogs bark."])
    online, offline = served.generate([request])[0], smollm2_vllm.generate([request])[0]
    assert online.text == offline.text
    a, b = online.logprobs[0], offline.logprobs[0]
    letters = [t for t in "ABCD" if t in a and t in b]
    assert letters, (a, b)
    _close_logprobs(a, b, letters)


def test_real_server_chat_logprobs_continue_final_and_allowed(served):
    forced = Request(messages=(("user", "relevant?"), ("assistant", "<think>hmm</think>")), continue_final=True,
                     max_tokens=1, allowed=(" true", " false"), logprobs=5)
    c = served.generate([forced])[0]
    assert c.error is None, c.error
    assert c.text in (" true", " false")
    assert len(c.logprobs) == 1 and c.text in c.logprobs[0]
    assert served.count_tokens(" true false") == 2
    assert served.truncate("one two three four five six", 2) == "one two"


def test_truncation_is_one_text_for_every_engine(served, smollm2_vllm, smollm2_model):
    """--truncate: the openai engine, the vLLM engine and the dry run cut a passage to the same text (a cut
    inside a multi-byte character drops the U+FFFD it would decode to)."""
    from rankk_cli.rerank.pipeline import _tokenizer_truncate

    text = "Café naïve — 東京の天気は晴れ. Ünïcödé passages 🙂 cut anywhere. " * 4
    dry = {n: _tokenizer_truncate(str(smollm2_model), n) for n in range(1, 40)}
    for n in range(1, 40):
        a, b, c = served.truncate(text, n), smollm2_vllm.truncate(text, n), dry[n](text)
        assert a == b == c, (n, a, b, c)
        assert "\ufffd" not in a and smollm2_vllm.count_tokens(a) <= n
