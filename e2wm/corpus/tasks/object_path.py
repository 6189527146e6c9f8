"""Object path tracking: a narrated multi-person episode -> the ordered rooms an object passed through."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, first_pickups, moved_objects
from e2wm.corpus.narration import cast, story
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording


def room_path(trace: Trace, obj: int) -> list[int]:
    """The rooms ``obj`` was in from its first pick-up on, in order, each change of room once.

    Before that its room may not follow from the story: VirtualHome lets a person reach things that
    are close to what they are close to, even across a doorway.
    """
    path: list[int] = []
    for snap in trace.snapshots[first_pickups(trace)[obj] + 1 :]:
        if not path or path[-1] != snap.rooms[obj]:
            path.append(snap.rooms[obj])
    return path


def object_path(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
    """Pick a carried object that changed rooms; ask for its rooms in order."""
    if trace.episode["agent"] != "random":
        return []
    candidates = [i for i in moved_objects(trace) if len(room_path(trace, i)) > 1]
    if not candidates:
        return []
    obj = rng.choice(candidates)
    path = room_path(trace, obj)
    return [
        example(
            "object_path",
            trace,
            wording,
            story(trace, cast(trace, rng), rng, wording.narration),
            wording.question.format(obj=trace.label(obj)),
            ", ".join(trace.name(r) for r in path),
            meta={"object": obj, "rooms": path},
        )
    ]
