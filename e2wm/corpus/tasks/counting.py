"""Counting: a narrated exploration episode -> how many moved items end up on or in a place, and which.

Train episodes (in their train wording) also ask once after a shorter prefix of the story, a curriculum:
over a whole 30-step story a small model does not learn to tell one item from none (it answers by the
prior), while a few puts and pick-ups are easy to follow. Other splits ask after the whole story only.
"""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import balanced_choice, example, first_pickups
from e2wm.corpus.narration import cast, story
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording, number

PUTS = ("PUTBACK", "PUTIN")


def _is_put(step: dict[str, Any]) -> bool:
    """A step that put something on or in a place."""
    return step["success"] and step["verb"] in PUTS


def count_answer(names: list[str], form: str) -> str:
    """``2: cup, mug`` (digits-items), ``two: cup, mug`` (words-items), ``2`` (digits), ``two`` (words)."""
    count = number(len(names), form)
    if form.endswith("-items"):
        return f"{count}: {', '.join(names) if names else 'none'}"
    return count


def counting(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
    """Count after the whole story, and for train episodes in a train wording also after a prefix that
    ends after a put (its length drawn uniformly)."""
    if trace.episode["agent"] != "random":
        return []
    examples = _count_after(trace, rng, wording, len(trace.steps))
    if examples and trace.episode["split"] == "train" and wording.family == "train":
        first_put = next(s["index"] for s in trace.steps if _is_put(s))
        examples += _count_after(trace, rng, wording, rng.randint(first_put + 1, len(trace.steps)))
    return examples


def _count_after(trace: Trace, rng: random.Random, wording: Wording, upto: int) -> list[dict[str, Any]]:
    """Pick a place things were put on or in during the first ``upto`` steps (each count present as
    likely as another); count the moved things there after them."""
    told = trace.steps[:upto]
    places = sorted(
        {("ON" if s["verb"] == "PUTBACK" else "INSIDE", s["object_ids"][1]) for s in told if _is_put(s)}
    )
    if not places:
        return []
    snap = trace.snapshots[upto]
    moved = [i for i, step in first_pickups(trace).items() if step < upto]
    items_at = {p: [i for i in moved if snap.places[i] == p] for p in places}
    relation, place = balanced_choice(rng, places, lambda p: len(items_at[p]))
    there = items_at[relation, place]
    names = sorted(trace.label(i) for i in there)
    people = cast(trace, rng)
    word = "on" if relation == "ON" else "in"
    return [
        example(
            "counting",
            trace,
            wording,
            story(trace, people, rng, wording.narration, upto),
            wording.question.format(word=word, place=trace.label(place)),
            count_answer(names, wording.answer_form),
            length=upto,
            meta={"relation": relation, "place": place, "items": sorted(there), "step": upto},
        )
    ]
