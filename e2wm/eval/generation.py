"""Greedy answers to open-ended prompts: decoding stops at the first newline after the answer starts.

Prompts run in batches, left-padded so every row's next token sits at the same position. A stopping
rule marks a row done once it has produced a newline after some non-blank text (or EOS): newlines before
the answer starts (``"Plan:\\n1. Walk ..."``) do not end it. The batch ends when every row is done or
after ``max_new_tokens``. The answer is the first non-blank line of the generated text, stripped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)


@dataclass(frozen=True)
class LineTokens:
    """Ids of the tokens whose text holds a newline, and of those whose text is blank."""

    newline: torch.Tensor
    blank: torch.Tensor

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> LineTokens:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        newline = [i for i, text in enumerate(texts) if "\n" in text]
        blank = [i for i, text in enumerate(texts) if not text.strip()]
        return cls(torch.tensor(newline, dtype=torch.long), torch.tensor(blank, dtype=torch.long))


class NewlineStop(StoppingCriteria):
    """Per row: done once its last token holds a newline and one of its generated tokens is not blank
    (``generate`` keeps done rows done). Generation starts at column ``start`` of ``input_ids``."""

    def __init__(self, tokens: LineTokens, start: int):
        self.tokens, self.start = tokens, start

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.Tensor | None, **kwargs
    ) -> torch.BoolTensor:
        generated = input_ids[:, self.start :]
        newline = torch.isin(generated[:, -1], self.tokens.newline.to(input_ids.device))
        text = ~torch.isin(generated, self.tokens.blank.to(input_ids.device))
        return newline & text.any(dim=1)


def first_line(text: str) -> str:
    """The first non-blank line of the text, stripped ("" if there is none)."""
    return next((line.strip() for line in text.split("\n") if line.strip()), "")


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 8,
    tokens: LineTokens | None = None,
    progress: bool = False,
) -> list[str]:
    """The greedy answer to each prompt (its first non-blank generated line), in the order given.

    Prompts are batched by token length to keep padding small; pass ``tokens``
    (``LineTokens.of(tokenizer)``) to reuse them across calls. ``progress`` shows a bar of prompts answered.
    """
    if not prompts:
        return []
    model.eval()
    tokens = tokens or LineTokens.of(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    device = next(model.parameters()).device
    answers: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), unit="answer", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[r, width - len(encoded[i]) :] = 1
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([NewlineStop(tokens, width)]),
        )
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        for i, text in zip(rows, texts, strict=True):
            answers[i] = first_line(text)
        bar.update(len(rows))
    bar.close()
    return answers
