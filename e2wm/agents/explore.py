"""Random exploration: random valid actions, biased toward interacting with objects."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from e2wm.agents.episode import episode_record, step_record
from e2wm.simulator.text import AGENT, describe_state
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator


@dataclass
class ExploreConfig:
    """Episode length, how many people act, and how much each verb is preferred.

    With several people, each step the acting person changes with probability ``switch``. Verbs not
    listed in ``verb_weights`` weigh ``other_weight``.
    """

    length: int = field(default=20, metadata={"help": "random agent: steps per episode"})
    people: int = field(default=2, metadata={"help": "random agent: people acting in each episode"})
    switch: float = 0.3
    verb_weights: dict[str, float] = field(
        default_factory=lambda: {
            "WALK": 2.0,
            "GRAB": 4.0,
            "PUTBACK": 3.0,
            "PUTIN": 3.0,
            "OPEN": 2.0,
            "CLOSE": 1.5,
            "SWITCHON": 1.5,
            "SWITCHOFF": 1.0,
        }
    )
    other_weight: float = 0.3


def choose(actions: list[Any], config: ExploreConfig, rng: random.Random) -> Any:
    """Pick a verb by weight among those available, then one of its actions uniformly."""
    by_verb: dict[str, list[Any]] = {}
    for action in actions:
        by_verb.setdefault(action.verb, []).append(action)
    verbs = sorted(by_verb)
    weights = [config.verb_weights.get(v, config.other_weight) for v in verbs]
    verb = rng.choices(verbs, weights)[0]
    return rng.choice(by_verb[verb])


def explore_episode(
    sim: VirtualHomeSimulator,
    graph: dict[str, Any],
    graph_id: str,
    split: str,
    config: ExploreConfig,
    seed: int,
    episode_id: str,
) -> dict[str, Any]:
    """Random valid actions of ``config.people`` people from ``graph`` for ``config.length`` steps.

    Everyone but the scene's own character starts in a random room.
    """
    rng = random.Random(seed)
    sim.reset(graph)
    rooms = sorted(n.id for n in sim.state.get_nodes_by_attr("category", "Rooms"))
    for _ in range(config.people - 1):
        sim.state.add_character(rng.choice(rooms))
    names = AGENT if config.people == 1 else tuple(f"person {k + 1}" for k in range(config.people))
    initial_text = " ".join(describe_state(sim, (), names, k) for k in range(config.people))
    people_rooms = [sim.room_of(char) for char in sim.state.char_ids]
    steps: list[dict[str, Any]] = []
    actor = 0
    for index in range(config.length):
        if config.people > 1 and rng.random() < config.switch:
            actor = rng.choice([k for k in range(config.people) if k != actor])
        actions = sim.valid_actions(agent=actor)
        if not actions:
            break
        action = choose(actions, config, rng)
        steps.append(step_record(sim, index, sim.step(action, actor), actor, names))
    return episode_record(
        episode_id=episode_id,
        agent="random",
        seed=seed,
        steps=steps,
        initial_state_text=initial_text,
        people_rooms=people_rooms,
        graph_id=graph_id,
        split=split,
    )
