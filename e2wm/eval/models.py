"""The model an eval runs: its adapter checked, loaded from safetensors, placed on a device, in a precision,
and switched between the base and fine-tuned variants."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from e2wm.errors import E2WMError, error_line, libraries_deprecation
from e2wm.eval.config import EvalConfig
from e2wm.files import check_safetensors, sha256_file
from e2wm.training.models import check_adapter_fits


def adapter_sha256(adapter: str, model: str) -> str:
    """Check that ``adapter`` is a PEFT adapter directory whose weights are whole and fit ``model``
    (before either is loaded); the sha256 of its adapter_model.safetensors."""
    path = Path(adapter)
    if not path.is_dir():
        raise E2WMError(f"adapter {adapter}: no such directory")
    if not (path / "adapter_config.json").is_file():
        raise E2WMError(f"adapter {adapter} has no adapter_config.json (not a PEFT adapter directory)")
    try:
        json.loads((path / "adapter_config.json").read_text())
    except (UnicodeDecodeError, ValueError):
        raise E2WMError(f"adapter {adapter}: adapter_config.json is not JSON") from None
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise E2WMError(f"adapter {adapter} has no adapter_model.safetensors")
    check_adapter_fits(check_safetensors(weights, "adapter weights"), model, adapter)
    return sha256_file(weights)


def load_model(config: EvalConfig) -> tuple[Any, Any]:
    """(model, tokenizer) from safetensors on ``config.device`` in ``config.dtype`` (``auto``: every GPU in
    bfloat16 if there is one, else float32 on the CPU, see ``autocast_dtype``), wrapped with the adapter if
    there is one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from e2wm.training.models import resolve_model

    transformers_logging.disable_progress_bar()
    path = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **placement(config))
    except (OSError, ValueError) as exc:
        raise E2WMError(f"cannot load model {config.model}: {error_line(exc)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.adapter is not None:
        try:
            with libraries_deprecation(".*is_gradient_checkpointing.*"):  # PEFT calls it
                model = PeftModel.from_pretrained(model, config.adapter, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape mismatch, missing target modules
            lines = str(exc).splitlines()
            reason = next((line.strip() for line in lines if "mismatch" in line), error_line(exc))
            raise E2WMError(f"adapter {config.adapter} does not fit model {config.model}: {reason}") from None
    model.eval()
    return model, tokenizer


def placement(config: EvalConfig) -> dict[str, Any]:
    """``from_pretrained`` arguments for the configured device and dtype."""
    import torch

    gpu = torch.cuda.is_available()
    if config.device.startswith("cuda") and not gpu:
        raise E2WMError(f"device {config.device}: no CUDA GPU here (use --device cpu)")
    if not gpu or config.device == "cpu":
        return {
            "dtype": getattr(torch, "float32" if config.dtype == "auto" else config.dtype),
            "device_map": "cpu",
        }
    dtype = "bfloat16" if config.dtype == "auto" else config.dtype
    return {"dtype": getattr(torch, dtype), "device_map": config.device}  # "auto": every GPU


def native_cpu_bfloat16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX-512 BF16 or AMX): there bfloat16 matmuls run
    about twice as fast as float32 ones; elsewhere they are emulated and slower."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(config: EvalConfig) -> Any:
    """The autocast dtype the model runs under, or None: with ``dtype: auto`` on the CPU, float32 weights
    with bfloat16 matmuls where the CPU has them natively (as the CPU recipes train), else none."""
    import torch

    on_cpu = config.device == "cpu" or not torch.cuda.is_available()
    if config.dtype == "auto" and on_cpu and native_cpu_bfloat16():
        return torch.bfloat16
    return None


def precision(config: EvalConfig) -> str:
    """The weights' dtype, and the autocast one if any, as the results record them."""
    weights = str(placement(config)["dtype"]).removeprefix("torch.")
    compute = autocast_dtype(config)
    return weights + (f" weights, {str(compute).removeprefix('torch.')} autocast" if compute else "")


def compute_context(config: EvalConfig) -> contextlib.AbstractContextManager:
    """Where the model runs: under autocast when ``autocast_dtype`` says so."""
    import torch

    dtype = autocast_dtype(config)
    return torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()


@contextlib.contextmanager
def as_variant(model: Any, variant: str) -> Iterator[None]:
    """Run the block as ``variant``: "base" disables the adapter (if any), "fine-tuned" keeps it."""
    if variant == "base" and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield
    else:
        yield
