"""Rollout agents: goals, MCTS planning, random exploration, determinism by seed."""

import random

import pytest
from conftest import node_id

from e2wm.agents.explore import ExploreConfig, explore_episode
from e2wm.agents.goals import Predicate, goal_from_graphs, relevant_objects
from e2wm.agents.mcts import MCTSConfig, MCTSPlanner, plan_episode


def _plan(sim, goal, seed=0):
    start = sim.graph()
    plan = MCTSPlanner(sim, goal, MCTSConfig(iterations=80), random.Random(seed)).plan()
    return plan, start


def test_goal_is_what_the_final_graph_adds(drink_program):
    initial, final = drink_program.graphs()
    goal = {str(p) for p in goal_from_graphs(initial, final)}
    assert "cupboard(229) OPEN" in goal
    assert "water(1001) INSIDE water_glass(1000)" in goal
    assert not any(" CLOSE " in p or " FACING " in p for p in goal)


@pytest.mark.parametrize(
    "goal_of",
    [
        lambda s: [Predicate(node_id(s, "cupboard"), "cupboard", "OPEN")],
        lambda s: [Predicate(node_id(s, "faucet"), "faucet", "ON")],
        lambda s: [
            Predicate(s.state.char_id, "character", "HOLDS", node_id(s, "water_glass"), "water_glass")
        ],
        lambda s: [
            Predicate(
                node_id(s, "water_glass"),
                "water_glass",
                "ON",
                node_id(s, "kitchen_counter"),
                "kitchen_counter",
            )
        ],
        lambda s: [
            Predicate(s.state.char_id, "character", "SITTING"),
            Predicate(s.state.char_id, "character", "ON", node_id(s, "chair"), "chair"),
        ],
    ],
)
def test_mcts_solves_simple_goals(sim, goal_of):
    goal = goal_of(sim)
    plan, start = _plan(sim, goal)
    assert plan.reached, [str(a) for a in plan.actions]
    assert all(p.holds(sim) for p in goal)
    # The plan is executable from the start on its own, and no action in it is superfluous.
    sim.reset(start)
    assert all(sim.step(a).success for a in plan.actions)
    assert all(p.holds(sim) for p in goal)
    assert len(plan.actions) <= 6


def test_relevant_objects_include_containers_of_goal_objects(sim):
    glass, cupboard = node_id(sim, "water_glass"), node_id(sim, "cupboard")
    objects = relevant_objects(
        sim, [Predicate(sim.state.char_id, "character", "HOLDS", glass, "water_glass")]
    )
    assert {glass, cupboard} <= objects and sim.state.char_id not in objects


def test_mcts_episode_is_deterministic_by_seed(sim, drink_program):
    config = MCTSConfig(iterations=40, max_steps=10)
    first = plan_episode(sim, drink_program, config, 7, "e")
    second = plan_episode(sim, drink_program, config, 7, "e")
    assert first == second and first["num_steps"] > 0


def test_random_exploration_is_deterministic_and_biased_to_interaction(sim, drink_program):
    graph = drink_program.graphs()[0]
    config = ExploreConfig(length=30)
    episodes = [explore_episode(sim, graph, "g", "train", config, seed, "e") for seed in (1, 1, 2)]
    assert episodes[0] == episodes[1]
    assert episodes[0]["steps"] != episodes[2]["steps"]
    verbs = [s["verb"] for e in episodes for s in e["steps"]]
    assert all(s["success"] for e in episodes for s in e["steps"])
    assert len(verbs) == 90
    # WALK has ~10x more candidate actions than any other verb, yet the verb weights keep it a minority.
    assert verbs.count("WALK") < len(verbs) / 2
    assert {"GRAB", "OPEN"} <= set(verbs)
