"""EWC: chunked and factored penalties against brute force, gradients, and the regularizer on tiny models."""

import contextlib
import sys
import types

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

from e2wm.errors import E2WMError
from e2wm.ewc import EWC, factored_lora_penalty, factorize, full_penalty, lora_penalty


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lora_inputs(out: int, inp: int, r: int, dtype=torch.float32, seed: int = 0):
    g = _gen(seed)
    a = torch.randn(r, inp, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(out, r, generator=g, dtype=dtype, requires_grad=True)
    return a, b, torch.rand(out, inp, generator=g, dtype=dtype)


@pytest.mark.parametrize(
    ("out", "inp", "r", "chunk"), [(10, 7, 2, 3), (64, 32, 4, 256), (33, 16, 8, 8), (5, 9, 1, 1)]
)
def test_lora_penalty_matches_brute_force_and_its_gradient(out, inp, r, chunk):
    a, b, f = _lora_inputs(out, inp, r)
    got = lora_penalty(a, b, 1.7, f, chunk_rows=chunk)
    ga, gb = torch.autograd.grad(got, (a, b))
    want = (f * (1.7 * b @ a) ** 2).sum()
    wa, wb = torch.autograd.grad(want, (a, b))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gb, wb)


class _LargestAllocation(TorchDispatchMode):
    """Records the most elements any single aten op produced."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        outs = result if isinstance(result, tuple | list) else (result,)
        self.largest = max([self.largest, *(t.numel() for t in outs if isinstance(t, torch.Tensor))])
        return result


def test_lora_penalty_never_materializes_more_than_a_chunk_of_dw():
    out, inp, r, chunk = 100, 50, 3, 16  # dW has 5000 elements, a chunk 800; A, B and their grads fewer
    a, b, f = _lora_inputs(out, inp, r)
    with _LargestAllocation() as mode:
        lora_penalty(a, b, 2.0, f, chunk_rows=chunk).backward()
    assert mode.largest == chunk * inp
    with _LargestAllocation() as mode:
        (f * (2.0 * b @ a) ** 2).sum().backward()
    assert mode.largest == out * inp  # the probe does see a full dW


def test_penalties_compute_in_fp32_under_bf16_autocast():
    a, b, f = _lora_inputs(24, 16, 4)
    a16, b16 = (a.detach().bfloat16().requires_grad_(), b.detach().bfloat16().requires_grad_())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lora_penalty(a16, b16, 0.5, f, chunk_rows=5)
    got.backward()
    assert got.dtype == torch.float32 and a16.grad.dtype == torch.bfloat16
    torch.testing.assert_close(got, (f * (0.5 * b16.float() @ a16.float()) ** 2).sum())


def _factored(out: int, inp: int, r: int, k: int, dtype=torch.float32, seed: int = 1):
    a, b, _ = _lora_inputs(out, inp, r, dtype, seed)
    g = _gen(seed + 100)
    return a, b, torch.rand(out, k, generator=g, dtype=dtype), torch.rand(inp, k, generator=g, dtype=dtype)


@pytest.mark.parametrize(("out", "inp", "r", "k"), [(10, 7, 2, 1), (48, 32, 4, 3), (16, 40, 8, 5)])
def test_factored_lora_penalty_matches_brute_force(out, inp, r, k):
    a, b, u, v = _factored(out, inp, r, k)
    got = factored_lora_penalty(a, b, 0.8, u, v)
    want = ((u @ v.T) * (0.8 * b @ a) ** 2).sum()
    torch.testing.assert_close(got, want)
    for x, y in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(want, (a, b)), strict=True):
        torch.testing.assert_close(x, y)


def test_full_penalty_matches_brute_force():
    g = _gen(2)
    for shape in [(37, 11), (300,), (3, 4, 5)]:
        w = torch.randn(shape, generator=g, requires_grad=True)
        w0, f = torch.randn(shape, generator=g), torch.rand(shape, generator=g)
        got = full_penalty(w, w0, f, chunk_rows=8)
        torch.testing.assert_close(got, (f * (w - w0) ** 2).sum())
        (grad,) = torch.autograd.grad(got, w)
        torch.testing.assert_close(grad, 2 * f * (w - w0))


def test_gradcheck_in_float64():
    a, b, f = _lora_inputs(7, 5, 2, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: lora_penalty(a, b, 1.3, f, chunk_rows=3), (a, b))
    a, b, u, v = _factored(6, 5, 3, 2, torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: factored_lora_penalty(a, b, 1.3, u, v), (a, b))
    w = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    w0, fw = torch.randn(7, 4, dtype=torch.float64), torch.rand(7, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w: full_penalty(w, w0, fw, chunk_rows=3), (w,))


def test_factorize_recovers_a_nonnegative_low_rank_matrix():
    g = _gen(3)
    x = torch.rand(64, 4, generator=g) @ torch.rand(48, 4, generator=g).T * 1e-6  # Fisher-like magnitudes
    u, v = factorize(x, 4)
    assert u.shape == (64, 4) and v.shape == (48, 4) and u.dtype == torch.float32
    assert (u >= 0).all() and (v >= 0).all()
    assert ((u @ v.T - x).norm() / x.norm()) < 1e-2
    u2, v2 = factorize(x, 4)
    assert torch.equal(u, u2) and torch.equal(v, v2)
    with pytest.raises(E2WMError):
        factorize(-x, 2)


def _tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    return LlamaForCausalLM(config)


def _diag_fisher(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    g = _gen(4)
    return {name: torch.rand(p.shape, generator=g) for name, p in model.named_parameters()}


def _lora_model(use_rslora: bool = False):
    """A tiny PEFT LoRA Llama with random B (so dW != 0), and a diagonal Fisher keyed by base names."""
    model = _tiny_llama()
    fisher = _diag_fisher(model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=use_rslora)
    peft_model = get_peft_model(model, config)
    for module in _lora_layers(peft_model).values():
        torch.nn.init.normal_(module.lora_B["default"].weight)
    return peft_model, fisher


def _lora_layers(model: torch.nn.Module) -> dict[str, LoraLayer]:
    return {
        n.removeprefix("base_model.model.") + ".weight": m
        for n, m in model.named_modules()
        if isinstance(m, LoraLayer)
    }


def _lora_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


@pytest.mark.parametrize("use_rslora", [False, True])
def test_ewc_lora_equals_brute_force_with_diagonal_fisher(use_rslora):
    model, fisher = _lora_model(use_rslora)
    layers = _lora_layers(model)
    assert len(layers) == 4
    ewc = EWC(model, fisher, lam=0.3, chunk_rows=5)
    got = ewc.penalty()
    want = 0.3 * sum((fisher[k] * m.get_delta_weight("default") ** 2).sum() for k, m in layers.items())
    assert ewc.mode == "lora" and got.dtype == torch.float32 and got.shape == ()
    torch.testing.assert_close(got, want)
    got.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in _lora_params(model))


def test_ewc_lora_with_factored_fisher():
    model, _ = _lora_model()
    layers = _lora_layers(model)
    g, fisher, dense = _gen(5), {}, {}
    for key, m in layers.items():
        out, inp = m.get_base_layer().weight.shape
        u, v = torch.rand(out, 3, generator=g), torch.rand(inp, 3, generator=g)
        fisher[key + ".fisher_u"], fisher[key + ".fisher_v"], dense[key] = u, v, u @ v.T
    got = EWC(model, fisher, lam=2.0).penalty()
    want = 2.0 * sum((dense[k] * m.get_delta_weight("default") ** 2).sum() for k, m in layers.items())
    torch.testing.assert_close(got, want)


def test_ewc_lambda_zero_is_exactly_zero_without_a_graph():
    model, fisher = _lora_model()
    penalty = EWC(model, fisher, lam=0.0).penalty()
    assert torch.equal(penalty, torch.zeros(())) and not penalty.requires_grad and penalty.grad_fn is None


def test_ewc_rejects_missing_or_mismatched_fisher():
    model, fisher = _lora_model()
    v_proj = "model.layers.1.self_attn.v_proj.weight"
    missing = {k: v for k, v in fisher.items() if k != v_proj}
    with pytest.raises(E2WMError, match=f"no entry for LoRA-targeted weight {v_proj}"):
        EWC(model, missing, lam=1.0)
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    wrong = {**fisher, q_proj: torch.rand(3, 3)}
    with pytest.raises(E2WMError, match="shape"):
        EWC(model, wrong, lam=1.0)
    negative = {**fisher, q_proj: -fisher[q_proj]}
    with pytest.raises(E2WMError, match="non-negative"):
        EWC(model, negative, lam=1.0)


def test_ewc_full_fine_tuning_equals_brute_force_and_gradient_flows():
    model = _tiny_llama()
    fisher = _diag_fisher(model)
    del fisher["model.norm.weight"]  # a weight without a Fisher entry is left alone
    ewc = EWC(model, fisher, lam=0.7, chunk_rows=7)
    assert ewc.mode == "full"
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert ewc.penalty().item() == 0.0
    g = _gen(6)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    got = ewc.penalty()
    want = 0.7 * sum(
        (fisher[n] * (p - base[n]) ** 2).sum() for n, p in model.named_parameters() if n in fisher
    )
    torch.testing.assert_close(got, want)
    got.backward()
    params = dict(model.named_parameters())
    for n, p in params.items():
        if n in fisher:
            torch.testing.assert_close(p.grad, 2 * 0.7 * fisher[n] * (p.detach() - base[n]))
    assert params["model.norm.weight"].grad is None


def test_ewc_gathers_zero3_partitioned_lora_weights_one_layer_at_a_time(monkeypatch):
    """A stand-in for deepspeed.zero.GatheredParameters: same value and gradients, one layer at a time."""
    model, fisher = _lora_model()
    expected = EWC(model, fisher, lam=0.5).penalty()
    expected.backward()
    expected_grads = [p.grad.clone() for p in _lora_params(model)]
    model.zero_grad()

    gathers, open_gathers = [], []

    @contextlib.contextmanager
    def gathered_parameters(params, modifier_rank=None):
        assert modifier_rank is None and not open_gathers
        gathers.append(list(params))
        open_gathers.append(True)
        yield
        open_gathers.pop()

    fake = types.ModuleType("deepspeed")
    fake.zero = types.SimpleNamespace(GatheredParameters=gathered_parameters)
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    for i, p in enumerate(_lora_params(model)):
        p.ds_id = i
    got = EWC(model, fisher, lam=0.5).penalty()
    got.backward()
    torch.testing.assert_close(got, expected)
    for p, want in zip(_lora_params(model), expected_grads, strict=True):
        torch.testing.assert_close(p.grad, want)
    assert len(gathers) == 4 and all(len(ps) == 2 for ps in gathers)
