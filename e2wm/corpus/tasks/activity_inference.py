"""Activity inference: a described final state -> a plausible activity."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, join_names, multiple_choice
from e2wm.corpus.tasks.plans import SOURCES
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording

_STATES = {"ON": "on", "OPEN": "open"}


def describe_person(trace: Trace, moment: int = -1) -> str:
    """What the first person is close to, holding, sitting or lying on, and what is on or open."""
    snap = trace.snapshots[moment]
    sentences = [f"The person is in the {trace.name(snap.rooms[trace.people[0]])}."]
    posture = snap.postures[0]
    if posture:
        verb = "sitting" if posture[0] == "SITTING" else "lying"
        sentences.append(f"The person is {verb} on the {trace.name(posture[1])}.")
    held = snap.held[0]
    if held:
        sentences.append(f"The person is holding {join_names([trace.name(i) for i in held])}.")
    close = [trace.name(i) for i in snap.close[0] if i not in held and (not posture or i != posture[1])]
    if close:
        sentences.append(f"The person is close to {join_names(list(dict.fromkeys(close)))}.")
    for obj in trace.objects:
        states = [_STATES[s] for s in sorted(snap.states[obj]) if s in _STATES]
        if states:
            sentences.append(f"The {trace.name(obj)} is {' and '.join(states)}.")
    return " ".join(sentences)


def activity_inference(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    """The state at the end of a goal-directed episode -> its activity, among distractors."""
    ep = trace.episode
    if ep["agent"] not in SOURCES or not ep["success"] or not ep["activity"] or not ep["num_steps"]:
        return []
    activity = ep["activity"]
    others = [a for a in ctx.activities if a != activity]
    choices = multiple_choice(activity, rng.sample(others, min(3, len(others))), rng)
    return [
        example(
            "activity_inference",
            trace,
            wording,
            describe_person(trace),
            wording.question,
            activity,
            choices=choices,
        )
    ]
