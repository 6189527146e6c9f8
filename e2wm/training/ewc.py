"""Elastic weight consolidation: keep weights that matter for general language close to the base model.

penalty = lam * sum F * dW**2, with F the diagonal Fisher of the base model and dW the change of each
regularized weight: scale * B @ A for a LoRA layer, W - W0 for full fine-tuning. The Fisher is a dict keyed
by the base model's parameter names, either diagonal (``fisher[name]``, the weight's shape) or factored
(``fisher[name + ".fisher_u"]`` out x k and ``fisher[name + ".fisher_v"]`` in x k, F ~= U @ V.T, both >= 0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from torch import Tensor, nn

from e2wm.errors import E2WMError

U_SUFFIX, V_SUFFIX = ".fisher_u", ".fisher_v"


def _dtype(*tensors: Tensor) -> torch.dtype:
    """float64 when any input is float64 (for gradcheck), float32 otherwise."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _no_autocast(t: Tensor) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type=t.device.type, enabled=False)


class _LoraPenalty(torch.autograd.Function):
    """sum F * (scale * B @ A)**2, forward and backward both chunked over output rows."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, fisher: Tensor, scale: float, chunk_rows: int) -> Tensor:
        ctx.save_for_backward(a, b, fisher)
        ctx.scale, ctx.chunk_rows = scale, chunk_rows
        dt = _dtype(a, b)
        total = torch.zeros((), dtype=dt, device=a.device)
        with _no_autocast(a):
            a_ = a.to(dt)
            for i in range(0, b.shape[0], chunk_rows):
                d = b[i : i + chunk_rows].to(dt) @ a_
                total += d.square_().mul_(fisher[i : i + chunk_rows].to(dt)).sum()
        return total * scale**2

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None]:
        a, b, fisher = ctx.saved_tensors
        rows = ctx.chunk_rows
        dt = _dtype(a, b)
        with _no_autocast(a):
            a_ = a.to(dt)
            coef = grad.to(dt) * (2 * ctx.scale**2)
            grad_a = torch.zeros_like(a_)
            grad_b = torch.empty(b.shape, dtype=dt, device=b.device)
            for i in range(0, b.shape[0], rows):
                b_c = b[i : i + rows].to(dt)
                g = (b_c @ a_).mul_(fisher[i : i + rows].to(dt)).mul_(coef)  # d penalty / d (B @ A), chunk
                grad_b[i : i + rows] = g @ a_.T
                grad_a.addmm_(b_c.T, g)
        return grad_a.to(a.dtype), grad_b.to(b.dtype), None, None, None


class _FullPenalty(torch.autograd.Function):
    """sum F * (W - W0)**2, forward and backward both chunked over rows."""

    @staticmethod
    def forward(ctx, w: Tensor, w0: Tensor, fisher: Tensor, chunk_rows: int) -> Tensor:
        ctx.save_for_backward(w, w0, fisher)
        ctx.chunk_rows = chunk_rows
        dt = _dtype(w)
        total = torch.zeros((), dtype=dt, device=w.device)
        for i in range(0, w.shape[0], chunk_rows):
            s = slice(i, i + chunk_rows)
            total += (w[s].to(dt) - w0[s].to(dt)).square_().mul_(fisher[s].to(dt)).sum()
        return total

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        w, w0, fisher = ctx.saved_tensors
        dt = _dtype(w)
        coef = grad.to(dt) * 2
        grad_w = torch.empty_like(w)
        for i in range(0, w.shape[0], ctx.chunk_rows):
            s = slice(i, i + ctx.chunk_rows)
            grad_w[s] = (w[s].to(dt) - w0[s].to(dt)).mul_(fisher[s].to(dt)).mul_(coef)
        return grad_w, None, None, None


def lora_penalty(a: Tensor, b: Tensor, scale: float, fisher: Tensor, chunk_rows: int = 256) -> Tensor:
    """sum F * (scale * b @ a)**2 for a: r x in, b: out x r, fisher: out x in.

    Computed in fp32 (float64 if an input is float64); forward and backward never hold more than a
    ``chunk_rows x in`` block of dW. Differentiable w.r.t. a and b.
    """
    if a.dim() != 2 or b.dim() != 2 or fisher.shape != (b.shape[0], a.shape[1]) or b.shape[1] != a.shape[0]:
        raise E2WMError(
            f"lora_penalty: shapes A {tuple(a.shape)}, B {tuple(b.shape)}, F {tuple(fisher.shape)}"
        )
    if chunk_rows < 1:
        raise E2WMError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return _LoraPenalty.apply(a, b, fisher, float(scale), chunk_rows)


def factored_lora_penalty(a: Tensor, b: Tensor, scale: float, u: Tensor, v: Tensor) -> Tensor:
    """Exact sum (U @ V.T) * (scale * b @ a)**2 through r x r products, for u: out x k and v: in x k.

    sum_k <B^T diag(u_k) B, A diag(v_k) A^T> * scale**2, in fp32 (float64 if an input is float64).
    """
    if u.shape[0] != b.shape[0] or v.shape[0] != a.shape[1] or u.shape[1] != v.shape[1]:
        shapes = f"A {tuple(a.shape)}, B {tuple(b.shape)}, U {tuple(u.shape)}, V {tuple(v.shape)}"
        raise E2WMError(f"factored_lora_penalty: shapes {shapes}")
    dt = _dtype(a, b)
    with _no_autocast(a):
        a_, b_ = a.to(dt), b.to(dt)
        bub = torch.einsum("ok,or,os->krs", u.to(dt), b_, b_)
        ava = torch.einsum("ik,ri,si->krs", v.to(dt), a_, a_)
        return (bub * ava).sum() * float(scale) ** 2


def full_penalty(w: Tensor, w0: Tensor, fisher: Tensor, chunk_rows: int = 256) -> Tensor:
    """sum F * (w - w0)**2 in fp32 (float64 if w is float64), chunked over rows. Differentiable w.r.t. w."""
    if w.shape != w0.shape or w.shape != fisher.shape:
        raise E2WMError(
            f"full_penalty: shapes W {tuple(w.shape)}, W0 {tuple(w0.shape)}, F {tuple(fisher.shape)}"
        )
    if chunk_rows < 1:
        raise E2WMError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if w.dim() == 0:
        w, w0, fisher = w.reshape(1), w0.reshape(1), fisher.reshape(1)
    return _FullPenalty.apply(w, w0, fisher, chunk_rows)


def factorize(fisher: Tensor, rank: int, iters: int = 300) -> tuple[Tensor, Tensor]:
    """Non-negative rank-``rank`` approximation fisher ~= u @ v.T (u: out x k, v: in x k), both >= 0, fp32.

    NMF on the Frobenius loss by hierarchical alternating least squares (faster than multiplicative updates),
    from a fixed-seed random start, so the result is deterministic.
    """
    x = fisher.detach().to(torch.float32)
    if x.dim() != 2 or rank < 1:
        raise E2WMError(
            f"factorize: need a 2-D matrix and rank >= 1, got shape {tuple(x.shape)}, rank {rank}"
        )
    if not bool(torch.isfinite(x).all() and (x >= 0).all()):
        raise E2WMError("factorize: the matrix must be finite and non-negative")
    peak = x.max()
    if peak == 0:
        return x.new_zeros(x.shape[0], rank), x.new_zeros(x.shape[1], rank)
    x = x / peak
    gen = torch.Generator(device=x.device).manual_seed(0)
    init = (x.mean() / rank).sqrt()
    u = torch.rand(x.shape[0], rank, generator=gen, device=x.device) * init
    v = torch.rand(x.shape[1], rank, generator=gen, device=x.device) * init

    def update(w: Tensor, xh: Tensor, hh: Tensor) -> None:
        for j in range(rank):
            step = (xh[:, j] - w @ hh[:, j]) / hh[j, j].clamp_min(1e-12)
            w[:, j] = (w[:, j] + step).clamp_min(1e-12)

    for _ in range(iters):
        update(u, x @ v, v.T @ v)
        update(v, x.T @ u, u.T @ u)
    return u * peak, v


@contextlib.contextmanager
def _gathered(params: list[nn.Parameter]) -> Iterator[list[Tensor]]:
    """Yield the params; ZeRO-3 partitioned ones are gathered and copied, so backward outlives the gather."""
    if not any(hasattr(p, "ds_id") for p in params):
        yield list(params)
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield [p.clone() for p in params]


def _shape(p: Tensor) -> torch.Size:
    return torch.Size(getattr(p, "ds_shape", p.shape))


def _fp32(name: str, t: Tensor, device: torch.device) -> Tensor:
    t = t.detach().to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(t).all() and (t >= 0).all()):
        raise E2WMError(f"Fisher entry {name} must be finite and non-negative")
    return t


def _fisher_key(name: str) -> str:
    """Base model name of a (possibly DDP- and PEFT-wrapped) module or parameter name."""
    return name.removeprefix("module.").removeprefix("base_model.model.")


@dataclass
class _LoraTerm:
    module: LoraLayer
    adapter: str
    fisher: Tensor | None  # diagonal, out x in; or None with u, v set
    u: Tensor | None = None
    v: Tensor | None = None


@dataclass
class _FullTerm:
    param: nn.Parameter
    w0: Tensor
    fisher: Tensor


def _follow(term: _LoraTerm | _FullTerm, device: torch.device) -> None:
    """Move a term's tensors to ``device`` once if the model moved after construction (as DeepSpeed does)."""
    for field in ("fisher", "u", "v", "w0"):
        t = getattr(term, field, None)
        if t is not None and t.device != device:
            setattr(term, field, t.to(device))


class EWC:
    """EWC regularizer bound to a model; add ``ewc.penalty()`` to the loss every step.

    Mode: LoRA if the model has peft ``LoraLayer`` modules (each active adapter of each Linear LoRA layer is
    regularized with the diagonal or factored Fisher of its base weight; DoRA and embedding/conv LoRA are
    refused), full fine-tuning otherwise (every parameter that requires grad and has a diagonal Fisher entry,
    against an fp32 copy of its value at construction).

    Supported: single process, DDP and DeepSpeed ZeRO-1/2 for both modes. ZeRO-3: weights are gathered
    with ``deepspeed.zero.GatheredParameters`` one layer at a time, and a copy of each gathered layer is
    kept for the backward pass (small for LoRA; the whole regularized model for full fine-tuning, where
    the Fisher and W0 are also held unpartitioned on every rank). Under ZeRO-3, call ``penalty()`` after
    the model's forward and backpropagate it together with that loss: its gradient then reaches each
    partitioned weight while ZeRO-3 has it gathered for the model's own backward (a penalty built before
    the forward, or backpropagated alone, fails there).
    """

    def __init__(self, model: nn.Module, fisher: dict[str, Tensor], lam: float, chunk_rows: int = 256):
        if lam < 0 or chunk_rows < 1:
            raise E2WMError(f"EWC needs lam >= 0 and chunk_rows >= 1, got lam={lam}, chunk_rows={chunk_rows}")
        self.lam, self.chunk_rows = float(lam), chunk_rows
        layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
        self._lora = [t for n, m in layers for t in self._lora_terms(n, m, fisher)]
        self._full = [] if layers else self._full_terms(model, fisher)
        self.mode = "lora" if layers else "full"
        params = [t.module.lora_B[t.adapter].weight for t in self._lora] + [t.param for t in self._full]
        if not params:
            raise E2WMError(f"EWC ({self.mode}): no weight of the model to regularize has a Fisher entry")
        self._first = params[0]

    @property
    def device(self) -> torch.device:
        """The device of the regularized weights (the first of them), where the penalty is returned."""
        return self._first.device

    @staticmethod
    def _lora_terms(name: str, module: LoraLayer, fisher: dict[str, Tensor]) -> list[_LoraTerm]:
        key = _fisher_key(name) + ".weight"
        terms = []
        for adapter in module.active_adapters:
            if adapter not in module.lora_A:
                if adapter in getattr(module, "lora_embedding_A", {}):
                    raise E2WMError(f"EWC: embedding LoRA is not supported ({name})")
                continue  # this adapter does not target this layer
            if module.use_dora.get(adapter, False):
                raise E2WMError(f"EWC: DoRA is not supported ({name})")
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            if len(_shape(a)) != 2:
                raise E2WMError(f"EWC: only Linear LoRA layers are supported ({name})")
            shape = (_shape(b)[0], _shape(a)[1])  # shape of dW = B @ A
            flip = getattr(module, "fan_in_fan_out", False)  # base weight is dW.T
            if key in fisher:
                f = _fp32(key, fisher[key], b.device)
                f = f.T.contiguous() if flip else f
                if f.shape != shape:
                    raise E2WMError(
                        f"EWC: Fisher {key} has shape {tuple(f.shape)}, LoRA dW of {name} {shape}"
                    )
                terms.append(_LoraTerm(module, adapter, f))
            elif key + U_SUFFIX in fisher and key + V_SUFFIX in fisher:
                u = _fp32(key + U_SUFFIX, fisher[key + U_SUFFIX], b.device)
                v = _fp32(key + V_SUFFIX, fisher[key + V_SUFFIX], b.device)
                u, v = (v, u) if flip else (u, v)
                if (
                    (u.dim(), v.dim()) != (2, 2)
                    or (u.shape[0], v.shape[0]) != shape
                    or u.shape[1] != v.shape[1]
                ):
                    shapes = f"U {tuple(u.shape)}, V {tuple(v.shape)}"
                    raise E2WMError(f"EWC: factored Fisher of {key} has {shapes}, LoRA dW of {name} {shape}")
                terms.append(_LoraTerm(module, adapter, None, u, v))
            else:
                raise E2WMError(f"EWC: the Fisher has no entry for LoRA-targeted weight {key}")
        return terms

    @staticmethod
    def _full_terms(model: nn.Module, fisher: dict[str, Tensor]) -> list[_FullTerm]:
        terms = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            key = _fisher_key(name)
            if key not in fisher:
                if key + U_SUFFIX in fisher:
                    raise E2WMError(f"EWC: full fine-tuning needs a diagonal Fisher, {key} is factored")
                continue
            f = _fp32(key, fisher[key], p.device)
            if f.shape != _shape(p):
                raise E2WMError(
                    f"EWC: Fisher {key} has shape {tuple(f.shape)}, the weight {tuple(_shape(p))}"
                )
            with _gathered([p]) as (w,):
                w0 = w.detach().to(torch.float32, copy=True)
            terms.append(_FullTerm(p, w0, f))
        return terms

    def penalty(self) -> Tensor:
        """lam * the summed penalties, an fp32 scalar on the parameters' device; no graph if lam == 0."""
        if self.lam == 0:
            return torch.zeros((), device=self.device)
        device = self.device
        total = torch.zeros((), dtype=torch.float32, device=device)
        for t in self._lora:
            with _gathered([t.module.lora_A[t.adapter].weight, t.module.lora_B[t.adapter].weight]) as (a, b):
                _follow(t, b.device)
                scale = t.module.scaling[t.adapter]
                if t.fisher is not None:
                    value = lora_penalty(a, b, scale, t.fisher, self.chunk_rows)
                else:
                    value = factored_lora_penalty(a, b, scale, t.u, t.v)
            total = total + value.to(device)
        for t in self._full:
            with _gathered([t.param]) as (w,):
                _follow(t, w.device)
                value = full_penalty(w, t.w0, t.fisher, self.chunk_rows)
            total = total + value.to(device)
        return self.lam * total
