"""The vllm engine on CPU with the tiny model (real vLLM, loaded once per session by ``tiny_vllm``)."""

from __future__ import annotations

import json

import pytest

from rankk_cli.errors import RankkError
from rankk_cli.rerank.engines.base import Request
from rankk_cli.testing import MARKER, build_tiny_model

CHAT = Request(messages=(("system", "You rank passages."), ("user", "Query: cats\n\n[1] a cat\n\n[2] a dog")))
RAW = Request(prompt="Determine if the following passage is relevant.\nQuery: cats\nPassage: a cat\n<think>")


def test_tiny_model_is_deterministic_and_idempotent(tiny_model, tmp_path):
    again = build_tiny_model(tmp_path / "again")
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (again / name).read_bytes() == (tiny_model / name).read_bytes(), name
    before = {p.name: p.stat().st_mtime_ns for p in again.iterdir()}
    assert build_tiny_model(again) == again
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == before  # nothing rewritten
    assert json.loads((again / MARKER).read_text())["version"]


def test_tiny_tokenizer_encodes_the_methods_vocabulary(tiny_vllm):
    tok = tiny_vllm.tokenizer
    for s in (" true", " false", "<think>", "</think>", "[", "]", ">", "="):
        assert len(tok.encode(s, add_special_tokens=False)) == 1, s
    text = "<think>12 is > 3</think> [3] > [1] = [2] true"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_raw_and_chat_requests_go_in_one_vllm_call(tiny_vllm, monkeypatch):
    calls = []
    real = tiny_vllm.llm.generate

    def spy(prompts, params, **kw):
        calls.append(len(prompts))
        return real(prompts, params, **kw)

    monkeypatch.setattr(tiny_vllm.llm, "generate", spy)
    out = tiny_vllm.generate([RAW, CHAT, Request(prompt="hello", max_tokens=5)])
    assert calls == [3]
    assert len(out) == 3
    assert out[0].input_tokens == len(tiny_vllm.tokenizer.encode(RAW.prompt))
    chat_text = tiny_vllm.tokenizer.apply_chat_template(
        [{"role": r, "content": c} for r, c in CHAT.messages], tokenize=False, add_generation_prompt=True)
    assert chat_text.endswith("<|im_start|>assistant\n")
    assert out[1].input_tokens == len(tiny_vllm.tokenizer.encode(chat_text, add_special_tokens=False))
    assert out[2].output_tokens <= 5
    for c in out:
        assert c.finish_reason in ("stop", "length") and c.error is None and c.text


def test_continue_final_continues_the_assistant_message(tiny_vllm):
    req = Request(messages=(("user", "q"), ("assistant", "<think>partial")), continue_final=True)
    text = tiny_vllm.tokenizer.decode(tiny_vllm.render(req))
    assert text.endswith("<|im_start|>assistant\n<think>partial")
    fresh = tiny_vllm.tokenizer.decode(tiny_vllm.render(Request(messages=(("user", "q"),))))
    assert fresh.endswith("<|im_start|>assistant\n")


def test_greedy_is_reproducible_alone_and_in_a_batch(tiny_vllm):
    alone = tiny_vllm.generate([CHAT])[0]
    batch = tiny_vllm.generate([RAW, CHAT, RAW])
    assert batch[1].text == alone.text
    assert batch[0].text == batch[2].text


def test_length_cutoff_is_reported(tiny_vllm):
    c = tiny_vllm.generate([Request(prompt="hello", max_tokens=3)])[0]
    assert c.finish_reason == "length" and c.cut_off and c.output_tokens == 3


def test_stop_strings_end_generation(tiny_vllm):
    full = tiny_vllm.generate([Request(prompt="stop test", max_tokens=24)])[0].text
    stop = full[6:10]
    assert stop.strip()
    c = tiny_vllm.generate([Request(prompt="stop test", max_tokens=24, stop=(stop,))])[0]
    assert c.finish_reason == "stop"
    assert c.text == full[: full.index(stop)]


def test_logprobs_per_position(tiny_vllm):
    c = tiny_vllm.generate([Request(prompt="hello there", max_tokens=4, logprobs=5)])[0]
    assert len(c.logprobs) == c.output_tokens == 4
    for pos in c.logprobs:
        assert 5 <= len(pos) <= 6
        assert all(v <= 0.0 for v in pos.values())
    # greedy: the generated text is the concatenation of each position's most likely token
    assert "".join(max(pos, key=pos.get) for pos in c.logprobs) == c.text


def test_allowed_tokens_force_the_answer_and_report_both_logprobs(tiny_vllm):
    forced = Request(messages=(("user", "relevant?"), ("assistant", "<think>hmm</think>")), continue_final=True,
                     max_tokens=1, allowed=(" true", " false"), logprobs=20)
    other = Request(prompt="hello there", max_tokens=2, logprobs=3)
    out = tiny_vllm.generate([forced, other])
    assert out[0].text in (" true", " false")
    assert {" true", " false"} <= set(out[0].logprobs[0])
    # the forced request must not disturb its neighbour's logprobs (vLLM 0.32 batch bug worked around)
    alone = tiny_vllm.generate([other])[0]
    assert out[1].logprobs == alone.logprobs
    assert all(v > float("-inf") for pos in out[1].logprobs for v in pos.values())
    # without logprobs asked, allowed still restricts
    c = tiny_vllm.generate([Request(prompt="x", max_tokens=1, allowed=(" true", " false"))])[0]
    assert c.text in (" true", " false") and c.logprobs is None


def test_a_prompt_too_long_fails_alone(tiny_vllm):
    long = Request(prompt="word " * 20000)
    out = tiny_vllm.generate([long, RAW])
    assert out[0].finish_reason == "error" and "max_model_len" in out[0].error
    assert out[1].finish_reason in ("stop", "length") and out[1].text


def test_count_tokens_and_truncate(tiny_vllm):
    text = "The quick brown fox jumps over the lazy dog near the river bank. " * 5
    n = tiny_vllm.count_tokens(text)
    assert n > 20
    cut = tiny_vllm.truncate(text, 10)
    assert tiny_vllm.count_tokens(cut) <= 10 and text.startswith(cut) and cut
    assert tiny_vllm.truncate(text, n) == text
    assert tiny_vllm.truncate("short", 10) == "short"


def test_embed_request_on_generative_model_is_a_clear_error(tiny_vllm):
    with pytest.raises(RankkError, match="generative model"):
        tiny_vllm.generate([Request(embed="hello")])


def test_stats_count_calls(tiny_vllm):
    before = tiny_vllm.stats.calls, tiny_vllm.stats.requests
    tiny_vllm.generate([RAW, RAW])
    assert (tiny_vllm.stats.calls, tiny_vllm.stats.requests) == (before[0] + 1, before[1] + 2)


def test_missing_model_dir_is_one_line_error(tmp_path):
    from rankk_cli.rerank.engines.vllm import VLLMEngine

    with pytest.raises(RankkError, match=r"cannot load model '.*nope': no such directory"):
        VLLMEngine(str(tmp_path / "nope"))


def test_unloadable_model_dir_is_one_line_error(tmp_path, tiny_vllm):
    from rankk_cli.rerank.engines.vllm import VLLMEngine

    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    with pytest.raises(RankkError, match="cannot load model") as err:
        VLLMEngine(str(bad))
    assert "\n" not in str(err.value)
