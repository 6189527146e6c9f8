"""Recording an episode: every step's action, outcome, state change and text views."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from e2wm.agents.goals import Predicate
from e2wm.simulator.protocol import Action, StepResult
from e2wm.simulator.text import AGENT, describe_action, describe_change, describe_state
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator, humanize
from e2wm.simulator.virtualhome.resources import SCENE, Program
from e2wm.splits import split_of


def execute(
    sim: VirtualHomeSimulator,
    initial: Any,
    actions: Iterable[Action],
    objects: Iterable[int],
    stop_at_failure: bool,
) -> dict[str, Any]:
    """Run ``actions`` from the scene graph ``initial``: the fields of an episode record that the run gives,
    its step records (up to the first failure with ``stop_at_failure``), the initial state as text over
    ``objects``, and the room each character starts in."""
    sim.reset(initial)
    run: dict[str, Any] = {
        "steps": [],
        "initial_state_text": describe_state(sim, sorted(objects)),
        "people_rooms": [sim.room_of(sim.state.char_id)],
    }
    for index, action in enumerate(actions):
        result = sim.step(action)
        run["steps"].append(step_record(sim, index, result))
        if stop_at_failure and not result.success:
            break
    return run


def step_record(
    sim: VirtualHomeSimulator, index: int, result: StepResult, actor: int = 0, names: Sequence[str] = AGENT
) -> dict[str, Any]:
    """One step of character ``actor`` as a flat, Parquet-friendly record; ``names`` name the characters."""
    change = result.change
    return {
        "index": index,
        "actor": actor,
        "action": str(result.action),
        "verb": result.action.verb,
        "object_ids": [t.id for t in result.action.targets],
        "object_names": [t.name for t in result.action.targets],
        "action_text": describe_action(result.action),
        "success": result.success,
        "failure": humanize(result.failure) if result.failure else None,
        "node_changes": [
            {"id": n.id, "name": n.name, "added": list(n.added), "removed": list(n.removed)}
            for n in change.nodes
        ],
        "edges_added": [asdict(e) for e in change.edges_added],
        "edges_removed": [asdict(e) for e in change.edges_removed],
        "change_text": describe_change(sim, change, names),
        "state_text": describe_state(sim, [t.id for t in result.action.targets], names, actor),
    }


def episode_record(
    *,
    episode_id: str,
    agent: str,
    seed: int,
    steps: list[dict[str, Any]],
    initial_state_text: str,
    people_rooms: list[int],
    program: Program | None = None,
    graph_id: str | None = None,
    split: str | None = None,
    goal: list[Predicate] = (),
    success: bool | None = None,
) -> dict[str, Any]:
    """One episode row. Program episodes take id, activity, description and split from ``program``;
    ``graph_id`` names the program (or file) whose initial graph the episode starts from.
    ``people_rooms`` are the rooms each character starts in (the scene's own first); ``success``
    defaults to every step having succeeded."""
    return {
        "episode_id": episode_id,
        "agent": agent,
        "scene": SCENE,
        "graph_id": graph_id or program.id,
        "seed": seed,
        "program_id": program and program.id,
        "activity": program and program.activity,
        "description": program and program.description,
        "split": split or split_of(program),
        "goal": [p.to_record() for p in goal],
        "success": all(s["success"] for s in steps) if success is None else success,
        "num_steps": len(steps),
        "initial_state_text": initial_state_text,
        "people_rooms": people_rooms,
        "steps": steps,
    }
