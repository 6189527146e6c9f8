"""Diagonal Fisher information of a base causal LM, for the EWC penalty (``e2wm.training.ewc``).

F = mean over examples of the squared *per-example* gradient of the example's objective, the
sequence's mean token negative log-likelihood (not the square of a batch gradient), in fp32, for
the weights LoRA targets (every parameter with ``"all"``).

Two sources of examples:

* ``"empirical"``: the given texts (default: ``e2wm.training.general_text`` part ``"fisher"``), tokenized and
  truncated to ``max_length``; the empirical Fisher.
* ``"model"``: sequences sampled from the model itself (pure ancestral sampling at temperature 1 from
  the BOS token, seeded); the true Fisher, no corpus needed.

``compute_fisher`` gets per-example gradients of ``nn.Linear`` weights from one batched
forward/backward: hooks keep each target layer's input x (B,T,in) and autograd gives the gradient g
(B,T,out) of the batch loss (the sum of per-example losses, padding masked) at its output; example
i's weight gradient is g_i^T x_i. Parameters that are not an untied ``nn.Linear`` weight (embeddings,
norms, biases: only with ``"all"``) need a per-example loop, which then computes everything.
``compute_fisher(..., batch_size=None)`` is the plain reference: batch size 1, ordinary ``backward``.

The result is keyed by the base model's parameter names (``model.layers.0.self_attn.q_proj.weight``),
same shapes as the weights, fp32 on the CPU; ``save_fisher``/``load_fisher`` store it as safetensors
with string metadata (model, data, source, samples, tokens, max_length, targets, seed).
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import Tensor, nn

from e2wm.errors import E2WMError, error_line
from e2wm.files import staged_file
from e2wm.training import general_text
from e2wm.training.ewc import factorize

SOURCES = ("empirical", "model")
DEFAULT_TARGETS = ("q_proj", "v_proj")
SAMPLE_BATCH = 8  # sequences generated per model.generate call (fixed: the samples depend on it)
_CHUNK_ELEMENTS = 1 << 24  # per-example gradient elements materialised at once (64 MiB in fp32)


# ---------------------------------------------------------------------------------------------- targets


def _targets_label(target_modules: Sequence[str] | str) -> str:
    return target_modules if isinstance(target_modules, str) else ",".join(target_modules)


def target_weights(model: nn.Module, target_modules: Sequence[str] | str) -> dict[str, nn.Parameter]:
    """Base-model parameter names -> parameters whose Fisher is estimated.

    A list names ``nn.Linear`` layers by suffix as PEFT does (``"q_proj"`` matches
    ``model.layers.0.self_attn.q_proj``); ``"all-linear"`` is every ``nn.Linear`` except ``lm_head``;
    ``"all"`` is every parameter.
    """
    if any("lora_" in name for name, _ in model.named_parameters()):
        raise E2WMError("the Fisher is computed on the base model: pass it before LoRA adapters are attached")
    if target_modules == "all":
        return dict(model.named_parameters())
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if target_modules == "all-linear":
        chosen = [(name, m) for name, m in linears if name.split(".")[-1] != "lm_head"]
    elif isinstance(target_modules, str):
        raise E2WMError(
            f"unknown target modules {target_modules!r}: expected module names, 'all-linear' or 'all'"
        )
    else:
        keys = list(target_modules)
        if not keys:
            raise E2WMError("no target modules given")
        chosen = [(name, m) for name, m in linears if any(name == k or name.endswith("." + k) for k in keys)]
        if not chosen:
            raise E2WMError(f"no nn.Linear layer of the model matches target modules {', '.join(keys)}")
    return {f"{name}.weight": module.weight for name, module in chosen}


def _hookable(model: nn.Module, targets: dict[str, nn.Parameter]) -> dict[str, nn.Linear] | None:
    """Target name -> its ``nn.Linear`` when every target is the weight of exactly one Linear (not tied or
    shared), else None (the per-example loop is needed)."""
    owners: dict[int, list[nn.Module]] = {}
    for module in _all_module_instances(model):
        for param in module._parameters.values():
            if param is not None:
                owners.setdefault(id(param), []).append(module)
    found: dict[str, nn.Linear] = {}
    for name, param in targets.items():
        mods = owners.get(id(param), [])
        if len(mods) != 1 or not isinstance(mods[0], nn.Linear) or mods[0].weight is not param:
            return None
        found[name] = mods[0]
    return found


def _all_module_instances(model: nn.Module) -> Iterator[nn.Module]:
    """Every module occurrence, a shared module once per place it is used."""
    for _, module in model.named_modules(remove_duplicate=False):
        yield module


# ---------------------------------------------------------------------------------------------- examples


def _select_texts(texts: Sequence[str], samples: int, seed: int) -> list[str]:
    """``samples`` texts: a seeded permutation of the texts, cycled."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    return [texts[order[i % len(order)]] for i in range(samples)]


def _tokenize(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    out = []
    for text in texts:
        ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
        out.append(list(ids))
    return out


def _start_token(tokenizer) -> int:
    for attr in ("bos_token_id", "eos_token_id"):
        token = getattr(tokenizer, attr, None)
        if token is not None:
            return int(token)
    raise E2WMError("the tokenizer has neither a BOS nor an EOS token to start model samples from")


def _sample_sequences(
    model: nn.Module, tokenizer, samples: int, max_length: int, seed: int
) -> list[list[int]]:
    """``samples`` sequences sampled from the model (temperature 1, the full distribution) from the start
    token, each cut after its first EOS; deterministic given the seed."""
    start = _start_token(tokenizer)
    eos = getattr(tokenizer, "eos_token_id", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (eos if eos is not None else start)
    device = _device(model)
    sequences: list[list[int]] = []
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for first in range(0, samples, SAMPLE_BATCH):
            n = min(SAMPLE_BATCH, samples - first)
            input_ids = torch.full((n, 1), start, dtype=torch.long, device=device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                typical_p=1.0,
                min_p=0.0,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                epsilon_cutoff=0.0,
                eta_cutoff=0.0,
                num_beams=1,
                max_new_tokens=max_length - 1,
                min_new_tokens=1,
                eos_token_id=eos,
                pad_token_id=pad,
            )
            for row in out.tolist():
                generated = row[1:]
                if eos is not None and eos in generated:
                    generated = generated[: generated.index(eos) + 1]
                sequences.append([start, *generated])
    return sequences


def _examples(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str] | None,
    source: str,
    samples: int,
    max_length: int,
    seed: int,
    data: str | None,
) -> tuple[list[list[int]], str]:
    """Token-id lists of the examples (>= 2 tokens each) and the data description."""
    if source not in SOURCES:
        raise E2WMError(f"unknown Fisher source {source!r}: expected one of {', '.join(SOURCES)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise E2WMError(f"Fisher samples must be a positive integer, got {samples!r}")
    if max_length < 2:
        raise E2WMError(f"max_length must be at least 2 tokens, got {max_length}")
    if source == "model":
        if texts is not None:
            raise E2WMError("source 'model' samples its own sequences: do not pass texts")
        return _sample_sequences(model, tokenizer, samples, max_length, seed), data or "model-samples"
    if texts is None:
        texts, data = general_text.passages("fisher"), data or "general"
    usable = [t for t in texts if isinstance(t, str) and t.strip()]
    if not usable:
        raise E2WMError("no non-empty texts to estimate the Fisher from")
    encoded = dict(zip(usable, _tokenize(tokenizer, usable, max_length), strict=True))
    usable = [t for t in usable if len(encoded[t]) >= 2]
    if not usable:
        raise E2WMError("every text is shorter than 2 tokens: nothing to score")
    chosen = _select_texts(usable, samples, seed)
    return [encoded[t] for t in chosen], data or f"{len(usable)} given texts"


# ---------------------------------------------------------------------------------------------- objective


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _pad_batch(batch: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-padded input ids and attention mask."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[i, : len(ids)] = 1
    return input_ids.to(device), mask.to(device)


def _per_example_nll(model: nn.Module, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, int]:
    """Each sequence's mean token negative log-likelihood (B,), padding masked, and the tokens scored."""
    logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
    batch, width, vocab = logits.shape
    # Position t predicts token t+1; the last position predicts nothing. Shifting the labels (not slicing the
    # logits) keeps the (B*T, V) view contiguous: no copy of the largest tensor.
    labels = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
    scored = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1).bool()
    labels = torch.where(scored, labels, torch.full_like(labels, -100))
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(batch * width, vocab).float(), labels.reshape(-1), reduction="none"
    ).view(batch, width)
    counts = scored.sum(1)
    return nll.sum(1) / counts, int(counts.sum().item())


@contextlib.contextmanager
def _grad_only_for(model: nn.Module, params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Eval mode and requires_grad only on ``params`` (so backward skips other weight gradients); restored."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    wanted = {id(p) for p in params}
    try:
        model.eval()
        for p, _ in saved:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        model.train(was_training)


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        token = getattr(tokenizer, attr, None)
        if token is not None:
            return int(token)
    return 0  # never scored: any id in the vocabulary will do


# ---------------------------------------------------------------------------------------------- estimators


def _fisher_hooks(
    model: nn.Module, layers: dict[str, nn.Linear], examples: list[list[int]], batch_size: int, pad_id: int
) -> tuple[dict[str, Tensor], int]:
    """Sum over examples of squared per-example Linear weight gradients, from batched forward/backward."""
    device = _device(model)
    sums = {
        name: torch.zeros(layer.weight.shape, dtype=torch.float32, device=device)
        for name, layer in layers.items()
    }
    inputs: dict[str, list[Tensor]] = {}
    outputs: dict[str, list[Tensor]] = {}

    def make_hook(name: str):
        def hook(_module, args, output):
            inputs.setdefault(name, []).append(args[0].detach())
            outputs.setdefault(name, []).append(output)

        return hook

    handles = [layer.register_forward_hook(make_hook(name)) for name, layer in layers.items()]
    tokens = 0
    # Similar lengths together wastes less padding; the mean over examples does not depend on the order.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    try:
        with _grad_only_for(model, [layer.weight for layer in layers.values()]):
            for first in range(0, len(order), batch_size):
                batch = [examples[i] for i in order[first : first + batch_size]]
                input_ids, mask = _pad_batch(batch, pad_id, device)
                inputs.clear()
                outputs.clear()
                per_example, scored = _per_example_nll(model, input_ids, mask)
                tokens += scored
                names = [name for name in layers if name in outputs]
                flat = [out for name in names for out in outputs[name]]
                grads = torch.autograd.grad(per_example.sum(), flat, allow_unused=True)
                keep = mask.bool()[..., None]
                at = 0
                for name in names:
                    calls = outputs[name]
                    xs, gs = [], []
                    for x, out, grad in zip(inputs[name], calls, grads[at : at + len(calls)], strict=True):
                        x = x.float()
                        grad = torch.zeros_like(out, dtype=torch.float32) if grad is None else grad.float()
                        if x.shape[:2] == keep.shape[:2]:  # padding contributes nothing (and no NaN leaks)
                            x = torch.where(keep, x, 0.0)
                            grad = torch.where(keep, grad, 0.0)
                        xs.append(x.reshape(x.shape[0], -1, x.shape[-1]))
                        gs.append(grad.reshape(grad.shape[0], -1, grad.shape[-1]))
                    at += len(calls)
                    x = xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)
                    g = gs[0] if len(gs) == 1 else torch.cat(gs, dim=1)
                    _accumulate_outer_squares(sums[name], g, x)
                inputs.clear()
                outputs.clear()
    finally:
        for handle in handles:
            handle.remove()
        inputs.clear()
        outputs.clear()
    return sums, tokens


def _accumulate_outer_squares(total: Tensor, g: Tensor, x: Tensor) -> None:
    """total += sum_i (g_i^T x_i)**2 for g (B,T,out), x (B,T,in), a few examples at a time."""
    per_example = total.numel()
    chunk = max(1, _CHUNK_ELEMENTS // per_example)
    for first in range(0, g.shape[0], chunk):
        grads = torch.bmm(g[first : first + chunk].transpose(1, 2), x[first : first + chunk])
        total += grads.square_().sum(0)


def _fisher_per_example(
    model: nn.Module, targets: dict[str, nn.Parameter], examples: list[list[int]], pad_id: int
) -> tuple[dict[str, Tensor], int]:
    """Sum over examples of squared gradients, one example at a time with ordinary backward."""
    device = _device(model)
    sums = {name: torch.zeros(p.shape, dtype=torch.float32, device=device) for name, p in targets.items()}
    params = list(targets.values())
    saved_grads = [p.grad for p in params]
    tokens = 0
    try:
        with _grad_only_for(model, params):
            for ids in examples:
                for p in params:
                    p.grad = None
                input_ids, mask = _pad_batch([ids], pad_id, device)
                loss, scored = _per_example_nll(model, input_ids, mask)
                tokens += scored
                loss.sum().backward()
                for name, p in targets.items():
                    if p.grad is not None:
                        sums[name] += p.grad.float().square()
    finally:
        for p, grad in zip(params, saved_grads, strict=True):
            p.grad = grad
    return sums, tokens


def _finish(
    model: nn.Module,
    sums: dict[str, Tensor],
    count: int,
    tokens: int,
    *,
    data: str,
    source: str,
    max_length: int,
    target_modules: Sequence[str] | str,
    seed: int,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    fisher = {name: (total / count).cpu().contiguous() for name, total in sums.items()}
    config = getattr(model, "config", None)
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", "") or ""
    metadata = {
        "model": str(name),
        "data": data,
        "source": source,
        "samples": str(count),
        "tokens": str(tokens),
        "max_length": str(max_length),
        "targets": _targets_label(target_modules),
        "seed": str(seed),
    }
    return fisher, metadata


def compute_fisher(
    model: nn.Module,
    tokenizer,
    *,
    texts: Sequence[str] | None = None,
    source: str = "empirical",
    samples: int,
    max_length: int = 256,
    batch_size: int | None = 8,
    target_modules: Sequence[str] | str = DEFAULT_TARGETS,
    seed: int = 0,
    data: str | None = None,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Diagonal Fisher of ``model`` for the targeted weights, and its metadata (all strings).

    ``source="empirical"``: ``samples`` of ``texts`` (a seeded permutation, cycled; default the general text's
    ``"fisher"`` part) truncated to ``max_length`` tokens. ``source="model"``: ``samples`` sequences sampled
    from the model (no texts). ``data`` describes the texts in the metadata (default ``general``,
    ``model-samples`` or ``N given texts``). Per-example gradients come from batched hooks on the
    ``nn.Linear`` targets (``batch_size`` examples a pass); other targets fall back to a per-example loop.
    ``batch_size=None`` is the reference estimate: that loop for every target, one example at a time with
    ordinary ``backward``, squared gradients accumulated.
    """
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise E2WMError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    targets = target_weights(model, target_modules)
    examples, data = _examples(model, tokenizer, texts, source, samples, max_length, seed, data)
    layers = _hookable(model, targets) if batch_size is not None else None
    if layers is not None:
        sums, tokens = _fisher_hooks(model, layers, examples, batch_size, _pad_id(tokenizer))
    else:
        sums, tokens = _fisher_per_example(model, targets, examples, _pad_id(tokenizer))
    return _finish(
        model,
        sums,
        len(examples),
        tokens,
        data=data,
        source=source,
        max_length=max_length,
        target_modules=target_modules,
        seed=seed,
    )


def estimate_fisher(
    model: Any, tokenizer: Any, data: str, samples: int, max_length: int, targets: list[str] | str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Diagonal Fisher on ``general`` prose, ``model-samples``, or a dataset's ``text``/``prompt`` column."""
    if data == "model-samples":
        return compute_fisher(
            model,
            tokenizer,
            texts=None,
            source="model",
            samples=samples,
            max_length=max_length,
            target_modules=targets,
        )
    if data == "general":
        texts = general_text.passages("fisher")
    else:
        try:
            ds = datasets.load_from_disk(data) if Path(data).exists() else datasets.load_dataset(data)
        except Exception as exc:  # noqa: BLE001
            raise E2WMError(f"cannot load Fisher data {data}: {error_line(exc)}") from None
        ds = ds["train"] if isinstance(ds, datasets.DatasetDict) else ds
        column = next((c for c in ("text", "prompt") if c in ds.column_names), None)
        if column is None:
            raise E2WMError(f"Fisher data {data} has no 'text' or 'prompt' column")
        texts = ds[column]
    fisher, metadata = compute_fisher(
        model,
        tokenizer,
        texts=texts,
        source="empirical",
        samples=samples,
        max_length=max_length,
        target_modules=targets,
    )
    metadata["data"] = data
    return fisher, metadata


def factor(
    fisher: dict[str, torch.Tensor], metadata: dict[str, str], rank: int
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Store each matrix's Fisher as a non-negative rank-``rank`` product (``.fisher_u``, ``.fisher_v``)."""
    factored = {}
    for name, f in fisher.items():
        if f.dim() == 2:
            factored[name + ".fisher_u"], factored[name + ".fisher_v"] = factorize(f, rank)
        else:
            factored[name] = f
    return factored, {**metadata, "format": "factored", "rank": str(rank)}


def save_fisher(path: str | os.PathLike, fisher: dict[str, Tensor], metadata: dict[str, str]) -> Path:
    """Write the Fisher tensors (fp32) and string metadata as safetensors: a temporary file, then a rename."""
    from safetensors.torch import save_file

    if "model" not in metadata:
        raise E2WMError("Fisher metadata must name the model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in fisher.items()}
    with staged_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in metadata.items()})
    return path


def load_fisher(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The Fisher tensors and metadata written by ``save_fisher``; one-line E2WMError on a bad file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise E2WMError(f"Fisher file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            fisher = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:  # safetensors raises its own error type, OSError or RuntimeError
        reason = error_line(exc)
        raise E2WMError(f"{path} is not a readable safetensors Fisher file ({reason})") from None
    if "model" not in metadata:
        raise E2WMError(f"{path} is not a Fisher file: its metadata does not name the model")
    return fisher, metadata
