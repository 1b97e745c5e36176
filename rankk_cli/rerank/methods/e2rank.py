"""E2Rank (Alibaba-NLP/E2Rank; arXiv 2510.22733): a text-embedding model used as a listwise reranker -- the query
re-embedded together with its top candidates (pseudo-relevance feedback), then cosine against each passage.

Reference: the Alibaba-NLP/E2Rank repository, ``src/eval.py`` (``EvalModel.__call__``, listwise mode) and its
README's "Reranking" usage: the pseudo query is the listwise prompt
``"Given a web search query and some relevant documents, rerank the documents that answer the query:\\n"
"Documents:\\n{documents}\\nSearch Query: {query}"`` (``EVAL_PROMPTS["dl19"]``) with ``{documents}`` the top
``num_input_docs`` (20) candidates as ``"[i] doc"`` joined by newlines, every passage whitespace-normalised and
cut to its first 1024 words; each passage is embedded on its own with ``"<|endoftext|>"`` appended (E2Rank's
models need the EOS written out); the pseudo query goes through the model's chat template (a user message,
generation prompt, thinking disabled); score = cosine of the two embeddings (the models normalise).

rankk sends the pseudo query and every passage as embedding requests in ONE round (through ``embed``'s
machinery), so it runs on any pooling model vLLM serves: the packaged all-MiniLM-L6-v2 by default (``--model``
omitted), the E2Rank models by ``--model Alibaba-NLP/E2Rank-0.6B --method-opt template=qwen3
eos='<|endoftext|>'``. ``template=qwen3`` writes Qwen3's chat template for one user message with thinking off
(``<|im_start|>user\\n...<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``) -- the text
``apply_chat_template(..., enable_thinking=False)`` renders; ``template=none`` (default) sends the prompt as is
(MiniLM has no chat template). ``eos`` (default empty) is appended to every passage.

The engine cuts an embedding input at the model's context and says so (``finish_reason`` "length"): a pseudo
query cut there has lost its end -- the query itself -- so the query's record is ``repaired`` with that stated.
On MiniLM (256 tokens) keep the pseudo query short: ``--truncate 30 --method-opt docs=4``.
"""

from __future__ import annotations

from rankk_cli.rerank.engines.base import Completion
from rankk_cli.rerank.methods.base import Candidate, Option
from rankk_cli.rerank.methods.embed import Embed

LISTWISE_PROMPT = ("Given a web search query and some relevant documents, rerank the documents that answer the "
                   "query:\nDocuments:\n{documents}\nSearch Query: {query}")
TEMPLATES = {
    "none": "{prompt}",
    "qwen3": "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
}


def cut_words(text: str, n: int) -> str:
    """Whitespace-normalised, at most ``n`` words (E2Rank's ``" ".join(x.split()[:doc_max_len])``)."""
    return " ".join(text.split()[:n])


def pseudo_query(query: str, passages: list[str], docs: int = 20, words: int = 1024, template: str = "none") -> str:
    block = "\n".join(f"[{i}] {cut_words(p, words)}" for i, p in enumerate(passages[:docs], start=1))
    prompt = LISTWISE_PROMPT.replace("{documents}", block, 1).replace("{query}", query, 1)
    return TEMPLATES[template].replace("{prompt}", prompt, 1)


class E2Rank(Embed):
    """E2Rank: the query re-embedded with its top candidates as pseudo-relevance feedback, then cosine."""

    name = "e2rank"
    kind = "embedding"
    options = (
        Option("docs", int, 20, "top candidates written into the pseudo query (E2Rank's num_input_docs)", minimum=1),
        Option("words", int, 1024, "words kept of each passage (E2Rank's doc_max_len)", minimum=1),
        Option("template", str, "none", "chat template of the pseudo query: none, or qwen3 (E2Rank's models)",
               choices=tuple(TEMPLATES)),
        Option("eos", str, "", "text appended to every passage (E2Rank's models: <|endoftext|>)"),
    )

    def query_text(self, query: str, candidates: list[Candidate]) -> str:
        return pseudo_query(query, [c.text for c in candidates], self.docs, self.words, self.template)

    def passage_text(self, text: str) -> str:
        return cut_words(text, self.words) + self.eos

    def query_repairs(self, completion: Completion) -> list[str]:
        if completion.cut_off:
            return [f"pseudo query cut at the model's context ({completion.input_tokens} tokens): its end, the "
                    "query, may be lost (shorten it: --truncate, --method-opt docs=/words=)"]
        return []
