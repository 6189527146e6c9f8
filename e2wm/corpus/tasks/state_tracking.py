"""State tracking after a narrated sequence of actions: is X open, what is P holding, can P grab X now?

Each question is asked after a random number of steps, so examples cover short and long horizons.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import balanced_choice, example, join_names
from e2wm.corpus.narration import Person, cast, story
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording
from e2wm.simulator.virtualhome.backend import humanize

Ask = Callable[[Trace, random.Random, Wording, int, list[Person], str], list[dict[str, Any]]]


def _after_a_story(ask: Ask) -> Callable[[Trace, Context, random.Random, Wording], list[dict[str, Any]]]:
    """The task that tells a random episode's first steps as a story, then calls ``ask(trace, rng,
    wording, steps told, the people, the story)``; no examples for other episodes."""

    @functools.wraps(ask)
    def task(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
        if trace.episode["agent"] != "random" or not trace.steps:
            return []
        upto = rng.randint(1, len(trace.steps))
        people = cast(trace, rng)
        return ask(trace, rng, wording, upto, people, story(trace, people, rng, wording.narration, upto))

    return task


@_after_a_story
def state_tracking_open(
    trace: Trace, rng: random.Random, wording: Wording, upto: int, people: list[Person], told: str
) -> list[dict[str, Any]]:
    """Is the X open? (yes / no, equally often where the story allows), of an object the story opens or
    closes: of one it never does, the answer would be its initial state, which no reader can know (two
    thirds of the questions were so)."""
    opened_or_closed = {
        s["object_ids"][0] for s in trace.steps[:upto] if s["success"] and s["verb"] in ("OPEN", "CLOSE")
    }
    candidates = [i for i in trace.objects if i in opened_or_closed]  # first-touch order: seeded draws
    if not candidates:
        return []
    states = trace.snapshots[upto].states
    obj = balanced_choice(rng, candidates, lambda i: "OPEN" in states[i])
    answer = "yes" if "OPEN" in states[obj] else "no"
    question = wording.question.format(obj=trace.label(obj))
    meta = {"object": obj, "step": upto}
    return [
        example(
            "state_tracking_open",
            trace,
            wording,
            told,
            question,
            answer,
            choices=["yes", "no"],
            length=upto,
            meta=meta,
        )
    ]


@_after_a_story
def state_tracking_holding(
    trace: Trace, rng: random.Random, wording: Wording, upto: int, people: list[Person], told: str
) -> list[dict[str, Any]]:
    """What is P holding? Of someone holding something as often as of someone empty-handed."""
    held_now = trace.snapshots[upto].held
    k = balanced_choice(rng, range(len(people)), lambda p: bool(held_now[p]))
    held = join_names(sorted(trace.label(i) for i in held_now[k]))
    question = wording.question.format(person=people[k].name)
    meta = {"person": k, "step": upto}
    return [example("state_tracking_holding", trace, wording, told, question, held, length=upto, meta=meta)]


@_after_a_story
def state_tracking_grab(
    trace: Trace, rng: random.Random, wording: Wording, upto: int, people: list[Person], told: str
) -> list[dict[str, Any]]:
    """Can P grab X now, and if not, why not (the precondition that fails)? "yes" as often as "no"."""
    snap = trace.snapshots[upto]
    options = sorted(snap.grab)
    if not options:
        return []
    k, obj = balanced_choice(rng, options, lambda o: snap.grab[o] is None)
    failure = snap.grab[(k, obj)]
    names = {trace.people[p]: person.name for p, person in enumerate(people)}
    names.update({i: "the " + trace.label(i) for i in trace.objects})
    answer = "yes" if failure is None else "no, " + humanize(failure, names)
    question = wording.question.format(person=people[k].name, obj=trace.label(obj))
    meta = {"person": k, "name": people[k].name, "object": obj, "step": upto, "failure": failure}
    return [example("state_tracking_grab", trace, wording, told, question, answer, length=upto, meta=meta)]
