"""``e2wm push`` of a video model (the output of ``e2wm train-video`` stage 2 or 3): the repo holds only
safetensors weights, configs, processor, tokenizer, recipe and card, and what comes back down loads into
the same model, with identical logits."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants, hf_api, snapshot_download
from support.hub_stand_in import HubStandIn
from support.tiny_lm import TINY_ENCODER
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer

from e2wm import cli
from e2wm.multimodal import (
    E2WMVideoForCausalLM,
    E2WMVideoProcessor,
    StreamingNarrator,
    VideoEncoder,
    VideoEncoderConfig,
)
from e2wm.training.recipe import HEADER, RECIPE_NAME, RECIPES_DIR
from e2wm.training.train_video import publish, save_model

pytestmark = pytest.mark.usefixtures("one_thread")
TOKEN = "hf_dummy_secret_video_token"
REPO = "tester/tiny-narrator"
PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MODEL_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "processor_config.json",
    "tokenizer.json", "tokenizer_config.json", RECIPE_NAME, "README.md",
}  # fmt: skip
PROMPT = "what is this ? <video>"


def clip(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (16, 32, 32, 3), dtype=torch.uint8, generator=g)


def save_video_model(lm: Path, out: Path, **save_kwargs) -> E2WMVideoForCausalLM:
    """A tiny random video model and its processor, saved into ``out`` as stage 3 of ``e2wm train-video``
    does, beside what a training run also leaves there and must not be pushed."""
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(lm)
    model = E2WMVideoForCausalLM.from_language_model(
        str(lm), tokenizer, VideoEncoderConfig(**TINY_ENCODER), tokens_per_step=2
    )
    processor = E2WMVideoProcessor(tokenizer, tokens_per_step=2, image_size=32)
    (out / "checkpoint-1").mkdir(parents=True)
    (out / "checkpoint-1" / "optimizer.pt").write_bytes(b"optimizer state")
    (out / "training_args.bin").write_bytes(b"pickled arguments")
    (out / "pytorch_model.bin").write_bytes(b"pickled weights")
    (out / "README.md").write_text("# a card the trainer wrote\n")
    recipe = (RECIPES_DIR / "video_stage3_lora_cpu.yaml").read_text()
    (out / RECIPE_NAME).write_text(HEADER.format(version="0.0.test", name=RECIPE_NAME) + recipe)

    def save(directory: str) -> None:
        model.save_pretrained(directory, **save_kwargs)
        processor.save_pretrained(directory)

    publish(str(out), save if save_kwargs else lambda d: save_model(model, processor, d))
    return model.eval()


@pytest.fixture(scope="module")
def video_model(lm, tmp_path_factory) -> tuple[Path, E2WMVideoForCausalLM]:
    out = tmp_path_factory.mktemp("video-push") / "stage3"
    return out, save_video_model(lm, out)


@pytest.fixture
def hub(monkeypatch) -> Iterator[HubStandIn]:
    """A stand-in Hub that this process's huggingface_hub talks to, with TOKEN in HF_TOKEN."""
    with HubStandIn(user="tester") as server:
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        # Download URLs come from this template, made from the endpoint when huggingface_hub was imported.
        template = f"{server.url}/{{repo_id}}/resolve/{{revision}}/{{filename}}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(hf_api.api, "endpoint", server.url)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        yield server


def logits(model: E2WMVideoForCausalLM, processor: E2WMVideoProcessor) -> torch.Tensor:
    with torch.no_grad():
        return model(**processor(PROMPT, videos=clip())).logits


def test_video_model_pushes_and_loads_back_with_identical_logits(hub, lm, video_model, tmp_path, capsys):
    folder, model = video_model
    before = logits(model, AutoProcessor.from_pretrained(folder))
    cli.main(["push", "--adapter", str(folder), "--repo-id", REPO])
    out = capsys.readouterr()
    assert f"as model {REPO}" in out.out and TOKEN not in out.out + out.err

    repo = hub.repo(REPO)
    files = {k: v for k, v in repo.files.items() if k != ".gitattributes"}
    assert set(files) == MODEL_FILES
    assert not any(name.endswith(PICKLES) or "/" in name for name in files)
    for name in MODEL_FILES - {"README.md"}:
        assert files[name] == (folder / name).read_bytes(), name
    assert "model.safetensors" in repo.head.lfs and "video model" in repo.head.title

    card = ModelCard(files["README.md"].decode())
    assert card.data.pipeline_tag == "video-text-to-text" and "e2wm" in card.data.tags
    assert "from e2wm.multimodal import" in card.text and f'from_pretrained("{REPO}"' in card.text
    assert "output of stage 3" in card.text and "trust_remote_code" in card.text
    card.validate()

    downloaded = Path(snapshot_download(REPO, endpoint=hub.url, cache_dir=tmp_path / "cache"))
    loaded = AutoModelForCausalLM.from_pretrained(downloaded, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(downloaded)
    assert type(loaded) is E2WMVideoForCausalLM and type(processor) is E2WMVideoProcessor
    assert torch.equal(logits(loaded.eval(), processor), before)
    said = StreamingNarrator(loaded, processor).feed(clip())  # as the card shows
    assert said == StreamingNarrator(model, AutoProcessor.from_pretrained(folder)).feed(clip())

    # A dry run writes the very files the push uploaded, and uploads nothing.
    requests = len(hub.requests)
    cli.main(["push", "--adapter", str(folder), "--repo-id", REPO, "--dry-run", str(tmp_path / "dry")])
    dry = {p.name: p.read_bytes() for p in (tmp_path / "dry").iterdir()}
    assert dry == files and len(hub.requests) == requests


def test_sharded_weights_go_up_whole(lm, tmp_path):
    folder = tmp_path / "stage2"
    model = save_video_model(lm, folder, max_shard_size="100KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()

    cli.main(["push", "--adapter", str(folder), "--repo-id", REPO, "--dry-run", str(tmp_path / "dry")])
    pushed = {p.name for p in (tmp_path / "dry").iterdir()}
    assert pushed == MODEL_FILES - {"model.safetensors"} | {"model.safetensors.index.json", *shards}
    loaded = E2WMVideoForCausalLM.from_pretrained(tmp_path / "dry", use_safetensors=True)
    processor = AutoProcessor.from_pretrained(tmp_path / "dry")
    assert torch.equal(logits(loaded.eval(), processor), logits(model, processor))


def _broken(video_model: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    truncated, no_processor, pickled = tmp / "truncated", tmp / "no_processor", tmp / "pickled"
    for folder in (truncated, no_processor, pickled):
        shutil.copytree(video_model, folder)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[:-100])
    (no_processor / "processor_config.json").unlink()
    (pickled / "model.safetensors").unlink()
    return {
        "truncated": ([str(truncated)], "truncated or padded safetensors"),
        "no-processor": ([str(no_processor)], "no processor_config.json"),
        "pickled": ([str(pickled)], "only safetensors weights are pushed"),
        "merge": ([str(video_model), "--merge"], "--merge, --results and --dataset* are for adapters"),
    }


@pytest.mark.parametrize("case", ["truncated", "no-processor", "pickled", "merge"])
def test_a_broken_video_model_is_a_one_line_error(hub, video_model, tmp_path, capsys, case):
    args, message = _broken(video_model[0], tmp_path)[case]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["push", "--repo-id", REPO, "--adapter", *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert len(err) == 1 and err[0].startswith("e2wm push: error:") and message in err[0], err
    assert hub.requests == []


@pytest.mark.parametrize("kind", ["encoder", "language model"])
def test_pushing_what_is_not_a_video_model_fails_in_one_line(hub, lm, tmp_path, kind):
    if kind == "encoder":  # the output of stage 1
        folder, message = tmp_path / "stage1", "stage-1 video encoder"
        VideoEncoder(VideoEncoderConfig(**TINY_ENCODER)).save_pretrained(folder)
    else:
        folder, message = lm, "holds a 'llama' model, not a video model"
    proc = subprocess.run(
        [sys.executable, "-m", "e2wm", "push", "--adapter", str(folder), "--repo-id", REPO],
        capture_output=True,
        text=True,
        env=hub.client_env(TOKEN, home=tmp_path / "hf-home"),
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("e2wm push: error:") and message in lines[0], proc.stderr
    assert hub.requests == [] and not hub.repos
