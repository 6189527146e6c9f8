"""Program replay: execute a RobotHow program step by step and record every step."""

from __future__ import annotations

from typing import Any

from e2wm.agents.episode import episode_record, step_record
from e2wm.agents.goals import goal_from_graphs
from e2wm.simulator.text import describe_state
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.resources import Program


def replay(sim: VirtualHomeSimulator, program: Program, seed: int = 0) -> dict[str, Any]:
    """Run ``program`` from its initial graph, stopping at the first step that fails."""
    initial, final = program.graphs()
    sim.reset(initial)
    goal = goal_from_graphs(initial, final)
    steps = []
    people_rooms = [sim.room_of(sim.state.char_id)]
    initial_text = describe_state(sim, sorted({t.id for a in program.actions() for t in a.targets}))
    for index, action in enumerate(program.actions()):
        result = sim.step(action)
        steps.append(step_record(sim, index, result))
        if not result.success:
            break
    return episode_record(
        episode_id=f"replay-{program.id}",
        agent="replay",
        seed=seed,
        steps=steps,
        initial_state_text=initial_text,
        people_rooms=people_rooms,
        program=program,
        goal=goal,
    )
