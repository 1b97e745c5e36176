"""rankk: benchmark rerankers from the shell (retrieve -> rerank -> eval -> compare)."""

__version__ = "0.1.0"
