"""Replaying the 518 shipped RobotHow programs: fidelity to the shipped final graphs and to VirtualHome."""

import pytest

from e2wm.agents.replay import replay
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.reference import ReferenceRun

pytestmark = pytest.mark.slow


def _node_states(graph):
    return {n["id"]: set(n["states"]) for n in graph["nodes"]}


def _proximity_only(edges, char):
    return all(rel in ("CLOSE", "FACING") and char in (src, dst) for src, rel, dst in edges)


def test_shipped_programs_replay_to_their_final_graphs():
    sim = VirtualHomeSimulator()
    programs = resources.programs()
    assert len(programs) == 518
    executed = 0
    for program in programs:
        initial, final = program.graphs()
        sim.reset(initial)
        if not all(sim.step(a).success for a in program.actions()):
            continue
        executed += 1
        assert _node_states(sim.graph()) == _node_states(final), program.id
        final_edges = {(e["from_id"], e["relation_type"], e["to_id"]) for e in final["edges"]}
        assert _proximity_only(sim.state.edge_set() ^ final_edges, sim.state.char_id), program.id
    assert executed >= 516


def test_backend_matches_virtualhome_executor_on_every_program():
    """Same success, same edges, same node states, step by step's end, as VirtualHome's own executor."""
    sim = VirtualHomeSimulator()
    for program in resources.programs():
        initial, _ = program.graphs()
        sim.reset(initial)
        reference = ReferenceRun(initial)
        for action in program.actions():
            ok = sim.step(action).success
            assert ok == reference.step(action), (program.id, str(action))
            if not ok:
                break
        assert sim.state.edge_set() == reference.edge_set(), program.id
        assert {n.id: {s.name for s in n.states} for n in sim.state.get_nodes()} == reference.node_states()


def test_replay_records_every_step(drink_program):
    episode = replay(VirtualHomeSimulator(), drink_program)
    assert episode["success"] and episode["num_steps"] == len(drink_program.lines) == len(episode["steps"])
    assert [s["action"] for s in episode["steps"]] == [str(a) for a in drink_program.actions()]
    opened = episode["steps"][3]
    assert opened["verb"] == "OPEN" and opened["node_changes"][0]["added"] == ["OPEN"]
    assert "The cupboard is open." in opened["change_text"]
    assert episode["activity"] == "Drink" and episode["goal"]
