"""The constant-answer baseline: what a model scores that learned which answers are common and reads
nothing of the question.

Per task, one answer is given to every question. It is chosen on the train split: of the task's
``CANDIDATES`` most common train answers, the one with the best mean score over the train examples under
the task's own metric (so for "can P pick up X?", scored on the leading yes / no, a "no, ..." answer wins
even where "yes" is the most common single string). Its score on each evaluated sample is reported beside
the chance level: a gain that does not beat it is a learned answer prior, not knowledge of the episode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from e2wm.eval.metrics import SCORERS, exact_match

CANDIDATES = 20  # the most common train answers tried per task


def _answer(completion: str | list[dict[str, str]]) -> str:
    """The answer text of a standard (text) or conversational (messages) completion."""
    return (completion[-1]["content"] if isinstance(completion, list) else completion).strip()


def _score(task: str, answer: str, references: Sequence[str]) -> float:
    score = SCORERS.get(task, exact_match)  # multiple choice: the chosen text must be the answer's
    return sum(score(answer, r) for r in references) / len(references)


def best_constant(task: str, answers: Sequence[str]) -> str:
    """The one of the ``CANDIDATES`` most common ``answers`` that scores best on all of them (the more
    common one on a tie)."""
    candidates = [a for a, _ in Counter(answers).most_common(CANDIDATES)]
    return max(candidates, key=lambda c: _score(task, c, answers))


def constant_answers(train: Any, tasks: Sequence[str]) -> dict[str, str]:
    """Per task of ``tasks`` with examples in the ``train`` split (a ``datasets.Dataset``; None: no train
    split, no constants), its best constant answer."""
    if train is None:
        return {}
    answers: dict[str, list[str]] = {task: [] for task in tasks}
    for task, completion in zip(train["task"], train["completion"], strict=True):
        if task in answers:
            answers[task].append(_answer(completion))
    return {task: best_constant(task, found) for task, found in answers.items() if found}


def constant_scores(
    samples: dict[tuple[str, str], list[dict[str, Any]]], constants: dict[str, str]
) -> dict[tuple[str, str], float]:
    """(split, task) -> the mean score of the task's constant answer on that sample."""
    return {
        (split, task): _score(task, constants[task], [_answer(ex["completion"]) for ex in exs])
        for (split, task), exs in samples.items()
        if task in constants
    }
