"""Corpus build speed: examples/s of `e2wm build` vs a builder that re-executes each episode per task.

`e2wm build` re-executes each episode once and lets every task read that trace. The baseline makes the
same examples (same seeds; checked equal) but re-executes the episode from scratch for every task, as
a builder of independent per-task scripts would. Ours is timed end to end (loading, building, leakage
filter, saving); the baseline only for making examples.

    python bench/build.py [--quick] [--rollouts outputs/demo/rollouts]

Without the `make demo` shards, it collects them first (as `make demo` does).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from e2wm.corpus.build import BuildConfig, build, build_examples
from e2wm.corpus.context import Context
from e2wm.corpus.tasks import TASKS
from e2wm.corpus.trace import trace_episode
from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.rollouts.shards import load_episodes, shard_files
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator


def demo_rollouts(out: Path) -> None:
    """The shards `make demo` collects."""
    collect(CollectConfig(agent="replay", out=str(out), workers=2), progress=False)
    mcts = CollectConfig(agent="mcts", out=str(out), episodes=24, workers=2, shard_size=8)
    collect(mcts, progress=False)
    explore = CollectConfig(agent="random", out=str(out), episodes=300, workers=2, shard_size=25)
    explore.explore.length = 30
    collect(explore, progress=False)


def baseline_examples(episodes: list[dict], config: BuildConfig) -> list[dict]:
    """The same examples, re-executing the episode from scratch for every task."""
    context = Context.from_episodes(episodes)
    sim = VirtualHomeSimulator()
    examples = []
    for episode in episodes:
        for task in config.tasks:
            trace = trace_episode(episode, sim)
            rng = random.Random(f"{config.seed}:{episode['episode_id']}:{task}")
            examples += TASKS[task](trace, context, rng)
    return examples


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true", help="a sample of the episodes (under a minute)")
    parser.add_argument("--rollouts", default="outputs/demo/rollouts", help="rollout shards to build from")
    args = parser.parse_args()
    rollouts = Path(args.rollouts)
    if not (rollouts.is_dir() and shard_files(rollouts)):
        demo_rollouts(rollouts)
    episodes = load_episodes(str(rollouts))
    config = BuildConfig(rollouts=str(rollouts), out="")
    start = time.perf_counter()
    if args.quick:  # every 8th episode: all agents, an eighth of the work
        episodes = episodes[::8]
        made = len(build_examples(episodes, config, progress=False))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            config.out = str(Path(tmp) / "corpus")
            made = sum(len(split) for split in build(config, progress=False).values())
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    baseline = baseline_examples(episodes, config)
    baseline_s = time.perf_counter() - start
    if args.quick:
        assert made == len(baseline), "the builders disagree"
    ours_rate, baseline_rate = made / ours_s, len(baseline) / baseline_s
    ratio = ours_rate / baseline_rate
    print(
        f"bench build: examples_per_s = {ours_rate:.0f} ({ratio:.1f}x vs re-executing each episode per task; "
        f"{made} examples from {len(episodes)} episodes)"
    )


if __name__ == "__main__":
    main()
