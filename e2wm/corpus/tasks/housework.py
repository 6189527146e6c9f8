"""Housework QA: an activity -> an item involved in it, and (negation) an item not involved."""

from __future__ import annotations

import random
from typing import Any

from e2wm.corpus.context import Context
from e2wm.corpus.example import example, multiple_choice
from e2wm.corpus.tasks.plans import SOURCES
from e2wm.corpus.trace import Trace
from e2wm.corpus.wording import Wording


def _pools(trace: Trace, ctx: Context) -> tuple[list[str], list[str]] | None:
    """(items this episode uses, items no episode of its activity uses), or None if not applicable."""
    ep = trace.episode
    if ep["agent"] not in SOURCES or not ep["success"] or not ep["activity"]:
        return None
    used = sorted({trace.name(i) for i in trace.objects})
    unused = sorted(set(ctx.items) - ctx.activity_items.get(ep["activity"], set()))
    return used, unused


def housework_qa(trace: Trace, ctx: Context, rng: random.Random, wording: Wording) -> list[dict[str, Any]]:
    pools = _pools(trace, ctx)
    if not pools or not pools[0] or len(pools[1]) < 3:
        return []
    used, unused = pools
    answer = rng.choice(used)
    choices = multiple_choice(answer, rng.sample(unused, 3), rng)
    return _asked("housework_qa", trace, wording, answer, choices, used)


def housework_qa_negation(
    trace: Trace, ctx: Context, rng: random.Random, wording: Wording
) -> list[dict[str, Any]]:
    pools = _pools(trace, ctx)
    if not pools or len(pools[0]) < 3 or not pools[1]:
        return []
    used, unused = pools
    answer = rng.choice(unused)
    choices = multiple_choice(answer, rng.sample(used, 3), rng)
    return _asked("housework_qa_negation", trace, wording, answer, choices, used)


def _asked(
    task: str, trace: Trace, wording: Wording, answer: str, choices: list[str], used: list[str]
) -> list[dict[str, Any]]:
    """The one example of a housework task: the activity told, the item asked for among ``choices``."""
    told = f"Activity: {trace.episode['activity']}."
    return [
        example(task, trace, wording, told, wording.question, answer, choices=choices, meta={"used": used})
    ]
