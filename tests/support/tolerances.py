"""Tolerances for float32 results, from rounding-error analysis rather than from what one machine printed.

Compare a float32 result with a float64 reference computed from the same (float32) inputs, which is exact
for this purpose: its own rounding error is 2**-29 times that of float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23, twice the unit roundoff u = 2**-24


def float32_tolerance(n_terms: int, scale: float | Tensor) -> float | Tensor:
    """How far a float32 result may be from the exact one: ``min(n, 4 sqrt(n)) * eps * scale``, n = n_terms.

    Each float32 operation rounds its result with a relative error |delta| <= u = eps / 2. In a result
    built from sums and products, let every term pass through at most n roundings: a sum of m terms, in
    any order, blocking or thread split, adds at most m - 1 of them; each product, scaling or rounded
    constant on the term's way adds one. The result is then within gamma_n * scale of the exact one,
    where ``scale`` is the sum of |term| (the same formula on the absolute values of its inputs, + for -;
    at most m * max|term|; the value itself when no term is negative; a difference of two exact inputs
    rounds relative to itself, so it counts as the difference, not |a| + |b|).

    Worst case, gamma_n = n u / (1 - n u) <= n eps while n u <= 1/2 (Higham, Accuracy and Stability of
    Numerical Algorithms, 2nd ed., 3.1). It is reached only if every rounding errs the same way; for long
    reductions (n > 16) the probabilistic bound of Higham and Mary ("A new approach to probabilistic
    rounding error analysis", SIAM J. Sci. Comput. 41(5), 2019) is used instead: with rounding errors
    independent and of mean zero, gamma_n <= lambda sqrt(n) u + O(n u**2) with probability at least
    1 - 2 n exp(-lambda**2 / 2); here lambda = 8, 4 sqrt(n) eps, failing with probability under 3e-14 * n.
    Long reductions thus get a tolerance that still notices a dropped or doubled term, a wrong constant or
    a missed chunk.
    ``scale`` may be a tensor: one bound per element.
    """
    return min(n_terms, 4 * math.sqrt(n_terms)) * FLOAT32_EPS * scale


def assert_float32_close(
    got: Tensor, exact: Tensor, n_terms: int, scale: float | Tensor, msg: str = ""
) -> None:
    """|got - exact| <= float32_tolerance(n_terms, scale) elementwise, with ``exact`` a float64 reference
    (or another float32 result: then pass twice the scale, each being within one bound of the exact value)."""
    assert got.shape == exact.shape, f"{msg} shape {tuple(got.shape)} != {tuple(exact.shape)}"
    error = (got.detach().double() - exact.detach().double()).abs()
    bound = torch.as_tensor(float32_tolerance(n_terms, scale), dtype=torch.float64).detach().expand_as(error)
    worst = int((error - bound).argmax())
    assert bool((error <= bound).all()), (
        f"{msg} float32 error {error.flatten()[worst].item():.3g} exceeds its rounding bound "
        f"{bound.flatten()[worst].item():.3g} ({n_terms} roundings) at element {worst}"
    )


# Longest chains of roundings (float32_tolerance's n_terms) through the small networks of the tests. Norms,
# softmax and log-softmax pass their inputs' errors on without amplifying them (relative to the input's
# scale for a norm, in absolute terms, up to a factor 2, for a (log-)softmax), so counting roundings along
# the way, with the magnitude of the compared outputs as the scale, bounds the error of these small
# random, normalized networks; ``2 *`` the scale when both sides of a comparison are float32 results.


def llama_roundings(config, seq_len: int, lora_rank: int = 0) -> int:
    """A Llama-style decoder on up to ``seq_len`` tokens, from the embeddings to the log-softmax.

    Per layer: RMSNorm (a hidden_size-term sum of squares, rsqrt, 2 products), the q projection
    (hidden_size terms), rotary embedding (3), q.k (head_dim terms, the scaling), softmax (exp, a
    seq_len-term sum, a division), the attention-weighted sum (seq_len), the o projection (hidden_size),
    a residual addition, RMSNorm, the gate projection (hidden_size), SiLU and the gating product (4), the
    down projection (intermediate_size), a residual addition. Then RMSNorm, the LM head (hidden_size) and
    the log-softmax (exp, a vocab_size-term sum, log, a subtraction). A LoRA adapter of rank ``lora_rank``
    on the projections lengthens their path by its B (rank terms), the scaling and the addition.
    """
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    norm = h + 4
    layer = norm + h + 3 + head + 1 + seq_len + 3 + seq_len + h + 1 + norm + h + 4 + i + 1
    layer += lora_rank + 2 if lora_rank else 0
    return config.num_hidden_layers * layer + norm + h + v + 4


def video_encoder_roundings(config) -> int:
    """e2wm's VideoEncoder (a VideoEncoderConfig), from the frames to the features.

    The frame difference (1); the stem (3x3 taps over each group's channels); per block the expansion
    (c_in terms), the causal depthwise convolution (temporal_kernel x 3 x 3 taps), squeeze-excite (a
    spatial mean, two small projections with biases, SiLU, sigmoid, a product), the projection (hidden
    terms) and the residual addition; the head (c_in terms), a spatial mean and the linear projection with
    its bias. Each GroupNorm (per frame: a sum over a group's channels and pixels for the mean, another
    for the variance, rsqrt, normalization and affine: 2 m + 9) is followed by SiLU (3).
    """

    def norm(channels: int, size: int) -> int:
        groups = config.norm_groups
        while channels % groups:
            groups -= 1
        return 2 * (channels // groups) * size * size + 9 + 3

    size = -(-config.image_size // 2)
    n = 1 + config.num_channels * 9 + norm(config.stem_channels, size)
    c_in = config.stem_channels
    for c_out, depth, expand, stride_s in zip(
        config.stage_channels,
        config.stage_depths,
        config.stage_expand_ratios,
        config.stage_spatial_strides,
        strict=True,
    ):
        for block in range(depth):
            hidden, stride = c_in * expand, stride_s if block == 0 else 1
            n += c_in + norm(hidden, size)
            size = -(-size // stride)
            n += config.temporal_kernel * 9 + norm(hidden, size)
            if config.use_squeeze_excite:
                n += size * size + 1 + hidden + 1 + 3 + max(8, hidden // 4) + 1 + 3 + 1
            n += hidden + norm(c_out, size) - 3 + 1  # no SiLU after the projection's norm
            c_in = c_out
    return n + c_in + norm(config.head_channels, size) + size * size + 1 + 2 * config.head_channels + 1


def float32_differ(a: Tensor, b: Tensor, n_terms: int, scale: float | Tensor) -> bool:
    """Whether ``a`` and ``b`` differ somewhere by more than float32_tolerance(n_terms, scale): by more
    than rounding could explain (``2 *`` the scale for two float32 results)."""
    error = (a.detach().double() - b.detach().double()).abs()
    return bool((error > float32_tolerance(n_terms, scale)).any())
