"""The method contract. A method knows prompts and parsing; it knows nothing of engines.

A method reranks ONE query's candidate list as a generator (a coroutine): it yields a list of ``Call`` s it
needs answered, receives the list of ``Completion`` s back (same order), and finally returns a ``QueryResult``.
The scheduler runs every query's generator, continuously (a query's next calls go out as soon as its last are
answered) or in lockstep (each round's calls from ALL queries go to the engine as one batched call). This one shape serves sliding windows (one call per step), pointwise methods (all pairs in
one step), setwise heaps and pairwise sorts alike.

Methods are registered by name in ``rankk_cli.rerank.methods.METHODS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Generator

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Completion, Engine, Request

# window / call outcomes, recorded per window and counted in the end-of-run summary
OK, REPAIRED, FORCED, FAILED = "ok", "repaired", "forced", "failed"
OUTCOMES = (OK, REPAIRED, FORCED, FAILED)


@dataclass
class Candidate:
    docid: str
    text: str
    score: float  # first-stage score
    rank: int  # first-stage rank (1-based)


@dataclass
class Call:
    """A request plus what the method wants recorded about it (window start/end, pass, ...)."""

    request: Request
    meta: dict = field(default_factory=dict)


@dataclass
class QueryResult:
    """The final ranking of one query and one record per window/step (rows of the rerank Parquet file).

    ``order``: docids, best first (every candidate exactly once). ``scores``: optional per-docid scores
    (pointwise methods, ties of listwise methods); when absent the scheduler writes positional scores.
    Each record holds at least: pass, start, end, outcome, raw, reasoning, parsed (list of ints), repairs,
    and the scheduler adds qid, engine_call, prompt_hash, tokens and seconds.
    """

    order: list[str]
    scores: dict[str, float] | None = None
    records: list[dict] = field(default_factory=list)


@dataclass
class RerankConfig:
    depth: int = 100
    window: int = 20
    stride: int = 10
    passes: int = 1
    truncate: int | None = None  # passage tokens
    force_max_tokens: int = 256  # budget for the forced answer after a cut-off reply


class Method(ABC):
    """Base class: set ``name``, ``kind`` and implement ``rerank``."""

    name: str = "base"
    kind: str = "listwise"  # listwise | pointwise | embedding | setwise | pairwise | oracle
    # defaults a method may impose on sampling (e.g. rank1: temperature 0, logprobs)
    default_temperature: float | None = None
    default_max_tokens: int | None = None
    # method options (``rankk rerank --method-opt KEY=VALUE``): name -> default; the default's type converts
    options: dict = {}
    # False for methods that never call an engine (oracle): no model is loaded
    needs_engine: bool = True
    # the model loaded when ``--model`` is omitted (None: the method needs one); see ``resolve_model``
    default_model: str | None = None

    @classmethod
    def resolve_model(cls, model: str | None) -> str:
        """The model to load for the user's ``--model`` (None when omitted). Methods with a default or aliases
        (embed: omitted or "minilm" -> the packaged all-MiniLM-L6-v2 directory) override this."""
        if model:
            return str(model)
        if cls.default_model:
            return cls.default_model
        raise RankkError(f"--model: expected a model directory or id for method {cls.name!r}, found none")

    def __init__(self, config: RerankConfig):
        self.config = config

    @abstractmethod
    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        """Yield lists of calls, receive their completions, return the QueryResult."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def method_options(cls: type, pairs=(), **given) -> dict:
    """Typed constructor options for method ``cls`` from ``KEY=VALUE`` strings (``--method-opt``) and ``given``
    values (e.g. ``qrels`` from ``--qrels``; None values are ignored). Unknown keys and bad values: RankkError."""
    allowed = dict(getattr(cls, "options", {}) or {})
    name = getattr(cls, "name", cls.__name__)
    out: dict = {}
    items = [(k, v, f"{k}={v}") for k, v in given.items() if v is not None]
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise RankkError(f"--method-opt: expected KEY=VALUE, found {pair!r}")
        items.append((key.strip(), value.strip(), pair))
    for key, value, shown in items:
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            flag = f"--{key}" if key in given else "--method-opt"
            raise RankkError(f"{flag}: method {name!r} takes no option {key!r} (its options: {known})")
        default = allowed[key]
        if not isinstance(value, str) or isinstance(default, str):
            out[key] = value if not isinstance(default, str) else str(value)
        elif isinstance(default, bool):
            if value.lower() not in _TRUE + _FALSE:
                raise RankkError(f"--method-opt {shown}: expected true or false for {key!r}")
            out[key] = value.lower() in _TRUE
        else:
            try:
                out[key] = type(default)(value)
            except (TypeError, ValueError):
                raise RankkError(f"--method-opt {shown}: expected {type(default).__name__} for {key!r}, "
                                 f"found {value!r}") from None
    return out


class NoEngine(Engine):
    """The engine of methods that never call one (``needs_engine = False``, e.g. oracle): a call is a bug."""

    name = "none"

    def generate(self, requests):
        raise RuntimeError(f"a method declared needs_engine=False asked for {len(requests)} generation(s)")


def heap_top_k(arr: list, k: int, heapify, last_parent: int) -> Generator[list[Call], list[Completion], list[str]]:
    """Heap sort that stops after the top ``k`` (llm-rankers' heapSort, shared by prp sorting and rankr1): build
    the max-heap from ``last_parent`` down, then swap the root to the end and sift down ``k - 1`` times.
    ``heapify(size, i, step)`` is the method's sift-down (a generator of engine calls); ``arr`` is sorted in
    place. Returns the order: the top ``k`` (best first), then every other candidate in ``arr``'s input order."""
    given = [c.docid for c in arr]
    n = len(arr)
    for i in range(last_parent, -1, -1):
        yield from heapify(n, i, "build")
    ranked = 0
    for i in range(n - 1, 0, -1):
        arr[i], arr[0] = arr[0], arr[i]
        ranked += 1
        if ranked == k:
            break
        yield from heapify(i, 0, "extract")
    top = [d.docid for d in reversed(arr)][:k]
    chosen = set(top)
    return top + [d for d in given if d not in chosen]
