"""Scores of generated answers against the corpus answers, one number in [0, 1] per example.

Answer normalisation (``normalize_answer``): lower case, punctuation replaced by spaces, the articles
"a", "an", "the" dropped, whitespace collapsed. Per task:

* ``plan_generation``, ``activity_recognition``: ROUGE-L F-measure (the ``rouge-score`` package, its
  default tokenizer: lower case, alphanumeric tokens, no stemming); plans are compared without their
  step numbers (``1. Walk to the kitchen. 2. ...`` as ``Walk to the kitchen. ...``), so the score is the
  same whichever way the steps are written;
* ``counting``: exact match of the first count, in digits or words up to twenty (``"2: mug, cup"`` and
  ``"There are two"`` -> 2; no number scores 0);
* ``object_path``: path overlap, the longest common contiguous run of rooms divided by the length of the
  longer path (rooms separated by commas or "and", each normalised);
* ``state_tracking_holding``: exact match of the normalised answers;
* ``state_tracking_grab``: exact match of the leading "yes" / "no" only (the reason after "no, " is not
  scored).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable

from rouge_score import rouge_scorer

from e2wm.corpus.wording import NUMBER_WORDS

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_COUNT = re.compile(r"\b(\d+|" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
_ROOM_SEPARATOR = re.compile(r",|\band\b")


def normalize_answer(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, whitespace collapsed."""
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


@functools.cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"])


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of the prediction against the reference."""
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)


def _count(text: str) -> int | None:
    found = _COUNT.search(text)
    if found is None:
        return None
    word = found[1].lower()
    return NUMBER_WORDS.index(word) if word in NUMBER_WORDS else int(word)


_STEP_NUMBER = re.compile(r"(?:^|(?<=\s))(?:step\s*)?\d+\s*[.):]\s*", re.IGNORECASE)


def plan_rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L of two plans with their step numbers removed."""
    return rouge_l(_STEP_NUMBER.sub("", prediction), _STEP_NUMBER.sub("", reference))


def count_match(prediction: str, reference: str) -> float:
    """1.0 if the first count of both answers (digits or words) is the same, else 0.0."""
    predicted, expected = _count(prediction), _count(reference)
    return float(predicted is not None and predicted == expected)


def rooms(text: str) -> list[str]:
    """``"dining room, the home office"`` -> ``["dining room", "home office"]``."""
    return [room for part in _ROOM_SEPARATOR.split(text.lower()) if (room := normalize_answer(part))]


def path_overlap(prediction: str, reference: str) -> float:
    """Longest common contiguous run of rooms / length of the longer path (0.0 if either is empty)."""
    a, b = rooms(prediction), rooms(reference)
    if not a or not b:
        return 0.0
    best = 0
    previous = [0] * (len(b) + 1)  # previous[j + 1]: length of the common run ending at the last x and b[j]
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
        best = max(best, *current)
        previous = current
    return best / max(len(a), len(b))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def yes_no_match(prediction: str, reference: str) -> float:
    """1.0 if both normalised answers start with the same word, "yes" or "no"; the rest is ignored."""
    predicted, expected = normalize_answer(prediction).split()[:1], normalize_answer(reference).split()[:1]
    return float(bool(predicted) and predicted == expected and predicted[0] in ("yes", "no"))


# generation task -> its scoring function (the metric's name is the task's ``TaskSpec.metric``)
SCORERS: dict[str, Callable[[str, str], float]] = {
    "plan_generation": plan_rouge_l,
    "activity_recognition": rouge_l,
    "counting": count_match,
    "object_path": path_overlap,
    "state_tracking_holding": exact_match,
    "state_tracking_grab": yes_no_match,
}
