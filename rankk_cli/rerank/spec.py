"""One validated description of a ``rankk rerank`` invocation, built once, before any input is read or any
model loads.

``RerankSpec.build(**flags)`` is the ONE place where the rerank flags are checked and turned into the objects
the stage runs on; everything after it (``pipeline.run_spec``) only reads the spec. Each value is checked by the
object that owns it, all called from ``build`` in this order:

1. windowing (``--depth/--window/--stride/--passes/--truncate/--force-max-tokens``) -> ``RerankConfig``;
2. the choices (``--format``, ``--schedule``) and the outputs (``-o``, ``--windows``: writable, not an input);
3. the method (``METHODS`` looked up once; its declared ``Option``s validate ``--method-opt``; the instance is
   built here, once, and is the one that runs);
4. the engine (``ENGINES`` looked up once; the engine class checks its own flags in ``check_options`` — the
   pipeline imports no engine module); flags the method or the engine does not use are warned about, never
   silently dropped;
5. sampling (``Sampling`` checks its values; the method's defaults fill what the user left out).

The CLI's choice lists come from here (``FORMATS``, ``SCHEDULES``) and from the registries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rankk_cli.errors import RankkError, check_choice
from rankk_cli.rerank.engines.base import EngineOptions, Sampling
from rankk_cli.rerank.methods.base import Method, RerankConfig
from rankk_cli.rerank.records import WINDOWS_SUFFIX
from rankk_cli.rerank.scheduler import SCHEDULES  # the scheduler owns its schedules

FORMATS = ("table", "json")
DEFAULT_WINDOW, DEFAULT_STRIDE = 20, 10
DEFAULT_MAX_TOKENS = 4096  # when neither the user nor the method sets a budget

# EngineOptions field -> the rerank flag that sets it (for the "ignored" warning)
ENGINE_FLAGS = {"tensor_parallel": "--tensor-parallel", "max_model_len": "--max-model-len",
                "gpu_memory_utilization": "--gpu-memory-utilization", "dtype": "--dtype", "base_urls": "--base-url",
                "timeout_s": "--timeout", "max_retries": "--max-retries", "concurrency": "--concurrency"}


def resolve_windowing(depth: int, window: int | None, stride: int | None) -> tuple[int, int]:
    """Defaults that fit the depth: --window 20 (or --depth when that is smaller), --stride half the window, at
    most 10. An explicit --window larger than --depth is an error (it can never be filled); a query with fewer
    candidates than the window still gets one window (windows.py)."""
    if depth < 1:
        raise RankkError(f"--depth: expected an integer >= 1, found {depth}")
    if window is None:
        window = min(DEFAULT_WINDOW, depth)
    elif window > depth:
        raise RankkError(f"--window: expected at most --depth ({depth}), found {window}")
    if stride is None:
        stride = min(DEFAULT_STRIDE, max(1, window // 2))
    return window, stride


def windowing(depth: int, window: int | None, stride: int | None, passes: int, truncate: int | None,
              force_max_tokens: int, max_tokens: int | None) -> RerankConfig:
    window, stride = resolve_windowing(depth, window, stride)
    for flag, value in (("--depth", depth), ("--window", window), ("--stride", stride), ("--passes", passes)):
        if value < 1:
            raise RankkError(f"{flag}: expected an integer >= 1, found {value}")
    if stride > window:
        raise RankkError(f"--stride: expected at most --window ({window}), found {stride}")
    if truncate is not None and truncate < 1:
        raise RankkError(f"--truncate: expected a number of tokens >= 1, found {truncate}")
    if max_tokens is not None and max_tokens < 1:
        raise RankkError(f"--max-tokens: expected an integer >= 1, found {max_tokens}")
    if force_max_tokens < 1:
        raise RankkError(f"--force-max-tokens: expected an integer >= 1, found {force_max_tokens}")
    return RerankConfig(depth=depth, window=window, stride=stride, passes=passes, truncate=truncate,
                        force_max_tokens=force_max_tokens)


@dataclass(frozen=True)
class Inputs:
    run: Path
    docs: str | None = None
    topics: str | None = None
    qrels: str | None = None
    exclude: Path | None = None

    def paths(self) -> list:
        return [self.run, self.docs, self.topics, self.qrels, self.exclude]


@dataclass(frozen=True)
class Outputs:
    run: Path | None  # None only in a dry run
    windows: Path | None
    fmt: str = "table"
    dry_run: bool = False

    def check(self) -> None:
        """Both outputs can be written (not an existing directory, inside a writable folder) and are different
        files: one line naming the path and flag otherwise. Before any work, and again before writing."""
        from rankk_cli.outputs import check_outputs

        check_outputs({"-o/--output": self.run, "--windows": self.windows})


@dataclass
class RerankSpec:
    """Everything a rerank run is: built and validated by ``build``; read-only afterwards."""

    inputs: Inputs
    outputs: Outputs
    config: RerankConfig
    method: Method  # the one instance that runs
    method_options: dict
    engine_name: str
    engine_cls: type
    engine_options: EngineOptions
    model: str | None
    sampling: Sampling
    schedule: str = "continuous"
    no_cache: bool = False
    reuse_cache_across_stacks: bool = False  # cached answers of another stack (rerank/stack.py) reused too
    warnings: list[str] = field(default_factory=list)  # printed once every input has checked out

    @property
    def method_name(self) -> str:
        return self.method.name

    @property
    def needs_engine(self) -> bool:
        return self.method.needs_engine

    def lazy_engine(self):
        """The spec's engine, built on its first call (a run answered from the call cache loads no model); the
        engine's cheap checks (e.g. a --model directory that does not exist) run now."""
        from rankk_cli.rerank.engines.base import LazyEngine

        cls, model, sampling, options = self.engine_cls, self.model, self.sampling, self.engine_options
        cls.precheck(str(model), options)
        return LazyEngine(lambda: cls(model, sampling, options), cls.name, str(model), sampling, options)

    @classmethod
    def build(cls, *, run: Path, output: Path | None, method: str, model: str | None = None,
              engine: str = "vllm", depth: int = 100, window: int | None = None, stride: int | None = None,
              passes: int = 1, truncate: int | None = None, docs: str | None = None, topics: str | None = None,
              temperature: float | None = None, top_p: float = 1.0, max_tokens: int | None = None,
              seed: int | None = None, force_max_tokens: int = 256, tensor_parallel: int = 1,
              max_model_len: int | None = None, dtype: str | None = None,
              gpu_memory_utilization: float | None = None,
              base_urls: tuple[str, ...] = (), windows_out: Path | None = None, dry_run: bool = False,
              fmt: str = "table", no_cache: bool = False, qrels: str | None = None,
              method_opts: tuple[str, ...] = (), timeout: float = 600.0, max_retries: int = 4,
              concurrency: int = 32, exclude: Path | None = None, schedule: str = "continuous",
              reuse_cache_across_stacks: bool = False, model_given: bool = True) -> "RerankSpec":
        """``model_given=False``: an engine object is supplied by the caller (library use), so the method's
        model is not resolved."""
        from rankk_cli.rerank.engines import ENGINES
        from rankk_cli.rerank.methods import METHODS
        from rankk_cli.rerank.methods.base import method_options

        # 1. windowing
        config = windowing(depth, window, stride, passes, truncate, force_max_tokens, max_tokens)
        # 2. choices and outputs (checked before any input is read or any model loads)
        check_choice(fmt, FORMATS, "--format")
        check_choice(schedule, SCHEDULES, "--schedule")
        inputs = Inputs(Path(run), docs, topics, qrels, exclude)
        windows_path = None
        if output is None and not dry_run:
            raise RankkError("-o/--output: expected an output run path, found none")
        if output is not None and not dry_run:
            from rankk_cli.outputs import check_not_input

            windows_path = Path(windows_out) if windows_out else Path(str(output) + WINDOWS_SUFFIX)
        outputs = Outputs(None if output is None else Path(output), windows_path, fmt, dry_run)
        if windows_path is not None:
            outputs.check()
            check_not_input(outputs.run, "-o/--output", inputs.paths())
            check_not_input(windows_path, "--windows", inputs.paths())
        # 3. the method: looked up once, options validated by its declaration, built once
        method_cls = METHODS.get(method)
        opts = method_options(method_cls, method_opts, qrels=qrels)
        instance = method_cls(config, **opts)
        given = {"--model": model is not None, "--window": window is not None, "--stride": stride is not None,
                 "--passes": passes != 1}
        warnings = [_ignored([flag for flag in method_cls.ignores if given.get(flag)], f"method {method}")]
        # 4. the engine: looked up once (also for methods that need none: a typo is never ignored); the engine
        # class checks its own flags
        engine_cls = ENGINES.get(engine)
        options = EngineOptions(tensor_parallel=tensor_parallel, max_model_len=max_model_len, dtype=dtype,
                                gpu_memory_utilization=gpu_memory_utilization, base_urls=tuple(base_urls),
                                timeout_s=timeout, max_retries=max_retries, concurrency=concurrency)
        options = engine_cls.check_options(options)
        if method_cls.needs_engine:
            defaults = EngineOptions()
            warnings.append(_ignored([flag for name, flag in ENGINE_FLAGS.items() if name not in engine_cls.uses
                                      and getattr(options, name) != getattr(defaults, name)], f"engine {engine}"))
            if model_given:
                # the method owns its default/aliased model (embed: omitted or "minilm" -> packaged MiniLM)
                model = method_cls.resolve_model(model)
        # 5. sampling: the method's defaults where the user set nothing
        if temperature is None:
            temperature = method_cls.default_temperature if method_cls.default_temperature is not None else 0.0
        if max_tokens is None:
            max_tokens = method_cls.default_max_tokens or DEFAULT_MAX_TOKENS
        sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed)
        spec = cls(inputs=inputs, outputs=outputs, config=config, method=instance, method_options=opts,
                   engine_name=engine, engine_cls=engine_cls, engine_options=options, model=model,
                   sampling=sampling, schedule=schedule, no_cache=no_cache,
                   reuse_cache_across_stacks=reuse_cache_across_stacks)
        spec.warnings.extend(w for w in warnings if w)
        return spec


def _ignored(flags: list[str], who: str) -> str | None:
    if not flags:
        return None
    return f"{', '.join(flags)} ignored: {who} does not use {'them' if len(flags) > 1 else 'it'}"
