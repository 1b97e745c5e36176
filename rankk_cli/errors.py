"""User-facing errors.

Every problem with the user's input (a malformed file, an unknown id, a bad flag combination) is raised as a
RankkError. The CLI prints its message as one line on stderr and exits with code 2 -- never a traceback.
Messages about a file name the file and, where it applies, the line: ``FILE:LINE: expected X, found Y``.
"""

from __future__ import annotations

from pathlib import Path


class RankkError(Exception):
    """An error in what the user gave us. Printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split("\n"))


def file_error(path: str | Path, line: int | None, message: str) -> RankkError:
    """`FILE:LINE: message` (or `FILE: message` when no line applies)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return RankkError(f"{where}: {message}")


def show(value: str, limit: int = 60) -> str:
    """A short, printable rendering of a found value for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_object_line(path: str | Path, lineno: int, line: str, expected: str = "a JSON object") -> dict:
    """One JSONL line parsed as a JSON object, else the FILE:LINE error naming what was ``expected``."""
    import json

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise file_error(path, lineno, f"expected {expected}, found invalid JSON ({exc.msg} at column "
                         f"{exc.colno}): {show(line.strip())}") from None
    if not isinstance(obj, dict):
        raise file_error(path, lineno, f"expected {expected} per line, found {type(obj).__name__}: "
                         f"{show(line.strip())}")
    return obj


def tab_line(path: str | Path, lineno: int, line: str, key: str, value: str) -> tuple[str, str]:
    """``key<TAB>value`` split once, both stripped; no tab or no key is the FILE:LINE error."""
    if "\t" not in line:
        raise file_error(path, lineno, f"expected '{key}<TAB>{value}', found no tab: {show(line)}")
    k, v = line.split("\t", 1)
    k = k.strip()
    if not k:
        raise file_error(path, lineno, f"expected a {key if key != 'qid' else 'query id'} before the tab, "
                         "found nothing")
    return k, v.strip()
