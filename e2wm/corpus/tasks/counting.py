"""Counting: a narrated exploration episode -> how many moved items end up on or in a place, and which."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, moved_objects
from e2wm.corpus.narration import cast, narrate
from e2wm.corpus.trace import Trace


def counting(trace: Trace, ctx: Context, rng: random.Random) -> list[dict[str, Any]]:
    """Pick a place things were put on or in; count the moved things there at the end."""
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
    relation, place = rng.choice(places)
    final = trace.snapshots[-1]
    there = [i for i in moved_objects(trace) if final.places[i] == (relation, place)]
    names = sorted(trace.label(i) for i in there)
    people = cast(trace, rng)
    word = "on" if relation == "ON" else "in"
    prompt = (
        " ".join(narrate(trace, people, rng))
        + f"\nQuestion: At the end, how many of the things that were picked up are {word} the "
        f"{trace.label(place)}, and which?\nAnswer:"
    )
    answer = f"{len(names)}: {', '.join(names) if names else 'none'}"
    return [
        example(
            "counting",
            trace,
            prompt,
            answer,
            meta={"relation": relation, "place": place, "items": sorted(there)},
        )
    ]
