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
    """What was written meanwhile; readable during the block and after it (the text is kept on exit)."""

    def __init__(self, fh=None):
        self.fh = fh
        self._text = ""

    def text(self) -> str:
        if self.fh is None:
            return self._text
        self.fh.flush()
        self.fh.seek(0)
        return self.fh.read().decode("utf-8", "replace")

    def _keep(self) -> None:
        self._text, self.fh = self.text(), None

    def tail(self, n: int = 3) -> list[str]:
        text = self.text().replace("\r", "\n")
        return [line.strip() for line in text.splitlines() if line.strip()][-n:]

    def suffix(self, n: int = 3, limit: int = 300) -> str:
        """`` (last output: ...)`` for an error line, or "" when nothing was captured."""
        tail = " | ".join(self.tail(n))
        return f" (last output: {tail[:limit]})" if tail else ""


@contextlib.contextmanager
def captured(fds: tuple[int, ...] = (1, 2), always: bool = False):
    """Meanwhile, file descriptors ``fds`` (Python and C level; default stdout and stderr) write to a temp file,
    unless verbose -- or ``always``, for output rankk itself reads (eval's providers' error text)."""
    if verbose() and not always:
        yield Captured()
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile() as fh:
        try:
            saved = [os.dup(fd) for fd in fds]
        except OSError:  # no real descriptors (embedded use): nothing to capture
            yield Captured()
            return
        for fd in fds:
            os.dup2(fh.fileno(), fd)
        cap = Captured(fh)
        try:
            yield cap
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            cap._keep()
