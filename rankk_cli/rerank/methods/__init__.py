"""Method registry: name -> "module:Class" (imported on demand)."""

from rankk_cli.registry import Registry

METHODS = Registry("method", {
    "rankk": "rankk_cli.rerank.methods.rankk:RankK",
    "rankzephyr": "rankk_cli.rerank.methods.rankzephyr:RankZephyr",
    "rank1": "rankk_cli.rerank.methods.rank1:Rank1",
    "erank": "rankk_cli.rerank.methods.erank:ERank",
    "embed": "rankk_cli.rerank.methods.embed:Embed",
    "crossencoder": "rankk_cli.rerank.methods.crossencoder:CrossEncoder",
    "e2rank": "rankk_cli.rerank.methods.e2rank:E2Rank",
    "reasonrank": "rankk_cli.rerank.methods.reasonrank:ReasonRank",
    "rankr1": "rankk_cli.rerank.methods.rankr1:RankR1",
    "grouprank": "rankk_cli.rerank.methods.grouprank:GroupRank",
    "first": "rankk_cli.rerank.methods.first:First",
    "prp": "rankk_cli.rerank.methods.prp:PRP",
    "oracle": "rankk_cli.rerank.methods.oracle:Oracle",
})


def describe(name: str | None = None) -> str:
    """``rankk methods [NAME]``: every registered method (or one) with its kind, its line of documentation, its
    sampling defaults and its declared options -- generated from the declarations, never written twice."""
    names = [name] if name else METHODS.names()
    blocks = []
    for n in names:
        cls = METHODS.get(n)
        defaults = []
        if cls.default_temperature is not None:
            defaults.append(f"temperature {cls.default_temperature:g}")
        if cls.default_max_tokens is not None:
            defaults.append(f"max tokens {cls.default_max_tokens}")
        if not cls.needs_engine:
            defaults.append("no model")
        lines = [f"{n}  ({cls.kind}{'; ' + ', '.join(defaults) if defaults else ''})", f"    {cls.summary_line()}"]
        lines += [f"    --method-opt {o.describe()}" for o in cls.options]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
