"""UnitySimulator against a local stand-in for VirtualHome's Unity HTTP API."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
from support.unity_stand_in import UnityStandIn

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.unity import UnitySimulator

PROGRAM = "file628_2"


@pytest.fixture
def server() -> Iterator[UnityStandIn]:
    with UnityStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def init_graph() -> dict:
    return resources.program_by_id(PROGRAM).graphs()[0]


def test_replaying_a_program_matches_the_symbolic_backend(server: UnityStandIn, init_graph: dict):
    sim = UnitySimulator(port=server.port)
    sim.reset(init_graph)
    symbolic = VirtualHomeSimulator(init_graph)
    changed = 0
    for action in resources.program_by_id(PROGRAM).actions():
        expected = symbolic.step(action)
        result = sim.step(action)
        assert result.success, f"{action}: {result.failure}"
        assert result.change.nodes == expected.change.nodes, action
        assert set(result.change.edges_added) == set(expected.change.edges_added), action
        assert set(result.change.edges_removed) == set(expected.change.edges_removed), action
        changed += not result.change.is_empty()
    assert changed >= 8
    assert sim.graph() == symbolic.graph()


def test_a_failing_action_reports_unitys_message_and_changes_nothing(server: UnityStandIn, init_graph: dict):
    sim = UnitySimulator(port=server.port)
    sim.reset(init_graph)
    before = sim.graph()
    action = Action.parse("[GRAB] <water_glass> (1000)")  # the character is not close to it
    result = sim.step(action)
    assert not result.success
    assert result.failure == VirtualHomeSimulator(init_graph).step(action).failure
    assert "not close" in result.failure
    assert result.change.is_empty()
    assert sim.graph() == before
    assert server.actions()[-1] == "render_script"  # no graph read back after a failure


def test_requests_use_the_unity_api(server: UnityStandIn, init_graph: dict):
    sim = UnitySimulator(port=server.port, environment=3)
    sim.reset(init_graph)
    sim.step(Action.parse("[WALK] <dining_room> (1.201)"))
    assert server.actions() == [
        "idle",
        "clear",
        "environment",
        "expand_scene",
        "add_character",
        "environment_graph",
        "render_script",
        "environment_graph",
    ]
    by_action = {r["action"]: r for r in server.requests}
    assert by_action["clear"]["intParams"] == by_action["environment"]["intParams"] == [3]
    assert json.loads(by_action["expand_scene"]["stringParams"][1]) == init_graph
    params, *lines = by_action["render_script"]["stringParams"]
    assert lines == ["<char0> [WALK] <dining_room> (201)"]
    assert json.loads(params)["recording"] is False
    assert json.loads(params)["skip_animation"] is True


def test_reset_without_a_graph_keeps_the_environment(server: UnityStandIn):
    sim = UnitySimulator(port=server.port)
    sim.reset()
    assert "expand_scene" not in server.actions()
    assert sim.graph() == server.sim.graph()


def test_valid_actions_are_checked_symbolically_on_unitys_graph(server: UnityStandIn, init_graph: dict):
    sim = UnitySimulator(port=server.port)
    sim.reset(init_graph)
    sim.step(Action.parse("[WALK] <cupboard> (229)"))
    symbolic = VirtualHomeSimulator(sim.graph())
    objects = {229, 1000, 1001}
    assert sim.valid_actions(objects) == symbolic.valid_actions(objects)
    assert Action.parse("[OPEN] <cupboard> (229)") in sim.valid_actions(objects)


def test_an_unreachable_port_is_a_one_line_error():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    expected = f"cannot reach the VirtualHome Unity simulator at http://127.0.0.1:{port}: "
    with pytest.raises(E2WMError, match=expected) as exc:
        UnitySimulator(port=port, timeout=2)
    assert "\n" not in str(exc.value)


def test_graph_before_reset_is_an_error(server: UnityStandIn):
    with pytest.raises(E2WMError, match="reset"):
        UnitySimulator(port=server.port).graph()
