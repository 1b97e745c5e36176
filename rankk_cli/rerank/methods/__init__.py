"""Method registry: name -> "module:Class" (imported on demand)."""

from rankk_cli.registry import Registry

METHODS = Registry("method", {
    "rankk": "rankk_cli.rerank.methods.rankk:RankK",
    "rankzephyr": "rankk_cli.rerank.methods.rankzephyr:RankZephyr",
    "rank1": "rankk_cli.rerank.methods.rank1:Rank1",
    "embed": "rankk_cli.rerank.methods.embed:Embed",
    "reasonrank": "rankk_cli.rerank.methods.reasonrank:ReasonRank",
    "rankr1": "rankk_cli.rerank.methods.rankr1:RankR1",
    "first": "rankk_cli.rerank.methods.first:First",
    "prp": "rankk_cli.rerank.methods.prp:PRP",
    "oracle": "rankk_cli.rerank.methods.oracle:Oracle",
})
