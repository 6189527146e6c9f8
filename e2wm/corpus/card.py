"""The dataset card (README.md) of a built corpus: tasks, true sizes, splits, provenance, licences."""

from __future__ import annotations

from collections import Counter
from typing import Any

import datasets
import yaml

from e2wm.corpus.tasks import SPECS, TRACKING_TASKS

_FORMAT_TEXT = {
    "standard": "in TRL's standard prompt-completion format (`--format standard`: text; the completion is "
    "the answer after a space, so completion-only loss works as is)",
    "conversational": "in TRL's conversational prompt-completion format (`--format conversational`: lists "
    "of chat messages, the question a `user` turn and the answer an `assistant` turn, rendered by the "
    "trainer with the model's chat template; evaluate with `e2wm eval`, which applies the template)",
}
_KSHOT_TEXT = {"standard": "", "conversational": ", as earlier user and assistant turns"}


def dataset_card(corpus: datasets.DatasetDict, config: Any, agents: dict[str, int], dropped: int) -> str:
    """README.md with Hub metadata and a table of the true per-task, per-split sizes."""
    splits = list(corpus)
    counts = {split: Counter(corpus[split]["task"]) for split in splits}
    tasks = sorted(set().union(*counts.values()))
    metadata = {
        "language": ["en"],
        "license": "mit",
        "pretty_name": "e2wm embodied QA corpus",
        "task_categories": ["question-answering", "text-generation"],
        "tags": ["embodied", "virtualhome", "world-model", "e2wm"],
        "size_categories": ["1K<n<10K" if sum(map(len, corpus.values())) < 10_000 else "10K<n<100K"],
        "configs": [
            {
                "config_name": "all",
                "default": True,
                "data_files": [{"split": s, "path": f"data/*/{s}-*.parquet"} for s in splits],
            },
            *(
                {
                    "config_name": t,
                    "data_files": [
                        {"split": s, "path": f"data/{t}/{s}-*.parquet"} for s in splits if counts[s][t]
                    ],
                }
                for t in tasks
            ),
        ],
    }
    header = "| task | what it asks | " + " | ".join(splits) + " |\n|---|---|" + "---|" * len(splits)
    rows = [
        f"| {t} | {SPECS[t].description if t in SPECS else ''} | "
        + " | ".join(str(counts[s][t]) for s in splits)
        + " |"
        for t in tasks
    ]
    totals = "| **total** | | " + " | ".join(str(len(corpus[s])) for s in splits) + " |"
    weights = ", ".join(f"{t}={w}" for t, w in sorted(config.weights.items())) or "1.0 for every task"
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False).strip()}
---

# e2wm embodied QA corpus

Question-answer examples about a household, made from an agent's experience in the VirtualHome
simulator by e2wm: replayed RobotHow programs, goal-directed MCTS plans
and random multi-person exploration. Every answer is computed from simulator state; narration is
templated English chosen by seed.

## Tasks and sizes

{header}
{chr(10).join(rows)}
{totals}

Tracking tasks ({", ".join(TRACKING_TASKS)}) carry `length`, the number of episode steps the question
covers, so accuracy can be reported by horizon. Where an episode allows several answers (counting,
"is X open?", "what is P holding?", "can P pick X up?"), the question is drawn so that each is equally
likely: drawn plainly, four in five counts were 1 and four in five "can P pick X up?" answers were "no".
Counting is asked after the whole story; in `train` each episode is also asked after a shorter prefix of
it (a curriculum: a few puts and pick-ups are easier to follow than thirty steps).

## Format

Parquet files in the Hub's layout, `data/TASK/SPLIT-00000-of-00001.parquet`: `load_dataset(REPO_OR_DIR)`
gives every task (the `all` config), `load_dataset(REPO_OR_DIR, "counting")` one task. Each example has
`prompt` and `completion`, {_FORMAT_TEXT[config.format]}, `task`, `split_group` (`seen` or `unseen` activity),
`choices` and `label` for multiple choice (`label` -1 otherwise), `weight` (the task's loss weight:
{weights}), `episode_id`, `length`, `meta` (JSON: the facts the answer came from) and `prompt_kshot` (the
prompt after {config.shots} solved train examples of the same task{_KSHOT_TEXT[config.format]}).

## Splits

`train`, `validation`, `test_seen`, `test_unseen`. Programs are divided by base program id, so variants of
one program never straddle splits; whole activities are held out for `test_unseen`. Exploration episodes
take the split of the program whose scene graph they start from.

Every example is worded by a wording family drawn per example by seed: the layout (question and answer
labels, how options are listed), the question's phrasing, the narration style (present, numbered or
past tense) and the answer form (counts as digits or words, with or without the items; plans as
sentences or numbered steps). Families are divided by a fixed rule (listed in `e2wm.corpus.wording`)
into *train* families, used by `train`, `validation`, `test_seen` and `test_unseen`, and *held-out*
families, used only by `test_seen_transfer` and `test_unseen_transfer`: the same held-out episodes asked
in wordings and layouts never trained on, zero-shot (`prompt`) or after {config.shots} solved examples
in the same held-out layout (`prompt_kshot`). {config.train_kshot_share:.0%} of the train examples of the
short-prompt tasks are prompted few-shot, and {config.train_kshot_tracking_share:.0%} of those of the
tracking tasks after one solved example. {dropped} train/validation examples
whose prompt equals a test prompt, or whose plan is a test plan, were dropped.

## How it was made

`e2wm build --rollouts {config.rollouts} --seed {config.seed} --format {config.format} --tasks \
{" ".join(config.tasks)}` from
{sum(agents.values())} episodes ({", ".join(f"{n} {a}" for a, n in agents.items())}) of scene
TrimmedTestScene1.

## Licences of sources

Scene graphs, programs and simulator semantics come from VirtualHome (MIT, per its repository) as shipped
by the `virtualhome-eval` package (MIT). The corpus is released under MIT.
"""
