"""Jobs killed at a random point (``kill -9`` of the whole process group): rerunning the same command
gives what an uninterrupted run gives, and the killed run left nothing half-written at its output.

build, fisher and eval do not resume: they write under a temporary name and rename when done, so a kill
leaves the output absent or complete. render resumes: finished clips stay, the rest is rendered again.
(collect and train resume too; their kill tests are in test_collect.py and test_train.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file
from support.jobs import kill_midway
from support.tiny_lm import save_tiny_eval_corpus, save_tiny_lm

from e2wm import cli
from e2wm.corpus.read import open_corpus
from e2wm.rollouts.collect import CollectConfig, collect

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    collect(CollectConfig(agent="replay", out=str(root / "rollouts"), episodes=20), progress=False)
    return {
        "rollouts": root / "rollouts",
        "lm": save_tiny_lm(root / "lm"),
        "corpus": save_tiny_eval_corpus(root / "corpus"),
    }


def _corpus(out: Path) -> dict:
    corpus = open_corpus(str(out))
    return {split: corpus[split].to_dict() for split in corpus} | {"card": (out / "README.md").read_text()}


def _fisher(out: Path) -> dict:
    return {name: t.tolist() for name, t in load_file(out).items()}


def _clips(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _results(out: Path) -> list:
    return json.loads((out / "results.json").read_text())["results"]


JOBS: dict[str, tuple[Callable[[dict[str, Path], Path], list[str]], Callable[[Path], object]]] = {
    "build": (
        lambda i, out: ["build", "--rollouts", str(i["rollouts"]), "--out", str(out), "--quiet"],
        _corpus,
    ),
    "fisher": (
        lambda i, out: [
            "fisher",
            "--model",
            str(i["lm"]),
            "--samples",
            "8",
            "--max-length",
            "32",
            "--out",
            str(out),
        ],
        _fisher,
    ),
    "render": (
        lambda i, out: [
            "render",
            "--rollouts",
            str(i["rollouts"]),
            "--episodes",
            "3",
            "--size",
            "32",
            "--out",
            str(out),
            "--quiet",
        ],
        _clips,
    ),  # fmt: skip
    "eval": (
        lambda i, out: [
            "eval",
            "--model",
            str(i["lm"]),
            "--corpus",
            str(i["corpus"]),
            "--limit",
            "2",
            "--no-transfer-kshot",
            "--out",
            str(out),
            "--quiet",
        ],
        _results,
    ),  # fmt: skip
}


@pytest.mark.parametrize("job", list(JOBS))
def test_a_killed_job_leaves_nothing_half_written_and_a_rerun_gives_the_same(job, inputs, tmp_path) -> None:
    argv_of, read = JOBS[job]
    reference = tmp_path / "reference"
    cli.main(argv_of(inputs, reference))
    out = tmp_path / "out"
    kill_midway(argv_of(inputs, out), out, seed=sum(map(ord, job)))
    if out.exists() and job != "render":  # it finished before the kill: then it is whole
        assert read(out) == read(reference)
    else:
        cli.main(argv_of(inputs, out))  # the same command again
        assert read(out) == read(reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "reference"]  # no temporary, no lock
