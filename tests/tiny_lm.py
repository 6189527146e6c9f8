"""A tiny random causal LM with its tokenizer, and a tiny prompt-completion corpus, saved for fast tests."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

WORDS = (
    "walk",
    "to",
    "the",
    "kitchen",
    "grab",
    "mug",
    "put",
    "in",
    "fridge",
    "open",
    "close",
    "switch",
    "on",
    "tv",
    "what",
    "activity",
    "is",
    "this",
    "plan",
    "for",
    "answer",
    "drink",
    "watch",
    "read",
    "book",
    "sit",
    "chair",
    "yes",
    "no",
    "how",
    "many",
    "items",
    "are",
    "on",
    "table",
    "which",
)


def save_tiny_lm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with a word-level tokenizer, saved as safetensors to ``folder``."""
    vocab = {
        w: i for i, w in enumerate(["<pad>", "<s>", "</s>", "<unk>", *dict.fromkeys(WORDS), ".", ":", "?"])
    }
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(vocab),
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_corpus(folder: Path, n: int = 16) -> Path:
    """Prompt-completion examples of two tasks, in e2wm's corpus format (train and validation)."""
    rows = {"prompt": [], "completion": [], "task": [], "weight": []}
    for i in range(n):
        if i % 2:
            rows["prompt"].append(
                f"walk to the kitchen grab mug {'open fridge ' * (i % 3)}what activity is this ?"
            )
            rows["completion"].append(" drink")
            rows["task"].append("activity_recognition")
        else:
            rows["prompt"].append(f"how many items are on table {'put mug ' * (i % 4)}?")
            rows["completion"].append(" no items")
            rows["task"].append("counting")
        rows["weight"].append(1.0)
    ds = datasets.Dataset.from_dict(rows)
    datasets.DatasetDict({"train": ds, "validation": ds.select(range(4))}).save_to_disk(str(folder))
    return folder
