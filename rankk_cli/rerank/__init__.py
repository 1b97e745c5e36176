"""LLM reranking: windows, the lockstep scheduler, methods (prompt + parse) and engines (generation)."""
