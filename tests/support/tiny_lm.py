"""A tiny random causal LM with its tokenizer, a tiny video encoder config, and a tiny prompt-completion
corpus, saved for fast tests."""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

from e2wm.corpus.build import save_parquet

# A video encoder small enough for tests: 32x32 frames, a few channels.
TINY_ENCODER = dict(
    image_size=32, stem_channels=8, stage_channels=[8, 16, 16, 24], head_channels=32, hidden_size=24
)

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


def tiny_llama(vocab_size: int, max_positions: int = 256, seed: int = 0) -> transformers.LlamaForCausalLM:
    """A 2-layer Llama with random weights (seeded); token ids 0, 1, 2 are pad, BOS and EOS."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return transformers.LlamaForCausalLM(config)


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
    tiny_llama(len(vocab), seed=seed).save_pretrained(folder, safe_serialization=True)
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
    save_parquet(datasets.DatasetDict({"train": ds, "validation": ds.select(range(4))}), folder)
    return folder


def save_tiny_choice_corpus(folder: Path, n: int = 4) -> Path:
    """Test splits, ``n`` examples of each multiple-choice task per split (4 choices, some several tokens
    long; yes/no for state_tracking_open) and open-ended counting ones, in e2wm's corpus format."""
    four_choice = (
        "activity_recognition_mc",
        "activity_inference",
        "housework_qa",
        "housework_qa_negation",
        "object_location",
    )
    things = ("mug", "book", "tv", "chair", "mug in fridge", "book on table", "fridge", "table")
    verbs = ("drink", "read", "watch", "sit")
    splits = {}
    for s, split in enumerate(("test_seen", "test_unseen")):
        rows = []
        for i in range(n):
            k = i + s * n
            for t, task in enumerate(four_choice):
                choices = [things[(k + t + j) % len(things)] for j in range(4)]
                question = "what activity is this" if t % 2 else "which is used to"
                rows.append((task, f"{question} {verbs[(k + t) % 4]} ? answer :", choices, (k + t) % 4))
            opened = f"open fridge {'close fridge ' * (k % 2)}{'grab mug ' * (k % 3)}is fridge open ?"
            rows.append(("state_tracking_open", opened, ["yes", "no"], k % 2))
            rows.append(("counting", f"how many items are on table {'put mug ' * (k % 3)}?", [], -1))
        splits[split] = datasets.Dataset.from_list(
            [
                {"task": t, "prompt": p, "choices": c, "label": y, "completion": " " + (c[y] if c else "two")}
                for t, p, c, y in rows
            ]
        )
    save_parquet(datasets.DatasetDict(splits), folder)
    return folder


def save_tiny_eval_corpus(folder: Path, n: int = 3) -> Path:
    """test_seen and test_unseen splits with ``n`` examples of eight tasks (multiple-choice, open-ended,
    tracking with lengths 1..30, and plan_generation carrying a shipped program's episode for plan checks),
    every column ``e2wm eval`` reads, in the tiny vocabulary; the transfer splits ask the same with "q :"
    before each prompt; train and validation are copies of test_seen."""
    import json

    from e2wm.agents.goals import goal_from_graphs
    from e2wm.simulator.virtualhome import resources

    program = resources.program_by_id("file600_1")
    episode = {
        "graph_id": program.id,
        "people_rooms": [],
        "goal": [p.to_record() for p in goal_from_graphs(*program.graphs())],
        "steps": [
            {
                "verb": a.verb,
                "object_names": [t.name for t in a.targets],
                "object_ids": [t.id for t in a.targets],
                "success": True,
                "actor": 0,
            }
            for a in program.actions()
        ],
    }
    story = "walk to the kitchen grab mug open fridge put mug in fridge close fridge"
    tasks = {  # task -> (question, answer, choices)
        "state_tracking_open": ("is the fridge open ? answer :", "no", ["yes", "no"]),
        "housework_qa": ("which items are for drink ? answer :", "mug", ["book", "mug", "chair", "tv"]),
        "counting": ("how many items are in fridge ? answer :", "1: mug", []),
        "object_path": ("which kitchen ? answer :", "kitchen, table", []),
        "state_tracking_holding": ("what is in the fridge ? answer :", "the mug", []),
        "state_tracking_grab": ("grab the book ? answer :", "no, the book is in the fridge", []),
        "activity_recognition": ("what activity is this plan for ? activity :", "drink", []),
        "plan_generation": ("activity : drink . plan :", "walk to kitchen . grab mug .", []),
    }
    splits = {}
    for s, split in enumerate(("test_seen", "test_unseen", "test_seen_transfer", "test_unseen_transfer")):
        rows = []
        for i in range(n):
            for t, (task, (question, answer, choices)) in enumerate(tasks.items()):
                told = " ".join(story.split()[: 2 + (i + s % 2 + t) % 12])
                prompt = f"{'q : ' if s > 1 else ''}{told} {question}"
                meta = {"episode": episode} if task == "plan_generation" else {}
                if choices:  # the stem and answer label the multiple-choice forms are built from
                    meta.update(stem=prompt.removesuffix(" answer :"), answer_label="answer :")
                rows.append(
                    {
                        "task": task,
                        "prompt": prompt,
                        "prompt_kshot": f"{story} {question} {answer} . {prompt}",
                        "completion": " " + answer,
                        "choices": choices,
                        "label": choices.index(answer) if choices else -1,
                        "split_group": "unseen" if split.startswith("test_unseen") else "seen",
                        "weight": 1.0,
                        "episode_id": f"tiny-{split.removesuffix('_transfer')}-{i}",
                        "length": 1 + (7 * i + 5 * t + 11 * (s % 2)) % 30,
                        "meta": json.dumps(meta),
                    }
                )
        splits[split] = datasets.Dataset.from_list(rows)
    splits["train"] = splits["validation"] = splits["test_seen"]
    save_parquet(datasets.DatasetDict(splits), folder)
    return folder
