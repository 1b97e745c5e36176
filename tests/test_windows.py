"""The sliding-window schedule: exhaustive checks of slices and counts."""

from __future__ import annotations

import pytest

from rankk_cli.rerank.windows import count_windows, schedule, window_slices


def test_rankllm_default_is_nine_windows_bottom_up():
    assert window_slices(100, 20, 10) == [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40),
                                          (10, 30), (0, 20)]


def test_top_window_is_clamped_full_when_stride_does_not_divide():
    # Rank-K's unclamped loop would end with (-10, 10) -> a short slice [0:10]; the head must get a full window
    assert window_slices(100, 20, 15) == [(80, 100), (65, 85), (50, 70), (35, 55), (20, 40), (5, 25), (0, 20)]


def test_depth_below_window_is_one_window_over_everything():
    assert window_slices(7, 20, 10) == [(0, 7)]
    assert window_slices(20, 20, 10) == [(0, 20)]
    assert window_slices(0, 20, 10) == []


def test_passes_repeat_the_schedule():
    s = schedule(30, 20, 10, passes=3)
    assert [(w.pass_, w.start, w.end) for w in s] == [(p, a, b) for p in (1, 2, 3) for a, b in ((10, 30), (0, 20))]


@pytest.mark.parametrize("bad", [dict(window=0, stride=1), dict(window=5, stride=0), dict(window=5, stride=6)])
def test_invalid_parameters_raise(bad):
    with pytest.raises(ValueError):
        window_slices(10, **bad)


def test_exhaustive_properties():
    checked = 0
    for n in range(1, 121):
        for window in range(1, 26):
            for stride in range(1, window + 1):
                slices = window_slices(n, window, stride)
                assert len(slices) == count_windows(n, window, stride), (n, window, stride)
                covered = set()
                for start, end in slices:
                    assert 0 <= start < end <= n
                    assert end - start == min(window, n), (n, window, stride, start, end)
                    covered.update(range(start, end))
                assert covered == set(range(n)), (n, window, stride)
                assert slices[0][1] == n  # starts at the bottom
                assert slices[-1][0] == 0  # ends at the head, with a full window when n >= window
                assert slices[-1][1] == min(window, n)
                starts = [s for s, _ in slices]
                assert starts == sorted(starts, reverse=True) and len(set(starts)) == len(starts)  # bottom-up
                # consecutive windows overlap by window - stride (except the clamped top one, which overlaps more)
                for (s1, _e1), (s2, e2) in zip(slices, slices[1:-1]):
                    assert s1 - s2 == stride
                if n > window:  # the bottom element reaches at most... every element is eventually in a window
                    assert all(b - a == window for a, b in slices)
                checked += 1
    assert checked == 120 * sum(range(1, 26))


def test_cli_window_defaults_fit_the_depth_and_a_larger_explicit_window_is_refused():
    from rankk_cli.errors import RankkError
    from rankk_cli.rerank.spec import resolve_windowing

    assert resolve_windowing(100, None, None) == (20, 10)  # RankLLM's defaults
    assert resolve_windowing(7, None, None) == (7, 3)  # depth below the default window: one window of 7
    assert resolve_windowing(100, 4, None) == (4, 2)  # stride: half the window, at most 10
    assert resolve_windowing(100, 40, None) == (40, 10)
    assert resolve_windowing(10, 10, 10) == (10, 10)
    with pytest.raises(RankkError, match=r"--window: expected at most --depth \(10\), found 30"):
        resolve_windowing(10, 30, None)
    with pytest.raises(RankkError, match="--depth: expected an integer >= 1, found 0"):
        resolve_windowing(0, None, None)
