"""``push_to_hub: true`` in a training recipe: once training and the eval suite are done, the folder
``e2wm push`` stages (e2wm's card, the recipe, results.json) goes to a local stand-in for the Hub, and none of
the Trainer's own uploads; the suite's scores also reach the trackers (``report_to``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import constants, hf_api
from support.hub_stand_in import HubStandIn
from support.tiny_lm import save_tiny_eval_corpus
from test_train import argv as train_argv

from e2wm.errors import E2WMError
from e2wm.hub.push import push
from e2wm.training.config import parse
from e2wm.training.recipe import RECIPE_NAME, read_recipe
from e2wm.training.train import log_results, train

pytestmark = pytest.mark.usefixtures("one_thread")

TOKEN = "hf_dummy_secret_recipe_token"
REJECTED = "hf_rejected_secret_recipe_token"


def argv(lm: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return train_argv(lm, corpus, out, "--max_steps", "2", "--ewc_lambda", "0", *extra)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return save_tiny_eval_corpus(tmp_path_factory.mktemp("recipe-push") / "corpus", n=1)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubStandIn]:
    """A stand-in Hub this process's huggingface_hub talks to; no token in the environment."""
    with HubStandIn(user="tester", rejected_tokens={REJECTED}) as server, pytest.MonkeyPatch.context() as mp:
        mp.setattr(constants, "ENDPOINT", server.url)
        mp.setattr(constants, "HF_HUB_DISABLE_XET", True)
        mp.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        mp.setattr(constants, "HF_HUB_OFFLINE", False)
        mp.setattr(datasets.config, "HF_ENDPOINT", server.url)
        mp.setattr(hf_api.api, "endpoint", server.url)
        mp.delenv("HF_TOKEN", raising=False)
        yield server


@pytest.fixture(scope="module")
def run(hub, lm, corpus, tmp_path_factory):
    """One run that saves a checkpoint every step (where the Trainer would push), runs the eval suite,
    logs to TensorBoard and pushes to a repo named without its owner; its output_dir and trainer."""
    out = tmp_path_factory.mktemp("recipe-push-run") / "run"
    extra = (
        "--push_to_hub", "true", "--hub_model_id", "tiny-run", "--hub_private_repo", "true",
        "--hub_token", TOKEN, "--save_strategy", "steps", "--save_steps", "1",
        "--eval_suite", "embodied", "--eval_limit", "1",
    )  # fmt: skip
    args = argv(lm, corpus, out, *extra)
    args[args.index("--report_to") + 1] = "tensorboard"
    return out, train(*parse(args))


def test_push_to_hub_publishes_what_e2wm_push_stages(hub, run, tmp_path):
    out, _ = run
    repo = hub.repo("tester/tiny-run")  # hub_model_id in the token's user's namespace
    assert repo.private
    assert [c.title for c in repo.commits][1:] == [repo.head.title] and "LoRA adapter" in repo.head.title
    files = {k: v for k, v in repo.files.items() if k != ".gitattributes"}
    staged = tmp_path / "staged"
    push(out, "tester/tiny-run", results=out / "eval" / "results.json", dry_run=staged)
    assert files == {str(p.relative_to(staged)): p.read_bytes() for p in staged.rglob("*") if p.is_file()}
    assert {RECIPE_NAME, "results.json", "adapter_model.safetensors", "README.md"} <= set(files)
    assert "training_args.bin" not in files and not any(n.startswith("checkpoint") for n in files)
    assert (out / "checkpoint-1").is_dir()  # the Trainer saved, and did not push what it saved
    assert "## Base model" in files["README.md"].decode()  # e2wm's card, not TRL's
    assert files["results.json"] == (out / "eval" / "results.json").read_bytes()
    assert all(TOKEN.encode() not in data for data in files.values())
    recipe, _ = read_recipe(out / RECIPE_NAME)
    assert recipe["push_to_hub"] is True and recipe["hub_model_id"] == "tiny-run"
    assert {r.authorization for r in hub.requests if r.authorization} == {f"Bearer {TOKEN}"}


def test_eval_suite_scores_reach_the_trackers(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, trainer = run
    results = json.loads((out / "eval" / "results.json").read_text())
    (events,) = {p.parent for p in (out / "runs").rglob("events.out.tfevents.*")}
    scalars = EventAccumulator(str(events)).Reload()
    rows = results["results"]
    assert {r["variant"] for r in rows} == {"base", "fine-tuned"}
    for r in rows:  # TensorBoard keeps float32
        points = scalars.Scalars(f"eval/{r['split']}/{r['task']}/{r['variant']}/{r['metric']}")
        assert [(e.step, e.value) for e in points] == [(trainer.state.global_step, np.float32(r["value"]))]

    retention = {"variant": "fine-tuned", "source": "pydoc", "perplexity": 21.3}
    log_results(trainer, {"results": [], "retention": [retention, {**retention, "perplexity": None}]})
    scalars = EventAccumulator(str(events)).Reload()
    points = scalars.Scalars("eval/retention/pydoc/fine-tuned/perplexity")
    assert [(e.step, e.value) for e in points] == [(trainer.state.global_step, np.float32(21.3))]


@pytest.mark.parametrize("case", ["rejected", "no-token", "full", "bad-id"])
def test_push_to_hub_is_checked_before_training(hub, lm, corpus, tmp_path, monkeypatch, case):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    extra, message = {
        "rejected": (["--hub_token", REJECTED], "HTTP 401"),
        "no-token": ([], "needs a Hugging Face token"),
        "full": (["--hub_token", TOKEN, "--use_peft", "false"], "set use_peft"),
        "bad-id": (["--hub_token", TOKEN, "--hub_model_id", "a/b/c"], "USER/NAME"),
    }[case]
    repos = set(hub.repos)
    out = tmp_path / "run"
    with pytest.raises(E2WMError, match=message) as error:
        train(*parse(argv(lm, corpus, out, "--push_to_hub", "true", *extra)))
    assert REJECTED not in str(error.value) and TOKEN not in str(error.value)
    assert set(hub.repos) == repos and not (out / "adapter_model.safetensors").exists()
