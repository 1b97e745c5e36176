"""The engine contract. An engine knows how to generate (or embed); it knows nothing of methods.

``generate`` takes a whole batch of requests and is ONE engine call: the lockstep scheduler puts every query's
ready request into one list. ``submit``/``poll``/``cancel`` serve the continuous scheduler: requests go in at
any time and come back one by one as each finishes; the default answers everything submitted since the last poll
in ONE ``generate`` call, and engines with their own continuous batching (vllm, openai) override them.
Engines are registered by name in ``rankk_cli.rerank.engines.ENGINES``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by every request of a run (part of the call-cache key)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    seed: int | None = None

    def __post_init__(self) -> None:  # bad values fail here, before a model loads (vLLM would raise later)
        import math

        from rankk_cli.errors import RankkError

        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature >= 0):
            raise RankkError(f"--temperature: expected a number >= 0, found {self.temperature}")
        if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
            raise RankkError(f"--top-p: expected a number in (0, 1], found {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise RankkError(f"--seed: expected an integer in [0, 2^63), found {self.seed}")


@dataclass(frozen=True)
class EngineOptions:
    """How to start the engine (not part of the cache key: they do not change what a model answers)."""

    tensor_parallel: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    base_urls: tuple[str, ...] = ()
    api_key: str | None = None
    concurrency: int = 32
    timeout_s: float = 600.0
    max_retries: int = 4
    dtype: str | None = None


@dataclass(frozen=True)
class Request:
    """One generation request: chat ``messages`` (list of {role, content}) or a raw ``prompt``.

    ``max_tokens``/``temperature`` override the run's Sampling for this request (e.g. a small budget when a
    cut-off reasoning reply is forced to answer). ``logprobs`` asks for that many top log-probabilities per
    generated position. ``allowed`` restricts generation to these strings' first tokens (a forced one-token
    answer, e.g. (" true", " false")). ``continue_final`` continues the last assistant message instead of
    starting a new one (used to force an answer after cut-off thinking).

    ``embed`` (added for embedding methods): when set, the request asks for the embedding of this text instead
    of a generation (``messages``/``prompt`` unused); the engine returns it in ``Completion.embedding`` and
    truncates the text to the model's context, never failing on length. Embed and generate requests may be
    mixed in one ``generate`` call.

    ``pair`` (cross-encoders): (query, passage) scored jointly by a sequence-classification model (vLLM's score
    API); the score comes back as the one-element ``Completion.embedding`` ``[score]`` (stored in the call cache
    like an embedding), the pair truncated to the model's context like an embedding's text.
    """

    messages: tuple[tuple[str, str], ...] | None = None  # ((role, content), ...)
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    logprobs: int | None = None
    stop: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    continue_final: bool = False
    embed: str | None = None
    pair: tuple[str, str] | None = None

    def to_json(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if v not in (None, (), False)}
        if self.messages is not None:
            d["messages"] = [{"role": r, "content": c} for r, c in self.messages]
        return d

    def key(self, engine: str, model: str, sampling: Sampling) -> str:
        """The call-cache key: hash of (engine, model, sampling, request)."""
        blob = json.dumps({"engine": engine, "model": model, "sampling": asdict(sampling),
                           "request": self.to_json()}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def budget(self, sampling: Sampling) -> int:
        """The token budget this request generates under: its own ``max_tokens``, else the run's."""
        return self.max_tokens if self.max_tokens is not None else sampling.max_tokens

    def prefix_key(self, engine: str, model: str, sampling: Sampling) -> str | None:
        """The derivation key (``rankk_cli.rerank.derive``): hash of everything of ``key`` EXCEPT the token budget
        (the request's and the run's ``max_tokens``, replaced by nothing), so completions of one prompt under
        different budgets share it. None where a completion at one budget does not determine the answer at a
        smaller one: sampling without a seed (temperature > 0, no --seed), embedding and pair-scoring requests
        (nothing generated: no budget to derive under)."""
        temperature = self.temperature if self.temperature is not None else sampling.temperature
        if self.embed is not None or self.pair is not None or (temperature > 0 and sampling.seed is None):
            return None
        s = {k: v for k, v in asdict(sampling).items() if k != "max_tokens"}
        r = {k: v for k, v in self.to_json().items() if k != "max_tokens"}
        blob = json.dumps({"engine": engine, "model": model, "sampling": s, "request": r, "derive": 1},
                          sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class Completion:
    """What came back for one request."""

    text: str
    finish_reason: str  # "stop" | "length" | "error"
    input_tokens: int = 0
    output_tokens: int = 0
    # per generated position: {token_string: logprob} of the top-k alternatives (when logprobs was asked)
    logprobs: list[dict[str, float]] | None = None
    seconds: float = 0.0
    error: str | None = None
    cached: bool = False
    # the vector for a ``Request.embed`` request (text is then "", finish_reason "stop", or "length" when the text
    # filled the model's context and was cut there)
    embedding: list[float] | None = None
    # why a "stop" finish stopped: the stop string that matched (vLLM leaves it out of ``text``), ``"<token N>"``
    # for a stop token id, None for end-of-sequence (or unknown: completions cached before this field existed)
    stop_reason: str | None = None
    # the generated token ids (vllm engine; kept in the call cache so a smaller budget can be derived from them)
    token_ids: list[int] | None = None
    # answered by derivation from a cached completion of the same prompt with a larger budget (derive.py)
    derived: bool = False

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """``decode(encode(text)[:max_tokens])`` with a Hugging Face tokenizer (as Rank-K does). The ONE truncation
    of rankk: the vLLM engine, the openai engine and the dry run all call it, so they send the same text. A cut
    inside a multi-byte character decodes to U+FFFD, which re-encodes to MORE tokens: it is dropped."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens]).rstrip("\ufffd")


def allowed_token_ids(tokenizer, strings: tuple[str, ...]) -> list[int]:
    """The first token id of each allowed answer (``Request.allowed``), deduplicated, for every engine alike; an
    answer that encodes to no token is an error (never silently skipped)."""
    from rankk_cli.errors import RankkError

    ids: list[int] = []
    for s in strings:
        enc = tokenizer.encode(s, add_special_tokens=False)
        if not enc:
            raise RankkError(f"allowed answer {s!r} encodes to no token")
        if enc[0] not in ids:
            ids.append(enc[0])
    return ids


def stop_reason_text(reason) -> str | None:
    """An engine's stop reason as text: the stop string, ``"<token N>"`` for a stop token id, None for EOS."""
    if reason is None:
        return None
    return f"<token {reason}>" if isinstance(reason, int) else str(reason)


@dataclass
class EngineStats:
    calls: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Engine(ABC):
    """Base class. Subclasses set ``name`` and implement ``generate`` (and ``embed`` for pooling models)."""

    name: str = "base"
    # seconds spent importing the backend and loading the model (LazyEngine measures its build; an engine built
    # beforehand and passed in counts 0 here)
    load_seconds: float = 0.0

    def __init__(self, model: str, sampling: Sampling, options: EngineOptions):
        self.model = model
        self.sampling = sampling
        self.options = options
        self.stats = EngineStats()

    # the EngineOptions fields this engine reads (the rerank flags setting any other are warned about as ignored)
    uses: frozenset[str] = frozenset()

    @classmethod
    def check_options(cls, options: EngineOptions) -> EngineOptions:
        """Validate (and normalise) the options this engine reads, before any input is read or any model loads:
        RankkError naming the flag. Returns the options to use. Default: nothing to check."""
        return options

    @classmethod
    def precheck(cls, model: str, options: EngineOptions) -> None:
        """Cheap checks that need no model load (run before a lazily built engine, so a bad --model fails
        before any work); raise RankkError. Default: none."""

    @classmethod
    def stack_record(cls, model: str, options: EngineOptions) -> dict:
        """What would produce this engine's answers for ``model`` (``rankk_cli.rerank.stack``), computed
        WITHOUT loading the model or building the engine (the call cache compares its digest before any engine
        call). Default: the client side (rankk, transformers) and the engine's name."""
        from rankk_cli.rerank import stack

        return stack.client_record(cls.name)

    def stack(self) -> dict:
        """This engine's ``stack_record`` (what the pipeline and doctor ask; a LazyEngine answers for the engine it
        stands in for, without building it)."""
        return type(self).stack_record(self.model, self.options)

    @abstractmethod
    def generate(self, requests: list[Request]) -> list[Completion]:
        """Generate for all requests in ONE batched call; same order as given."""

    def embed(self, texts: list[str], max_tokens: int | None = None) -> "list[list[float]]":
        raise NotImplementedError(f"engine {self.name!r} cannot embed")

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` under the model's tokenizer."""
        raise NotImplementedError

    def truncate(self, text: str, max_tokens: int) -> str:
        """``decode(encode(text)[:max_tokens])`` with the model's tokenizer (as Rank-K does)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # continuous: tickets in, (ticket, completion) out as each finishes

    def submit(self, requests: list[Request]) -> list[int]:
        """Start ``requests`` without waiting; one ticket (an int, unique within this engine) per request."""
        tickets = self.__dict__.setdefault("_tickets", itertools.count())
        queued = self.__dict__.setdefault("_queued", [])
        out = [next(tickets) for _ in requests]
        queued.extend(zip(out, requests))
        return out

    def poll(self) -> list[tuple[int, Completion]]:
        """Wait until at least one submitted request has finished (none outstanding: return at once); return
        (ticket, completion) for every request finished since the last poll, in no promised order."""
        queued, self.__dict__["_queued"] = self.__dict__.get("_queued", []), []
        if not queued:
            return []
        completions = self.generate([r for _t, r in queued])
        if len(completions) != len(queued):
            raise RuntimeError(f"engine {self.name!r} returned {len(completions)} completions for "
                               f"{len(queued)} requests")
        return [(t, c) for (t, _r), c in zip(queued, completions)]

    def cancel(self, tickets: list[int]) -> None:
        """Forget submitted requests that are no longer wanted (a run that stops early); later polls never
        return them."""
        drop = set(tickets)
        self.__dict__["_queued"] = [(t, r) for t, r in self.__dict__.get("_queued", []) if t not in drop]


class NoEngine(Engine):
    """The engine of methods that never call one (``needs_engine = False``, e.g. oracle): a call is a bug."""

    name = "none"

    def generate(self, requests):
        raise RuntimeError(f"a method declared needs_engine = False asked for {len(requests)} generation(s)")


class LazyEngine(Engine):
    """Stands in for a registry engine and builds it on first use, so a run answered entirely from the call cache
    never loads a model (or starts a server client). Name, model and sampling -- the cache key parts -- are known
    without building; ``loaded`` tells whether the real engine was ever needed."""

    def __init__(self, factory, name: str, model: str, sampling: Sampling, options: EngineOptions):
        super().__init__(model, sampling, options)
        self.name = name
        self._factory = factory
        self._real: Engine | None = None

    @property
    def loaded(self) -> bool:
        return self._real is not None

    def stack(self) -> dict:
        if self._real is not None:
            return self._real.stack()
        from rankk_cli.rerank.engines import ENGINES

        if self.name in ENGINES.entries:  # the registry engine it stands in for (not the LazyEngine class)
            return ENGINES.get(self.name).stack_record(self.model, self.options)
        return super().stack()

    def real(self) -> Engine:
        if self._real is None:
            import time

            t0 = time.perf_counter()
            self._real = self._factory()
            self.load_seconds = time.perf_counter() - t0  # import + model load: not generate time
            self.stats = self._real.stats
        self._real.sampling = self.sampling
        return self._real

    def generate(self, requests: list[Request]) -> list[Completion]:
        return self.real().generate(requests)

    def embed(self, texts: list[str], max_tokens: int | None = None) -> "list[list[float]]":
        return self.real().embed(texts, max_tokens)

    def count_tokens(self, text: str) -> int:
        return self.real().count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.real().truncate(text, max_tokens)

    def submit(self, requests: list[Request]) -> list[int]:
        return self.real().submit(requests)

    def poll(self) -> list[tuple[int, Completion]]:
        return self.real().poll() if self._real is not None else []

    def cancel(self, tickets: list[int]) -> None:
        if self._real is not None:
            self._real.cancel(tickets)

    def close(self) -> None:
        if self._real is not None:
            self._real.close()
