"""State tracking after a narrated sequence of actions: is X open, what is P holding, can P grab X now?

Each question is asked after a random number of steps, so examples cover short and long horizons.
"""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, join_names
from e2wm.corpus.narration import Person, cast, story
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording
from e2wm.simulator.virtualhome.backend import humanize


def _setup(trace: Trace, rng: random.Random, wording: Wording) -> tuple[int, list[Person], str] | None:
    """(steps told, the people, the story so far), or None for episodes these questions do not fit."""
    if trace.episode["agent"] != "random" or not trace.steps:
        return None
    upto = rng.randint(1, len(trace.steps))
    people = cast(trace, rng)
    return upto, people, story(trace, people, rng, wording.narration, upto)


def state_tracking_open(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    """Is the X open? (yes / no)"""
    setup = _setup(trace, rng, wording)
    if setup is None:
        return []
    upto, _, told = setup
    openable = [i for i in trace.objects if trace.snapshots[0].states[i] & {"OPEN", "CLOSED"}]
    if not openable:
        return []
    obj = rng.choice(openable)
    answer = "yes" if "OPEN" in trace.snapshots[upto].states[obj] else "no"
    return [
        example(
            "state_tracking_open",
            trace,
            wording,
            told,
            wording.question.format(obj=trace.label(obj)),
            answer,
            choices=["yes", "no"],
            length=upto,
            meta={"object": obj, "step": upto},
        )
    ]


def state_tracking_holding(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    """What is P holding?"""
    setup = _setup(trace, rng, wording)
    if setup is None:
        return []
    upto, people, told = setup
    k = rng.randrange(len(people))
    held = sorted(trace.label(i) for i in trace.snapshots[upto].held[k])
    return [
        example(
            "state_tracking_holding",
            trace,
            wording,
            told,
            wording.question.format(person=people[k].name),
            join_names(held),
            length=upto,
            meta={"person": k, "step": upto},
        )
    ]


def state_tracking_grab(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    """Can P grab X now, and if not, why not (the precondition that fails)?"""
    setup = _setup(trace, rng, wording)
    if setup is None:
        return []
    upto, people, told = setup
    snap = trace.snapshots[upto]
    options = sorted(snap.grab)
    if not options:
        return []
    k, obj = rng.choice(options)
    failure = snap.grab[(k, obj)]
    names = {trace.people[p]: person.name for p, person in enumerate(people)}
    names.update({i: "the " + trace.label(i) for i in trace.objects})
    answer = "yes" if failure is None else "no, " + humanize(failure, names)
    return [
        example(
            "state_tracking_grab",
            trace,
            wording,
            told,
            wording.question.format(person=people[k].name, obj=trace.label(obj)),
            answer,
            length=upto,
            meta={"person": k, "name": people[k].name, "object": obj, "step": upto, "failure": failure},
        )
    ]
