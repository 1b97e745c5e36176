"""Lazy name -> class registries (methods, engines).

Entries are "module:Class" strings, so listing names imports nothing heavy; ``get`` imports on demand.
"""

from __future__ import annotations

import importlib

from rankk_cli.errors import RankkError


class Registry:
    def __init__(self, kind: str, entries: dict[str, str]):
        self.kind = kind
        self.entries = dict(entries)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def register(self, name: str, target: "str | type") -> None:
        self.entries[name] = target

    def check(self, name: str) -> str:
        """``name`` if registered (imports nothing), else the one-line error."""
        if name not in self.entries:
            raise RankkError(f"unknown {self.kind} {name!r}: expected one of {', '.join(self.names())}")
        return name

    def get(self, name: str):
        self.check(name)
        target = self.entries[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
        return target
