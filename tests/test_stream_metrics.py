"""Streaming narration metrics on hand-made cases: temporal F, ROUGE-L and event-slot accuracy."""

from __future__ import annotations

import itertools
import random

import pytest

from e2wm.errors import E2WMError
from e2wm.multimodal.metrics import (
    event_slot_accuracy,
    match_events,
    rouge_l,
    score_stream,
    temporal_f_score,
)
from e2wm.multimodal.video_io import Caption


def test_exact_times_match_everything() -> None:
    events = [(0.5, "walked to the kitchen"), (1.0, "grabbed the mug"), (3.25, "the fridge is open now")]
    score = temporal_f_score(events, events)
    assert (score.precision, score.recall, score.f1) == (1.0, 1.0, 1.0)
    assert score.pairs == [(0, 0, 0), (0, 1, 1), (0, 2, 2)]


def test_tolerance_is_inclusive_and_a_hard_limit() -> None:
    refs = [(2.0, "grabbed the mug")]
    inside = temporal_f_score([(2.75, "grabbed the mug")], refs, tolerance=0.75)
    assert inside.matched == 1 and inside.f1 == 1.0
    outside = temporal_f_score([(2.875, "grabbed the mug")], refs, tolerance=0.75)
    assert (outside.matched, outside.precision, outside.recall, outside.f1) == (0, 0.0, 0.0, 0.0)


def test_matching_is_maximum_not_greedy() -> None:
    # The closest pair (1.5, 1.4) would leave the first prediction nothing; the best matching pairs both.
    score = temporal_f_score([(1.0, "a"), (1.5, "b")], [(1.4, "a"), (2.4, "b")], tolerance=1.0)
    assert score.matched == 2 and score.pairs == [(0, 0, 0), (0, 1, 1)]


def _most_pairs(p: list[float], r: list[float], tolerance: float) -> int:
    """The largest one-to-one matching within ``tolerance``, by trying every assignment."""
    short, long = (p, r) if len(p) <= len(r) else (r, p)
    return max(
        (
            sum(abs(short[i] - long[j]) <= tolerance for i, j in enumerate(cols))
            for cols in itertools.permutations(range(len(long)), len(short))
        ),
        default=0,
    )


def test_pairs_never_cross_and_inputs_may_be_unsorted() -> None:
    preds = [(3.0, "c"), (1.0, "a"), (2.0, "b")]
    refs = [(2.1, "b"), (0.9, "a"), (3.2, "c")]
    score = temporal_f_score(preds, refs, tolerance=5.0)  # every pair is within tolerance
    assert score.matched == 3
    assert sorted(score.pairs) == [(0, 0, 2), (0, 1, 1), (0, 2, 0)]  # time order, by the given indices
    rng = random.Random(0)
    for _ in range(200):
        p = [rng.choice([0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0]) for _ in range(rng.randint(0, 5))]
        r = [rng.choice([0.0, 0.5, 1.25, 2.0, 2.5, 3.0]) for _ in range(rng.randint(0, 5))]
        pairs = match_events(p, r, 0.5)
        in_time = sorted(pairs, key=lambda ij: (p[ij[0]], r[ij[1]]))
        for (i1, j1), (i2, j2) in itertools.pairwise(in_time):
            assert p[i1] <= p[i2] and r[j1] <= r[j2]
        assert all(abs(p[i] - r[j]) <= 0.5 for i, j in pairs)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        # No one-to-one matching, in any order, has more pairs.
        assert len(pairs) == _most_pairs(p, r, 0.5)


def test_ties_prefer_the_smaller_shift_then_the_later_reference() -> None:
    assert match_events([1.0], [0.5, 1.25], 1.0) == [(0, 1)]
    assert match_events([1.0], [0.75, 1.5], 1.0) == [(0, 0)]
    assert match_events([1.0], [0.75, 1.25], 1.0) == [(0, 1)]


def test_duplicates_match_one_to_one() -> None:
    score = temporal_f_score([(1.0, "a"), (1.0, "a"), (1.125, "a")], [(1.0, "a")])
    assert (score.matched, score.predicted, score.reference) == (1, 3, 1)
    assert score.precision == pytest.approx(1 / 3) and score.recall == 1.0
    assert score.f1 == pytest.approx(0.5)


def test_empty_sides() -> None:
    silent = temporal_f_score([], [(1.0, "grabbed the mug")])
    assert (silent.precision, silent.recall, silent.f1) == (1.0, 0.0, 0.0)
    chatty = temporal_f_score([(1.0, "grabbed the mug")], [])
    assert (chatty.precision, chatty.recall, chatty.f1) == (0.0, 1.0, 0.0)
    quiet = temporal_f_score([], [])
    assert (quiet.precision, quiet.recall, quiet.f1) == (1.0, 1.0, 1.0)


def test_episodes_are_micro_averaged_and_kept_apart() -> None:
    preds = [[(1.0, "a"), (2.0, "b")], [(5.0, "c")]]
    refs = [[(1.0, "a")], [(2.0, "b"), (5.25, "c"), (9.0, "d")]]
    score = temporal_f_score(preds, refs, tolerance=0.5)
    assert score.pairs == [(0, 0, 0), (1, 0, 1)]  # (2.0, "b") is in the other episode: no match
    assert score.precision == pytest.approx(2 / 3) and score.recall == pytest.approx(2 / 4)
    with pytest.raises(E2WMError, match="episode"):
        temporal_f_score(preds, refs[:1])


def test_rouge_l_on_hand_made_pairs() -> None:
    assert rouge_l([("grabbed the mug", "grabbed the mug")]) == pytest.approx(1.0)
    assert rouge_l([("walked away", "grabbed the mug")]) == 0.0
    assert rouge_l([("grabbed the cup", "grabbed the mug")]) == pytest.approx(2 / 3)
    assert rouge_l([("grabbed the mug", "grabbed the mug"), ("x", "y")]) == pytest.approx(0.5)
    assert rouge_l([]) == 0.0


def test_slot_accuracy_parses_predictions_with_the_templates() -> None:
    mug = {"verb": "grab", "object": "mug"}
    assert event_slot_accuracy([("grabbed the mug", mug)]) == 1.0
    assert event_slot_accuracy([("grabbed the cup", mug)]) == 0.5
    assert event_slot_accuracy([("picked up a mug", mug)]) == 0.0  # fits no template
    fridge = {"verb": "open", "object": "fridge", "state": "open"}
    assert event_slot_accuracy([("The fridge is open now.", fridge)]) == 1.0
    assert event_slot_accuracy([("the fridge is closed now", fridge)]) == pytest.approx(1 / 3)
    walk = {"verb": "walk", "object": "kitchen", "actor": "person 2"}
    assert event_slot_accuracy([("person 1 walked to the kitchen", walk)]) == pytest.approx(2 / 3)
    assert event_slot_accuracy([("grabbed the mug", mug), ("the fridge is closed now", fridge)]) == 0.6
    pairs = [
        ("grabbed the cup", mug),
        ("the fridge is closed now", fridge),
        ("person 1 walked to the kitchen", walk),
    ]
    assert event_slot_accuracy(pairs, "verb") == pytest.approx(2 / 3)  # closed is the verb close, not open
    assert event_slot_accuracy(pairs, "object") == pytest.approx(2 / 3)  # the cup is not the mug
    assert event_slot_accuracy(pairs, "actor") == 0.0 and event_slot_accuracy(pairs, "place") == 0.0


def test_score_stream_combines_the_three() -> None:
    refs = [
        Caption(1.0, "grabbed the mug", {"verb": "grab", "object": "mug"}),
        Caption(2.0, "the fridge is open now", {"verb": "open", "object": "fridge", "state": "open"}),
        Caption(6.0, "walked to the kitchen", {"verb": "walk", "object": "kitchen"}),
    ]
    preds = [(1.25, "grabbed the cup"), (2.5, "the fridge is open now"), (4.0, "stood up")]
    result = score_stream(preds, refs, tolerance=1.0)
    assert (result["matched"], result["predicted"], result["reference"]) == (2, 3, 3)
    assert result["precision"] == pytest.approx(2 / 3) and result["f1"] == pytest.approx(2 / 3)
    assert result["rouge_l"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["slot_accuracy"] == pytest.approx(4 / 5)
    # References given as (time, text) get their slots from their text.
    plain = score_stream(preds, [(c.time, c.text) for c in refs], tolerance=1.0)
    assert plain["slot_accuracy"] == result["slot_accuracy"]
