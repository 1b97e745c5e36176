"""The sliding-window schedule as pure functions: which slice of a ranking each window covers, in which order.

Windows run bottom-up (from the end of the list towards the head), each ``stride`` positions above the last,
and the top window is clamped so that the head of the list always gets a full window (RankLLM's rule; Rank-K's
original loop does not clamp and, when ``(depth - window) % stride != 0``, its last window is short):

    end = n; start = max(n - window, 0)
    loop: emit (start, end); stop once start == 0; end -= stride; start = end - window;
          if start < 0: start, end = 0, min(window, n)

A list shorter than the window (``n <= window``) gets one window over the whole list. Ragged candidate lists
simply give each query its own ``n``. Several passes repeat the schedule over the previous pass's order.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    pass_: int  # 1-based pass number
    start: int  # 0-based, inclusive
    end: int  # exclusive

    @property
    def size(self) -> int:
        return self.end - self.start


def check(window: int, stride: int) -> None:
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if stride > window:
        raise ValueError(f"stride must be <= window ({window}), got {stride}")


def window_slices(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The (start, end) slices of one pass over a list of ``n`` items, bottom-up, top window clamped."""
    check(window, stride)
    if n <= 0:
        return []
    if n <= window:
        return [(0, n)]
    out = []
    end = n
    start = n - window
    while True:
        out.append((start, end))
        if start == 0:
            return out
        end -= stride
        start = end - window
        if start < 0:
            start, end = 0, window


def count_windows(n: int, window: int, stride: int) -> int:
    """Closed form of ``len(window_slices(n, window, stride))``: 1 + ceil((n - window) / stride) when n > window."""
    check(window, stride)
    if n <= 0:
        return 0
    if n <= window:
        return 1
    return 1 + -(-(n - window) // stride)


def schedule(n: int, window: int, stride: int, passes: int = 1) -> list[Window]:
    """Every window of every pass, in execution order."""
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    slices = window_slices(n, window, stride)
    return [Window(p, s, e) for p in range(1, passes + 1) for s, e in slices]
