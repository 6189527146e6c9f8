"""Re-executing a recorded episode: the world it started from, and its steps, each checked against the
recording. The corpus builder (``e2wm.corpus.trace``), the renderer and the plan checks all start here,
so a rollout that no longer replays as recorded fails the same way everywhere."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator


@functools.lru_cache(maxsize=64)
def _program_graph(graph_id: str) -> dict[str, Any]:
    return resources.program_by_id(graph_id).graphs()[0]


def initial_graph(
    episode: dict[str, Any], scene_graphs: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The graph an episode started from: a shipped program's initial graph, or a user's scene graph."""
    graph_id = episode["graph_id"]
    if scene_graphs and graph_id in scene_graphs:
        return scene_graphs[graph_id]
    try:
        return _program_graph(graph_id)
    except E2WMError:
        raise E2WMError(f"episode {episode['episode_id']}: unknown scene graph {graph_id!r}") from None


def start(episode: dict[str, Any], sim: VirtualHomeSimulator, graph: dict[str, Any]) -> list[int]:
    """Reset ``sim`` to ``graph`` and put the episode's other people in their starting rooms; returns the
    character node ids by person index."""
    sim.reset(graph)
    name = episode.get("episode_id", episode["graph_id"])  # a plan check's episode may have no id
    for room in (episode.get("people_rooms") or [])[1:]:
        node = sim.node(room)
        if node is None or node.category != "Rooms":
            raise E2WMError(f"episode {name}: person start {room} is not a room of its scene")
        sim.state.add_character(room)
    return list(sim.state.char_ids)


def touched_objects(
    episode: dict[str, Any], sim: VirtualHomeSimulator, skip: tuple[str, ...] = ("Rooms",)
) -> list[int]:
    """The nodes the episode's steps act on, in order of first use, without those of the ``skip``
    categories; one-line error for a node its scene does not have."""
    objects: list[int] = []
    for step in episode["steps"]:
        for obj in step["object_ids"]:
            node = sim.node(obj)
            if node is None:
                raise E2WMError(f"episode {episode['episode_id']}: object {obj} is not in its scene graph")
            if node.category not in skip and obj not in objects:
                objects.append(obj)
    return objects


def replay_steps(episode: dict[str, Any], sim: VirtualHomeSimulator) -> Iterator[dict[str, Any]]:
    """Execute the recorded steps on ``sim`` (after ``start``), yielding each step once it has run; a step
    that no longer succeeds or fails as recorded is a one-line error."""
    name, people = episode["episode_id"], len(sim.state.char_ids)
    for step in episode["steps"]:
        if not 0 <= step["actor"] < people:
            raise E2WMError(f"episode {name} step {step['index']}: no person {step['actor']}")
        result = sim.step(Action.parse(step["action"]), step["actor"])
        if result.success != step["success"]:
            raise E2WMError(
                f"episode {name} step {step['index']} ({step['action']}) no longer "
                f"{'succeeds' if step['success'] else 'fails'} in the simulator: stale or corrupt rollouts"
            )
        yield step
