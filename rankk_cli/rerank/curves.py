"""The test-time-compute curves of a budget sweep (``sweep.py``), and the rankings counted in stored reasoning.

Three PNGs, drawn from ``sweep.json`` alone (so ``rankk report DIR`` can redraw them):

- ``curve.png``: effectiveness (the first ``-m`` measure) vs mean thinking tokens per query, one line per
  system, each point labelled by its budget, the first stage as a dashed line;
- ``gain.png``: per query, its thinking tokens vs its gain over the first stage (the same measure), one panel
  per system, one colour per budget;
- ``rankings.png``: the histogram of rankings generated per query (Rank-K's Figure 3), one panel per listwise
  system, one outline per budget.

Rankings per query (``count_rankings``, ``window_stats``): for every window that made an engine call, the
partial rankings written inside its stored reasoning plus the final one. A ranking inside the reasoning is a
ranking CHAIN as the listwise parser reads answers (``listwise.ranking_chains``: ids, bracketed ``[3]`` or bare
``3``, joined by ``>``, ``=`` or ``,``; bare ids only by ``>``/``=``) that names at least THREE distinct ids: a
two-id chain (``[2] > [1]``) is a pairwise comparison made while reasoning, not a ranking. Each occurrence
counts, a restated ranking included. The final ranking counts 1 when the window's answer (or its forced answer)
yielded a ranking (outcome ok, repaired or forced), 0 when it failed. A query's count is the sum over its
windows. This follows Rank-K's description of its traces -- the model drafts rankings of the window while it
reasons, revises them, then answers -- read in the answer format its prompt asks for (``[3] > [2] > [4] = [1]``).
"""

from __future__ import annotations

import math
import re

from rankk_cli.rerank.methods.base import FAILED, FORCED

MIN_RANKING_IDS = 3


def count_rankings(reasoning: str | None) -> int:
    """Partial rankings in a reasoning text (see the module doc for the rule)."""
    from rankk_cli.rerank.methods.listwise import ranking_chains

    if not reasoning:
        return 0
    return sum(1 for chain in ranking_chains(reasoning)
               if len({int(i) for i in re.findall(r"\d+", chain)}) >= MIN_RANKING_IDS)


def window_stats(df, listwise: bool) -> dict:
    """Cost per query and per window from a windows DataFrame (``report.windows_table``): queries, windows
    (those that made a call), mean thinking tokens per query and per window, share forced and
    ``per_query: {qid: {"thinking_tokens", "rankings" (listwise only)}}``."""
    per_query: dict[str, dict] = {}
    called = thinking = forced = 0
    tokens_col = "reply_tokens" if "reply_tokens" in df else "output_tokens"  # older files: all generated tokens
    for row in df.itertuples(index=False):
        qid = str(row.qid)
        q = per_query.setdefault(qid, {"thinking_tokens": 0, **({"rankings": 0} if listwise else {})})
        calls = getattr(row, "engine_call", None)
        if calls is None or len(calls) == 0:
            continue  # a single-candidate window: no call, nothing generated
        called += 1
        n = int(getattr(row, tokens_col) or 0)
        thinking += n
        q["thinking_tokens"] += n
        forced += row.outcome == FORCED
        if listwise:
            q["rankings"] += count_rankings(row.reasoning) + (row.outcome != FAILED)
    nq = len(per_query)
    return {"queries": nq, "windows": called, "thinking_tokens_per_query": thinking / nq if nq else 0.0,
            "thinking_tokens_per_window": thinking / called if called else 0.0,
            "forced_share": forced / called if called else 0.0, "per_query": per_query}


# ----------------------------------------------------------------------------------------------------------
# plots


def _figure(n_panels: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.8 * rows), dpi=110, squeeze=False)
    return plt, fig, [ax for line in axes for ax in line]


def _png(plt, fig) -> bytes:
    from rankk_cli.report import figure_png

    return figure_png(plt, fig)


def _empty(text: str) -> bytes:
    plt, fig, (ax,) = _figure()
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True)
    ax.set_axis_off()
    return _png(plt, fig)


def render_curve(systems: dict) -> bytes:
    """Effectiveness vs mean thinking tokens per query, one line per system, points labelled by budget."""
    with_measures = {s: e for s, e in systems.items() if e.get("measures")}
    if not with_measures:
        return _empty("no measures: give --qrels to the sweep to draw effectiveness vs thinking tokens")
    plt, fig, (ax,) = _figure()
    colors = plt.get_cmap("tab10")
    xs_all = []
    first_drawn = set()
    for i, (system, entry) in enumerate(sorted(with_measures.items())):
        m = entry["measures"][0]
        pts = [(r["thinking_tokens_per_query"], r["measures"][m], r["max_tokens"]) for r in entry["budgets"]]
        pts.sort(key=lambda p: p[2])
        xs_all += [p[0] for p in pts]
        color = colors(i % 10)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=color, label=f"{system} ({m})")
        groups: dict[tuple, list[int]] = {}  # budgets that land on one point share one label
        for x, y, b in pts:
            groups.setdefault((round(x, 6), round(y, 6)), []).append(b)
        for k, ((x, y), bs) in enumerate(groups.items()):
            ax.annotate(" = ".join(map(str, bs)), (x, y), textcoords="offset points",
                        xytext=(6, 8 if k % 2 == 0 else -14), fontsize=8, color=color)
        first = (entry.get("first_stage") or {}).get(m)
        if first is not None and (round(first, 9), m) not in first_drawn:  # one line per distinct first stage
            first_drawn.add((round(first, 9), m))
            ax.axhline(first, color="grey", linestyle="--", linewidth=1.2,
                       label=f"first stage ({m} {first:.3f})")
    positive = [x for x in xs_all if x > 0]
    if positive and max(positive) / min(positive) > 10:
        from matplotlib.ticker import FuncFormatter, LogLocator

        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        ax.xaxis.set_minor_formatter(plain)
    ax.margins(x=0.08, y=0.15)  # room for the budget labels inside the frame
    ax.set_xlabel("mean thinking tokens per query (generated under the budget)")
    ax.set_ylabel(", ".join(sorted({e["measures"][0] for e in with_measures.values()})))
    ax.set_title("Effectiveness vs test-time compute (points: --max-tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(plt, fig)


def render_gain(systems: dict) -> bytes:
    """Per query: thinking tokens vs gain over the first stage, one panel per system, a colour per budget."""
    with_gain = {s: e for s, e in systems.items() if e.get("measures")}
    if not with_gain:
        return _empty("no measures: give --qrels to the sweep to draw per-query gains over the first stage")
    plt, fig, axes = _figure(len(with_gain))
    cmap = plt.get_cmap("viridis")
    for ax, (system, entry) in zip(axes, sorted(with_gain.items())):
        m = entry["measures"][0]
        rows = sorted(entry["budgets"], key=lambda r: r["max_tokens"])
        for j, r in enumerate(rows):
            pts = [(q["thinking_tokens"], q["gain"]) for q in r["per_query"].values() if "gain" in q]
            color = cmap(j / max(1, len(rows) - 1) * 0.9)
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, alpha=0.75, color=color,
                       edgecolors="none", label=f"--max-tokens {r['max_tokens']}")
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_xlabel("thinking tokens of the query (all its windows)")
        ax.set_ylabel(f"{m} gain over the first stage")
        ax.set_title(system)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(with_gain):]:
        ax.set_axis_off()
    return _png(plt, fig)


def render_rankings(systems: dict) -> bytes:
    """Histogram of rankings generated per query, one panel per listwise system, an outline per budget."""
    import numpy as np

    listwise = {s: e for s, e in systems.items() if e.get("kind") == "listwise"}
    if not listwise:
        return _empty("no listwise system in this sweep: rankings per query count the rankings a listwise "
                      "reranker writes (pointwise methods such as rank1 write none)")
    plt, fig, axes = _figure(len(listwise))
    cmap = plt.get_cmap("viridis")
    for ax, (system, entry) in zip(axes, sorted(listwise.items())):
        rows = sorted(entry["budgets"], key=lambda r: r["max_tokens"])
        counts = {r["max_tokens"]: [q["rankings"] for q in r["per_query"].values()] for r in rows}
        hi = max((max(c) for c in counts.values() if c), default=0)
        step = max(1, math.ceil((hi + 1) / 25))  # at most 25 groups of bars
        edges = np.arange(0, hi + step + 1, step)
        width = 0.8 / len(rows)
        top = 0
        for j, r in enumerate(rows):  # grouped bars: budgets side by side, so equal counts never hide each other
            c = counts[r["max_tokens"]]
            heights, _ = np.histogram(c, bins=edges)
            top = max(top, int(heights.max()) if len(heights) else 0)
            color = cmap(j / max(1, len(rows) - 1) * 0.9)
            ax.bar(np.arange(len(heights)) - 0.4 + width * (j + 0.5), heights, width=width, color=color,
                   label=f"--max-tokens {r['max_tokens']} (median {np.median(c) if c else 0:g})")
        labels = [str(int(a)) if step == 1 else f"{int(a)}-{int(a) + step - 1}" for a in edges[:-1]]
        ax.set_xticks(np.arange(len(labels)), labels, rotation=0 if step == 1 else 45)
        ax.set_xlabel("rankings generated per query (partial rankings in the reasoning + the final one)")
        ax.set_ylabel("queries")
        ax.set_title(system)
        ax.set_ylim(0, top * 1.2 + 0.2 * len(rows) + 0.5)  # headroom: the legend sits above the bars
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper right")
    for ax in axes[len(listwise):]:
        ax.set_axis_off()
    return _png(plt, fig)


def render_all(systems: dict) -> dict[str, bytes]:
    """``{file name: PNG bytes}`` for the sweep folder."""
    return {"curve.png": render_curve(systems), "gain.png": render_gain(systems),
            "rankings.png": render_rankings(systems)}
