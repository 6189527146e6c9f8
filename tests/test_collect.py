"""Collection at scale: sharded Parquet, determinism by seed, resume, shard ranges, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest

from e2wm.errors import E2WMError
from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.rollouts.shards import shard_files


def _bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in shard_files(directory)}


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "e2wm.cli", *args], capture_output=True, text=True, **kwargs)


def test_same_seed_gives_byte_identical_shards_and_datasets_reads_them(tmp_path):
    def run(out, seed, workers):
        config = CollectConfig(
            agent="random", out=str(out), episodes=6, shard_size=2, seed=seed, workers=workers
        )
        config.explore.length = 5
        return collect(config, progress=False)

    paths = run(tmp_path / "a", 0, 2)
    run(tmp_path / "b", 0, 1)
    run(tmp_path / "c", 1, 1)
    assert [p.name for p in paths] == [f"random-0000{i}-of-00003.parquet" for i in range(3)]
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    assert _bytes(tmp_path / "a") != _bytes(tmp_path / "c")
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "a"), split="train")
    assert ds.num_rows == 6 and len(set(ds["episode_id"])) == 6
    step = ds[0]["steps"][0]
    assert {
        "action",
        "success",
        "failure",
        "node_changes",
        "edges_added",
        "edges_removed",
        "change_text",
        "state_text",
    } <= set(step)


def test_replay_and_mcts_shards_share_one_schema(tmp_path):
    collect(CollectConfig(agent="replay", out=str(tmp_path), episodes=3, shard_size=3), progress=False)
    config = CollectConfig(agent="mcts", out=str(tmp_path), episodes=2, shard_size=2)
    config.mcts.iterations = 30
    collect(config, progress=False)
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path), split="train")
    assert sorted(set(ds["agent"])) == ["mcts", "replay"] and ds.num_rows == 5
    assert all(row["goal"] for row in ds)


def test_shard_ranges_on_separate_machines_add_up_to_the_whole_run(tmp_path):
    def config(out, shard_range=None):
        c = CollectConfig(agent="random", out=str(out), episodes=8, shard_size=2, shard_range=shard_range)
        c.explore.length = 4
        return c

    collect(config(tmp_path / "whole"), progress=False)
    collect(config(tmp_path / "parts", (0, 1)), progress=False)
    assert len(shard_files(tmp_path / "parts")) == 1
    collect(config(tmp_path / "parts", (1, 4)), progress=False)
    assert _bytes(tmp_path / "parts") == _bytes(tmp_path / "whole")
    with pytest.raises(E2WMError, match="outside"):
        collect(config(tmp_path / "parts", (3, 9)), progress=False)


def test_killed_run_resumes_and_skips_finished_shards(tmp_path):
    args = [
        "collect",
        "--agent",
        "random",
        "--episodes",
        "16",
        "--shard-size",
        "2",
        "--length",
        "25",
        "--quiet",
    ]
    _cli(*args, "--out", str(tmp_path / "clean"), check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "e2wm.cli", *args, "--out", str(out)])
    deadline = time.time() + 60
    while time.time() < deadline and len(shard_files(out)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in shard_files(out)}
    assert 2 <= len(finished) < 8, "the run should have been killed part-way"
    _cli(*args, "--out", str(out), check=True)
    assert _bytes(out) == _bytes(tmp_path / "clean")
    assert all((out / name).stat().st_mtime_ns == mtime for name, mtime in finished.items())
    assert not [p for p in os.listdir(out) if p.startswith(".tmp")]


def test_rerun_with_other_settings_into_the_same_dir_is_refused(tmp_path):
    collect(CollectConfig(agent="replay", out=str(tmp_path), episodes=2), progress=False)
    with pytest.raises(E2WMError, match="different run.*episodes"):
        collect(CollectConfig(agent="replay", out=str(tmp_path), episodes=3), progress=False)


@pytest.mark.parametrize(
    "graph_text, message",
    [
        ("{not json", "not valid JSON"),
        (
            json.dumps({"nodes": [{"id": 1, "class_name": "character"}], "edges": [{"from_id": 1}]}),
            "edge without from_id",
        ),
    ],
)
def test_malformed_scene_graph_is_one_line_error_and_writes_nothing(tmp_path, graph_text, message):
    graph = tmp_path / "graph.json"
    graph.write_text(graph_text)
    out = tmp_path / "out"
    result = _cli(
        "collect", "--agent", "random", "--episodes", "2", "--scene-graph", str(graph), "--out", str(out)
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists() or not list(out.iterdir())


def test_user_scene_graph_drives_random_exploration(tmp_path, drink_program):
    graph = tmp_path / "my_house.json"
    graph.write_text(json.dumps(drink_program.graphs()[0]))
    config = CollectConfig(agent="random", out=str(tmp_path / "out"), episodes=2, scene_graph=str(graph))
    config.explore.length = 3
    [path] = collect(config, progress=False)
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert set(ds["graph_id"]) == {"my_house"}


@pytest.mark.parametrize(
    "program_text, message",
    [
        ("Drink\nI drink\n\n[WALK] <dining_room> (1.201)\n[FLY] <cupboard> (1.229)\n", "unknown action verb"),
        ("Drink\nI drink\n\n[WALK] <dining_room> (1.201\n", "malformed action line"),
        ("Drink\nI drink\n\n[WALK] <dining_room> (1.99999)\n", "not in the scene"),
        ("Drink\n", "activity line and a description line"),
    ],
)
def test_bad_program_files_are_one_line_errors(tmp_path, drink_program, program_text, message):
    program = tmp_path / "program.txt"
    program.write_text(program_text)
    result = _cli("run", str(program), "--scene-graph", str(drink_program.graph_path))
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_run_executes_a_program_and_reports_a_failed_precondition(tmp_path, drink_program):
    ok = _cli("run", str(tmp_path / "missing.txt"))
    assert ok.returncode == 2 and "no such program file" in ok.stderr
    program = tmp_path / "program.txt"
    program.write_text("Drink\nI drink\n\n[WALK] <cupboard> (1.229)\n[GRAB] <water_glass> (1.1000)\n")
    result = _cli("run", str(program), "--scene-graph", str(drink_program.graph_path))
    assert result.returncode == 2 and "inside other closed thing" in result.stderr
    assert "The agent is in the dining room." in result.stdout


def test_bad_collect_options_fail_cleanly(tmp_path):
    result = _cli("collect", "--episodes", "0", "--out", str(tmp_path))
    assert result.returncode == 2 and "at least 1" in result.stderr and "Traceback" not in result.stderr
    result = _cli("collect", "--agent", "mcts", "--scene-graph", "x.json", "--out", str(tmp_path))
    assert result.returncode == 2 and "applies to --agent random" in result.stderr
