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
from rankk_cli.rerank.engines.base import Completion, Request

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


@dataclass(frozen=True)
class Option:
    """One declared method option (``rankk rerank --method-opt NAME=VALUE``): its type, default, meaning and,
    where they apply, its allowed values or minimum. ``rankk methods`` lists these; ``method_options`` and
    ``Method.__init__`` validate against them (one place, one message shape)."""

    name: str
    type: type  # int | float | str | bool
    default: object
    help: str
    choices: tuple = ()
    minimum: float | None = None

    def convert(self, value: object, shown: str) -> object:
        """``value`` (a ``--method-opt`` string, or a value given by another flag or in code) as ``type``;
        RankkError naming the option when it is not one."""
        flag = f"--method-opt {shown}"
        if isinstance(value, str) and self.type is not str:
            if self.type is bool:
                if value.lower() not in _TRUE + _FALSE:
                    raise RankkError(f"{flag}: expected true or false for {self.name!r}")
                value = value.lower() in _TRUE
            else:
                try:
                    value = self.type(value)
                except (TypeError, ValueError):
                    raise RankkError(f"{flag}: expected {self.type.__name__} for {self.name!r}, "
                                     f"found {value!r}") from None
        elif self.type is str:
            value = str(value)
        if self.choices and value not in self.choices:
            raise RankkError(f"{flag}: {self.name} must be one of {', '.join(map(str, self.choices))}, "
                             f"found {value!r}")
        if self.minimum is not None and value < self.minimum:
            raise RankkError(f"{flag}: {self.name} must be at least {self.minimum:g}, found {value}")
        return value

    def describe(self) -> str:
        extra = f"one of {'|'.join(map(str, self.choices))}" if self.choices else self.type.__name__
        if self.minimum is not None:
            extra += f" >= {self.minimum:g}"
        default = "" if self.default in ("", None) else f", default {self.default}"
        return f"{self.name} ({extra}{default}): {self.help}"


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class Method(ABC):
    """The method contract. Subclass, declare, register (``methods/__init__.py``):

    - ``name``, ``kind`` and ``rerank`` (the generator described in this module's docstring);
    - ``options``: the declared ``Option`` s; ``Method.__init__`` validates them and sets each as an attribute
      (``self.k``), so a subclass's ``__init__`` only adds checks that involve the config (e.g. first: window
      <= 26 letters);
    - ``default_temperature`` / ``default_max_tokens``: sampling the method imposes unless the user sets it;
    - ``planned_windows(n)``: windows a list of ``n`` candidates will take (the progress bar's total), or None
      when it is data dependent;
    - ``needs_engine`` (False: no model is loaded, e.g. oracle), ``default_model``/``resolve_model``,
      ``trec_tag`` (the run tag, default ``rankk-NAME``) and ``note`` (one line printed with the summary);
    - ``ignores``: the rerank flags the method does not use (oracle: --model, --window, ...): given, they are
      a warning, never silently dropped; ``input_warnings(qids)``: what the method has to say about the queries
      it is given (oracle: how many its qrels cover), one warning line each.
    """

    name: str = "base"
    kind: str = "listwise"  # listwise | pointwise | groupwise | embedding | setwise | pairwise | oracle
    default_temperature: float | None = None
    default_max_tokens: int | None = None
    options: tuple[Option, ...] = ()
    needs_engine: bool = True
    # the model loaded when ``--model`` is omitted (None: the method needs one); see ``resolve_model``
    default_model: str | None = None
    trec_tag: str | None = None
    note: str | None = None
    ignores: tuple[str, ...] = ()  # rerank flags this method does not use (a warning when given)

    @classmethod
    def resolve_model(cls, model: str | None) -> str:
        """The model to load for the user's ``--model`` (None when omitted). Methods with a default or aliases
        (embed: omitted or "minilm" -> the packaged all-MiniLM-L6-v2 directory) override this."""
        if model:
            return str(model)
        if cls.default_model:
            return cls.default_model
        raise RankkError(f"--model: expected a model directory or id for method {cls.name!r}, found none")

    @classmethod
    def tag(cls) -> str:
        return cls.trec_tag or f"rankk-{cls.name}"

    @classmethod
    def summary_line(cls) -> str:
        """The first line of the method's (else its module's) docstring (``rankk methods``)."""
        import sys

        doc = cls.__doc__ if cls.__doc__ and cls.__doc__ is not Method.__doc__ else sys.modules[cls.__module__].__doc__
        return (doc or "").strip().split("\n")[0]

    def __init__(self, config: RerankConfig, **opts):
        self.config = config
        declared = {o.name: o for o in self.options}
        unknown = sorted(set(opts) - set(declared))
        if unknown:
            raise RankkError(f"{self.name}: no option {unknown[0]!r} (its options: "
                             f"{', '.join(declared) or 'none'})")
        for name, option in declared.items():
            value = opts.get(name, option.default)
            setattr(self, name, option.convert(value, f"{name}={value}") if name in opts else value)

    def planned_windows(self, n: int) -> int | None:
        return None

    def input_warnings(self, qids: list[str]) -> list[str]:
        """Warnings (one line each, without the ``rankk: warning:`` prefix) about the queries to rerank."""
        return []

    @abstractmethod
    def rerank(self, qid: str, query: str, candidates: list[Candidate]
               ) -> Generator[list[Call], list[Completion], QueryResult]:
        """Yield lists of calls, receive their completions, return the QueryResult."""


def scores_below(scores: dict[str, float], docids: list[str]) -> dict[str, float]:
    """Scores for ``docids`` -- documents left unscored, in first-stage order -- below every score in ``scores``:
    the lowest minus 1, 2, ... (from 0 when nothing was scored), so they rank last and keep their order."""
    low = min(scores.values(), default=0.0)
    return {d: low - 1.0 - j for j, d in enumerate(docids)}


def answered(result: QueryResult) -> Generator[list[Call], list[Completion], QueryResult]:
    """The generator of a method that needs no engine call for a query (oracle): it asks nothing and returns
    ``result`` at once, so the scheduler drives it like any other."""
    yield from ()
    return result


def method_options(cls: type, pairs=(), **given) -> dict:
    """Typed constructor options for method ``cls`` from ``KEY=VALUE`` strings (``--method-opt``) and ``given``
    values (e.g. ``qrels`` from ``--qrels``; None values are ignored), checked against ``cls.options``. Unknown
    keys and bad values: RankkError."""
    declared = {o.name: o for o in cls.options}
    out: dict = {}
    items = [(k, v, f"{k}={v}") for k, v in given.items() if v is not None]
    for pair in pairs:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise RankkError(f"--method-opt: expected KEY=VALUE, found {pair!r}")
        items.append((key.strip(), value.strip(), pair))
    for key, value, shown in items:
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            flag = f"--{key}" if key in given else "--method-opt"
            raise RankkError(f"{flag}: method {cls.name!r} takes no option {key!r} (its options: {known})")
        out[key] = declared[key].convert(value, shown)
    return out


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
