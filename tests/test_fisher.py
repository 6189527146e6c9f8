"""Fisher estimation (e2wm.training.fisher) and the offline general text (e2wm.training.general_text):
a tiny random Llama."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch
from support.tiny_lm import tiny_llama
from support.tolerances import float32_tolerance, llama_roundings

from e2wm.errors import E2WMError
from e2wm.training import general_text
from e2wm.training.fisher import (
    compute_fisher,
    load_fisher,
    save_fisher,
    target_weights,
)

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
VOCAB = 256


@pytest.fixture(scope="module")
def tokenizer():
    """Word-level, lowercased, 256 ids (the 252 commonest words of the general text), BOS added."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    words = Counter(w for p in general_text.passages("fisher") for w in re.findall(r"[a-z]+", p.lower()))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for word, _ in words.most_common(VOCAB - len(SPECIALS)):
        vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def model():
    m = tiny_llama(VOCAB, max_positions=128).float()
    m.eval()
    return m


# Different lengths, so batches are padded.
TEXTS = [
    "The interpreter raises an exception when it detects a run-time error.",
    "A class definition defines a class object.",
    "Objects are never explicitly destroyed; however, when they become unreachable they may be "
    "garbage-collected. An implementation is allowed to postpone garbage collection or omit it altogether.",
    "The value of an object may change.",
    "Names refer to objects. Names are introduced by name binding operations, and each occurrence of a "
    "name in the program text refers to the binding of that name established in the innermost function "
    "block containing the use.",
    "Every object has an identity, a type and a value.",
]


def _rtol(model, max_length: int = 64, samples: int = 9) -> float:
    """Rounding bound of a float32 Fisher entry relative to itself (tolerances.py).

    Each per-example gradient element: the forward pass, the backward pass through the same operations,
    the sum over the example's tokens (max_length); relative to the element itself, as its tokens' terms
    do not cancel much here. Squaring doubles its relative error; the mean over the examples adds one
    rounding each. Twice that again: a comparison of two float32 estimates.
    """
    roundings = 2 * llama_roundings(model.config, max_length) + max_length + samples + 2
    return 2 * 2 * float32_tolerance(roundings, 1.0)


def _assert_close(a: dict, b: dict, model) -> None:
    assert a.keys() == b.keys()
    rtol = _rtol(model)
    for name in a:
        assert a[name].dtype == torch.float32
        assert a[name].shape == b[name].shape
        torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=0.0, msg=name)


# ---------------------------------------------------------------------------------------------- targets


def test_target_weights_follow_peft_naming(model):
    qv = target_weights(model, ["q_proj", "v_proj"])
    assert sorted(qv) == sorted(
        f"model.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")
    )
    assert qv["model.layers.0.self_attn.q_proj.weight"] is model.model.layers[0].self_attn.q_proj.weight
    linear = target_weights(model, "all-linear")
    assert len(linear) == 2 * 7 and "lm_head.weight" not in linear
    everything = target_weights(model, "all")
    assert set(linear) < set(everything) and "model.embed_tokens.weight" in everything
    with pytest.raises(E2WMError):
        target_weights(model, ["nonexistent_proj"])
    with pytest.raises(E2WMError):
        target_weights(model, "some-linear")


# ---------------------------------------------------------------------------------------------- estimates


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"])
def test_hooked_per_example_fisher_matches_batch_size_one_loop(model, tokenizer, targets):
    kwargs = dict(texts=TEXTS, source="empirical", samples=9, max_length=32, target_modules=targets, seed=3)
    hooked, meta = compute_fisher(model, tokenizer, batch_size=4, **kwargs)
    reference, ref_meta = compute_fisher(model, tokenizer, batch_size=None, **kwargs)
    _assert_close(hooked, reference, model)
    assert meta == ref_meta
    assert meta["source"] == "empirical" and meta["samples"] == "9" and meta["max_length"] == "32"
    assert int(meta["tokens"]) > 9
    assert all((f >= 0).all() and f.abs().sum() > 0 for f in hooked.values())
    # No gradients left behind on the model, which is left as it was.
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_batch_size_and_padding_do_not_change_the_estimate(model, tokenizer):
    kwargs = dict(texts=TEXTS, samples=6, max_length=64, seed=0)
    one, _ = compute_fisher(model, tokenizer, batch_size=1, **kwargs)
    all_at_once, _ = compute_fisher(model, tokenizer, batch_size=6, **kwargs)
    _assert_close(one, all_at_once, model)


def test_all_parameters_fall_back_to_the_loop(model, tokenizer):
    kwargs = dict(texts=TEXTS, samples=4, max_length=32, target_modules="all", seed=1)
    fisher, meta = compute_fisher(model, tokenizer, **kwargs)
    reference, _ = compute_fisher(model, tokenizer, batch_size=None, **kwargs)
    _assert_close(fisher, reference, model)
    assert set(fisher) == {name for name, _ in model.named_parameters()}
    assert meta["targets"] == "all"


def test_fisher_is_per_example_not_the_squared_batch_gradient(model, tokenizer):
    texts = TEXTS[:4]
    fisher, _ = compute_fisher(model, tokenizer, texts=texts, samples=4, max_length=64, seed=0)
    # Square of the mean gradient over the same examples.
    params = target_weights(model, ["q_proj", "v_proj"])
    grads = {name: torch.zeros_like(p) for name, p in params.items()}
    for text in texts:
        ids = torch.tensor([tokenizer(text)["input_ids"]])
        loss = model(input_ids=ids, labels=ids).loss
        for name, g in zip(params, torch.autograd.grad(loss, list(params.values())), strict=True):
            grads[name] += g / len(texts)
    for name in fisher:
        squared_mean = grads[name].square()
        assert not torch.allclose(fisher[name], squared_mean, rtol=1e-2)
        # Jensen: mean of squares >= square of means, elementwise. Both are float32 results: the squared
        # mean's rounding error is at most 2 |mean| rho mean|g| <= 2 rho F for a relative error rho of the
        # per-example gradients, so the slack is _rtol (twice 2 rho) times the Fisher.
        assert (fisher[name] * (1 + _rtol(model)) >= squared_mean).all()


def test_model_sampled_true_fisher(model, tokenizer):
    kwargs = dict(source="model", samples=6, max_length=16, seed=7, texts=None)
    first, meta = compute_fisher(model, tokenizer, batch_size=4, **kwargs)
    again, _ = compute_fisher(model, tokenizer, batch_size=2, **kwargs)
    other, _ = compute_fisher(model, tokenizer, **{**kwargs, "seed": 8})
    reference, _ = compute_fisher(model, tokenizer, batch_size=None, **kwargs)
    _assert_close(first, again, model)
    _assert_close(first, reference, model)
    assert any(not torch.allclose(first[n], other[n]) for n in first)
    assert all((f >= 0).all() and f.sum() > 0 for f in first.values())
    assert meta["data"] == "model-samples" and meta["source"] == "model" and meta["samples"] == "6"
    assert 6 <= int(meta["tokens"]) <= 6 * 15


def test_default_texts_are_the_general_fisher_part(model, tokenizer):
    fisher, meta = compute_fisher(model, tokenizer, texts=None, samples=3, max_length=16)
    assert meta["data"] == "general" and meta["targets"] == "q_proj,v_proj"
    assert meta["tokens"] == str(3 * 15)  # general passages are long: every one is truncated to 16 tokens


def test_bad_arguments_are_one_line_errors(model, tokenizer):
    with pytest.raises(E2WMError, match="source"):
        compute_fisher(model, tokenizer, texts=TEXTS, source="oracle", samples=2)
    with pytest.raises(E2WMError, match="samples"):
        compute_fisher(model, tokenizer, texts=TEXTS, samples=0)
    with pytest.raises(E2WMError):
        compute_fisher(model, tokenizer, texts=["", "   "], samples=2)
    with pytest.raises(E2WMError):
        compute_fisher(model, tokenizer, texts=TEXTS, source="model", samples=2)


# ---------------------------------------------------------------------------------------------- files


def test_save_load_round_trip(model, tokenizer, tmp_path):
    fisher, meta = compute_fisher(model, tokenizer, texts=TEXTS, samples=3, max_length=16)
    path = save_fisher(tmp_path / "sub" / "fisher.safetensors", fisher, meta)
    assert [p.name for p in path.parent.iterdir()] == ["fisher.safetensors"]  # no temporary left behind
    loaded, loaded_meta = load_fisher(path)
    assert loaded_meta == meta and all(isinstance(v, str) for v in loaded_meta.values())
    assert set(meta) >= {"model", "data", "source", "samples", "tokens", "max_length", "targets"}
    assert loaded.keys() == fisher.keys()
    for name in fisher:
        assert torch.equal(loaded[name], fisher[name]) and loaded[name].dtype == torch.float32


def test_bad_fisher_files(tmp_path):
    with pytest.raises(E2WMError, match="not found"):
        load_fisher(tmp_path / "missing.safetensors")
    text = tmp_path / "notes.safetensors"
    text.write_text("this is not a safetensors file\n")
    with pytest.raises(E2WMError) as info:
        load_fisher(text)
    assert "\n" not in str(info.value)
    good = save_fisher(tmp_path / "good.safetensors", {"w": torch.ones(64, 64)}, {"model": "m"})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(E2WMError) as info:
        load_fisher(truncated)
    assert "\n" not in str(info.value)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2)}, str(tmp_path / "anonymous.safetensors"), metadata={"source": "empirical"})
    with pytest.raises(E2WMError, match="model"):
        load_fisher(tmp_path / "anonymous.safetensors")
    with pytest.raises(E2WMError):
        save_fisher(tmp_path / "x.safetensors", {"w": torch.ones(2)}, {"source": "empirical"})


# ---------------------------------------------------------------------------------------------- general text


def test_general_text_parts():
    fisher_part = general_text.passages("fisher")
    retention = general_text.passages("retention")
    assert len(fisher_part) >= 100 and len(retention) >= 20
    assert set(fisher_part).isdisjoint(retention)
    paragraphs = [{q for p in part for q in p.split("\n\n")} for part in (fisher_part, retention)]
    assert paragraphs[0].isdisjoint(paragraphs[1])  # not even a shared paragraph
    assert 0.1 < len(retention) / (len(fisher_part) + len(retention)) < 0.35
    assert general_text.passages("fisher") == fisher_part  # deterministic
    for passage in fisher_part + retention:
        assert 50 <= len(passage) <= general_text.MAX_PASSAGE_CHARS
        assert "****" not in passage and "::=" not in passage
    words = Counter(w for p in retention for w in re.findall(r"[a-z]+", p.lower()))
    assert {"the", "of", "is", "object", "which", "when"} <= set(words)
    with pytest.raises(E2WMError):
        general_text.passages("training")


def test_general_text_split_is_by_topic():
    from pydoc_data.topics import topics

    parts = {general_text.part_of(topic) for topic in topics}
    assert parts == {"fisher", "retention"}
    assert general_text.part_of("exceptions") == general_text.part_of("exceptions")
