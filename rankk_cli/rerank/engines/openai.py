"""The ``openai`` engine: any OpenAI-compatible server (``vllm serve``, vLLM's api_server module, SGLang, ...).

Chat requests go to ``/v1/chat/completions``, raw prompts to ``/v1/completions``. One ``generate`` call sends
its requests concurrently from a thread pool (``EngineOptions.concurrency`` at a time), each to the
``EngineOptions.base_urls`` entry with the fewest requests in flight (ties round-robin; ``stats.extra["sent"]``
counts attempts per URL). Each HTTP attempt has a timeout (``timeout_s``); connection errors, timeouts, 429
and 5xx are retried up to ``max_retries`` times with exponential backoff (``Retry-After`` honoured, capped),
moving to the next base URL; other 4xx fail at once. A request that still fails comes back as a Completion with
``finish_reason="error"`` and ``error`` set -- the batch never raises for one bad request, so finished requests
are kept and the scheduler records the failure.

For the continuous scheduler, ``submit`` puts requests on a queue served by ``concurrency`` long-lived daemon
threads and ``poll`` hands back each answer as soon as it arrives, so a query's next request goes out the moment
its previous one is answered.

vLLM extensions are sent only when a request needs them: ``continue_final_message`` (continue the assistant
message) and ``allowed_token_ids`` (forced answers; needs the model's tokenizer). ``count_tokens``/``truncate``
load the tokenizer with transformers from the model directory (or the local HF cache), else a clear error.
httpx is imported inside the class.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import (Completion, Engine, EngineOptions, Request, Sampling, allowed_token_ids,
                                           stop_reason_text, truncate_tokens)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUS = (429, 500, 502, 503, 504)


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise RankkError(f"--base-url: expected http(s)://HOST:PORT[/v1], found {url!r}")
    return url if url.endswith("/v1") else url + "/v1"


def backoff_delay(attempt: int, base: float, cap: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): base * 2**attempt, capped; a server's
    Retry-After (seconds) wins when larger, within the cap."""
    delay = min(cap, base * (2 ** attempt))
    if retry_after:
        try:
            delay = max(delay, min(cap, float(retry_after)))
        except ValueError:
            pass
    return delay


class _Failure(Exception):
    def __init__(self, message: str, retry: bool, retry_after: str | None = None):
        super().__init__(message)
        self.retry = retry
        self.retry_after = retry_after


class OpenAIEngine(Engine):
    name = "openai"
    backoff_base = 0.5  # seconds; tests lower these
    backoff_cap = 8.0

    uses = frozenset({"base_urls", "api_key", "concurrency", "timeout_s", "max_retries"})

    @classmethod
    def check_options(cls, options: EngineOptions) -> EngineOptions:
        import dataclasses

        if not options.timeout_s > 0:
            raise RankkError(f"--timeout: expected seconds > 0, found {options.timeout_s}")
        if options.max_retries < 0:
            raise RankkError(f"--max-retries: expected an integer >= 0, found {options.max_retries}")
        if options.concurrency < 1:
            raise RankkError(f"--concurrency: expected an integer >= 1, found {options.concurrency}")
        return dataclasses.replace(options, base_urls=tuple(normalize_base_url(u) for u in options.base_urls))

    def __init__(self, model: str, sampling: Sampling | None = None, options: EngineOptions | None = None,
                 check: bool = True):
        super().__init__(str(model), sampling or Sampling(), options or EngineOptions())
        import httpx

        urls = self.options.base_urls or (os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,)
        self.base_urls = [normalize_base_url(u) for u in urls]
        key = self.options.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        conc = max(1, int(self.options.concurrency))
        self.client = httpx.Client(
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(self.options.timeout_s, connect=min(self.options.timeout_s, 30.0)),
            limits=httpx.Limits(max_connections=conc, max_keepalive_connections=conc),
        )
        self._next = 0
        self._lock = threading.Lock()
        self._tokenizer = None
        self.stats.extra.update(retries=0, failed=0)
        if check:
            self._check_server()

    @classmethod
    def stack_record(cls, model: str, options: EngineOptions) -> dict:
        """The client side plus what each server reports (``/v1/models``, ``/version``): two GETs per base URL
        per run, never a request per window; a server that does not answer makes the stack unknown (cached
        answers are then not reused, unless --reuse-cache-across-stacks)."""
        import httpx

        from rankk_cli.rerank import stack

        urls = options.base_urls or (os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,)
        key = options.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        timeout = min(options.timeout_s, 10.0)
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as client:
            def get(url: str):
                try:
                    r = client.get(url)
                except httpx.HTTPError:
                    return None, None
                try:
                    return r.status_code, r.json()
                except ValueError:
                    return r.status_code, None

            servers = stack.server_record([normalize_base_url(u) for u in urls], str(model), get)
        return {**stack.client_record(cls.name), "servers": servers}

    # ------------------------------------------------------------------------------------------------------
    # server and tokenizer

    def _check_server(self) -> None:
        """Fail fast, in one line, when no server answers or it does not serve this model."""
        import httpx

        problems, served = [], None
        for url in self.base_urls:
            try:
                r = self.client.get(url + "/models", timeout=min(self.options.timeout_s, 30.0))
            except httpx.HTTPError as exc:
                problems.append(f"{url}: {type(exc).__name__} {exc}".strip())
                continue
            if r.status_code == 200:
                try:
                    served = [m.get("id") for m in r.json().get("data", [])]
                except ValueError:
                    served = None
            break  # one server answers (even without /models): the rest is per request
        else:
            raise RankkError(f"cannot reach an OpenAI-compatible server at {', '.join(self.base_urls)} "
                             f"({problems[0] if problems else 'no answer'}); start one (e.g. python -m "
                             "vllm.entrypoints.openai.api_server --model DIR) or pass --base-url")
        if served and self.model not in served:
            raise RankkError(f"--model: the server at {self.base_urls[0]} serves {', '.join(map(str, served))}, "
                             f"not {self.model!r}")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not Path(self.model).expanduser().is_dir():
                raise RankkError(
                    f"engine openai: the tokenizer of {self.model!r} is needed (for --truncate or forced answers) "
                    "but cannot be loaded: pass the local model directory the server was started with as --model")
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(str(Path(self.model).expanduser()))
            except Exception as exc:  # noqa: BLE001 - one line for the user
                raise RankkError(
                    f"engine openai: the tokenizer of {self.model!r} is needed (for --truncate or forced answers) "
                    f"but cannot be loaded: pass a local model directory as --model "
                    f"({' '.join(str(exc).split())[:160]})") from None
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def truncate(self, text: str, max_tokens: int) -> str:
        return truncate_tokens(self.tokenizer, text, max_tokens)

    # ------------------------------------------------------------------------------------------------------
    # request bodies and responses

    def body(self, request: Request) -> tuple[str, dict]:
        s = self.sampling
        body: dict = {
            "model": self.model,
            "max_tokens": request.max_tokens if request.max_tokens is not None else s.max_tokens,
            "temperature": request.temperature if request.temperature is not None else s.temperature,
            "top_p": s.top_p,
        }
        if s.seed is not None:
            body["seed"] = s.seed
        if request.stop:
            body["stop"] = list(request.stop)
        if request.allowed:
            body["allowed_token_ids"] = allowed_token_ids(self.tokenizer, request.allowed)
            if request.logprobs is not None:
                # as the vLLM engine does: the log-probabilities of EVERY allowed answer (a forced rank1 answer
                # needs both " true" and " false", even when one is outside the unrestricted top-k); vLLM's
                # servers take logprob_token_ids on both endpoints
                body["logprob_token_ids"] = body["allowed_token_ids"]
        if request.messages is not None:
            body["messages"] = [{"role": r, "content": c} for r, c in request.messages]
            if request.continue_final:
                body["add_generation_prompt"] = False
                body["continue_final_message"] = True
            if request.logprobs is not None:
                body["logprobs"] = True
                body["top_logprobs"] = request.logprobs
            return "/chat/completions", body
        if request.prompt is None:
            raise RankkError("engine openai: a request has neither messages nor prompt")
        body["prompt"] = request.prompt
        if request.logprobs is not None:
            body["logprobs"] = request.logprobs
        return "/completions", body

    @staticmethod
    def parse(data: dict, chat: bool) -> Completion:
        """A server answer as a Completion. vLLM's servers add ``stop_reason`` to each choice (the stop string,
        a stop token id, or null for end-of-sequence); other servers leave it out (then None: unknown)."""
        choice = (data.get("choices") or [{}])[0]
        usage = data.get("usage") or {}
        reason = choice.get("finish_reason")
        reason = "length" if reason == "length" else ("error" if reason in ("error", "abort") else "stop")
        lps = None
        raw_lp = choice.get("logprobs")
        if chat:
            text = (choice.get("message") or {}).get("content") or ""
            if raw_lp and raw_lp.get("content") is not None:
                lps = []
                for pos in raw_lp["content"]:
                    d = {t["token"]: float(t["logprob"]) for t in pos.get("top_logprobs") or []}
                    d.setdefault(pos["token"], float(pos["logprob"]))
                    lps.append(d)
        else:
            text = choice.get("text") or ""
            if raw_lp and raw_lp.get("tokens") is not None:
                lps = []
                tops = raw_lp.get("top_logprobs") or [None] * len(raw_lp["tokens"])
                for tok, lp, top in zip(raw_lp["tokens"], raw_lp.get("token_logprobs") or [], tops):
                    d = {k: float(v) for k, v in (top or {}).items()}
                    if lp is not None:
                        d.setdefault(tok, float(lp))
                    lps.append(d)
        return Completion(text=text, finish_reason=reason, input_tokens=int(usage.get("prompt_tokens") or 0),
                          output_tokens=int(usage.get("completion_tokens") or 0), logprobs=lps,
                          stop_reason=stop_reason_text(choice.get("stop_reason")) if reason == "stop" else None,
                          error=None if reason != "error" else f"server finish_reason {choice.get('finish_reason')!r}")

    # ------------------------------------------------------------------------------------------------------
    # sending

    def _start(self) -> int:
        """Least outstanding requests: the index of the base URL a new request tries first (retries move to the
        next) is the one with the fewest requests in flight now, ties taken round-robin; so a slow server gets
        fewer requests and a fast one more. The pick counts as in flight at once (``_done`` releases it)."""
        with self._lock:
            n = len(self.base_urls)
            inflight = self.__dict__.setdefault("_inflight", [0] * n)
            first = self._next % n
            i = min(((first + k) % n for k in range(n)), key=lambda j: inflight[j])
            self._next = i + 1
            inflight[i] += 1
            self.stats.extra.setdefault("sent", [0] * n)[i] += 1
        return i

    def _take(self, slot: int) -> None:
        with self._lock:
            self._inflight[slot] += 1
            self.stats.extra["sent"][slot] += 1

    def _done(self, slot: int) -> None:
        with self._lock:
            self._inflight[slot] -= 1

    def _attempt(self, url: str, path: str, body: dict) -> dict:
        import httpx

        try:
            r = self.client.post(url + path, json=body)
        except httpx.TimeoutException as exc:
            raise _Failure(f"{url}: timed out after {self.options.timeout_s:g}s ({type(exc).__name__})",
                           retry=True) from None
        except httpx.TransportError as exc:
            raise _Failure(f"{url}: connection failed ({type(exc).__name__}: {exc})", retry=True) from None
        if r.status_code == 200:
            try:
                return r.json()
            except ValueError:
                raise _Failure(f"{url}: HTTP 200 with a body that is not JSON", retry=True) from None
        detail = " ".join(r.text.split())[:200]
        raise _Failure(f"{url}: HTTP {r.status_code} {detail}".strip(), retry=r.status_code in RETRY_STATUS
                       or r.status_code >= 500, retry_after=r.headers.get("retry-after"))

    def _one(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        try:
            path, body = self.body(request)
        except RankkError as exc:
            return Completion("", "error", error=str(exc), seconds=0.0)
        attempts = 1 + max(0, int(self.options.max_retries))
        start = self._start()
        last = "no attempt"
        for attempt in range(attempts):
            slot = (start + attempt) % len(self.base_urls)
            url = self.base_urls[slot]
            if attempt:
                self._take(slot)
            try:
                try:
                    data = self._attempt(url, path, body)
                finally:
                    self._done(slot)
            except _Failure as fail:
                last = str(fail)
                if not fail.retry:
                    break
                if attempt + 1 < attempts:
                    with self._lock:
                        self.stats.extra["retries"] += 1
                    time.sleep(backoff_delay(attempt, self.backoff_base, self.backoff_cap, fail.retry_after))
                continue
            c = self.parse(data, chat=path == "/chat/completions")
            c.seconds = time.perf_counter() - t0
            return c
        with self._lock:
            self.stats.extra["failed"] += 1
        tries = attempt + 1
        return Completion("", "error", seconds=time.perf_counter() - t0,
                          error=f"{last} (gave up after {tries} attempt{'s' if tries != 1 else ''})")

    def generate(self, requests: list[Request]) -> list[Completion]:
        if any(r.embed is not None or r.pair is not None for r in requests):
            raise RankkError("engine openai: embedding and pair-scoring requests are not supported; "
                             "use --engine vllm")
        t0 = time.perf_counter()
        if len(requests) <= 1:
            out = [self._one(r) for r in requests]
        else:
            out = self._concurrent(requests)
        self.stats.calls += 1
        self.stats.requests += len(requests)
        self.stats.seconds += time.perf_counter() - t0
        for c in out:
            self.stats.input_tokens += c.input_tokens
            self.stats.output_tokens += c.output_tokens
        return out

    def _concurrent(self, requests: list[Request]) -> list[Completion]:
        """Send ``requests`` from ``concurrency`` daemon threads. Not a ThreadPoolExecutor: its threads are joined
        on exit, so Ctrl-C would wait for every stalled request's timeout. Here the main thread waits in short
        slices (a KeyboardInterrupt lands at once), tells the workers to take nothing new, and leaves."""
        import queue

        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(requests)):
            todo.put(i)
        out: list[Completion | None] = [None] * len(requests)
        left = [len(requests)]
        done = threading.Event()
        stop = threading.Event()
        crash: list[BaseException] = []

        def work() -> None:
            while not stop.is_set():
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    out[i] = self._one(requests[i])
                except BaseException as exc:  # a bug, not a server fault: surface it in the main thread
                    crash.append(exc)
                    done.set()
                    return
                with self._lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

        workers = min(len(requests), max(1, int(self.options.concurrency)))
        for n in range(workers):
            threading.Thread(target=work, name=f"rankk-openai-{n}", daemon=True).start()
        try:
            while not done.wait(0.1):
                pass
        finally:
            stop.set()
        if crash:
            raise crash[0]
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------------------
    # continuous: a long-lived pool; answers come back one by one

    def _pool(self) -> dict:
        pool = self.__dict__.get("_pool_state")
        if pool is None:
            import itertools
            import queue

            pool = self.__dict__["_pool_state"] = {
                "tickets": itertools.count(), "todo": queue.Queue(), "done": queue.Queue(), "stop": threading.Event(),
                "outstanding": set(), "dropped": set()}

            def work() -> None:
                while not pool["stop"].is_set():
                    try:
                        t, request = pool["todo"].get(timeout=0.2)
                    except queue.Empty:
                        continue
                    if t in pool["dropped"]:
                        continue
                    try:
                        pool["done"].put((t, self._one(request)))
                    except BaseException as exc:  # a bug, not a server fault: surface it in the main thread
                        pool["done"].put((t, exc))

            for n in range(max(1, int(self.options.concurrency))):
                threading.Thread(target=work, name=f"rankk-openai-pool-{n}", daemon=True).start()
        return pool

    def submit(self, requests: list[Request]) -> list[int]:
        if any(r.embed is not None or r.pair is not None for r in requests):
            raise RankkError("engine openai: embedding and pair-scoring requests are not supported; "
                             "use --engine vllm")
        pool = self._pool()
        tickets = []
        for r in requests:
            t = next(pool["tickets"])
            pool["outstanding"].add(t)
            pool["todo"].put((t, r))
            tickets.append(t)
        return tickets

    def poll(self) -> list[tuple[int, Completion]]:
        """Wait (in short slices, so Ctrl-C lands at once) for the next answer, then take every other one that
        is already in."""
        import queue

        pool = self._pool()
        out: list[tuple[int, Completion]] = []
        while pool["outstanding"] - pool["dropped"] and not out:
            try:
                item = pool["done"].get(timeout=0.1)
            except queue.Empty:
                continue
            items = [item]
            while True:
                try:
                    items.append(pool["done"].get_nowait())
                except queue.Empty:
                    break
            for t, c in items:
                pool["outstanding"].discard(t)
                if t in pool["dropped"]:
                    pool["dropped"].discard(t)
                    continue
                if isinstance(c, BaseException):
                    raise c
                out.append((t, c))
        self.stats.calls += 1 if out else 0
        self.stats.requests += len(out)
        for _t, c in out:
            self.stats.input_tokens += c.input_tokens
            self.stats.output_tokens += c.output_tokens
        return out

    def cancel(self, tickets: list[int]) -> None:
        pool = self._pool()
        pool["dropped"].update(t for t in tickets if t in pool["outstanding"])

    def close(self) -> None:
        pool = self.__dict__.get("_pool_state")
        if pool is not None:
            pool["stop"].set()
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
