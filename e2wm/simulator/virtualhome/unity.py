"""The simulator protocol over a running Unity build of VirtualHome, through ``UnityCommunication``.

Start the Unity executable as VirtualHome's docs say (it serves HTTP on a port, 8080 by default), then
``UnitySimulator(url, port)``. Actions run in Unity and the scene graph is read back from Unity after each
step; ``valid_actions`` checks preconditions symbolically, with ``VirtualHomeSimulator`` on Unity's graph.
"""

from __future__ import annotations

import functools
import importlib
import importlib.machinery
import importlib.util
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action, Edge, NodeStateChange, StateChange, StepResult
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

CHARACTER = "<char0>"


@functools.cache
def comm_unity() -> types.ModuleType:
    """VirtualHome's ``comm_unity`` module, imported without running its packages' broken ``__init__``s."""
    spec = importlib.util.find_spec("virtualhome")
    if spec is None or not spec.submodule_search_locations:
        raise E2WMError("the virtualhome package is not installed: pip install --no-deps virtualhome==2.3.0")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (
        ("virtualhome", root),
        ("virtualhome.simulation", os.path.join(root, "simulation")),
        ("virtualhome.simulation.unity_simulator", os.path.join(root, "simulation", "unity_simulator")),
    ):
        if name not in sys.modules:  # a bare package: its submodules import, its __init__ never runs
            package_spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            package_spec.submodule_search_locations = [path]
            sys.modules[name] = importlib.util.module_from_spec(package_spec)
    return importlib.import_module("virtualhome.simulation.unity_simulator.comm_unity")


def script_line(action: Action) -> str:
    """The Unity script line of an action: ``<char0> [WALK] <kitchen> (205)`` (Unity ignores verb case)."""
    return f"{CHARACTER} {action}"


def graph_change(before: dict[str, Any], after: dict[str, Any]) -> StateChange:
    """The change from one scene graph to another: node states gained/lost, edges added/removed, sorted."""
    old = {n["id"]: n for n in before["nodes"]}
    new = {n["id"]: n for n in after["nodes"]}
    change = StateChange()
    for node_id in sorted(old.keys() | new.keys()):
        old_states = set(old[node_id]["states"]) if node_id in old else set()
        new_states = set(new[node_id]["states"]) if node_id in new else set()
        name = (new.get(node_id) or old[node_id])["class_name"]
        node = NodeStateChange.between(node_id, name, old_states, new_states)
        if node is not None:
            change.nodes.append(node)
    old_edges = {(e["from_id"], e["relation_type"], e["to_id"]) for e in before["edges"]}
    new_edges = {(e["from_id"], e["relation_type"], e["to_id"]) for e in after["edges"]}
    change.edges_added = [Edge(*e) for e in sorted(new_edges - old_edges)]
    change.edges_removed = [Edge(*e) for e in sorted(old_edges - new_edges)]
    return change


def _text(message: Any) -> str:
    """One line from a Unity message: a string, or ``{"0": {"message": ...}}``, an entry per character."""
    if isinstance(message, dict):
        message = " ".join(str(v.get("message", "") if isinstance(v, dict) else v) for v in message.values())
    return " ".join(str(message).split())


class UnitySimulator:
    """VirtualHome in Unity behind the simulator protocol, with one character, ``<char0>``.

    >>> sim = UnitySimulator("127.0.0.1", 8080)
    >>> sim.reset(program.graphs()[0])
    >>> sim.step(Action.parse("[WALK] <kitchen> (205)")).success
    """

    def __init__(self, url: str = "127.0.0.1", port: int = 8080, environment: int = 0, timeout: float = 30):
        self.address = f"http://{url}:{port}"
        self.environment = environment
        module = comm_unity()
        self._errors = (module.UnityCommunicationException, module.UnityEngineException, ValueError)
        self._comm = module.UnityCommunication(url=url, port=str(port), timeout_wait=timeout)
        self._graph: dict[str, Any] | None = None
        self._symbolic: VirtualHomeSimulator | None = None
        # Not check_connection(): it retries with backoff for about a minute before giving up.
        try:
            self._comm.post_command({"id": str(time.time()), "action": "idle"})
        except self._errors as exc:
            message = f"cannot reach the VirtualHome Unity simulator at {self.address}: {_reason(exc)}"
            raise E2WMError(message) from None

    def reset(self, graph: dict[str, Any] | None = None) -> None:
        """Reload the environment, expand the scene to ``graph`` if given, add the character, read the graph.

        Unity places the character itself (``add_character``): where ``graph`` puts it is not kept.
        """
        self._run("reset", self._comm.reset, self.environment)
        if graph is not None:
            self._run("expand_scene", self._comm.expand_scene, graph)
        self._run("add_character", self._comm.add_character)
        self._fetch_graph()

    def valid_actions(self, objects: set[int] | None = None) -> list[Action]:
        """Actions whose preconditions hold now, checked symbolically (``VirtualHomeSimulator``)."""
        if self._symbolic is None:
            self._symbolic = VirtualHomeSimulator(self.graph())
        return self._symbolic.valid_actions(objects)

    def step(self, action: Action) -> StepResult:
        """Run the action's script line in Unity (no recording, no animation); diff the graphs around it."""
        before = self.graph()
        success, message = self._request(
            "render_script",
            self._comm.render_script,
            [script_line(action)],
            recording=False,
            skip_animation=True,
        )
        if not success:
            return StepResult(action, False, _text(message) or "Unity answered failure", StateChange())
        return StepResult(action, True, None, graph_change(before, self._fetch_graph()))

    def graph(self) -> dict[str, Any]:
        """The scene graph as last read from Unity."""
        if self._graph is None:
            raise E2WMError("simulator has no scene: call reset() first")
        return self._graph

    def _fetch_graph(self) -> dict[str, Any]:
        self._graph = self._run("environment_graph", self._comm.environment_graph)
        self._symbolic = None
        return self._graph

    def _request(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Make one ``UnityCommunication`` call, turning a transport or protocol error into ``E2WMError``."""
        try:
            return call(*args, **kwargs)
        except self._errors as exc:
            raise self._error(what, _reason(exc)) from None

    def _run(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``_request`` for calls answering ``success`` or ``(success, message)``; failure raises too."""
        result = self._request(what, call, *args)
        success, message = result if isinstance(result, tuple) else (result, None)
        if not success:
            raise self._error(what, _text(message) or "Unity answered failure")
        return message

    def _error(self, what: str, reason: str) -> E2WMError:
        return E2WMError(f"VirtualHome Unity simulator at {self.address}: {what} failed: {reason}")


def _reason(exc: Exception) -> str:
    """One line from a ``UnityCommunication`` error (its own exceptions keep the text in ``message``)."""
    return _text(getattr(exc, "message", exc))
