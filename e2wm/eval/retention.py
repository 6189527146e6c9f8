"""General-text retention: perplexity on held-out prose, to see what fine-tuning cost the base model.

The prose is ``e2wm.training.general_text``'s "retention" part of one source: "pydoc" (Python reference prose,
the default) or "news" (news articles), disjoint from the "fisher" part EWC and replay use.

Each passage is tokenized alone (with the tokenizer's special tokens) and cut to ``max_length`` tokens;
every token after the first is predicted from those before it. Perplexity is token-weighted:
``exp(sum of token NLLs / number of predicted tokens)`` over all passages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from e2wm.errors import E2WMError
from e2wm.training import general_text


class Perplexity(NamedTuple):
    perplexity: float
    tokens: int  # predicted tokens the perplexity averages over


@torch.no_grad()
def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    passages: Sequence[str],
    max_length: int = 512,
    batch_size: int = 4,
    progress: bool = False,
) -> Perplexity:
    """Token-weighted perplexity of ``passages`` (right-padded batches, padding masked out); ``progress``
    shows a bar of passages read."""
    encoded = [ids[:max_length] for ids in tokenizer(list(passages))["input_ids"]]
    encoded = [ids for ids in encoded if len(ids) > 1]
    if not encoded:
        raise E2WMError("no passage has two or more tokens to compute a perplexity on")
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in tqdm(range(0, len(encoded), batch_size), unit="batch", disable=not progress, leave=False):
        batch = encoded[start : start + batch_size]
        width = max(map(len, batch))
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, row in enumerate(batch):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        keep = mask[:, 1:].bool()
        total += nll[keep].sum().item()
        count += int(keep.sum())
    return Perplexity(math.exp(total / count), count)


def retention_perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    max_passages: int = 24,
    max_length: int = 512,
    source: str = "pydoc",
    progress: bool = False,
) -> Perplexity:
    """Perplexity on held-out ``e2wm.training.general_text`` ("retention" part of ``source``, "pydoc" or
    "news"): all its passages, or ``max_passages`` of them evenly spaced through its fixed order."""
    passages = general_text.passages("retention", source)
    if len(passages) > max_passages:
        passages = [passages[i * len(passages) // max_passages] for i in range(max_passages)]
    return perplexity(model, tokenizer, passages, max_length, progress=progress)
