"""Counting: a narrated exploration episode -> how many moved items end up on or in a place, and which."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import balanced_choice, example, moved_objects
from e2wm.corpus.narration import cast, story
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording, number


def count_answer(names: list[str], form: str) -> str:
    """``2: cup, mug`` (digits-items), ``two: cup, mug`` (words-items), ``2`` (digits), ``two`` (words)."""
    count = number(len(names), form)
    if form.endswith("-items"):
        return f"{count}: {', '.join(names) if names else 'none'}"
    return count


def counting(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
    """Pick a place things were put on or in (each count present as likely as another); count the moved
    things there at the end."""
    if trace.episode["agent"] != "random":
        return []
    places = sorted(
        {
            ("ON" if s["verb"] == "PUTBACK" else "INSIDE", s["object_ids"][1])
            for s in trace.steps
            if s["success"] and s["verb"] in ("PUTBACK", "PUTIN")
        }
    )
    if not places:
        return []
    final = trace.snapshots[-1]
    moved = moved_objects(trace)
    items_at = {p: [i for i in moved if final.places[i] == p] for p in places}
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
            story(trace, people, rng, wording.narration),
            wording.question.format(word=word, place=trace.label(place)),
            count_answer(names, wording.answer_form),
            meta={"relation": relation, "place": place, "items": sorted(there)},
        )
    ]
