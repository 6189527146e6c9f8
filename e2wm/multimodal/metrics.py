"""Streaming narration metrics: when the model speaks (temporal F), what it says (ROUGE-L), and which event
facts it states right (slot accuracy, read back with the renderer's caption templates).

Predictions and references are, per episode, lists of events: ``(time, text)`` pairs, ``(time, text,
slots)`` triples, ``{"time", "text", "slots"}`` dicts or ``Caption`` objects; a list of such lists is several
episodes. Counts are micro-averaged over episodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rouge_score import rouge_scorer

from e2wm.errors import E2WMError
from e2wm.multimodal.render import parse_caption
from e2wm.multimodal.video_io import Caption


@dataclass
class TemporalScore:
    """Temporal precision/recall/F1 of utterances, and the matched pairs.

    ``pairs`` holds (episode, prediction index, reference index), indices into the lists as given.
    With no predictions precision is 1, with no references recall is 1 (so silence on a silent clip
    scores 1, and silence on a narrated clip scores F1 0).
    """

    precision: float
    recall: float
    f1: float
    matched: int
    predicted: int
    reference: int
    pairs: list[tuple[int, int, int]] = field(default_factory=list)


def _is_event(item: Any) -> bool:
    if isinstance(item, Caption | Mapping):
        return True
    return (
        isinstance(item, Sequence)
        and not isinstance(item, str)
        and len(item) in (2, 3)
        and isinstance(item[0], int | float)
        and not isinstance(item[0], bool)
    )


def _event(item: Any, where: str) -> Caption:
    if isinstance(item, Caption):
        return item
    if isinstance(item, Mapping):
        time, text, slots = item.get("time"), item.get("text"), item.get("slots") or {}
    else:
        time, text, slots = item[0], item[1], item[2] if len(item) == 3 else {}
    if not isinstance(time, int | float) or not math.isfinite(time) or not isinstance(text, str):
        raise E2WMError(f"{where}: expected (time, text) with a finite time, got {item!r}")
    if not isinstance(slots, Mapping):
        raise E2WMError(f"{where}: slots must be a mapping, got {slots!r}")
    return Caption(float(time), text, dict(slots))


def _episodes(items: Sequence[Any], what: str) -> list[list[Caption]]:
    """One episode's events, or a list of episodes, as a list of episodes."""
    if all(_is_event(item) for item in items):
        return [[_event(item, what) for item in items]]
    episodes = []
    for e, episode in enumerate(items):
        if isinstance(episode, str | Mapping) or not isinstance(episode, Sequence):
            raise E2WMError(f"{what}: expected events (time, text) or a list of episodes of events")
        episodes.append([_event(item, f"{what} episode {e}") for item in episode])
    return episodes


def _paired(predictions: Sequence[Any], references: Sequence[Any]) -> tuple[list[list[Caption]], ...]:
    preds, refs = _episodes(predictions, "predictions"), _episodes(references, "references")
    if len(preds) != len(refs):
        raise E2WMError(f"{len(preds)} episode(s) of predictions but {len(refs)} of references")
    return preds, refs


def match_events(
    predicted: Sequence[float], reference: Sequence[float], tolerance: float
) -> list[tuple[int, int]]:
    """A largest one-to-one, order-preserving matching of predicted to reference times within ``tolerance``.

    Both lists are taken in time order (ties in the order given). A dynamic programme like the longest
    common subsequence finds the most matches; among matchings with as many pairs it keeps the one with
    the smallest total |dt|; remaining ties are broken walking back from the last events: match the current
    prediction and reference if that stays optimal, else leave the prediction (not the reference) unmatched.
    Returns (prediction index, reference index) pairs in time order.
    """
    p = sorted(range(len(predicted)), key=lambda i: predicted[i])
    r = sorted(range(len(reference)), key=lambda j: reference[j])
    n, m = len(p), len(r)
    # best[i][j]: (matches, -total |dt|) using the first i predictions and the first j references.
    best = [[(0, 0.0)] * (m + 1) for _ in range(n + 1)]

    def diagonal(i: int, j: int) -> tuple[int, float] | None:
        dt = abs(predicted[p[i - 1]] - reference[r[j - 1]])
        if dt > tolerance:
            return None
        count, cost = best[i - 1][j - 1]
        return count + 1, cost - dt

    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = [best[i - 1][j], best[i][j - 1]]
            if (match := diagonal(i, j)) is not None:
                options.append(match)
            best[i][j] = max(options)
    pairs = []
    i, j = n, m
    while i and j:
        if diagonal(i, j) == best[i][j]:
            pairs.append((p[i - 1], r[j - 1]))
            i, j = i - 1, j - 1
        elif best[i - 1][j] == best[i][j]:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def temporal_f_score(
    predictions: Sequence[Any], references: Sequence[Any], tolerance: float = 1.0
) -> TemporalScore:
    """Precision, recall and F1 of utterance times: a prediction counts if matched to a reference."""
    if tolerance < 0:
        raise E2WMError(f"tolerance must be non-negative, got {tolerance}")
    preds, refs = _paired(predictions, references)
    pairs = []
    for e, (pred, ref) in enumerate(zip(preds, refs, strict=True)):
        matches = match_events([c.time for c in pred], [c.time for c in ref], tolerance)
        pairs += [(e, i, j) for i, j in matches]
    predicted, reference = sum(map(len, preds)), sum(map(len, refs))
    precision = len(pairs) / predicted if predicted else 1.0
    recall = len(pairs) / reference if reference else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return TemporalScore(precision, recall, f1, len(pairs), predicted, reference, pairs)


@cache
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(pairs: Sequence[tuple[str, str]]) -> float:
    """Mean ROUGE-L F-measure of (prediction, reference) texts (stemmed); 0 with no pairs."""
    if not pairs:
        return 0.0
    return sum(_scorer().score(ref, pred)["rougeL"].fmeasure for pred, ref in pairs) / len(pairs)


def event_slot_accuracy(pairs: Sequence[tuple[str, Mapping[str, str]]], slot: str | None = None) -> float:
    """The fraction of reference slots a prediction states, over (prediction text, reference slots) pairs;
    with ``slot``, of that slot only (e.g. ``"verb"``, ``"object"``).

    Each prediction is parsed back into slots with the renderer's templates (``parse_caption``); one
    that fits no template gets every slot wrong. Slots the reference lacks are not scored. 0 with no slots.
    """
    right = total = 0
    for text, slots in pairs:
        parsed = parse_caption(text) or {}
        scored = [(k, v) for k, v in slots.items() if slot is None or k == slot]
        right += sum(parsed.get(key) == value for key, value in scored)
        total += len(scored)
    return right / total if total else 0.0


def score_stream(
    predictions: Sequence[Any], references: Sequence[Any], tolerance: float = 1.0
) -> dict[str, float]:
    """Temporal P/R/F1 and counts, plus ROUGE-L and slot accuracy (all slots, the verb's, the object's) on
    the matched pairs.

    A reference without slots gets the slots its text parses to (none if it fits no template).
    """
    score = temporal_f_score(predictions, references, tolerance)
    preds, refs = _paired(predictions, references)
    matched = [(preds[e][i], refs[e][j]) for e, i, j in score.pairs]
    slots = [(pred.text, ref.slots or parse_caption(ref.text) or {}) for pred, ref in matched]
    return {
        "precision": score.precision,
        "recall": score.recall,
        "f1": score.f1,
        "matched": score.matched,
        "predicted": score.predicted,
        "reference": score.reference,
        "rouge_l": rouge_l([(pred.text, ref.text) for pred, ref in matched]),
        "slot_accuracy": event_slot_accuracy(slots),
        "verb_accuracy": event_slot_accuracy(slots, "verb"),
        "object_accuracy": event_slot_accuracy(slots, "object"),
    }
