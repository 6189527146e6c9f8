"""Shared fixtures: a tiny random LM and corpus on disk, a simulator on a shipped scene graph, two episodes
to render (a replayed program, a two-person exploration), and helpers to find nodes by class. Test
helpers live in ``support/``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.tiny_lm import save_tiny_corpus, save_tiny_lm

from e2wm.agents.explore import ExploreConfig, explore_episode
from e2wm.agents.replay import replay
from e2wm.simulator.protocol import Action
from e2wm.simulator.virtualhome import resources
from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``): they gain nothing
    from threads, and on a busy machine OpenMP threads fight for the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with its word-level tokenizer, saved as safetensors (``support.tiny_lm``)."""
    return save_tiny_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny training corpus in the layout ``e2wm build`` saves (``support.tiny_lm``)."""
    return save_tiny_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


@pytest.fixture(scope="module")
def drink() -> dict:
    """The replay of 'Drink': walk to the dining room, open the cupboard, grab a water glass, pour, drink,
    ..., put it back in the cupboard."""
    return replay(VirtualHomeSimulator(), resources.program_by_id("file628_2"), seed=0)


@pytest.fixture(scope="module")
def pair() -> dict:
    """A random two-person episode: curtains, a skirt put in a curtain, a mat put back on the floor, ..."""
    program = resources.program_by_id("file331_2")
    return explore_episode(
        VirtualHomeSimulator(),
        program.graphs()[0],
        program.id,
        "train",
        ExploreConfig(length=12, people=2),
        seed=3,
        episode_id="random-test-000000",
    )


@pytest.fixture
def drink_program() -> resources.Program:
    """'Drink': walk to the dining room, open the cupboard, grab a glass, pour water, put it back."""
    return resources.program_by_id("file628_2")


@pytest.fixture
def sim(drink_program: resources.Program) -> VirtualHomeSimulator:
    return VirtualHomeSimulator(drink_program.graphs()[0])


def node_id(sim: VirtualHomeSimulator, class_name: str) -> int:
    """The lowest id of a node of that class."""
    ids = sorted(n.id for n in sim.state.get_nodes_by_attr("class_name", class_name))
    assert ids, f"no {class_name} in the scene"
    return ids[0]


def act(sim: VirtualHomeSimulator, verb: str, *class_names: str):
    """Step ``[VERB] <a> (id) <b> (id)`` naming objects by class."""
    line = f"[{verb}]" + "".join(f" <{c}> ({node_id(sim, c)})" for c in class_names)
    return sim.step(Action.parse(line))
