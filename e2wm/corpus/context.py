"""Corpus-wide facts the task builders draw distractors from."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from virtualhome_eval.simulation.evolving_graph.environment import Room


@dataclass
class Context:
    """All activities, and the items (not rooms) each activity's episodes touch."""

    activities: list[str] = field(default_factory=list)
    activity_items: dict[str, set[str]] = field(default_factory=dict)
    items: list[str] = field(default_factory=list)

    @classmethod
    def from_episodes(cls, episodes: list[dict[str, Any]]) -> Context:
        activity_items: dict[str, set[str]] = defaultdict(set)
        for ep in episodes:
            if ep["activity"]:
                activity_items[ep["activity"]].update(
                    name.replace("_", " ")
                    for s in ep["steps"]
                    for name in s["object_names"]
                    if not Room.has_value(name)
                )
        items = sorted(set().union(*activity_items.values())) if activity_items else []
        return cls(sorted(activity_items), dict(activity_items), items)
