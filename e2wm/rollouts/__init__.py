"""Rollouts: the episode format, its shards, collecting them, and re-executing a recorded episode."""
