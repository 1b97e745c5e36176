"""Output paths: checked before any work, written all-or-nothing.

``check_output_path`` runs before a command reads its inputs (an output that is a directory, or sits in a folder
that cannot be written, fails at once); ``commit_outputs`` writes several files (a run and its windows Parquet; a
report's markdown, LaTeX and PNG) so that either all of them land or none does, each through a temp file in its
own destination folder (renames never cross filesystems). Single files use ``runs.atomic_path``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable, Sequence

from rankk_cli.errors import RankkError, file_error
from rankk_cli.runs import _umask


def check_output_path(path: str | Path, flag: str) -> None:
    """Fail (one line, naming ``path`` and ``flag``) unless ``path`` can become an output file: not an existing
    directory or special file, and its nearest existing ancestor a writable directory (missing folders are made
    only when the outputs are written, and removed again if that fails)."""
    path = Path(path)
    if path.is_dir():
        raise file_error(path, None, f"expected an output file path ({flag}), found a directory")
    if path.exists() and not path.is_file():
        raise file_error(path, None, f"expected an output file path ({flag}), found a special file")
    anc = path.parent
    while not anc.exists() and not anc.is_symlink() and anc.parent != anc:
        anc = anc.parent
    if not anc.is_dir():
        raise file_error(path, None, f"expected {anc} to be a directory ({flag}), found "
                         f"{'a file' if anc.exists() else 'nothing'}")
    if _read_only_fs(anc):
        raise file_error(path, None, f"cannot write in {anc} ({flag}): it is on a read-only file system")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise file_error(path, None, f"cannot write in {anc} ({flag}): the folder is read-only for this user "
                         "(no write permission)")
    limit = _name_max(anc) - TEMP_NAME_EXTRA
    if len(os.fsencode(path.name)) > limit:
        raise file_error(path, None, f"expected a file name ({flag}) of at most {limit} bytes (rankk writes "
                         f"through a temp file named beside it, {TEMP_NAME_EXTRA} bytes longer, and the file system "
                         f"allows {limit + TEMP_NAME_EXTRA}), found {len(os.fsencode(path.name))}")


TEMP_NAME_EXTRA = 24  # the longest temp/backup name beside an output: '.rankk-<12 hex>-old-NAME' (_backup)


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def check_outputs(paths: dict[str, Path | None]) -> None:
    """Every output asked for (``{flag: path}``, None = not asked for) can be written, and each names a
    different file."""
    for flag, path in paths.items():
        if path is not None:
            check_output_path(path, flag)
    check_distinct(paths)


def check_distinct(paths: dict[str, Path | None]) -> None:
    """Every output names a different file (``{flag: path}``, None = not asked for)."""
    seen: dict[str, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        key = os.path.normcase(os.path.realpath(path))
        if key in seen:
            raise file_error(path, None, f"expected {flag} to name a different file than {seen[key]}, found the "
                             "same path")
        seen[key] = flag


def _oserror_text(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())[:200]


def commit_outputs(items: Sequence[tuple[Path, Callable[[Path], None]]]) -> None:
    """Write every ``(path, writer)`` or none of them; ``writer(tmp)`` writes the content to ``tmp``.

    Each temp file is made in its destination's own folder (``.rankk-XXXX-NAME``: it keeps the name's suffixes,
    which pick the format) so the final rename never crosses filesystems. Renames happen only once every temp
    file is complete; if one fails, the files already renamed are put back as they were (an existing file is
    restored from a hard link / copy taken just before), and folders made here are removed. Errors name the
    user's path, never a temp path."""
    items = [(Path(p), w) for p, w in items]
    made_dirs: list[Path] = []
    temps: dict[Path, Path] = {}
    backups: dict[Path, Path | None] = {}
    done: list[Path] = []
    current: Path | None = None
    try:
        for path, writer in items:
            current = path
            missing = []
            d = path.parent
            while not d.exists() and d.parent != d:
                missing.append(d)
                d = d.parent
            for d in reversed(missing):
                d.mkdir()
                made_dirs.append(d)
            fd, tmp = _mkstemp(path)
            os.close(fd)
            temps[path] = tmp
            try:
                writer(tmp)
            except RankkError as exc:  # a message about the temp file: say the user's path instead
                raise RankkError(str(exc).replace(str(tmp), str(path))) from None
            os.chmod(tmp, 0o666 & ~_umask())
        for path, _w in items:
            current = path
            backups[path] = _backup(path) if path.exists() else None
        for path, _w in items:
            current = path
            os.replace(temps[path], path)
            del temps[path]
            done.append(path)
    except BaseException as exc:
        for path in reversed(done):
            with contextlib.suppress(OSError):
                if backups.get(path) is not None:
                    os.replace(backups.pop(path), path)
                else:
                    path.unlink()
        for tmp in list(temps.values()) + [b for b in backups.values() if b is not None]:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for d in reversed(made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(exc, OSError) and current is not None:
            raise file_error(current, None, f"cannot write the output: {_oserror_text(exc)}") from None
        raise
    for b in backups.values():
        if b is not None:
            with contextlib.suppress(OSError):
                b.unlink()


def _mkstemp(path: Path) -> tuple[int, Path]:
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=".rankk-", suffix=f"-{path.name}", dir=path.parent)
    return fd, Path(tmp)


def _backup(path: Path) -> Path:
    """A second name for the existing ``path`` in its own folder (hard link, else a copy), to restore it."""
    backup = path.parent / f".rankk-{secrets.token_hex(6)}-old-{path.name}"
    try:
        os.link(path, backup)
    except OSError:
        shutil.copy2(path, backup)
    return backup


def check_not_input(output: str | Path | None, flag: str, inputs) -> None:
    """An output path must not be one of the command's inputs (writing it would destroy the input). ``inputs``
    may hold None and ir_datasets ids: only existing files can be overwritten, so only they are compared."""
    if output is None or not Path(output).exists():
        return
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        try:
            same = os.path.samefile(output, given)
        except OSError:
            same = False
        if same:
            raise RankkError(f"{flag} {output}: expected a new output path, found one of the inputs ({given}); "
                             "writing it would overwrite that input")
