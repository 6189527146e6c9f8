"""One pass of the simulator over a recorded episode, keeping the facts the corpus tasks ask about.

Every answer in the corpus comes from simulator state. ``trace_episode`` rebuilds the episode's world
(initial graph, each person's starting room), re-executes its steps once, checks that each step
succeeds or fails as recorded, and keeps after every step a ``Snapshot`` of the objects the episode
touches: room, support or container, states, who holds what, and whether each person could grab each
touched object (and why not). All tasks of an episode read one trace.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from virtualhome_eval.simulation.evolving_graph.environment import Property, Relation

from e2wm.rollouts.replay import initial_graph, replay_steps, start, touched_objects
from e2wm.simulator.protocol import Action, Target
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "other")


@dataclass
class Snapshot:
    """Facts about the touched objects and the people, at one moment of an episode."""

    rooms: dict[int, int]  # object or person id -> room id
    places: dict[int, tuple[str, int] | None]  # object -> ("ON" | "INSIDE", non-room node), if any
    states: dict[int, frozenset[str]]  # object -> its states
    held: dict[int, tuple[int, ...]]  # person index -> ids held
    postures: dict[int, tuple[str, int] | None]  # person index -> ("SITTING" | "LYING", on what), if any
    close: dict[int, tuple[int, ...]]  # person index -> touched objects the person is close to
    grab: dict[tuple[int, int], str | None]  # (person index, grabbable object) -> None, or the failure


@dataclass
class Trace:
    """An episode row, the names of its nodes, and a snapshot before and after every step."""

    episode: dict[str, Any]
    names: dict[int, str]
    categories: dict[int, str]
    people: list[int]  # character node ids, by person index
    objects: list[int]  # touched objects (non-room action targets), in order of first touch
    snapshots: list[Snapshot] = field(default_factory=list)
    labels: dict[int, str] = field(default_factory=dict)

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.episode["steps"]

    def name(self, node_id: int) -> str:
        return self.names[node_id].replace("_", " ")

    def label(self, node_id: int) -> str:
        """The name, with an ordinal if the episode touches several objects of its class: ``second mat``."""
        return self.labels.get(node_id) or self.name(node_id)

    def rooms(self) -> list[int]:
        return sorted(i for i, c in self.categories.items() if c == "Rooms")


def _snapshot(
    sim: VirtualHomeSimulator, people: list[int], objects: list[int], grabbable: list[int]
) -> Snapshot:
    state = sim.state
    places: dict[int, tuple[str, int] | None] = {}
    for obj in objects:
        places[obj] = None
        for rel in (Relation.ON, Relation.INSIDE):
            support = [i for i in sorted(state.ids_from(obj, rel)) if sim.node(i).category != "Rooms"]
            if support:
                places[obj] = (rel.name, support[0])
                break
    postures: dict[int, tuple[str, int] | None] = {}
    for k, char in enumerate(people):
        states = sim.states_of(char)
        on = sorted(state.ids_from(char, Relation.ON))
        posture = next((s for s in ("SITTING", "LYING") if s in states), None)
        postures[k] = (posture, on[0]) if posture and on else None
    grab: dict[tuple[int, int], str | None] = {}
    for k in range(len(people)):
        for obj in grabbable:
            mark = sim.mark()
            result = sim.step(Action("GRAB", (Target(sim.name(obj), obj),)), k)
            sim.rollback(mark)
            grab[(k, obj)] = None if result.success else result.failure or "precondition failed"
    touched = set(objects)
    return Snapshot(
        rooms={i: sim.room_of(i) for i in (*objects, *people)},
        places=places,
        states={i: frozenset(sim.states_of(i)) for i in objects},
        held={k: tuple(sim.holds(k)) for k in range(len(people))},
        postures=postures,
        close={
            k: tuple(sorted(touched & set(state.ids_from(c, Relation.CLOSE)))) for k, c in enumerate(people)
        },
        grab=grab,
    )


def trace_episode(
    episode: dict[str, Any], sim: VirtualHomeSimulator, scene_graphs: dict[str, dict[str, Any]] | None = None
) -> Trace:
    """Re-execute ``episode`` once and snapshot the state before and after each step."""
    people = start(episode, sim, initial_graph(episode, scene_graphs))
    objects = touched_objects(episode, sim)
    grabbable = [i for i in objects if Property.GRABBABLE in sim.node(i).properties]
    names = {n.id: n.class_name for n in sim.state.get_nodes()}
    categories = {n.id: n.category for n in sim.state.get_nodes()}
    trace = Trace(episode, names, categories, people, objects)
    classes = Counter(names[i] for i in objects)
    seen: Counter[str] = Counter()
    for obj in objects:
        if classes[names[obj]] > 1:
            seen[names[obj]] += 1
            trace.labels[obj] = f"{_ORDINALS[min(seen[names[obj]], len(_ORDINALS)) - 1]} {trace.name(obj)}"
    trace.snapshots.append(_snapshot(sim, people, objects, grabbable))
    for _ in replay_steps(episode, sim):
        trace.snapshots.append(_snapshot(sim, people, objects, grabbable))
    return trace
