"""Engine registry: name -> "module:Class" (imported on demand, so vLLM loads only when used)."""

from rankk_cli.registry import Registry

ENGINES = Registry("engine", {
    "vllm": "rankk_cli.rerank.engines.vllm:VLLMEngine",
    "openai": "rankk_cli.rerank.engines.openai:OpenAIEngine",
})
