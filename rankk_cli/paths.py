"""Where rankk keeps things: the cache directory and the shared test data."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Root of all on-disk caches: $RANKK_CACHE, else ~/.cache/rankk."""
    env = os.environ.get("RANKK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "rankk"


def data_root() -> Path:
    """The shared test collections: $RANKK_DATA, else ../shared/data beside the repo checkout."""
    env = os.environ.get("RANKK_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"
