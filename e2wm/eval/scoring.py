"""Multiple-choice scoring by answer log-likelihood, the prompt's KV cache reused for every choice.

A choice is scored as the continuation ``" " + choice`` of the prompt (the corpus completion is the
answer after one space). Tokenization rule: the prompt is tokenized alone (with the tokenizer's special
tokens, e.g. BOS); a continuation's tokens are those of ``prompt + continuation`` after the prompt's
tokens, unless tokenizing the concatenation changes the prompt's tokens (a merge across the boundary),
in which case the continuation is tokenized alone, without special tokens. The naive scorer uses the
same tokens, so both compute the same numbers.

Normalizations: ``"sum"`` (log-likelihood), ``"mean"`` (per token), ``"unconditional"``
(log p(answer | prompt) - log p(answer | "Answer:"), the normaliser context encoded once and each
distinct answer scored once per ``UnconditionalScorer``).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import Cache, PreTrainedModel, PreTrainedTokenizerBase

from e2wm.errors import E2WMError

NORMALIZATIONS = ("sum", "mean", "unconditional")
UNCONDITIONAL_CONTEXT = "Answer:"
Z_95 = 1.959963984540054


@dataclass(frozen=True)
class Prefix:
    """An encoded context: its token ids, its KV cache and the log-probs of the token after it."""

    text: str
    ids: list[int]
    cache: Cache
    next_logprobs: torch.Tensor


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_prefix(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> Prefix:
    """One forward over ``text`` with ``use_cache=True``, keeping only the last position's logits."""
    ids = tokenizer(text)["input_ids"]
    if not ids:
        raise E2WMError(f"context {text!r} has no tokens to condition on")
    model.eval()
    out = model(torch.tensor([ids], device=_device(model)), use_cache=True, logits_to_keep=1)
    return Prefix(text, ids, out.past_key_values, out.logits[0, -1].float().log_softmax(-1))


def continuation_ids(
    tokenizer: PreTrainedTokenizerBase, context: str, context_ids: list[int], continuation: str
) -> list[int]:
    """The continuation's tokens after the context's (see the module docstring for the rule)."""
    full = tokenizer(context + continuation)["input_ids"]
    if len(full) > len(context_ids) and full[: len(context_ids)] == context_ids:
        return full[len(context_ids) :]
    ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if not ids:
        raise E2WMError(f"continuation {continuation!r} has no tokens")
    return ids


@torch.no_grad()
def choice_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    continuations: list[str],
    prefix: Prefix | None = None,
) -> list[tuple[float, int]]:
    """(sum of log p(token | prompt, earlier tokens), token count) of each continuation.

    The prompt is run once (or ``prefix``, its encoding, is reused); the continuations then run as one
    right-padded batch on copies of its KV cache, positions continuing from the prompt length. Padding
    sits after every real token, so causal attention keeps it out of the real scores; it is masked out
    of the sums. The last token of a continuation is only predicted, never fed.
    """
    prefix = prefix or encode_prefix(model, tokenizer, prompt)
    conts = [continuation_ids(tokenizer, prefix.text, prefix.ids, c) for c in continuations]
    device, n, width = _device(model), len(conts), max(map(len, conts))
    ids = torch.zeros(n, width, dtype=torch.long, device=device)
    for i, c in enumerate(conts):
        ids[i, : len(c)] = torch.tensor(c)
    logprobs = prefix.next_logprobs.expand(n, 1, -1)
    if width > 1:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(n)
        start = len(prefix.ids)
        positions = torch.arange(start, start + width - 1, device=device).expand(n, -1)
        logits = model(ids[:, :-1], past_key_values=cache, position_ids=positions, use_cache=True).logits
        logprobs = torch.cat([logprobs, logits.float().log_softmax(-1)], dim=1)
    token_logprobs = logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    lengths = torch.tensor([len(c) for c in conts], device=device)
    mask = torch.arange(width, device=device) < lengths.unsqueeze(1)
    sums = (token_logprobs * mask).sum(1).tolist()
    return list(zip(sums, lengths.tolist(), strict=True))


@torch.no_grad()
def naive_choice_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, continuations: list[str]
) -> list[tuple[float, int]]:
    """Same as ``choice_logprobs``, the naive way: one full forward of prompt + continuation per choice."""
    model.eval()
    prompt_ids = tokenizer(prompt)["input_ids"]
    results = []
    for continuation in continuations:
        cont = continuation_ids(tokenizer, prompt, prompt_ids, continuation)
        ids = torch.tensor([prompt_ids + cont], device=_device(model))
        logprobs = model(ids).logits[0, len(prompt_ids) - 1 : -1].float().log_softmax(-1)
        results.append((logprobs.gather(-1, ids[0, len(prompt_ids) :, None]).sum().item(), len(cont)))
    return results


class UnconditionalScorer:
    """log p(" " + answer | "Answer:"): the context encoded once, each distinct answer scored once."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        context: str = UNCONDITIONAL_CONTEXT,
        batch_size: int = 64,
    ):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.prefix = encode_prefix(model, tokenizer, context)
        self.scores: dict[str, float] = {}

    def __call__(self, answers: list[str]) -> list[float]:
        new = list(dict.fromkeys(a for a in answers if a not in self.scores))
        for i in range(0, len(new), self.batch_size):
            batch = new[i : i + self.batch_size]
            conts = [" " + a for a in batch]
            scored = choice_logprobs(self.model, self.tokenizer, self.prefix.text, conts, self.prefix)
            self.scores.update((a, s) for a, (s, _) in zip(batch, scored, strict=True))
        return [self.scores[a] for a in answers]


def normalize(
    scores: list[tuple[float, int]], normalization: str, unconditional: list[float] | None = None
) -> list[float]:
    """Apply a normalization to (sum, token count) pairs; ``unconditional`` holds the normalisers."""
    _check(normalization)
    if normalization == "sum":
        return [s for s, _ in scores]
    if normalization == "mean":
        return [s / n for s, n in scores]
    if unconditional is None:
        raise E2WMError("normalization 'unconditional' needs the unconditional scores")
    return [s - u for (s, _), u in zip(scores, unconditional, strict=True)]


def _check(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise E2WMError(
            f"unknown normalization {normalization!r}: expected one of {', '.join(NORMALIZATIONS)}"
        )


def score_choices(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    choices: list[str],
    normalization: str = "mean",
    unconditional: UnconditionalScorer | None = None,
) -> list[float]:
    """Normalized score of each choice (higher is better); pass ``unconditional`` to reuse its cache."""
    _check(normalization)
    scores = choice_logprobs(model, tokenizer, prompt, [" " + c for c in choices])
    if normalization != "unconditional":
        return normalize(scores, normalization)
    unconditional = unconditional or UnconditionalScorer(model, tokenizer)
    return normalize(scores, normalization, unconditional(choices))


def argmax(scores: list[float]) -> int:
    """Index of the highest score, ties to the lowest index."""
    return max(range(len(scores)), key=scores.__getitem__)


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    choices: list[str],
    normalization: str = "mean",
    unconditional: UnconditionalScorer | None = None,
) -> int:
    """Index of the best choice, ties to the lowest index."""
    return argmax(score_choices(model, tokenizer, prompt, choices, normalization, unconditional))


def wilson_interval(correct: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, center - half), min(1.0, center + half)


def mc_predictions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict],
    normalization: str | dict[str, str] = "mean",
) -> list[int]:
    """The predicted choice index of each example (which must have ``choices``).

    ``normalization`` is one for all tasks, or per task (task -> normalization, others ``"mean"``). Under
    ``"unconditional"`` the normalisers of all distinct answers are scored first, in batches on one cache
    of "Answer:".
    """
    norms = [
        normalization if isinstance(normalization, str) else normalization.get(ex["task"], "mean")
        for ex in examples
    ]
    unconditional = None
    if "unconditional" in norms:  # every distinct answer's normaliser, in batches, up front
        unconditional = UnconditionalScorer(model, tokenizer)
        unconditional(
            [c for ex, n in zip(examples, norms, strict=True) if n == "unconditional" for c in ex["choices"]]
        )
    return [
        predict(model, tokenizer, ex["prompt"], list(ex["choices"]), norm, unconditional)
        for ex, norm in zip(examples, norms, strict=True)
    ]


def evaluate_multiple_choice(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Iterable[dict],
    normalization: str | dict[str, str] = "mean",
) -> dict[str, dict[str, float]]:
    """Accuracy per task: ``{task: {"accuracy", "n", "ci_low", "ci_high"}}`` (95% Wilson interval).

    Examples without choices (open-ended ones) are skipped; see ``mc_predictions`` for ``normalization``.
    """
    examples = [ex for ex in examples if ex["choices"]]
    guesses = mc_predictions(model, tokenizer, examples, normalization)
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    for ex, guess in zip(examples, guesses, strict=True):
        correct[ex["task"]] += guess == ex["label"]
        total[ex["task"]] += 1
    results = {}
    for task, n in total.items():
        low, high = wilson_interval(correct[task], n)
        results[task] = {"accuracy": correct[task] / n, "n": n, "ci_low": low, "ci_high": high}
    return results
