"""Rollout speed: e2wm's VirtualHome backend against VirtualHome's own executor and a deep-copy wrapper.

Prints, from one run on the same programs and actions:
- environment steps/s of e2wm vs VirtualHome's ``ScriptExecutor`` stepping the same actions
  (``execute_one_step``), checking that both end in identical graphs;
- environment steps/s of e2wm vs a naive wrapper that deep-copies the whole state before each step,
  as simple MCTS implementations do;
- wall time to replay and record every program, loading included (``e2wm collect --agent replay``
  with 2 workers), vs loading and running them with ``ScriptExecutor.execute`` (which records the
  graph of every step).

    python bench/rollouts.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time

from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator
from e2wm.simulator.virtualhome.reference import ReferenceRun, script


def step_rates(programs: list[resources.Program], deepcopy_steps: int) -> tuple[float, float, float]:
    """Steps/s of e2wm, of VirtualHome's executor, and of the deep-copy wrapper (graphs preloaded)."""
    loaded = [(p.graphs()[0], p.actions()) for p in programs]
    sim = VirtualHomeSimulator()
    e2wm_time = ref_time = 0.0
    steps = copies = 0
    copy_time = 0.0
    for graph, actions in loaded:
        sim.reset(graph)
        reference = ReferenceRun(graph)
        for action in actions:
            t = time.perf_counter()
            ok = sim.step(action).success
            e2wm_time += time.perf_counter() - t
            t = time.perf_counter()
            ref_ok = reference.step(action)
            ref_time += time.perf_counter() - t
            steps += 1
            if copies < deepcopy_steps:  # the state with its whole graph, as the wrapper copies it
                t = time.perf_counter()
                copy.deepcopy(reference.state)
                copy_time += time.perf_counter() - t
                copies += 1
            assert ok == ref_ok
            if not ok:
                break
        assert sim.state.edge_set() == reference.edge_set(), "graphs differ from VirtualHome's"
    ref_rate = steps / ref_time
    # The wrapper's step: deep-copy the state, then step it as VirtualHome does.
    copy_rate = 1 / (copy_time / copies + 1 / ref_rate)
    return steps / e2wm_time, ref_rate, copy_rate


def replay_times(programs: list[resources.Program]) -> tuple[float, float]:
    """Wall seconds to load, replay and record the programs: e2wm (2 workers) and VirtualHome."""
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        collect(
            CollectConfig(agent="replay", out=out, episodes=len(programs), workers=2, shard_size=32),
            progress=False,
        )
        e2wm_time = time.perf_counter() - t
    t = time.perf_counter()
    for program in programs:
        with open(program.graph_path) as f:
            graph = json.load(f)["init_graph"]
        run = ReferenceRun(graph)
        run.executor.execute(script(program.actions()))
    return e2wm_time, time.perf_counter() - t


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true", help="the first 100 programs only (under a minute)")
    args = parser.parse_args()
    programs = list(resources.programs())
    if args.quick:
        programs = programs[:100]
    e2wm_rate, ref_rate, copy_rate = step_rates(programs, deepcopy_steps=100 if args.quick else 300)
    e2wm_wall, ref_wall = replay_times(programs)
    n = len(programs)
    vh = "virtualhome ScriptExecutor"
    print(f"bench rollouts: steps_per_s = {e2wm_rate:.0f} ({e2wm_rate / ref_rate:.1f}x vs {vh})")
    print(
        f"bench rollouts: steps_per_s = {e2wm_rate:.0f} ({e2wm_rate / copy_rate:.0f}x vs deep-copy wrapper)"
    )
    print(
        f"bench rollouts: replay_{n}_programs_s = {e2wm_wall:.1f} "
        f"({ref_wall / e2wm_wall:.1f}x vs {vh} replay, {ref_wall:.1f} s)"
    )


if __name__ == "__main__":
    main()
