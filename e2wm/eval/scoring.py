"""Multiple-choice scoring by answer log-likelihood, the prompt's KV cache reused for every choice.

A choice is scored as the continuation ``" " + choice`` of the prompt (the corpus completion is the
answer after one space). Tokenization rule: the prompt is tokenized alone (with the tokenizer's special
tokens, e.g. BOS); a continuation's tokens are those of ``prompt + continuation`` after the prompt's
tokens, unless tokenizing the concatenation changes the prompt's tokens (a merge across the boundary),
in which case the continuation is tokenized alone, without special tokens. The naive scorer uses the
same tokens, so both compute the same numbers.

Several items are scored per forward: their prompts packed into one sequence under a block-diagonal
causal mask, then all their choices packed on the prompts' KV cache (``packed_logprobs``).

Normalizations: ``"sum"`` (log-likelihood), ``"mean"`` (per token), ``"unconditional"``
(log p(answer | prompt) - log p(answer | "Answer:"), the normaliser context encoded once and each
distinct answer scored once per ``UnconditionalScorer``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from e2wm.errors import E2WMError

NORMALIZATIONS = ("sum", "mean", "unconditional")
UNCONDITIONAL_CONTEXT = "Answer:"
Z_95 = 1.959963984540054


def _device(model: PreTrainedModel) -> torch.device:
    return next(model.parameters()).device


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


@dataclass
class _Item:
    """One context and its continuations, tokenized."""

    context: list[int]
    continuations: list[list[int]]


def _tokenize(tokenizer: PreTrainedTokenizerBase, context: str, continuations: Sequence[str]) -> _Item:
    ids = tokenizer(context)["input_ids"]
    if not ids:
        raise E2WMError(f"context {context!r} has no tokens to condition on")
    return _Item(ids, [continuation_ids(tokenizer, context, ids, c) for c in continuations])


def _additive(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A ``[1, 1, Q, K]`` additive attention mask: 0 where ``keep``, else the dtype's minimum."""
    return torch.zeros(keep.shape, dtype=dtype).masked_fill(~keep, torch.finfo(dtype).min)[None, None]


@torch.no_grad()
def _score_pack(model: PreTrainedModel, items: list[_Item]) -> list[list[tuple[float, int]]]:
    """Two forwards for several items: their contexts packed into one sequence (each attends causally to
    itself only), then all their continuations packed on that KV cache (each attends to its own context's
    cache entries and causally to itself). The last token of a continuation is only predicted, never fed."""
    device, dtype = _device(model), model.dtype
    ctx = [(i, j, t) for i, item in enumerate(items) for j, t in enumerate(item.context)]
    ctx_item = torch.tensor([i for i, _, _ in ctx])
    ctx_pos = torch.tensor([j for _, j, _ in ctx])
    ends = torch.tensor([len(item.context) for item in items]).cumsum(0) - 1
    keep = (ctx_item[:, None] == ctx_item[None]) & (ctx_pos[None] <= ctx_pos[:, None])
    model.eval()
    out = model(
        torch.tensor([[t for _, _, t in ctx]], device=device),
        attention_mask=_additive(keep, dtype).to(device),
        position_ids=ctx_pos[None].to(device),
        use_cache=True,
        logits_to_keep=ends.to(device),
    )
    first = out.logits[0].float().log_softmax(-1)  # per item: log p(first continuation token | context)
    scores = [[first[i, cont[0]].item() for cont in item.continuations] for i, item in enumerate(items)]
    fed = [  # (item, choice, position, token) of every continuation token but the last
        (i, c, len(item.context) + j, t)
        for i, item in enumerate(items)
        for c, cont in enumerate(item.continuations)
        for j, t in enumerate(cont[:-1])
    ]
    if fed:
        q_item, q_choice, q_pos = (torch.tensor([f[k] for f in fed]) for k in range(3))
        k_item = torch.cat([ctx_item, q_item])
        k_choice = torch.cat([torch.full_like(ctx_item, -1), q_choice])
        k_pos = torch.cat([ctx_pos, q_pos])
        own = (k_choice[None] == q_choice[:, None]) & (k_pos[None] <= q_pos[:, None])
        keep = (q_item[:, None] == k_item[None]) & ((k_choice[None] == -1) | own)
        logits = model(
            torch.tensor([[f[3] for f in fed]], device=device),
            attention_mask=_additive(keep, dtype).to(device),
            position_ids=q_pos[None].to(device),
            cache=out.cache,
        ).logits[0]
        targets = torch.tensor([t for item in items for cont in item.continuations for t in cont[1:]])
        token_logprobs = logits.float().log_softmax(-1).gather(-1, targets[:, None].to(device))[:, 0]
        for (i, c, _, _), value in zip(fed, token_logprobs.tolist(), strict=True):
            scores[i][c] += value
    return [
        [(score, len(cont)) for score, cont in zip(row, item.continuations, strict=True)]
        for row, item in zip(scores, items, strict=True)
    ]


def packed_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, Sequence[str]]],
    max_tokens: int = 2048,
    max_items: int | None = None,
    progress: bool = False,
) -> list[list[tuple[float, int]]]:
    """(sum of log p(token | context, earlier tokens), token count) of each continuation of each
    ``(context, continuations)`` item. Items are packed several to a forward, up to ``max_tokens`` tokens of
    contexts and continuations and ``max_items`` items; each context is encoded once and its KV cache serves
    all its continuations. ``progress`` shows a bar of items scored."""
    tokenized = [_tokenize(tokenizer, context, conts) for context, conts in items]
    packs: list[list[_Item]] = []
    size = 0
    for item in tokenized:
        tokens = len(item.context) + sum(len(c) - 1 for c in item.continuations)
        full = packs and (size + tokens > max_tokens or len(packs[-1]) == max_items)
        if not packs or full:
            packs.append([])
            size = 0
        packs[-1].append(item)
        size += tokens
    results: list[list[tuple[float, int]]] = []
    with tqdm(total=len(tokenized), unit="item", disable=not progress, leave=False) as bar:
        for pack in packs:
            results += _score_pack(model, pack)
            bar.update(len(pack))
    return results


def choice_logprobs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, continuations: list[str]
) -> list[tuple[float, int]]:
    """(log-likelihood, token count) of each continuation of one prompt (see ``packed_logprobs``)."""
    return packed_logprobs(model, tokenizer, [(prompt, continuations)])[0]


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
    """log p(separator + answer | context), by default of " " + answer after "Answer:": the context encoded
    once, each distinct answer scored once."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        context: str = UNCONDITIONAL_CONTEXT,
        batch_size: int = 64,
        separator: str = " ",
    ):
        self.model, self.tokenizer, self.context, self.batch_size = model, tokenizer, context, batch_size
        self.separator = separator
        self.scores: dict[str, float] = {}

    def __call__(self, answers: list[str]) -> list[float]:
        new = list(dict.fromkeys(a for a in answers if a not in self.scores))
        for i in range(0, len(new), self.batch_size):
            batch = new[i : i + self.batch_size]
            conts = [self.separator + a for a in batch]
            scored = choice_logprobs(self.model, self.tokenizer, self.context, conts)
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
    batch_size: int | None = None,
    progress: bool = False,
    separator: str = " ",
    unconditional_context: str = UNCONDITIONAL_CONTEXT,
) -> list[int]:
    """The predicted choice index of each example (which must have ``choices``).

    ``normalization`` is one for all tasks, or per task (task -> normalization, others ``"mean"``). Under
    ``"unconditional"`` the normalisers of all distinct answers are scored first, in batches on one cache
    of ``unconditional_context``. Examples are packed up to ``batch_size`` to a forward (``packed_logprobs``).
    A choice continues its prompt as ``separator + choice`` (chat-rendered prompts: no space).
    """
    norms = [
        normalization if isinstance(normalization, str) else normalization.get(ex["task"], "mean")
        for ex in examples
    ]
    unconditional = None
    if "unconditional" in norms:  # every distinct answer's normaliser, in batches, up front
        unconditional = UnconditionalScorer(model, tokenizer, unconditional_context, separator=separator)
        unconditional(
            [c for ex, n in zip(examples, norms, strict=True) if n == "unconditional" for c in ex["choices"]]
        )
    scores = packed_logprobs(
        model,
        tokenizer,
        [(ex["prompt"], [separator + c for c in ex["choices"]]) for ex in examples],
        max_items=batch_size,
        progress=progress,
    )
    return [
        argmax(
            normalize(
                sc,
                norm,
                unconditional(list(ex["choices"])) if unconditional and norm == "unconditional" else None,
            )
        )
        for ex, norm, sc in zip(examples, norms, scores, strict=True)
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
