"""The Hub token never leaves the environment: not in what a command prints, logs or writes, nor in what
it uploads. Every command that talks to the Hub runs as a user runs it (a fresh process, the token in
HF_TOKEN) against the local stand-in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.hub_stand_in import HubStandIn
from support.tiny_lm import save_tiny_corpus, save_tiny_lm

from e2wm.rollouts.collect import CollectConfig, collect

TOKEN = "hf_e2wmSecretTokenThatMustNeverLeak"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def hub():
    with HubStandIn(user="tester") as server:
        yield server


def _run(hub: HubStandIn, tmp_path: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "e2wm.cli", *args],
        capture_output=True,
        text=True,
        env={**hub.client_env(TOKEN, home=tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"},
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _leaks(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]


def test_the_token_is_in_no_output_log_card_file_or_upload(hub, tmp_path) -> None:
    rollouts = tmp_path / "rollouts"
    collect(CollectConfig(agent="replay", out=str(rollouts), episodes=20), progress=False)
    lm = save_tiny_lm(tmp_path / "lm")
    corpus = save_tiny_corpus(tmp_path / "corpus")
    (corpus / "README.md").write_text("---\nlicense: mit\n---\n\n# tiny corpus\n")
    adapter = tmp_path / "adapter"
    printed = [
        _run(hub, tmp_path, "build", "--rollouts", str(rollouts), "--out", str(tmp_path / "built"),
             "--quiet", "--push-to-hub", "tester/secret-corpus"),
        _run(hub, tmp_path, "train", "--config", "recipes/smollm2_ewc_lora_cpu.yaml",
             "--model_name_or_path", str(lm), "--dataset", str(corpus), "--output_dir", str(adapter),
             "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "64",
             "--bf16", "false", "--ewc_lambda", "0", "--save_strategy", "no", "--report_to", "none",
             "--logging_steps", "1", "--push_to_hub", "true", "--hub_model_id", "tester/secret-trained"),
        _run(hub, tmp_path, "push", "--adapter", str(adapter), "--repo-id", "tester/secret-model",
             "--dataset", str(corpus), "--dataset-repo-id", "tester/secret-data"),
    ]  # fmt: skip
    assert all(TOKEN not in text for text in printed)
    assert _leaks(tmp_path) == []
    uploads = {(kind, repo): files for (kind, repo), r in hub.repos.items() for files in [r.files]}
    assert {repo for _, repo in uploads} >= {
        "tester/secret-corpus", "tester/secret-trained", "tester/secret-model", "tester/secret-data"
    }  # fmt: skip
    for (kind, repo), files in uploads.items():
        assert files, (kind, repo)
        assert [name for name, data in files.items() if TOKEN.encode() in data] == [], (kind, repo)
    # the token did reach the Hub, in the header and nowhere else
    assert any(r.authorization == f"Bearer {TOKEN}" for r in hub.requests)
