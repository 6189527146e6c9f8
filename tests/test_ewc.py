"""EWC: chunked and factored penalties against brute force, gradients, and the regularizer on tiny models."""

import contextlib
import copy
import sys
import types

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from support.tolerances import assert_float32_close
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

from e2wm.errors import E2WMError
from e2wm.training.ewc import EWC, factored_lora_penalty, factorize, full_penalty, lora_penalty


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _lora_inputs(out: int, inp: int, r: int, dtype=torch.float32, seed: int = 0):
    g = _gen(seed)
    a = torch.randn(r, inp, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(out, r, generator=g, dtype=dtype, requires_grad=True)
    return a, b, torch.rand(out, inp, generator=g, dtype=dtype)


def _exact(formula, *inputs):
    """formula(*inputs) and its gradients w.r.t. the inputs in float64: at the inputs (the exact values),
    and at their absolute values (for a sum of products of the inputs, the sum of |terms| of the value
    and of each gradient element: the scale of their float32 rounding errors, see tolerances.py)."""
    results = []
    for xs in (inputs, [x.abs() for x in inputs]):
        xs = [x.detach().double().requires_grad_() for x in xs]
        value = formula(*xs)
        results.append((value.detach(), torch.autograd.grad(value, xs)))
    return results


@pytest.mark.parametrize(
    ("out", "inp", "r", "chunk"), [(10, 7, 2, 3), (64, 32, 4, 256), (33, 16, 8, 8), (5, 9, 1, 1)]
)
def test_lora_penalty_matches_brute_force_and_its_gradient(out, inp, r, chunk):
    a, b, f = _lora_inputs(out, inp, r)
    got = lora_penalty(a, b, 1.7, f, chunk_rows=chunk)
    ga, gb = torch.autograd.grad(got, (a, b))
    f64 = f.double()
    (want, (wa, wb)), (scale, (sa, sb)) = _exact(lambda a, b: (f64 * (1.7 * b @ a) ** 2).sum(), a, b)
    assert got.dtype == torch.float32
    # r-term dot products, squared, times F, out * inp terms summed, times the rounded scale**2.
    assert_float32_close(got, want, out * inp + r + 4, scale)
    # 2 scale**2 B^T (F * B A) and (F * B A) A^T: r-term dot products, a few products, out (in) terms summed.
    assert_float32_close(ga, wa, r + out + 6, sa)
    assert_float32_close(gb, wb, r + inp + 6, sb)


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
    f64 = f.double()
    ((want, _), (scale, _)) = _exact(lambda a, b: (f64 * (0.5 * b @ a) ** 2).sum(), a16, b16)
    assert_float32_close(got, want, 24 * 16 + 4 + 4, scale)  # as above: out * inp + r + 4 roundings


def _factored(out: int, inp: int, r: int, k: int, dtype=torch.float32, seed: int = 1):
    a, b, _ = _lora_inputs(out, inp, r, dtype, seed)
    g = _gen(seed + 100)
    return a, b, torch.rand(out, k, generator=g, dtype=dtype), torch.rand(inp, k, generator=g, dtype=dtype)


@pytest.mark.parametrize(("out", "inp", "r", "k"), [(10, 7, 2, 1), (48, 32, 4, 3), (16, 40, 8, 5)])
def test_factored_lora_penalty_matches_brute_force(out, inp, r, k):
    a, b, u, v = _factored(out, inp, r, k)
    got = factored_lora_penalty(a, b, 0.8, u, v)
    grads = torch.autograd.grad(got, (a, b))
    fisher = u.double() @ v.double().T
    (want, want_grads), (scale, scales) = _exact(lambda a, b: (fisher * (0.8 * b @ a) ** 2).sum(), a, b)
    # The same products u_ok v_ik b_or b_os a_ri a_si as brute force, summed another way: over out (in)
    # for B^T diag(u_k) B (A diag(v_k) A^T), their k * r * r products summed, times the rounded scale**2.
    assert_float32_close(got, want, out + inp + k * r * r + 6, scale)
    # Gradients: one side's out- (in-)term sum as above, 2 * k * r terms with the other side summed.
    for x, y, s in zip(grads, want_grads, scales, strict=True):
        assert_float32_close(x, y, out + inp + 2 * k * r + 8, s)


def test_full_penalty_matches_brute_force():
    g = _gen(2)
    for shape in [(37, 11), (300,), (3, 4, 5)]:
        w = torch.randn(shape, generator=g, requires_grad=True)
        w0, f = torch.randn(shape, generator=g), torch.rand(shape, generator=g)
        got = full_penalty(w, w0, f, chunk_rows=8)
        # W - W0 of float32 inputs rounds relative to itself and every term is >= 0: the value is the scale.
        want = (f.double() * (w.double() - w0.double()) ** 2).sum()
        assert_float32_close(got, want, w.numel() + 2, want)
        (grad,) = torch.autograd.grad(got, w)
        want_grad = 2 * f.double() * (w.double() - w0.double())
        assert_float32_close(grad, want_grad, 3, want_grad.abs())


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


def _brute_force(model: torch.nn.Module, fisher: dict[str, torch.Tensor], lam: float, absolute: bool = False):
    """lam * sum F * dW**2 over the LoRA layers, dW from PEFT's get_delta_weight, and its gradients w.r.t.
    _lora_params, in float64 on a copy of the model; with |A| and |B| if ``absolute`` (F >= 0): the sums of
    |terms| that scale the float32 rounding errors (tolerances.py)."""
    model64 = copy.deepcopy(model).double()
    params = _lora_params(model64)
    if absolute:
        with torch.no_grad():
            for p in params:
                p.abs_()
    layers = _lora_layers(model64)
    value = lam * sum(
        (fisher[k].double() * m.get_delta_weight("default") ** 2).sum() for k, m in layers.items()
    )
    return value.detach(), torch.autograd.grad(value, params)


def _roundings(model: torch.nn.Module) -> tuple[int, int]:
    """Most roundings any term of the EWC LoRA penalty and of its gradients goes through (tolerances.py): all
    out * in terms of every layer summed (or fewer), after r-term dot products and a few products and
    rounded constants; gradient elements sum out or in terms after the dot products."""
    layers = _lora_layers(model).values()
    shapes = [(*m.get_base_layer().weight.shape, m.r["default"]) for m in layers]
    value = sum(out * inp for out, inp, _ in shapes) + max(r for *_, r in shapes) + 2 * len(shapes) + 8
    return value, max(out + inp + r for out, inp, r in shapes) + 8


@pytest.mark.parametrize("use_rslora", [False, True])
def test_ewc_lora_equals_brute_force_with_diagonal_fisher(use_rslora):
    model, fisher = _lora_model(use_rslora)
    layers = _lora_layers(model)
    assert len(layers) == 4
    ewc = EWC(model, fisher, lam=0.3, chunk_rows=5)
    got = ewc.penalty()
    want, _ = _brute_force(model, fisher, 0.3)
    scale, _ = _brute_force(model, fisher, 0.3, absolute=True)
    assert ewc.mode == "lora" and got.dtype == torch.float32 and got.shape == ()
    assert_float32_close(got, want, _roundings(model)[0], scale)
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
    want, _ = _brute_force(model, dense, 2.0)
    scale, _ = _brute_force(model, dense, 2.0, absolute=True)
    # Factored: per layer, out- and in-term sums, 3 * r * r of their products summed (test above).
    r = 4
    roundings = sum(sum(m.get_base_layer().weight.shape) + 3 * r * r + 6 for m in layers.values()) + 8
    assert_float32_close(got, want, roundings, scale)


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
    deltas = {n: p.detach().double() - base[n].double() for n, p in model.named_parameters() if n in fisher}
    want = 0.7 * sum((fisher[n].double() * d**2).sum() for n, d in deltas.items())
    # W - W0 of float32 numbers rounds relative to itself and every term is >= 0: the value is the scale.
    # Every term: a difference, a square, a product, all terms summed, lam rounded and multiplied.
    assert_float32_close(got, want, sum(d.numel() for d in deltas.values()) + 6, want)
    got.backward()
    params = dict(model.named_parameters())
    for n, p in params.items():
        if n in fisher:
            want_grad = 2 * 0.7 * fisher[n].double() * deltas[n]
            assert_float32_close(p.grad, want_grad, 4, want_grad.abs(), msg=n)  # W - W0, F, 2 lam, lam
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
    # Both float32 results are within their rounding bound of the exact one, so within twice it of each other.
    scale, scales = _brute_force(model, fisher, 0.5, absolute=True)
    roundings, grad_roundings = _roundings(model)
    assert_float32_close(got, expected, 2 * roundings, scale)
    for p, want, s in zip(_lora_params(model), expected_grads, scales, strict=True):
        assert_float32_close(p.grad, want, 2 * grad_roundings, s)
    assert len(gathers) == 4 and all(len(ps) == 2 for ps in gathers)
