"""VirtualHome's own executor, run the plain way: the reference e2wm's backend is tested and timed against.

``ScriptExecutor`` over ``EnvironmentGraph`` / ``EnvironmentState`` as virtualhome-eval ships them (the
``virtualhome`` 2.3.0 wheel carries an older copy that crashes on FIND-with-walk and PUTOFF).
"""

from __future__ import annotations

from typing import Any

from virtualhome_eval.simulation.evolving_graph.environment import EnvironmentGraph, EnvironmentState
from virtualhome_eval.simulation.evolving_graph.execution import ScriptExecutor
from virtualhome_eval.simulation.evolving_graph.scripts import Action as VHAction
from virtualhome_eval.simulation.evolving_graph.scripts import Script, ScriptLine, ScriptObject

from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome.resources import name_equivalence


def script(actions: list[Action]) -> Script:
    return Script(
        [
            ScriptLine(VHAction[a.verb], [ScriptObject(t.name, t.id) for t in a.targets], i + 1)
            for i, a in enumerate(actions)
        ]
    )


class ReferenceRun:
    """Steps actions one at a time with ``ScriptExecutor.execute_one_step``, as a plain user would."""

    def __init__(self, graph: dict[str, Any]):
        self.executor = ScriptExecutor(EnvironmentGraph(graph), name_equivalence())
        self.state = EnvironmentState(
            self.executor.graph, self.executor.name_equivalence, instance_selection=True
        )

    def step(self, action: Action) -> bool:
        ok, self.state = self.executor.execute_one_step(script([action]), self.state)
        return ok

    def edge_set(self) -> set[tuple[int, str, int]]:
        return {(e["from_id"], e["relation_type"], e["to_id"]) for e in self.state.to_dict()["edges"]}

    def node_states(self) -> dict[int, set[str]]:
        return {n.id: {s.name for s in n.states} for n in self.state.get_nodes()}
