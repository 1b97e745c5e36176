"""GGUF models: the converter (rankk_cli/gguf.py) on the real SmolLM2 GGUF file from PyPI, its errors, and
``--model FILE.gguf`` / ``--model smollm2`` through the real CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rankk_cli import gguf
from rankk_cli.errors import RankkError

pytestmark = pytest.mark.slow


def test_converted_directory_declares_what_the_gguf_declares(smollm2_model):
    info = json.loads((smollm2_model / gguf.MARKER).read_text())
    assert info["architecture"] == "llama" and info["sha256"] == gguf.file_digest(gguf.alias_path("smollm2"))
    cfg = json.loads((smollm2_model / "tokenizer_config.json").read_text())
    assert cfg["add_bos_token"] is False  # SmolLM2's GGUF says tokenizer.ggml.add_bos_token = false
    assert "<|im_start|>" in cfg["chat_template"]
    config = json.loads((smollm2_model / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["num_hidden_layers"] == 30
    # a second call finds the cached directory (by the file's digest) and does not convert again
    before = (smollm2_model / "model.safetensors").stat().st_mtime_ns
    assert gguf.convert(gguf.alias_path("smollm2"), root=smollm2_model.parent) == smollm2_model
    assert (smollm2_model / "model.safetensors").stat().st_mtime_ns == before


def test_vllm_greedy_output_equals_transformers(smollm2_model, smollm2_vllm):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rankk_cli.rerank.engines.base import Request

    messages = (("user", "Which is more relevant to 'flea life cycle'? A: fleas lay eggs. B: cats purr."),)
    tok = AutoTokenizer.from_pretrained(smollm2_model)
    ids = smollm2_vllm.render(Request(messages=messages))
    model = AutoModelForCausalLM.from_pretrained(smollm2_model, dtype=torch.bfloat16)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    want = tok.decode(out[0, len(ids):], skip_special_tokens=False)
    got = smollm2_vllm.generate([Request(messages=messages, max_tokens=12, temperature=0.0)])[0]
    assert got.text == want and got.output_tokens == 12


def test_not_a_gguf_file_is_one_line(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(RankkError, match=r"model\.gguf: expected a GGUF file"):
        gguf.convert(fake, root=tmp_path / "models")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


def test_an_architecture_the_converter_cannot_read_is_one_line(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "odd.gguf"
    writer = GGUFWriter(str(path), "rwkv7")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(RankkError, match=r"GGUF architecture 'rwkv7' cannot be converted \(transformers reads .*llama"):
        gguf.convert(path, root=tmp_path / "models")


def _linked_cache(tmp_path: Path, smollm2_model: Path) -> Path:
    """A RANKK_CACHE whose models/ already holds the session's converted SmolLM2 (so the CLI does not convert
    again: the folder name is the file's digest, as a conversion would name it)."""
    cache = tmp_path / "cli-cache"
    (cache / "models").mkdir(parents=True)
    os.symlink(smollm2_model, cache / "models" / smollm2_model.name)
    return cache


@pytest.fixture
def one_query(data, tmp_path) -> Path:
    lines = (data / "trec-dl" / "dl19" / "candidates" / "bm25.jsonl").read_text().splitlines()
    qid = json.loads(lines[0])["qid"]
    keep = [ln for ln in lines if json.loads(ln)["qid"] == qid][:5]
    path = tmp_path / "one.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path


def test_cli_model_gguf_path_and_alias(rankk, data, smollm2_model, one_query, tmp_path):
    env = {"RANKK_CACHE": str(_linked_cache(tmp_path, smollm2_model))}
    topics = data / "trec-dl" / "dl19" / "topics.tsv"
    file = gguf.alias_path("smollm2")
    p = rankk("rerank", one_query, "--topics", topics, "--method", "first", "--model", file, "--depth", "5",
              "-o", tmp_path / "a.trec", "--format", "json", env=env)
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["windows"] == 1 and summary["engine_calls"] == 1 and summary["model"] == str(file)
    p = rankk("rerank", one_query, "--topics", topics, "--method", "first", "--model", "smollm2", "--depth", "5",
              "-o", tmp_path / "b.trec", "--format", "json", env=env)
    assert p.returncode == 0, p.stderr
    top = lambda path: path.read_text().splitlines()[0].split()[:3]  # noqa: E731 - qid Q0 docid
    assert top(tmp_path / "a.trec") == top(tmp_path / "b.trec")  # the file and its alias: one model


def test_cli_missing_or_bad_gguf_is_one_line_exit_2(rankk, data, one_query, tmp_path):
    topics = data / "trec-dl" / "dl19" / "topics.tsv"
    p = rankk("rerank", one_query, "--topics", topics, "--method", "first", "--model", tmp_path / "none.gguf",
              "-o", tmp_path / "x.trec")
    assert p.returncode == 2 and "no such GGUF file" in p.stderr and "Traceback" not in p.stderr
    bad = tmp_path / "bad.gguf"
    bad.write_text("{}")
    p = rankk("rerank", one_query, "--topics", topics, "--method", "first", "--model", bad, "-o", tmp_path / "x.trec")
    assert p.returncode == 2 and "expected a GGUF file" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.trec").exists()
