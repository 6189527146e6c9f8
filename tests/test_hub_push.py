"""``e2wm build --push-to-hub`` uploads the corpus and its card, through a local stand-in for the Hub."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from huggingface_hub import DatasetCard, HfApi, constants, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from support.hub_stand_in import INVALID_TOKEN, HubStandIn

from e2wm.corpus.read import open_corpus
from e2wm.rollouts.collect import CollectConfig, collect

REPO = "tester/e2wm-corpus"
TOKEN = "hf_dummy_secret_token"
REJECTED = "hf_rejected_secret_token"


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub-rollouts")
    # 20 replayed programs: every split gets an episode (an empty split cannot be built).
    collect(CollectConfig(agent="replay", out=str(out), episodes=20), progress=False)
    return out


@pytest.fixture
def hub() -> Iterator[HubStandIn]:
    with HubStandIn(user="tester", rejected_tokens={REJECTED}) as server:
        yield server


def _push(hub: HubStandIn, rollouts: Path, tmp_path: Path, token: str) -> subprocess.CompletedProcess:
    args = ["build", "--rollouts", str(rollouts), "--out", str(tmp_path / "corpus"), "--quiet"]
    return subprocess.run(
        [sys.executable, "-m", "e2wm.cli", *args, "--push-to-hub", REPO, "--private"],
        capture_output=True,
        text=True,
        env=hub.client_env(token, home=tmp_path / "hf-home"),
        timeout=300,
    )


def test_push_uploads_corpus_and_card(hub, rollouts, tmp_path):
    proc = _push(hub, rollouts, tmp_path, TOKEN)
    assert proc.returncode == 0, proc.stderr
    assert f"pushed to the Hub as dataset {REPO}" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr

    repo = hub.repo(REPO, "dataset")
    assert repo.private
    local = open_corpus(str(tmp_path / "corpus"))
    uploaded = set()
    for split, ds in local.items():
        shards = sorted(p for p in repo.files if re.fullmatch(rf"data/\w+/{split}-\d+-of-\d+\.parquet", p))
        assert shards, f"no parquet uploaded for {split}"
        assert set(shards) <= repo.head.lfs  # parquet goes through the LFS upload, as on the real Hub
        table = pa.concat_tables([pq.read_table(io.BytesIO(repo.files[p])) for p in shards])
        remote = datasets.Dataset(table)
        assert remote.features == ds.features
        assert len(remote) == len(ds) > 0
        assert remote["prompt"] == ds["prompt"]
        assert remote["completion"] == ds["completion"]
        uploaded.update(shards)
    assert {p for p in repo.files if p.endswith(".parquet")} == uploaded

    card = repo.files["README.md"].decode()
    assert card == (tmp_path / "corpus" / "README.md").read_text()
    assert card.startswith("---\n")
    assert "license: mit" in card
    assert "| task | what it asks |" in card
    data = DatasetCard(card).data
    assert data.license == "mit"
    tasks = sorted({t for ds in local.values() for t in ds["task"]})
    assert [c["config_name"] for c in data.configs] == ["all", *tasks]  # every task, and each on its own

    # huggingface_hub sends two kinds of request without the header by design: PUTs of LFS objects to their
    # presigned storage URL, and RepoCard.validate's POST /api/validate-yaml. Every other one carries it.
    anonymous = [r for r in hub.requests if r.authorization is None]
    assert all(r.path.startswith("/lfs-objects/") or r.path == "/api/validate-yaml" for r in anonymous)
    signed = [r for r in hub.requests if r.authorization is not None]
    assert {r.authorization for r in signed} == {f"Bearer {TOKEN}"}
    assert {"/api/repos/create", f"/api/datasets/{REPO}/commit/main"} <= {r.path for r in signed}


def test_push_with_rejected_token_is_a_one_line_error(hub, rollouts, tmp_path):
    proc = _push(hub, rollouts, tmp_path, REJECTED)
    assert REJECTED not in proc.stdout + proc.stderr
    assert not hub.repos
    assert any(r.token == REJECTED for r in hub.requests)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2wm build: error:"), proc.stderr


def test_stand_in_serves_model_repos(hub, tmp_path, monkeypatch):
    """The in-process client, on a model repo: create, upload (regular and LFS), list, download, reject."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    folder = tmp_path / "model"
    folder.mkdir()
    files = {
        "config.json": b'{"hidden_size": 8}\n',
        "model.safetensors": bytes(range(256)) * 40,
        "README.md": b"---\nlicense: mit\n---\n# model\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)

    api = HfApi(endpoint=hub.url, token=TOKEN)
    url = api.create_repo("tester/model")
    assert (url.repo_type, url.repo_id) == ("model", "tester/model")
    api.upload_folder(folder_path=folder, repo_id="tester/model", commit_message="add model")
    repo = hub.repo("tester/model")
    assert not repo.private
    assert {k: v for k, v in repo.files.items() if k != ".gitattributes"} == files
    assert repo.head.lfs == {"model.safetensors"}
    assert repo.head.title == "add model"
    assert sorted(api.list_repo_files("tester/model")) == sorted([".gitattributes", *files])
    assert api.model_info("tester/model").sha == repo.head.oid
    for name, data in files.items():
        path = hf_hub_download("tester/model", name, endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "c")
        assert Path(path).read_bytes() == data

    commits = len(repo.commits)
    api.upload_folder(folder_path=folder, repo_id="tester/model")  # nothing changed: no commit
    assert len(repo.commits) == commits

    with pytest.raises(HfHubHTTPError) as rejected:
        HfApi(endpoint=hub.url, token=REJECTED).model_info("tester/model")
    assert rejected.value.response.status_code == 401
    assert rejected.value.server_message == INVALID_TOKEN
