"""Rollout agents: program replay, goal-oriented MCTS, random exploration."""
