"""The examples an eval scores: the corpus's test splits, checked, their fingerprint, and the seeded
sample of each task, prompted zero- or few-shot."""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from e2wm.corpus.build import TRANSFER_SPLITS
from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError
from e2wm.eval.config import (
    KSHOT_SUFFIX,
    EvalConfig,
)

COLUMNS = ("task", "prompt", "prompt_kshot", "completion", "choices", "label", "episode_id", "length", "meta")


def load_test_splits(config: EvalConfig) -> tuple[dict[str, Any], Any]:
    """The corpus's evaluated test splits (``datasets.Dataset`` by split), checked, and its train split
    (None without one: the constant-answer baseline is chosen on it)."""
    import datasets

    datasets.disable_progress_bars()
    corpus = open_corpus(config.corpus)
    missing = [s for s in config.splits if s not in corpus]
    if missing:
        hint = "; rebuild it with `e2wm build`" if set(missing) & set(TRANSFER_SPLITS) else ""
        raise E2WMError(
            f"corpus {config.corpus} has no split(s) {', '.join(missing)} (it has {', '.join(corpus)}){hint}"
        )
    for split in config.splits:
        lacking = sorted(set(COLUMNS) - set(corpus[split].column_names))
        if lacking:
            raise E2WMError(f"corpus {config.corpus}: split {split} lacks column(s) {', '.join(lacking)}")
    conversational = isinstance(corpus[config.splits[0]].features["prompt"], datasets.List)
    if conversational and config.backend != "e2wm":
        raise E2WMError(
            f"corpus {config.corpus} is conversational: it is scored with the chat template, which the "
            f"{config.backend} backend does not apply; use --backend e2wm"
        )
    return {split: corpus[split] for split in config.splits}, corpus.get("train")


def corpus_fingerprint(splits: dict[str, Any]) -> str:
    """sha256 of the evaluated splits' rows (canonical JSON, in order), split names included."""
    digest = hashlib.sha256()
    for split, ds in sorted(splits.items()):
        digest.update(f"split:{split}\n".encode())
        for batch in ds.iter(batch_size=256):
            for row in zip(*(batch[c] for c in sorted(batch)), strict=True):
                digest.update(json.dumps(dict(zip(sorted(batch), row, strict=True))).encode() + b"\n")
    return digest.hexdigest()


def sample_examples(splits: dict[str, Any], config: EvalConfig) -> dict[tuple[str, str], list[dict]]:
    """(split, task) -> a seeded sample of at most ``limit`` of its examples, in corpus order."""
    samples = {}
    tasks = config.selected_tasks()
    for split, ds in splits.items():
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, task in enumerate(ds["task"]):
            by_task[task].append(i)
        for task in tasks:
            indices = by_task.get(task, [])
            if config.limit is not None and len(indices) > config.limit:
                rng = random.Random(f"{config.seed}:{split}:{task}")
                indices = sorted(rng.sample(indices, config.limit))
            if indices:
                samples[(split, task)] = [ds[i] for i in indices]
    if not samples:
        raise E2WMError(
            f"corpus {config.corpus} has no examples of {', '.join(tasks)} in {', '.join(config.splits)}"
        )
    return samples


def prompted(
    samples: dict[tuple[str, str], list[dict]], config: EvalConfig
) -> dict[tuple[str, str], list[dict]]:
    """(reported split, task) -> examples whose ``demos`` (solved examples, or "") go before ``prompt``:
    every sample as configured (``kshot``), and the transfer splits few-shot too (``transfer_kshot``).

    An example of a conversational corpus comes out with ``prompt`` its question (the last user turn's
    text), ``completion`` its answer and ``demos`` the turns before the question (a list, ``[]`` zero-shot),
    which ``e2wm.eval.chat`` renders with the chat template."""

    def with_demos(ex: dict, kshot: bool) -> dict:
        if isinstance(ex["prompt"], list):
            turns = ex["prompt_kshot"] if kshot else ex["prompt"]
            return {
                **ex,
                "prompt": turns[-1]["content"],
                "completion": ex["completion"][-1]["content"],
                "demos": turns[:-1],
            }
        demos = ex["prompt_kshot"][: -len(ex["prompt"])] if kshot else ""
        return {**ex, "demos": demos}

    out = {}
    for (split, task), exs in samples.items():
        out[(split, task)] = [with_demos(ex, config.kshot) for ex in exs]
        if config.transfer_kshot and not config.kshot and split in TRANSFER_SPLITS:
            out[(split + KSHOT_SUFFIX, task)] = [with_demos(ex, True) for ex in exs]
    return out


def plan_episodes(examples: Sequence[dict], corpus: str) -> list[dict[str, Any]]:
    """The episode record each plan_generation example carries in its ``meta`` (for ``check_plan``)."""
    episodes = []
    for ex in examples:
        episode = json.loads(ex["meta"]).get("episode")
        if episode is None:
            raise E2WMError(
                f"corpus {corpus}: plan_generation examples carry no episode to check plans against "
                "(built before plan checks); rebuild it with `e2wm build`"
            )
        episodes.append(episode)
    return episodes
