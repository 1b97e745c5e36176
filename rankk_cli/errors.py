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


def check_input_file(path: str | Path, what: str = "file") -> Path:
    """``path`` as an input file rankk can read (twice: once to key the cache, once to parse), else the one-line
    error: missing, a directory, or not a regular file (a FIFO or device would block or read empty the second
    time -- save the stream to a file first)."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise file_error(path, None, f"no such {what}") from None
    except OSError as exc:
        raise file_error(path, None, f"cannot read {what}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise file_error(path, None, f"expected a {what}, found a directory")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a special file")
        raise file_error(path, None, f"expected a regular {what}, found {kind} (rankk reads inputs twice, to key "
                         "its cache and to parse them: save the stream to a file first)")
    return path


def bad_id(value: str) -> bool:
    """An id a TREC file cannot hold: empty, or with whitespace or a control character in it."""
    return not value or any(ch.isspace() or ch < " " or ch == "\x7f" for ch in value)


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
    except (ValueError, RecursionError) as exc:  # an integer over Python's digit limit; nesting too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split()[:12])
        raise file_error(path, lineno, f"expected {expected}, found JSON rankk cannot load ({reason})") from None
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

def check_found(found: dict, docids: list[str], source: str, limit: int = 5) -> None:
    """Raise one line naming the source and a few missing docids, if any requested docid was not found."""
    missing = list(dict.fromkeys(d for d in docids if d not in found))
    if not missing:
        return
    shown = ", ".join(repr(d) for d in missing[:limit])
    more = f" and {len(missing) - limit} more" if len(missing) > limit else ""
    total = len(set(docids))
    raise RankkError(f"{source}: {len(missing)} of {total} requested docids not found: {shown}{more}")


def check_choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    """``value`` if it is one of ``allowed``, else the one-line error naming ``flag`` (every command's choices)."""
    if value not in allowed:
        raise RankkError(f"{flag}: expected one of {', '.join(allowed)}, found {value!r}")
    return value
