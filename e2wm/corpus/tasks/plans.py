"""Plan generation and activity recognition: from goal-directed episodes (MCTS plans, replayed programs)."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, multiple_choice, plan_text
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording

SOURCES = ("replay", "mcts")
_NOTABLE = {"OPEN": "open", "CLOSED": "closed", "ON": "on", "OFF": "off"}


def _goal_directed(trace: Trace) -> bool:
    ep = trace.episode
    return ep["agent"] in SOURCES and bool(ep["success"]) and bool(ep["activity"]) and bool(ep["num_steps"])


def initial_conditions(trace: Trace) -> str:
    """Where the touched objects are, and their notable states, before the first step."""
    first = trace.snapshots[0]
    sentences = []
    for obj in trace.objects:
        place = first.places[obj]
        if place is not None:
            word = "on" if place[0] == "ON" else "inside"
            sentences.append(f"The {trace.name(obj)} is {word} the {trace.name(place[1])}.")
        states = [_NOTABLE[s] for s in sorted(first.states[obj]) if s in _NOTABLE]
        if states:
            sentences.append(f"The {trace.name(obj)} is {' and '.join(states)}.")
    return " ".join(sentences)


def plan_episode(trace: Trace) -> dict[str, Any]:
    """What ``e2wm.eval.plans.check_plan`` needs of the episode: its graph, people, goal and steps."""
    ep = trace.episode
    step_keys = ("verb", "object_names", "object_ids", "success", "actor")
    return {
        "graph_id": ep["graph_id"],
        "people_rooms": list(ep["people_rooms"]),
        "goal": list(ep["goal"]),
        "steps": [{k: s[k] for k in step_keys} for s in ep["steps"]],
    }


def plan_generation(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
    """Activity, items and initial conditions -> the step-by-step plan (sentences or numbered steps)."""
    if not _goal_directed(trace):
        return []
    items = list(dict.fromkeys(trace.name(i) for i in trace.objects))
    plan = plan_text(trace)
    given = f"Given items include {', '.join(items)}. {initial_conditions(trace)}".strip()
    context = f"Activity: {trace.episode['activity']}.\n{given}"
    return [
        example(
            "plan_generation",
            trace,
            wording,
            context,
            wording.question,
            plan_text(trace, wording.answer_form),
            meta={"plan": plan, "episode": plan_episode(trace)},
        )
    ]


def activity_recognition(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    """A plan -> the activity's name (generative)."""
    if not _goal_directed(trace):
        return []
    plan = plan_text(trace)
    return [
        example(
            "activity_recognition",
            trace,
            wording,
            f"Plan: {plan}",
            wording.question,
            trace.episode["activity"],
            meta={"plan": plan},
        )
    ]


def activity_recognition_mc(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    """A plan -> the activity's name, among distractor activities."""
    if not _goal_directed(trace):
        return []
    activity = trace.episode["activity"]
    others = [a for a in ctx.activities if a != activity]
    choices = multiple_choice(activity, rng.sample(others, min(3, len(others))), rng)
    plan = plan_text(trace)
    return [
        example(
            "activity_recognition_mc",
            trace,
            wording,
            f"Plan: {plan}",
            wording.question,
            activity,
            choices=choices,
            meta={"plan": plan},
        )
    ]
