"""Program replay: execute a RobotHow program step by step and record every step."""

from __future__ import annotations

from typing import Any

from e2wm.agents.episode import episode_record, execute
from e2wm.agents.goals import goal_from_graphs
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.resources import Program


def replay(sim: VirtualHomeSimulator, program: Program, seed: int = 0) -> dict[str, Any]:
    """Run ``program`` from its initial graph, stopping at the first step that fails."""
    initial, final = program.graphs()
    objects = {t.id for a in program.actions() for t in a.targets}
    run = execute(sim, initial, program.actions(), objects, stop_at_failure=True)
    goal = goal_from_graphs(initial, final)
    return episode_record(
        episode_id=f"replay-{program.id}", agent="replay", seed=seed, program=program, goal=goal, **run
    )
