"""Rollout collection at scale: episodes in sharded Parquet, reproducible by seed, resumable.

Episode ``i`` of a run depends only on (agent, seed, i), so shards can be made on any machine in any
order: shard ``k`` holds episodes ``[k * shard_size, (k + 1) * shard_size)`` and is written to a temporary
name, then renamed. A rerun skips shards that exist; ``shard_range`` splits one run across machines.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from e2wm.agents.explore import ExploreConfig, explore_episode
from e2wm.agents.goals import goal_from_graphs
from e2wm.agents.mcts import MCTSConfig, plan_episode
from e2wm.agents.replay import replay
from e2wm.errors import E2WMError, release
from e2wm.files import staged_file
from e2wm.rollouts.schema import SCHEMA
from e2wm.rollouts.shards import write_parquet
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.resources import Program
from e2wm.splits import SPLITS, split_of

AGENTS = ("replay", "mcts", "random")


@dataclass
class CollectConfig:
    """What to collect and where. ``episodes`` None: every program (replay, mcts) or 100 (random)."""

    agent: str = field(default="replay", metadata={"help": "rollout agent", "choices": AGENTS})
    out: str = field(default="outputs/rollouts", metadata={"help": "output directory for the shards"})
    episodes: int | None = field(
        default=None,
        metadata={"help": "episodes to collect (default: every program for replay/mcts, 100 for random)"},
    )
    workers: int = field(default=1, metadata={"help": "worker processes"})
    seed: int = field(default=0, metadata={"help": "run seed: same seed, byte-identical shards"})
    shard_size: int = field(default=32, metadata={"help": "episodes per shard"})
    shard_range: tuple[int, int] | None = field(
        default=None,
        metadata={"help": "make only shards FIRST..LAST-1 (to spread one run over machines)"},
    )
    splits: tuple[str, ...] = field(
        default=SPLITS,
        metadata={"help": "draw programs and scene graphs from these splits", "choices": SPLITS},
    )
    scene_graph: str | None = field(
        default=None, metadata={"help": "random agent: start every episode from this scene graph JSON"}
    )
    mcts: MCTSConfig = field(default_factory=MCTSConfig, metadata={"prefix": "mcts_"})
    explore: ExploreConfig = field(default_factory=ExploreConfig)

    def validate(self) -> None:
        if self.agent not in AGENTS:
            raise E2WMError(f"unknown agent {self.agent!r}: choose one of {', '.join(AGENTS)}")
        if self.episodes is not None and self.episodes < 1:
            raise E2WMError(f"--episodes must be at least 1, got {self.episodes}")
        if self.workers < 1 or self.shard_size < 1:
            raise E2WMError("--workers and --shard-size must be at least 1")
        if self.scene_graph is not None and self.agent != "random":
            raise E2WMError(
                "--scene-graph applies to --agent random (replay and mcts use the programs' graphs)"
            )
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise E2WMError(f"unknown split(s) {sorted(unknown)}: choose from {', '.join(SPLITS)}")


def episode_seed(seed: int, agent: str, index: int) -> int:
    """A per-episode seed that depends only on the run seed, the agent and the episode index."""
    digest = hashlib.sha256(f"{seed}:{agent}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _source_programs(config: CollectConfig) -> list[Program]:
    chosen = [p for p in resources.programs() if split_of(p) in config.splits]
    if config.agent == "mcts":  # a program whose final graph adds nothing gives no goal to plan for
        chosen = [p for p in chosen if goal_from_graphs(*p.graphs())]
    if not chosen:
        raise E2WMError(f"no programs in splits {', '.join(config.splits)}")
    return chosen


def num_episodes(config: CollectConfig, n_programs: int) -> int:
    if config.agent == "replay":
        return min(config.episodes or n_programs, n_programs)
    return config.episodes or (n_programs if config.agent == "mcts" else 100)


def run_episode(
    sim: VirtualHomeSimulator, config: CollectConfig, programs: list[Program], index: int
) -> dict[str, Any]:
    """Episode ``index`` of the run: a function of (agent, seed, index) alone."""
    seed = episode_seed(config.seed, config.agent, index)
    episode_id = f"{config.agent}-s{config.seed}-{index:06d}"
    if config.agent == "replay":
        return replay(sim, programs[index], seed)
    program = programs[seed % len(programs)]
    if config.agent == "mcts":
        return plan_episode(sim, program, config.mcts, seed, episode_id)
    if config.scene_graph is not None:
        graph, graph_id, split = _user_graph(config.scene_graph), Path(config.scene_graph).stem, "train"
    else:
        graph, graph_id, split = program.graphs()[0], program.id, split_of(program)
    return explore_episode(sim, graph, graph_id, split, config.explore, seed, episode_id)


def _user_graph(path: str) -> dict[str, Any]:
    if path not in _WORKER.setdefault("graphs", {}):
        graph = resources.load_json(path)
        VirtualHomeSimulator(graph)  # validate: a malformed graph fails here with one line
        _WORKER["graphs"][path] = graph
    return _WORKER["graphs"][path]


def shard_path(config: CollectConfig, shard: int, n_shards: int) -> Path:
    return Path(config.out) / f"{config.agent}-{shard:05d}-of-{n_shards:05d}.parquet"


_WORKER: dict[str, Any] = {}


def _init_worker(config: CollectConfig, programs: list[Program]) -> None:
    _WORKER.update(sim=VirtualHomeSimulator(), config=config, programs=programs)


def _make_shard(job: tuple[int, int, int, Path]) -> int:
    start, stop, _, path = job
    sim, config, programs = _WORKER["sim"], _WORKER["config"], _WORKER["programs"]
    rows = [run_episode(sim, config, programs, i) for i in range(start, stop)]
    write_parquet(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return stop - start


def _manifest(config: CollectConfig, n_episodes: int) -> dict[str, Any]:
    settings = asdict(config)
    for key in ("out", "workers", "shard_range"):  # these do not change what is collected
        settings.pop(key)
    settings["splits"] = list(config.splits)
    return {"episodes": n_episodes, **settings}


def collect(config: CollectConfig, progress: bool = True) -> list[Path]:
    """Collect the configured episodes; returns the shard paths of the requested range."""
    config.validate()
    programs = _source_programs(config)
    if config.scene_graph is not None:
        _user_graph(config.scene_graph)
    n = num_episodes(config, len(programs))
    n_shards = math.ceil(n / config.shard_size)
    first, last = config.shard_range or (0, n_shards)
    if not 0 <= first < last <= n_shards:
        raise E2WMError(f"--shard-range {first}:{last} is outside 0:{n_shards}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / f".{config.agent}-manifest.json"  # hidden: load_dataset skips it
    manifest = _manifest(config, n)
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous != manifest:
            changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
            raise E2WMError(
                f"{out} holds {config.agent} shards of a different run (differs in: "
                f"{', '.join(changed)}); use another --out or remove them"
            )
    else:
        with staged_file(manifest_path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    for stale in out.glob(f".tmp-*-{config.agent}-*.parquet"):
        stale.unlink()
    shards = [
        (k * config.shard_size, min(n, (k + 1) * config.shard_size), k, shard_path(config, k, n_shards))
        for k in range(first, last)
    ]
    todo = [job for job in shards if not job[3].exists()]
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    bar = tqdm(
        total=sum(stop - start for start, stop, _, _ in shards),
        disable=not progress,
        desc=f"collect {config.agent}",
        unit="episode",
    )
    bar.update(sum(stop - start for start, stop, _, path in shards if path.exists()))
    if config.workers == 1 or len(todo) <= 1:
        _init_worker(config, programs)
        for job in todo:
            bar.update(_make_shard(job))
    else:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        with context.Pool(min(config.workers, len(todo)), _init_worker, (config, programs)) as pool:
            for done in pool.imap_unordered(_make_shard, todo):
                bar.update(done)
    bar.close()
    return [job[3] for job in shards]
