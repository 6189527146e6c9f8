"""Multiple-choice scoring: normalizations, cached vs naive log-likelihoods, accuracy with intervals."""

from __future__ import annotations

import math

import pytest
import torch
import transformers
from support.tiny_lm import save_tiny_lm
from support.tolerances import assert_float32_close, llama_roundings

from e2wm.errors import E2WMError
from e2wm.eval.scoring import (
    UnconditionalScorer,
    argmax,
    choice_logprobs,
    continuation_ids,
    evaluate_multiple_choice,
    naive_choice_logprobs,
    normalize,
    packed_logprobs,
    score_choices,
    wilson_interval,
)

PROMPTS = [
    "walk to the kitchen grab mug what activity is this ?",
    "how many items are on table put mug put mug ?",
    "open fridge",
]
CHOICES = ["drink", "watch tv", "read book on the chair", "no"]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    folder = save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def assert_scores_close(
    model, got: list[float], other: list[float], scale: list[float] | None = None
) -> None:
    """Two float32 computations of the same sums of token log-probabilities, each within its rounding bound
    (tolerances.py) of the exact value: the model on any sequence it takes, plus the sum over a few tokens.
    Every term is <= 0, so the sum of |terms| is |sum| (``scale``, for differences of such sums)."""
    config = model.config
    roundings = llama_roundings(config, config.max_position_embeddings) + 8
    other_ = torch.tensor(other, dtype=torch.float64)
    scale_ = other_.abs() if scale is None else torch.tensor(scale, dtype=torch.float64)
    assert_float32_close(torch.tensor(got, dtype=torch.float64), other_, roundings, 2 * scale_)


def test_mean_and_sum_disagree_on_length():
    # long: 4 tokens at -1 each (mean -1, sum -4); short: 1 token at -3 (mean -3, sum -3)
    scores = [(-4.0, 4), (-3.0, 1)]
    assert normalize(scores, "sum") == [-4.0, -3.0]
    assert normalize(scores, "mean") == [-1.0, -3.0]
    assert argmax(normalize(scores, "sum")) == 1
    assert argmax(normalize(scores, "mean")) == 0


def test_unconditional_corrects_for_a_priori_likely_answer():
    # choice 0 is likelier given the prompt, but only because it is likely anyway (log p = -0.5 a priori)
    scores = [(-2.0, 1), (-3.0, 1)]
    unconditional = [-0.5, -4.0]
    assert argmax(normalize(scores, "sum")) == 0
    assert normalize(scores, "unconditional", unconditional) == [-1.5, 1.0]
    assert argmax(normalize(scores, "unconditional", unconditional)) == 1
    with pytest.raises(E2WMError):
        normalize(scores, "unconditional")
    with pytest.raises(E2WMError, match="unknown normalization"):
        normalize(scores, "median")


def test_ties_go_to_lowest_index():
    assert argmax([1.0, 2.0, 2.0]) == 1
    assert argmax([3.0, 3.0, 3.0]) == 0


def test_continuation_falls_back_when_the_boundary_merges(lm):
    _, tok = lm
    ids = tok("walk to")["input_ids"]
    assert continuation_ids(tok, "walk to", ids, " the kitchen") == tok("the kitchen")["input_ids"]
    # "walk to" + "kitchen" -> "walk tokitchen": the prompt's tokens change, so "kitchen" is tokenized alone
    assert continuation_ids(tok, "walk to", ids, "kitchen") == tok("kitchen")["input_ids"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_cached_equals_naive(lm, prompt):
    model, tok = lm
    conts = [" " + c for c in CHOICES]
    cached = choice_logprobs(model, tok, prompt, conts)
    naive = naive_choice_logprobs(model, tok, prompt, conts)
    assert [n for _, n in cached] == [n for _, n in naive] == [1, 2, 5, 1]
    assert_scores_close(model, [s for s, _ in cached], [s for s, _ in naive])


@pytest.mark.parametrize("max_tokens", [1, 40, 2048])
def test_packed_items_equal_naive(lm, max_tokens):
    """Several prompts of different lengths in one pack (or one per pack) score as if alone."""
    model, tok = lm
    items = [(p, [" " + c for c in CHOICES[k:]]) for k, p in enumerate(PROMPTS)]
    packed = packed_logprobs(model, tok, items, max_tokens=max_tokens)
    for (prompt, conts), got in zip(items, packed, strict=True):
        naive = naive_choice_logprobs(model, tok, prompt, conts)
        assert [n for _, n in got] == [n for _, n in naive]
        assert_scores_close(model, [s for s, _ in got], [s for s, _ in naive])


def test_unconditional_scores_equal_naive_and_are_memoised(lm):
    model, tok = lm
    scorer = UnconditionalScorer(model, tok)
    naive = [s for s, _ in naive_choice_logprobs(model, tok, "Answer:", [" " + c for c in CHOICES])]
    assert_scores_close(model, scorer(CHOICES), naive)
    assert set(scorer.scores) == set(CHOICES)
    prompt = PROMPTS[0]
    cond = [s for s, _ in naive_choice_logprobs(model, tok, prompt, [" " + c for c in CHOICES])]
    expected = [c - u for c, u in zip(cond, naive, strict=True)]
    got = score_choices(model, tok, prompt, CHOICES, "unconditional", scorer)
    assert_scores_close(
        model, got, expected, scale=[abs(c) + abs(u) for c, u in zip(cond, naive, strict=True)]
    )


def naive_predict(model, tok, prompt, choices, normalization):
    scores = naive_choice_logprobs(model, tok, prompt, [" " + c for c in choices])
    uncond = [s for s, _ in naive_choice_logprobs(model, tok, "Answer:", [" " + c for c in choices])]
    return argmax(normalize(scores, normalization, uncond))


def test_evaluate_accuracy_and_interval(lm):
    model, tok = lm
    examples = []
    for i, prompt in enumerate(PROMPTS * 2):
        best = naive_predict(model, tok, prompt, CHOICES, "mean")
        right = i < 4  # 4 right, 2 wrong on task "a"
        examples.append(
            {"task": "a", "prompt": prompt, "choices": CHOICES, "label": best if right else best ^ 1}
        )
    for prompt in PROMPTS:  # task "b", scored with "sum": all right
        best = naive_predict(model, tok, prompt, CHOICES, "sum")
        examples.append({"task": "b", "prompt": prompt, "choices": CHOICES, "label": best})
    examples.append({"task": "open", "prompt": "open fridge", "choices": [], "label": -1})  # skipped
    results = evaluate_multiple_choice(model, tok, examples, {"b": "sum"})
    assert set(results) == {"a", "b"}
    assert results["a"]["accuracy"] == pytest.approx(4 / 6) and results["a"]["n"] == 6
    assert results["b"]["accuracy"] == 1.0 and results["b"]["n"] == 3
    z = 1.959963984540054
    p, n = 4 / 6, 6
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert results["a"]["ci_low"] == pytest.approx(center - half)
    assert results["a"]["ci_high"] == pytest.approx(center + half)
    assert results["b"]["ci_high"] == 1.0 and 0.4 < results["b"]["ci_low"] < 0.5  # Wilson, 3/3: 0.438


def test_evaluate_unconditional_matches_naive(lm):
    model, tok = lm
    examples = [
        {
            "task": "t",
            "prompt": p,
            "choices": CHOICES,
            "label": naive_predict(model, tok, p, CHOICES, "unconditional"),
        }
        for p in PROMPTS
    ]
    assert evaluate_multiple_choice(model, tok, examples, "unconditional")["t"]["accuracy"] == 1.0


def test_wilson_interval():
    low, high = wilson_interval(50, 100)
    # the expected values to 4 decimals: within half a unit of the last one
    assert low == pytest.approx(0.4038, abs=5e-5) and high == pytest.approx(0.5962, abs=5e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)
