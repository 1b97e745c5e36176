"""Third-party output kept off the terminal: what vLLM, torch, transformers and tqdm print while a model loads
(warnings, INFO lines, checkpoint progress bars) goes to a temporary file, so stderr holds rankk's own lines.
Nothing is lost: ``RANKK_VERBOSE=1`` (``rankk -v``) lets it through, and when the step fails its last lines
are added to rankk's one-line error (``Captured.suffix``)."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


def verbose() -> bool:
    return os.environ.get("RANKK_VERBOSE", "") not in ("", "0")


class Captured:
    def __init__(self, fh=None):
        self.fh = fh

    def tail(self, n: int = 3) -> list[str]:
        if self.fh is None:
            return []
        self.fh.flush()
        self.fh.seek(0)
        text = self.fh.read().decode("utf-8", "replace").replace("\r", "\n")
        return [line.strip() for line in text.splitlines() if line.strip()][-n:]

    def suffix(self, n: int = 3, limit: int = 300) -> str:
        """`` (last output: ...)`` for an error line, or "" when nothing was captured."""
        tail = " | ".join(self.tail(n))
        return f" (last output: {tail[:limit]})" if tail else ""


@contextlib.contextmanager
def captured():
    """Meanwhile, file descriptors 1 and 2 (Python and C level) write to a temp file, unless verbose."""
    if verbose():
        yield Captured()
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile() as fh:
        try:
            saved = [os.dup(1), os.dup(2)]
        except OSError:  # no real descriptors (embedded use): nothing to capture
            yield Captured()
            return
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield Captured(fh)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
