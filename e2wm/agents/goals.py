"""Goals as predicates over the scene graph: what a program's final graph adds over its initial one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from virtualhome_eval.simulation.evolving_graph.environment import Relation

from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

# Relations that make a goal. CLOSE/FACING are proximity side effects; BETWEEN never changes.
GOAL_RELATIONS = ("ON", "INSIDE", "HOLDS_RH", "HOLDS_LH")
_HANDS = (Relation.HOLDS_RH, Relation.HOLDS_LH)


@dataclass(frozen=True)
class Predicate:
    """``subject`` has state ``relation`` (``object_id`` None), or ``subject relation object``.

    Holding is one predicate ``HOLDS`` whichever hand does it.
    """

    subject_id: int
    subject: str
    relation: str
    object_id: int | None = None
    object: str | None = None

    def __str__(self) -> str:
        tail = f" {self.object}({self.object_id})" if self.object_id is not None else ""
        return f"{self.subject}({self.subject_id}) {self.relation}{tail}"

    def holds(self, sim: VirtualHomeSimulator) -> bool:
        state = sim.state
        if self.object_id is None:
            node = state.get_node(self.subject_id)
            return node is not None and any(s.name == self.relation for s in node.states)
        if self.relation == "HOLDS":
            return any(self.object_id in state.ids_from(self.subject_id, r) for r in _HANDS)
        return self.object_id in state.ids_from(self.subject_id, Relation[self.relation])

    def to_record(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "subject": self.subject,
            "relation": self.relation,
            "object_id": self.object_id,
            "object": self.object,
        }


def goal_from_graphs(initial: dict[str, Any], final: dict[str, Any]) -> list[Predicate]:
    """Predicates true in ``final`` and not in ``initial``: new node states and new goal edges."""
    names = {n["id"]: n["class_name"] for n in final["nodes"]}
    before = {n["id"]: set(n.get("states", ())) for n in initial["nodes"]}
    goal = []
    for node in sorted(final["nodes"], key=lambda n: n["id"]):
        for state in sorted(set(node.get("states", ())) - before.get(node["id"], set())):
            goal.append(Predicate(node["id"], node["class_name"], state))

    def edges(graph: dict[str, Any]) -> set[tuple[int, str, int]]:
        return {
            (
                e["from_id"],
                "HOLDS" if e["relation_type"].startswith("HOLDS") else e["relation_type"],
                e["to_id"],
            )
            for e in graph["edges"]
            if e["relation_type"] in GOAL_RELATIONS
        }

    for src, rel, dst in sorted(edges(final) - edges(initial)):
        goal.append(Predicate(src, names[src], rel, dst, names[dst]))
    return goal


def relevant_objects(sim: VirtualHomeSimulator, goal: list[Predicate]) -> set[int]:
    """Objects a plan for ``goal`` may act on: those named in it and what contains or supports them now."""
    objects: set[int] = set()
    char = sim.state.char_id
    for p in goal:
        objects.update(i for i in (p.subject_id, p.object_id) if i is not None)
    for node_id in list(objects):
        for rel in (Relation.INSIDE, Relation.ON):
            objects.update(sim.state.ids_from(node_id, rel))
    return {i for i in objects if i != char and sim.node(i) is not None and sim.node(i).category != "Rooms"}
