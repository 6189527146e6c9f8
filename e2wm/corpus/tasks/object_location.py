"""Object location: "Where was the X before <event>?", multiple choice over the rooms."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, first_pickups
from e2wm.corpus.narration import cast, event, story
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording


def object_location(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
    """Pick a moved object and an event after its first pick-up, told once; answer its room just before."""
    if trace.episode["agent"] != "random":
        return []
    people = cast(trace, rng)
    events = [event(trace, j, people) for j in range(len(trace.steps))]
    once = [j for j, e in enumerate(events) if j > 0 and trace.steps[j]["success"] and events.count(e) == 1]
    first = first_pickups(trace)  # before it, an object's room may not follow from the story
    pairs = [
        (obj, j)
        for obj, picked in first.items()
        for j in once
        if j > picked and trace.snapshots[j].rooms[obj] != trace.snapshots[-1].rooms[obj]
    ]
    if not pairs:
        return []
    obj, j = rng.choice(pairs)
    room = trace.name(trace.snapshots[j].rooms[obj])
    choices = [trace.name(r) for r in trace.rooms()]
    return [
        example(
            "object_location",
            trace,
            wording,
            story(trace, people, rng, wording.narration),
            wording.question.format(obj=trace.label(obj), event=events[j]),
            room,
            choices=choices,
            meta={"object": obj, "step": j, "room": trace.snapshots[j].rooms[obj]},
        )
    ]
