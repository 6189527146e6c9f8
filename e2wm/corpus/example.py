"""The example format every task emits, and helpers the task builders share.

An example has a ``prompt`` and a ``completion`` (TRL's prompt-completion format: the completion is
the answer with a leading space), the ``task``, the ``split_group`` (seen / unseen activity), and for
multiple choice the ``choices`` (plain strings) and the ``label`` (index of the answer; -1 otherwise).
``length`` is the number of episode steps the example covers; ``meta`` holds, as JSON, the facts the
answer was computed from, so tests can recompute answers from the rollouts, and the example's wording
(``e2wm.corpus.wording``); a multiple-choice example also keeps its ``stem`` (the prompt without options
and answer label) and ``answer_label``, from which the eval builds the other multiple-choice forms.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording

T = TypeVar("T")


def example(
    task: str,
    trace: Trace,
    wording: Wording,
    context: str,
    question: str,
    answer: str,
    *,
    choices: list[str] | None = None,
    length: int | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One example: ``context`` and ``question`` laid out by ``wording``, then the answer."""
    split = trace.episode["split"]
    meta = {
        **(meta or {}),
        "wording": {
            "family": wording.family,
            "layout": wording.layout.name,
            "narration": wording.narration,
            "answer_form": wording.answer_form,
        },
    }
    if choices:
        meta.update(stem=wording.stem(context, question), answer_label=wording.layout.answer)
    return {
        "task": task,
        "prompt": wording.ask(context, question, choices),
        "completion": " " + answer,
        "choices": choices or [],
        "label": choices.index(answer) if choices else -1,
        "split": split,
        "split_group": "unseen" if split == "test_unseen" else "seen",
        "episode_id": trace.episode["episode_id"],
        "length": len(trace.steps) if length is None else length,
        "meta": json.dumps(meta, sort_keys=True),
    }


def multiple_choice(answer: str, distractors: list[str], rng: random.Random) -> list[str]:
    """The answer among the distractors, in a random order."""
    choices = [answer, *distractors]
    rng.shuffle(choices)
    return choices


def balanced_choice(rng: random.Random, options: Sequence[T], answer_of: Callable[[T], Hashable]) -> T:
    """One of ``options``, drawn so that each answer they lead to is equally likely, then uniformly
    within it. Drawn plainly, most questions share one answer (four in five "can P pick X up?" were
    "no", four in five counts were 1), so a model scores by that prior instead of reading the story."""
    by_answer: dict[Hashable, list[T]] = defaultdict(list)
    for option in options:
        by_answer[answer_of(option)].append(option)
    answer = rng.choice(sorted(by_answer, key=repr))  # sorted: seeded draws stay reproducible
    return rng.choice(by_answer[answer])


def plan_text(trace: Trace, form: str = "sentences") -> str:
    """The episode's successful steps as a plain-English plan: sentences, or numbered steps on one line."""
    steps = [s["action_text"] for s in trace.steps if s["success"]]
    if form == "numbered":
        return " ".join(f"{i}. {step}" for i, step in enumerate(steps, 1))
    return " ".join(steps)


def first_pickups(trace: Trace) -> dict[int, int]:
    """Objects someone picked up during the episode -> the step of the first pick-up, in that order."""
    first: dict[int, int] = {}
    for step in trace.steps:
        if step["success"] and step["verb"] == "GRAB":
            first.setdefault(step["object_ids"][0], step["index"])
    return first


def moved_objects(trace: Trace) -> list[int]:
    """Objects someone picked up during the episode, in order of first pick-up."""
    return list(first_pickups(trace))


def join_names(names: list[str]) -> str:
    """``the mug``, ``the mug and the cup``, ``the mug, the cup and the plate``; ``nothing`` if empty."""
    items = [f"the {n}" for n in names]
    if not items:
        return "nothing"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
