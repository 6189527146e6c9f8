"""Goal-oriented MCTS planner: UCT search over valid actions on goal-relevant objects.

Rewards are shaped: ``goal_reward`` for each goal predicate a step makes true, ``-undo_penalty`` for
each it makes false, ``-step_cost`` per step, ``success_bonus`` when the whole goal holds. Search is
receding-horizon: ``iterations`` simulations from the current state, then the most visited action
is taken, unless a simulation already reached the goal, whose (shortest) plan is then taken whole.
Simulations step the one simulator and roll back through its undo log: no state is copied.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from e2wm.agents.episode import episode_record, execute
from e2wm.agents.goals import Predicate, goal_from_graphs, relevant_objects
from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.resources import Program


@dataclass
class MCTSConfig:
    """Search budget and reward shaping of the planner."""

    iterations: int = field(default=150, metadata={"help": "mcts agent: simulations per decision"})
    max_steps: int = 25
    rollout_depth: int = 6
    exploration: float = 1.0
    goal_reward: float = 1.0
    undo_penalty: float = 1.0
    step_cost: float = 0.05
    success_bonus: float = 2.0
    gamma: float = 0.95
    patience: int = 8  # stop after this many decisions without a new goal predicate


@dataclass
class _Node:
    untried: list[Action] | None = None
    children: dict[Action, _Node] = field(default_factory=dict)
    visits: int = 0
    value: float = 0.0


@dataclass
class Plan:
    """The plan found, whether it reaches the goal, and the search trace of each decision."""

    actions: list[Action]
    reached: bool
    satisfied: int
    trace: list[dict[str, Any]]


class MCTSPlanner:
    def __init__(
        self, sim: VirtualHomeSimulator, goal: list[Predicate], config: MCTSConfig, rng: random.Random
    ):
        self.sim, self.goal, self.config, self.rng = sim, goal, config, rng
        self.objects = relevant_objects(sim, goal)

    def _satisfied(self) -> int:
        return sum(p.holds(self.sim) for p in self.goal)

    def _reward(self, before: int) -> tuple[float, int]:
        after = self._satisfied()
        c = self.config
        gained = after - before
        reward = c.goal_reward * max(gained, 0) + c.undo_penalty * min(gained, 0) - c.step_cost
        if after == len(self.goal):
            reward += c.success_bonus
        return reward, after

    def _rollout(self, satisfied: int) -> tuple[list[Action], list[float], int]:
        """Random valid actions (tried in random order, invalid ones rejected) until depth or goal."""
        actions, rewards = [], []
        for _ in range(self.config.rollout_depth):
            if satisfied == len(self.goal):
                break
            candidates = self.sim.candidate_actions(self.objects)
            self.rng.shuffle(candidates)
            for action in candidates[:12]:
                if self.sim.step(action).success:
                    reward, satisfied = self._reward(satisfied)
                    actions.append(action)
                    rewards.append(reward)
                    break
            else:
                break
        return actions, rewards, satisfied

    def _select(self, node: _Node) -> tuple[Action, _Node]:
        c = self.config.exploration
        log_n = math.log(node.visits + 1)
        return max(
            node.children.items(),
            key=lambda kv: kv[1].value / kv[1].visits + c * math.sqrt(log_n / kv[1].visits),
        )

    def _simulate(self, root: _Node, satisfied: int) -> list[Action] | None:
        """One UCT iteration; returns the full action sequence if it reached the goal."""
        sim = self.sim
        mark = sim.mark()
        node, path, actions, rewards = root, [root], [], []
        while satisfied < len(self.goal):
            if node.untried is None:
                node.untried = sim.valid_actions(self.objects)
                self.rng.shuffle(node.untried)
            if node.untried:
                action = node.untried.pop()
                child = node.children[action] = _Node()
            elif node.children:
                action, child = self._select(node)
            else:
                break
            sim.step(action)
            reward, satisfied = self._reward(satisfied)
            actions.append(action)
            rewards.append(reward)
            path.append(child)
            node = child
            if child.visits == 0:
                break
        tail, tail_rewards, satisfied = self._rollout(satisfied)
        rewards += tail_rewards
        # Back up, into each tree node, the discounted return from the action that led to it onward.
        ret, returns = 0.0, [0.0] * (len(rewards) + 1)
        for i in range(len(rewards) - 1, -1, -1):
            ret = rewards[i] + self.config.gamma * ret
            returns[i] = ret
        for depth, tree_node in enumerate(path):
            tree_node.visits += 1
            tree_node.value += returns[max(depth - 1, 0)]
        sim.rollback(mark)
        return actions + tail if satisfied == len(self.goal) else None

    def plan(self) -> Plan:
        sim, config = self.sim, self.config
        actions: list[Action] = []
        trace: list[dict[str, Any]] = []
        satisfied = self._satisfied()
        start = sim.mark()
        best_satisfied, stale = satisfied, 0
        while satisfied < len(self.goal) and len(actions) < config.max_steps and stale < config.patience:
            root = _Node()
            best: list[Action] | None = None
            for _ in range(config.iterations):
                found = self._simulate(root, satisfied)
                if found is not None and (best is None or len(found) < len(best)):
                    best = found
            if best is not None:
                chosen = best[: config.max_steps - len(actions)]
            elif root.children:
                chosen = [max(root.children.items(), key=lambda kv: (kv[1].visits, kv[1].value))[0]]
            else:
                break
            for action in chosen:
                if not sim.step(action).success:
                    raise RuntimeError(
                        f"planned action {action} failed on replay"
                    )  # the simulator is deterministic
                satisfied = self._satisfied()
                actions.append(action)
                trace.append(
                    {
                        "action": str(action),
                        "visits": root.visits,
                        "satisfied": satisfied,
                        "from_solution": best is not None,
                    }
                )
            stale = 0 if satisfied > best_satisfied else stale + 1
            best_satisfied = max(best_satisfied, satisfied)
        reached = satisfied == len(self.goal)
        if reached:
            sim.rollback(start)
            actions = self._prune(actions)
            for action in actions:
                sim.step(action)
        return Plan(actions, reached, satisfied, trace)

    def _prune(self, actions: list[Action]) -> list[Action]:
        """Drop, one at a time, each action the plan still reaches the goal without."""
        i = len(actions) - 1
        while i >= 0:
            candidate = actions[:i] + actions[i + 1 :]
            mark = self.sim.mark()
            if all(self.sim.step(a).success for a in candidate) and self._satisfied() == len(self.goal):
                actions = candidate
            self.sim.rollback(mark)
            i -= 1
        return actions


def plan_episode(
    sim: VirtualHomeSimulator, program: Program, config: MCTSConfig, seed: int, episode_id: str
) -> dict[str, Any]:
    """Plan for ``program``'s goal from its initial graph, then record the plan's execution."""
    initial, final = program.graphs()
    goal = goal_from_graphs(initial, final)
    sim.reset(initial)
    planner = MCTSPlanner(sim, goal, config, random.Random(seed))
    plan = planner.plan()
    run = execute(sim, initial, plan.actions, planner.objects, stop_at_failure=False)
    return episode_record(
        episode_id=episode_id,
        agent="mcts",
        seed=seed,
        program=program,
        goal=goal,
        success=plan.reached,
        **run,
    )
