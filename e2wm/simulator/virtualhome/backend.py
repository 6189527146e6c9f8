"""The default simulator: VirtualHome's evolving-graph executors over e2wm's indexed ``GraphState``."""

from __future__ import annotations

import re
from typing import Any

from virtualhome_eval.simulation.evolving_graph.environment import Property, Relation, State
from virtualhome_eval.simulation.evolving_graph.execution import ExecutionInfo, ScriptExecutor
from virtualhome_eval.simulation.evolving_graph.scripts import Action as VHAction
from virtualhome_eval.simulation.evolving_graph.scripts import Script, ScriptLine, ScriptObject

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action, StepResult, Target
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.state import GraphState

_EXECUTORS = ScriptExecutor._action_executors
_WHEN = re.compile(r' when executing ".*?"')
_NODE_REF = re.compile(r"<([^<>]+)> \((\d+)\)")

# The agent's action space: verbs with the affordance a target needs. Preconditions beyond the
# affordance (closeness, free hands, open containers, ...) are the executors' own checks.
_ONE_TARGET: dict[str, tuple[set[Property], set[str]]] = {
    "GRAB": ({Property.GRABBABLE}, {"water"}),
    "OPEN": ({Property.CAN_OPEN}, set()),
    "CLOSE": ({Property.CAN_OPEN}, set()),
    "SWITCHON": ({Property.HAS_SWITCH}, set()),
    "SWITCHOFF": ({Property.HAS_SWITCH}, set()),
    "SIT": ({Property.SITTABLE}, set()),
    "LIE": ({Property.LIEABLE}, set()),
    "DROP": ({Property.GRABBABLE}, {"water"}),
    "DRINK": ({Property.DRINKABLE, Property.RECIPIENT}, set()),
    "READ": ({Property.READABLE}, set()),
    "WATCH": ({Property.LOOKABLE}, set()),
    "TYPE": (set(), {"keyboard"}),
    "PLUGIN": ({Property.HAS_PLUG}, set()),
    "PLUGOUT": ({Property.HAS_PLUG}, set()),
    "PUTON": ({Property.CLOTHES}, set()),
    "PUTOFF": ({Property.CLOTHES}, set()),
}
_DESTINATION = {
    "PUTBACK": {Property.SURFACES},
    "PUTIN": {Property.CONTAINERS, Property.CAN_OPEN},
    "POUR": {Property.RECIPIENT},
}
_WALKABLE = {
    Property.GRABBABLE,
    Property.CAN_OPEN,
    Property.HAS_SWITCH,
    Property.SITTABLE,
    Property.LIEABLE,
    Property.SURFACES,
    Property.CONTAINERS,
    Property.HAS_PLUG,
    Property.READABLE,
    Property.LOOKABLE,
    Property.DRINKABLE,
    Property.EATABLE,
    Property.CLOTHES,
}
VERBS = ("WALK", "STANDUP", *_ONE_TARGET, *_DESTINATION)


def _script(action: Action) -> Script:
    try:
        vh_action = VHAction[action.verb]
    except KeyError:
        raise E2WMError(f"unknown action verb [{action.verb}] in {action}") from None
    if len(action.targets) != vh_action.value[1]:
        raise E2WMError(
            f"[{action.verb}] takes {vh_action.value[1]} object(s), got {len(action.targets)}: {action}"
        )
    return Script([ScriptLine(vh_action, [ScriptObject(t.name, t.id) for t in action.targets], 1)])


def _clean(message: str) -> str:
    return _WHEN.sub("", message).strip()


class VirtualHomeSimulator:
    """Symbolic VirtualHome: reset to a scene graph, list valid actions, step, undo.

    >>> sim = VirtualHomeSimulator()
    >>> sim.reset(program.graphs()[0])
    >>> sim.step(Action.parse("[WALK] <kitchen> (205)")).success
    """

    def __init__(self, graph: dict[str, Any] | None = None):
        self.state: GraphState | None = None
        self._init_graph: dict[str, Any] | None = None
        if graph is not None:
            self.reset(graph)

    def reset(self, graph: dict[str, Any] | None = None) -> None:
        if graph is None:
            graph = resources.programs()[0].graphs()[0]
        self.state = GraphState(graph, resources.name_equivalence())
        self._init_graph = graph
        self._check_character_room()

    def _check_character_room(self) -> None:
        if self.room_of(self.state.char_id) is None:
            raise E2WMError("scene graph: the character is not inside any room")

    # --- acting -------------------------------------------------------------------------------------

    def step(self, action: Action, agent: int = 0) -> StepResult:
        state = self._require_state()
        script = _script(action)
        for target in action.targets:
            node = state.get_node(target.id)
            if node is None:
                raise E2WMError(f"{action}: node {target.id} is not in the scene")
        info = ExecutionInfo()
        mark = state.mark()
        try:
            result = next(_EXECUTORS[script[0].action].execute(script, state, info, agent, True, True), None)
        except Exception as exc:  # the executors signal some failures by raising  # noqa: BLE001
            state.rollback(mark)
            return StepResult(action, False, f"{type(exc).__name__}: {exc}", state.change_since(mark))
        if result is None:
            state.rollback(mark)
            reason = _clean(info.get_error_string()) or "precondition failed"
            return StepResult(action, False, reason, state.change_since(mark))
        return StepResult(action, True, None, state.change_since(mark))

    def check(self, action: Action, agent: int = 0) -> bool:
        """Whether the action's preconditions hold now (nothing changes)."""
        state = self._require_state()
        script = _script(action)
        try:
            executor = _EXECUTORS[script[0].action]
            outcome = executor.execute(script, state, ExecutionInfo(), agent, False, False)
            return next(outcome, None) is not None
        except Exception:  # noqa: BLE001
            return False

    def mark(self) -> int:
        return self._require_state().mark()

    def rollback(self, mark: int) -> None:
        self._require_state().rollback(mark)

    # --- the action space ------------------------------------------------------------------------------

    def candidate_actions(
        self, objects: set[int] | None = None, verbs: tuple[str, ...] = VERBS, agent: int = 0
    ) -> list[Action]:
        """An agent's action space in this state: affordance-filtered, preconditions not yet checked.

        ``objects`` restricts targets to those node ids (rooms stay walkable); ``verbs`` the verbs.
        """
        state = self._require_state()
        nodes = (
            state.get_nodes() if objects is None else [n for i in sorted(objects) if (n := state.get_node(i))]
        )
        candidates: list[Action] = []
        if "WALK" in verbs:
            rooms = state.get_nodes_by_attr("category", "Rooms")
            walk = rooms + [n for n in nodes if n.category != "Rooms" and n.properties & _WALKABLE]
            candidates += [Action("WALK", (Target(n.class_name, n.id),)) for n in walk]
        if "STANDUP" in verbs:
            candidates.append(Action("STANDUP"))
        for verb, (props, names) in _ONE_TARGET.items():
            if verb in verbs:
                candidates += [
                    Action(verb, (Target(n.class_name, n.id),))
                    for n in nodes
                    if n.properties & props or n.class_name in names
                ]
        held = [state.get_node(i) for i in self.holds(agent)]
        for verb, props in _DESTINATION.items():
            if verb in verbs:
                candidates += [
                    Action(verb, (Target(h.class_name, h.id), Target(n.class_name, n.id)))
                    for h in held
                    for n in nodes
                    if n.properties & props and n.id != h.id
                ]
        return list(dict.fromkeys(candidates))

    def valid_actions(
        self, objects: set[int] | None = None, verbs: tuple[str, ...] = VERBS, agent: int = 0
    ) -> list[Action]:
        """Actions of an agent's action space whose preconditions hold now."""
        candidates = self.candidate_actions(objects, verbs, agent)
        # WALK's precondition, as the executor checks it: not sitting or lying, and the target is in a
        # room (the executor's closed-door check always passes). Checked directly: walks dominate the space.
        char = self.node(self._require_state().char_ids[agent])
        can_walk = not ({State.SITTING, State.LYING} & char.states)

        def valid(action: Action) -> bool:
            if action.verb == "WALK":
                return can_walk and self.room_of(action.targets[0].id) is not None
            return self.check(action, agent)

        return [a for a in candidates if valid(a)]

    # --- reading the state -----------------------------------------------------------------------------

    def graph(self) -> dict[str, Any]:
        return self._require_state().to_dict()

    def node(self, node_id: int) -> Any:
        return self._require_state().get_node(node_id)

    def name(self, node_id: int) -> str:
        node = self.node(node_id)
        return node.class_name if node is not None else f"node {node_id}"

    def room_of(self, node_id: int) -> int | None:
        """The room a node is in, following INSIDE edges."""
        state = self._require_state()
        seen = set()
        frontier = [node_id]
        while frontier:
            current = frontier.pop(0)
            node = state.get_node(current)
            if node is None or current in seen:
                continue
            if node.category == "Rooms":
                return current
            seen.add(current)
            frontier += sorted(state.ids_from(current, Relation.INSIDE))
        return None

    def states_of(self, node_id: int) -> set[str]:
        node = self.node(node_id)
        return {s.name for s in node.states} if node is not None else set()

    def holds(self, agent: int = 0) -> list[int]:
        """Ids of what an agent holds, in either hand."""
        state = self._require_state()
        char = state.char_ids[agent]
        return sorted(state.ids_from(char, Relation.HOLDS_RH) | state.ids_from(char, Relation.HOLDS_LH))

    def _require_state(self) -> GraphState:
        if self.state is None:
            raise E2WMError("simulator has no scene: call reset() first")
        return self.state


def humanize(message: str, names: dict[int, str] | None = None) -> str:
    """``<character> (65) is not close to <fridge> (306)`` -> ``the character is not close to the fridge``.

    ``names`` words given nodes otherwise: ``{65: "Mary", 306: "the second fridge"}``.
    """
    names = names or {}

    def word(m: re.Match) -> str:
        return names.get(int(m.group(2)), "the " + m.group(1).replace("_", " "))

    return _NODE_REF.sub(word, message)
