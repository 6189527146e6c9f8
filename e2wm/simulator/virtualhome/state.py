"""An indexed, in-place, undoable scene graph that VirtualHome's executors run against.

VirtualHome's ``EnvironmentState`` layers changes over a base graph, deep-copies them on every step,
and deletes edges by scanning every node. ``GraphState`` offers the same interface over one mutable
graph with forward and reverse edge indexes, so a step touches only the edges it changes, and logs
every mutation so that any number of steps can be undone (MCTS needs no copies) and the net change
of a step is read off the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from virtualhome_eval.simulation.evolving_graph import environment as vh_env
from virtualhome_eval.simulation.evolving_graph.environment import (
    AddEdges,
    AddExecDataValue,
    AddNode,
    AnyNode,
    AnyNodeFilter,
    ChangeNode,
    CharacterNode,
    ClearExecDataKey,
    CountRelations,
    DeleteEdges,
    ExistsRelation,
    GraphNode,
    NodeInstance,
    NodeInstanceFilter,
    ObjectInsideNode,
    Property,
    Relation,
    State,
)

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Edge, NodeStateChange, StateChange

_PROPERTY = {p.name: p for p in Property}
_STATE = {s.name: s for s in State}
_RELATION = {r.name: r for r in Relation}

# Undo-log operations.
_ADD_EDGE, _DEL_EDGE, _SET_NODE, _NEW_NODE, _EXEC_DATA, _SCRIPT_OBJ = range(6)
_MISSING = object()


def _enum(table: dict[str, Any], value: Any, what: str, node_id: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return table[value.upper()]
    except KeyError:
        raise E2WMError(f"scene graph: node {node_id} has unknown {what} {value!r}") from None


def _node_from_dict(d: dict[str, Any]) -> GraphNode:
    try:
        node_id, class_name = d["id"], d["class_name"]
    except (KeyError, TypeError):
        raise E2WMError(f"scene graph: node without 'id' and 'class_name': {str(d)[:80]}") from None
    if not isinstance(node_id, int) or not isinstance(class_name, str):
        raise E2WMError(f"scene graph: node id must be an integer and class_name a string: {str(d)[:80]}")
    props = {_enum(_PROPERTY, p, "property", node_id) for p in d.get("properties", ())}
    states = {_enum(_STATE, s, "state", node_id) for s in d.get("states", ())}
    # The bounding box is kept as the raw dict: only to_dict() reads it.
    return GraphNode(
        node_id, class_name, props, states, d.get("category"), d.get("prefab_name"), d.get("bounding_box")
    )


class GraphState:
    """Scene graph state with the interface of VirtualHome's ``EnvironmentState`` (instance selection)."""

    instance_selection = True

    def __init__(self, graph: dict[str, Any], name_equivalence: dict[str, list[str]] | None = None):
        if (
            not isinstance(graph, dict)
            or not isinstance(graph.get("nodes"), list)
            or not isinstance(graph.get("edges"), list)
        ):
            raise E2WMError("scene graph: expected a JSON object with 'nodes' and 'edges' lists")
        self._name_equivalence = name_equivalence or {}
        self.executor_data: dict[Any, Any] = {}
        self._script_objects: dict[tuple[str, int], int] = {}
        self._nodes: dict[int, GraphNode] = {}
        self._by_class: dict[str, list[int]] = {}
        for d in graph["nodes"]:
            node = _node_from_dict(d)
            if node.id not in self._nodes:
                self._by_class.setdefault(node.class_name, []).append(node.id)
            self._nodes[node.id] = node
        self._max_node_id = max(self._nodes, default=0)
        # Forward edges, per (source, relation): the scene's original edges and the edges added since,
        # each mapping target id -> insertion number, in insertion order (see get_nodes_from for why).
        self._base: dict[tuple[int, Relation], dict[int, int]] = {}
        self._new: dict[tuple[int, Relation], dict[int, int]] = {}
        self._in: dict[tuple[int, Relation], set[int]] = {}
        self._seq = 0
        for e in graph["edges"]:
            try:
                src, rel, dst = e["from_id"], e["relation_type"], e["to_id"]
            except (KeyError, TypeError):
                raise E2WMError(
                    f"scene graph: edge without from_id/relation_type/to_id: {str(e)[:80]}"
                ) from None
            if src not in self._nodes or dst not in self._nodes:
                raise E2WMError(f"scene graph: edge {src} {rel} {dst} names a node that does not exist")
            relation = _enum(_RELATION, rel, "relation", src)
            out = self._base.setdefault((src, relation), {})
            if dst not in out:
                out[dst] = self._seq
                self._seq += 1
            self._in.setdefault((dst, relation), set()).add(src)
        chars = self._by_class.get("character", [])
        if not chars:
            raise E2WMError("scene graph: no 'character' node")
        self._char_ids = sorted(chars)
        self._node_list: list[GraphNode] | None = None
        self._log: list[tuple] = []

    # --- undo log -------------------------------------------------------------------------------

    def mark(self) -> int:
        """A point to roll back to or to diff against."""
        return len(self._log)

    def rollback(self, mark: int) -> None:
        """Undo every mutation made since ``mark``."""
        log = self._log
        while len(log) > mark:
            op, *args = log.pop()
            if op == _ADD_EDGE:
                src, rel, dst, _, _ = args
                del self._new[(src, rel)][dst]
                self._in[(dst, rel)].discard(src)
            elif op == _DEL_EDGE:
                src, rel, dst, table, seq = args
                out = table.setdefault((src, rel), {})
                out[dst] = seq
                if any(v > seq for v in out.values()):  # back to its old place in insertion order
                    table[(src, rel)] = dict(sorted(out.items(), key=lambda kv: kv[1]))
                self._in.setdefault((dst, rel), set()).add(src)
            elif op == _SET_NODE:
                self._nodes[args[0]] = args[1]
                self._node_list = None
            elif op == _NEW_NODE:
                node = self._nodes.pop(args[0])
                self._by_class[node.class_name].remove(node.id)
                if node.id in self._char_ids:
                    self._char_ids.remove(node.id)
                self._max_node_id = args[1]
                self._node_list = None
            elif op == _EXEC_DATA:
                self._restore(self.executor_data, *args)
            elif op == _SCRIPT_OBJ:
                self._restore(self._script_objects, *args)

    @staticmethod
    def _restore(table: dict, key: Any, old: Any) -> None:
        if old is _MISSING:
            table.pop(key, None)
        else:
            table[key] = old

    def _set(self, op: int, table: dict, key: Any, value: Any) -> None:
        self._log.append((op, key, table.get(key, _MISSING)))
        if value is _MISSING:
            table.pop(key, None)
        else:
            table[key] = value

    def change_since(self, mark: int) -> StateChange:
        """The net change made since ``mark``: node states gained/lost, edges added/removed."""
        edges: dict[tuple[int, Relation, int], int] = {}
        first_node: dict[int, GraphNode | None] = {}
        for op, *args in self._log[mark:]:
            if op in (_ADD_EDGE, _DEL_EDGE):
                key = tuple(args[:3])
                delta = edges.get(key, 0) + (1 if op == _ADD_EDGE else -1)
                edges[key] = delta
            elif op == _SET_NODE:
                first_node.setdefault(args[0], args[1])
            elif op == _NEW_NODE:
                first_node.setdefault(args[0], None)
        change = StateChange()
        for node_id, old in sorted(first_node.items()):
            new = self._nodes.get(node_id)
            old_states = {s.name for s in old.states} if old is not None else set()
            new_states = {s.name for s in new.states} if new is not None else set()
            node = NodeStateChange.between(node_id, (new or old).class_name, old_states, new_states)
            if node is not None:
                change.nodes.append(node)
        for (src, rel, dst), delta in sorted(
            edges.items(), key=lambda kv: (kv[0][0], kv[0][1].value, kv[0][2])
        ):
            if delta > 0:
                change.edges_added.append(Edge(src, rel.name, dst))
            elif delta < 0:
                change.edges_removed.append(Edge(src, rel.name, dst))
        return change

    # --- queries (EnvironmentState interface) ------------------------------------------------------

    def evaluate(self, lvalue: Any) -> bool:
        # Fast paths for the relation tests the executors ask most, answered from the indexes.
        if type(lvalue) is ExistsRelation:
            source, target = lvalue.from_nodes, lvalue.to_nodes
            if type(source) is NodeInstance:
                src = source.node.id
            elif type(source) is CharacterNode:
                src = self._char_ids[source.char_index]
            else:
                return lvalue.evaluate(self)
            if type(target) is NodeInstanceFilter:
                return self._has(src, lvalue.relation, target.node.id)
            if type(target) is AnyNodeFilter:
                key = (src, lvalue.relation)
                return bool(self._new.get(key)) or bool(self._base.get(key))
            return lvalue.evaluate(self)
        if (
            isinstance(lvalue, CountRelations)
            and type(lvalue.from_nodes) is AnyNode
            and isinstance(lvalue.to_nodes, NodeInstanceFilter)
        ):
            return len(self._in.get((lvalue.to_nodes.node.id, lvalue.relation), ())) >= lvalue.min_value
        return lvalue.evaluate(self)

    def get_node(self, node_id: int) -> GraphNode | None:
        return self._nodes.get(node_id)

    def get_nodes(self) -> list[GraphNode]:
        if self._node_list is None:
            self._node_list = list(self._nodes.values())
        return self._node_list

    def get_max_node_id(self) -> int:
        return self._max_node_id

    def get_nodes_by_attr(self, attr: str, value: Any) -> list[GraphNode]:
        if attr == "class_name":
            return [self._nodes[i] for i in self._by_class.get(value, ())]
        return [n for n in self._nodes.values() if getattr(n, attr) == value]

    def get_char_node(self, char_index: int) -> Iterator[GraphNode]:
        yield self._nodes[self._char_ids[char_index]]

    def select_nodes(self, obj: Any) -> list[GraphNode]:
        node = self._nodes.get(obj.instance)
        return [node] if node is not None else []

    def get_state_node(self, obj: Any) -> GraphNode | None:
        return self._nodes.get(obj.instance)

    def get_script_node(self, name: str, instance: int) -> int | None:
        return self._script_objects.get((name, instance))

    def has_edge(self, from_node: Any, relation: Relation, to_node: Any) -> bool:
        return self._has(from_node.id, relation, to_node.id)

    def _has(self, src: int, relation: Relation, dst: int) -> bool:
        key = (src, relation)
        return dst in self._new.get(key, ()) or dst in self._base.get(key, ())

    def _ids(self, key: tuple[int, Relation]) -> Any:
        """Targets of a key in VirtualHome's iteration order.

        VirtualHome iterates sets of ids filled one id at a time (new edges, then original ones). A set's
        order depends on its table size, so this builds one the same way: from a list, never from a
        dict, which CPython presizes.
        """
        new, base = self._new.get(key), self._base.get(key)
        if not new:
            return base if not base or len(base) == 1 else set(list(base))
        return set([*new, *base]) if base else set(list(new))

    def get_nodes_from(self, from_node: Any, relation: Relation) -> list[GraphNode]:
        # Some executors take "the first" node (GRAB: what the object rests on or is close to). VirtualHome
        # iterates a set of ids built in edge insertion order; a fresh set built in that same order gives
        # the same iteration order, and, unlike a long-lived set, does not depend on earlier deletions,
        # so a plan behaves the same after any rollback.
        ids = self._ids((from_node.id, relation))
        if not ids:
            return []
        nodes = self._nodes
        return [nodes[i] for i in ids]

    def get_node_ids_from(self, from_id: int, relation: Relation) -> set[int]:
        return set(self._ids((from_id, relation)) or ())

    def ids_to(self, to_id: int, relation: Relation) -> set[int]:
        """Ids of nodes with a ``relation`` edge into ``to_id`` (reverse index)."""
        return self._in.get((to_id, relation), set())

    def ids_from(self, from_id: int, relation: Relation) -> set[int]:
        return self.get_node_ids_from(from_id, relation)

    @property
    def char_id(self) -> int:
        """The first character: the one single-agent episodes act with."""
        return self._char_ids[0]

    @property
    def char_ids(self) -> list[int]:
        """Every character, by index (the executors' ``char_index``)."""
        return list(self._char_ids)

    def add_character(self, room_id: int) -> int:
        """Add another character, standing in ``room_id``; returns its node id."""
        first = self._nodes[self._char_ids[0]]
        node = GraphNode(0, first.class_name, set(first.properties), set(), first.category, None, None)
        self.add_node(node)
        self._char_ids.append(node.id)
        self.add_edge(node, Relation.INSIDE, self._nodes[room_id])
        return node.id

    # --- mutations (EnvironmentState interface) -------------------------------------------------

    def add_edge(self, from_node: Any, relation: Relation, to_node: Any) -> None:
        src, dst = from_node.id, to_node.id
        if not self._has(src, relation, dst):
            self._new.setdefault((src, relation), {})[dst] = self._seq
            self._seq += 1
            self._in.setdefault((dst, relation), set()).add(src)
            self._log.append((_ADD_EDGE, src, relation, dst, None, None))

    def delete_edge(self, from_node: Any, relation: Relation, to_node: Any) -> None:
        self._delete(from_node.id, relation, to_node.id)

    def _delete(self, src: int, relation: Relation, dst: int) -> None:
        key = (src, relation)
        for table in (self._new, self._base):
            out = table.get(key)
            if out is not None and dst in out:
                seq = out.pop(dst)
                self._in[(dst, relation)].discard(src)
                self._log.append((_DEL_EDGE, src, relation, dst, table, seq))
                return

    def change_node(self, node: GraphNode) -> None:
        if node.id not in self._nodes:
            raise E2WMError(f"cannot change node {node.id}: not in the scene")
        self._log.append((_SET_NODE, node.id, self._nodes[node.id]))
        self._nodes[node.id] = node
        self._node_list = None

    def add_node(self, node: GraphNode) -> None:
        self._log.append((_NEW_NODE, self._max_node_id + 1, self._max_node_id))
        self._max_node_id += 1
        node.id = self._max_node_id
        self._nodes[node.id] = node
        self._by_class.setdefault(node.class_name, []).append(node.id)
        self._node_list = None

    def change_state(
        self, changers: Iterable[Any], node: Any = None, obj: Any = None, in_place: bool = False
    ) -> GraphState:
        """Apply changes in place (the log makes copies unnecessary) and return this state."""
        if obj is not None and node is not None:
            self._set(_SCRIPT_OBJ, self._script_objects, (obj.name, obj.instance), node.id)
        self.apply_changes(changers)
        return self

    def apply_changes(self, changers: Iterable[Any]) -> None:
        for changer in changers:
            kind = type(changer)
            if kind is DeleteEdges and type(changer.to_node) is AnyNode:
                # Delete only edges that exist, found through the indexes, instead of scanning all nodes.
                for n1 in list(changer.from_node.enumerate(self)):
                    for rel in changer.relations:
                        for dst in self.get_node_ids_from(n1.id, rel):
                            self._delete(n1.id, rel, dst)
                        if changer.delete_reverse:
                            for src in list(self._in.get((n1.id, rel), ())):
                                self._delete(src, rel, n1.id)
            elif kind is AddEdges and type(changer.to_node) is ObjectInsideNode:
                inside = [
                    self._nodes[i] for i in self.ids_to(changer.to_node.container_node.id, Relation.INSIDE)
                ]
                for n1 in list(changer.from_node.enumerate(self)):
                    for n2 in inside:
                        self.add_edge(n1, changer.relation, n2)
                        if changer.add_reverse:
                            self.add_edge(n2, changer.relation, n1)
            elif kind is AddExecDataValue:
                self._set(_EXEC_DATA, self.executor_data, changer.key, changer.value)
            elif kind is ClearExecDataKey:
                self._set(_EXEC_DATA, self.executor_data, changer.key, _MISSING)
            elif kind in (AddEdges, DeleteEdges, ChangeNode, AddNode):
                changer.apply_changes(self)
            else:
                raise E2WMError(f"unsupported state changer {kind.__name__}")

    # --- export ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The graph in VirtualHome's JSON format."""
        nodes = [
            {
                "id": n.id,
                "class_name": n.class_name,
                "category": n.category,
                "properties": sorted(p.name for p in n.properties),
                "states": sorted(s.name for s in n.states),
                "prefab_name": n.prefab_name,
                "bounding_box": _bbox(n.bounding_box),
            }
            for n in self._nodes.values()
        ]
        edges = [
            {"from_id": src, "relation_type": rel.name, "to_id": dst}
            for src, rel, dst in sorted(self._edges(), key=lambda e: (e[0], e[1].value, e[2]))
        ]
        return {"nodes": nodes, "edges": edges}

    def edge_set(self) -> set[tuple[int, str, int]]:
        return {(src, rel.name, dst) for src, rel, dst in self._edges()}

    def _edges(self) -> Iterator[tuple[int, Relation, int]]:
        for table in (self._base, self._new):
            for (src, rel), dsts in table.items():
                for dst in dsts:
                    yield src, rel, dst


def _bbox(box: Any) -> Any:
    return box.to_dict() if isinstance(box, vh_env.Bounds) else box
