"""Step semantics of the VirtualHome backend: effects, precondition failures, undo, valid actions."""

import pytest
from conftest import act, node_id

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action, Edge
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator


def edges(change, relations=("ON", "INSIDE", "HOLDS_RH", "HOLDS_LH")):
    return {e for e in change if e.relation in relations}


def test_walk_moves_agent_between_rooms_and_near_target(sim):
    char, cupboard, dining = sim.state.char_id, node_id(sim, "cupboard"), node_id(sim, "dining_room")
    before_room = sim.room_of(char)
    result = act(sim, "WALK", "cupboard")
    assert result.success and result.failure is None
    assert sim.room_of(char) == dining != before_room
    assert Edge(char, "INSIDE", dining) in result.change.edges_added
    assert Edge(char, "INSIDE", before_room) in result.change.edges_removed
    assert Edge(char, "CLOSE", cupboard) in result.change.edges_added


def test_open_close_need_proximity_and_change_node_state(sim):
    cupboard = node_id(sim, "cupboard")
    failed = act(sim, "OPEN", "cupboard")
    assert not failed.success and "not close to <cupboard>" in failed.failure
    act(sim, "WALK", "cupboard")
    opened = act(sim, "OPEN", "cupboard")
    assert opened.success and "OPEN" in sim.states_of(cupboard)
    [change] = opened.change.nodes
    assert (change.id, change.added, change.removed) == (cupboard, ("OPEN",), ("CLOSED",))
    again = act(sim, "OPEN", "cupboard")
    assert not again.success and "is not closed" in again.failure
    assert act(sim, "CLOSE", "cupboard").success and "CLOSED" in sim.states_of(cupboard)


def test_grab_needs_open_container_then_takes_object_out(sim):
    char, glass, cupboard = sim.state.char_id, node_id(sim, "water_glass"), node_id(sim, "cupboard")
    act(sim, "WALK", "cupboard")
    blocked = act(sim, "GRAB", "water_glass")
    assert not blocked.success and "inside other closed thing" in blocked.failure
    act(sim, "OPEN", "cupboard")
    grabbed = act(sim, "GRAB", "water_glass")
    assert grabbed.success and sim.holds() == [glass]
    assert edges(grabbed.change.edges_added) == {Edge(char, "HOLDS_RH", glass)}
    assert Edge(glass, "INSIDE", cupboard) in grabbed.change.edges_removed


def test_put_on_and_put_in_release_the_object(sim):
    glass, counter, microwave = (node_id(sim, c) for c in ("water_glass", "kitchen_counter", "microwave"))
    for verb, target in (
        ("WALK", "cupboard"),
        ("OPEN", "cupboard"),
        ("GRAB", "water_glass"),
        ("WALK", "kitchen_counter"),
    ):
        assert act(sim, verb, target).success
    put = act(sim, "PUTBACK", "water_glass", "kitchen_counter")
    assert put.success and sim.holds() == []
    assert Edge(glass, "ON", counter) in put.change.edges_added
    assert act(sim, "GRAB", "water_glass").success
    assert act(sim, "WALK", "microwave").success
    closed = act(sim, "PUTIN", "water_glass", "microwave")
    assert not closed.success and "not open" in closed.failure
    assert act(sim, "OPEN", "microwave").success
    assert act(sim, "PUTIN", "water_glass", "microwave").success
    assert (glass, "INSIDE", microwave) in sim.state.edge_set()


def test_switch_on_off(sim):
    faucet = node_id(sim, "faucet")
    act(sim, "WALK", "faucet")
    assert act(sim, "SWITCHON", "faucet").success and "ON" in sim.states_of(faucet)
    twice = act(sim, "SWITCHON", "faucet")
    assert not twice.success and "is not off" in twice.failure
    assert act(sim, "SWITCHOFF", "faucet").success and "OFF" in sim.states_of(faucet)


def test_failed_step_leaves_state_unchanged(sim):
    before = sim.graph()
    result = act(sim, "GRAB", "water_glass")
    assert not result.success and result.change.is_empty()
    assert sim.graph() == before


def test_bad_actions_raise_one_line_errors(sim):
    with pytest.raises(E2WMError, match="unknown action verb"):
        sim.step(Action.parse("[FLY] <kitchen> (1)"))
    with pytest.raises(E2WMError, match="not in the scene"):
        sim.step(Action.parse("[WALK] <kitchen> (99999)"))
    with pytest.raises(E2WMError, match="takes 2 object"):
        sim.step(Action.parse("[PUTIN] <cup> (1000)"))


@pytest.mark.parametrize(
    "graph, message",
    [
        ({"nodes": []}, "'nodes' and 'edges'"),
        ({"nodes": [{"id": 1}], "edges": []}, "without 'id' and 'class_name'"),
        (
            {"nodes": [{"id": 1, "class_name": "character", "states": ["FLYING"]}], "edges": []},
            "unknown state",
        ),
        (
            {
                "nodes": [{"id": 1, "class_name": "character"}],
                "edges": [{"from_id": 1, "relation_type": "ON", "to_id": 7}],
            },
            "does not exist",
        ),
        ({"nodes": [{"id": 1, "class_name": "cup"}], "edges": []}, "no 'character'"),
        (
            {"nodes": [{"id": 1, "class_name": "character", "category": "Characters"}], "edges": []},
            "not inside any room",
        ),
    ],
)
def test_malformed_scene_graphs_are_rejected(graph, message):
    with pytest.raises(E2WMError, match=message):
        VirtualHomeSimulator(graph)


def test_rollback_restores_graph_and_change_matches_graph_diff(sim, drink_program):
    start_graph, mark = sim.graph(), sim.mark()
    start_edges = sim.state.edge_set()
    for action in drink_program.actions():
        assert sim.step(action).success
    change = sim.state.change_since(mark)
    end_edges = sim.state.edge_set()
    assert {(e.from_id, e.relation, e.to_id) for e in change.edges_added} == end_edges - start_edges
    assert {(e.from_id, e.relation, e.to_id) for e in change.edges_removed} == start_edges - end_edges
    sim.rollback(mark)
    assert sim.graph() == start_graph


def test_valid_actions_are_exactly_the_candidates_whose_preconditions_hold(sim, drink_program):
    for action in drink_program.actions()[:6]:
        sim.step(action)
    valid = sim.valid_actions()
    assert valid == [a for a in sim.candidate_actions() if sim.check(a)]
    verbs = {a.verb for a in valid}
    assert {"WALK", "GRAB", "CLOSE"} <= verbs
    for action in valid:
        mark = sim.mark()
        assert sim.step(action).success, action
        sim.rollback(mark)
