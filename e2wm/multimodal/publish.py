"""A video model as ``e2wm push`` publishes it: the files of a stage-2 or stage-3 output directory of
``e2wm train-video`` that make up the model, checked whole, and the model card that goes with them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import StrictDataclassError

from e2wm.errors import E2WMError, error_line
from e2wm.files import check_safetensors
from e2wm.multimodal.configuration import FRAMES_PER_STEP, E2WMVideoConfig, VideoEncoderConfig
from e2wm.multimodal.modeling import SPECIAL_TOKENS

PROCESSOR_CONFIG = "processor_config.json"
CONFIGS = ("config.json", "generation_config.json", PROCESSOR_CONFIG)
WEIGHTS, WEIGHTS_INDEX = "model.safetensors", "model.safetensors.index.json"


def read_video_model(directory: str | Path) -> tuple[E2WMVideoConfig, list[str]]:
    """The config of the video model saved in ``directory`` (which holds a ``config.json``) and the names of
    its files but the tokenizer's (``video_model_files``), after checking it is one and its files whole."""
    folder = Path(directory)
    try:
        found = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise E2WMError(f"{folder / 'config.json'}: not a JSON model config ({error_line(exc)})") from None
    if found == VideoEncoderConfig.model_type:
        raise E2WMError(f"{directory} holds the stage-1 video encoder alone: push the output of stage 2 or 3")
    if found != E2WMVideoConfig.model_type:
        raise E2WMError(
            f"{directory} holds a {found!r} model, not a video model from `e2wm train-video` stage 2 or 3 "
            f"(model_type {E2WMVideoConfig.model_type!r})"
        )
    files = video_model_files(folder)
    try:
        config = E2WMVideoConfig.from_pretrained(folder)
    except (OSError, ValueError, TypeError, StrictDataclassError) as exc:
        raise E2WMError(
            f"{folder / 'config.json'}: unreadable video model config ({error_line(exc)})"
        ) from None
    return config, files


def video_model_files(directory: str | Path) -> list[str]:
    """The names of the configs and safetensors weights (one file, or an index and its shards) of the video
    model saved in ``directory``, after checking that the processor's config is there and the weights whole.
    The tokenizer's files are not listed."""
    folder = Path(directory)
    if not (folder / PROCESSOR_CONFIG).is_file():
        raise E2WMError(f"{directory}: no {PROCESSOR_CONFIG} (the video processor, saved with the model)")
    if (folder / WEIGHTS_INDEX).is_file():
        weights = [WEIGHTS_INDEX, *_shards(folder / WEIGHTS_INDEX)]
    elif (folder / WEIGHTS).is_file():
        weights = [WEIGHTS]
    else:
        raise E2WMError(f"{directory}: no {WEIGHTS} (only safetensors weights are pushed)")
    for name in weights:
        if name != WEIGHTS_INDEX:
            check_safetensors(folder / name, "model weights")
    return [name for name in CONFIGS if (folder / name).is_file()] + weights


def _shards(index: Path) -> list[str]:
    """The shard files ``index`` names: safetensors files beside it."""
    try:
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise E2WMError(f"{index}: not a safetensors index ({error_line(exc)})") from None
    odd = [n for n in names if not isinstance(n, str) or Path(n).name != n or not n.endswith(".safetensors")]
    if odd or not names:
        raise E2WMError(f"{index}: names no safetensors shards beside it ({odd or 'none'})")
    return names


def stage_video_model(model: Path, folder: Path, card: ModelCard, names: Sequence[str]) -> None:
    """Write ``card`` and the files called ``names`` that ``model`` holds to the new directory ``folder``."""
    folder.mkdir(parents=True)
    for name in names:
        if (model / name).is_file():
            shutil.copyfile(model / name, folder / name)
    card.save(folder / "README.md")


def video_model_card(
    config: E2WMVideoConfig,
    repo_id: str,
    base_id: str | None,
    licence: dict[str, str],
    recipe: dict | None = None,
    version: str | None = None,
) -> ModelCard:
    """The card of the video model with ``config`` pushed as ``repo_id``: what it is, how e2wm trained it
    and how to load it. ``base_id`` is the LM's Hub id (None: not on the Hub), ``licence`` the card's licence
    metadata, ``recipe`` the run's ``e2wm_recipe.yaml`` (pushed beside the card) and ``version`` the e2wm
    version that trained it."""
    name = repo_id.split("/")[-1]
    data = ModelCardData(
        base_model=base_id,
        language=["en"],
        **licence,
        pipeline_tag="video-text-to-text",
        tags=["e2wm", "video", "streaming", "embodied", "virtualhome"],
    )
    by = f"e2wm {version}" if version else "e2wm"
    body = f"""# {name}

A streaming video narrator trained by {by}: it watches a video {FRAMES_PER_STEP} frames at a time and after
each step either keeps watching (`<next>`) or speaks (`<feedback> ... </feedback>`), as it learned on renders
of an agent's household activities in the VirtualHome simulator.

{_parts(config, base_id)}

{_training(recipe)}

{_licence(licence)}

{_usage(repo_id)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _parts(config: E2WMVideoConfig, base_id: str | None) -> str:
    video, text = config.video_config, config.text_config
    lm = f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{text.name_or_path}` (local)"
    rows = [
        (
            "video encoder (`video_encoder`)",
            f"a causal MobileNet-style 3D CNN over RGB frames of {video.image_size}x{video.image_size} px at "
            f"{video.fps:g} fps, stage channels {list(video.stage_channels)}: one {video.hidden_size}-d "
            f"feature per {FRAMES_PER_STEP} frames, steppable as frames arrive",
        ),
        (
            "projector (`multi_modal_projector`)",
            f"LayerNorm, Linear, {config.projector_hidden_act}, Linear: {config.tokens_per_step} LM "
            "embedding(s) per feature step, which fill the `<video>` placeholders",
        ),
        (
            "language model (`language_model`, `lm_head`)",
            f"{lm} ({text.model_type}, {text.num_hidden_layers} layers, hidden size {text.hidden_size}), its "
            f"vocabulary extended to {text.vocab_size} with " + ", ".join(f"`{t}`" for t in SPECIAL_TOKENS),
        ),
    ]
    table = "\n".join(f"| {part} | {what} |" for part, what in rows)
    return (
        f"## Model\n\n`E2WMVideoForCausalLM` (`model_type: {config.model_type}`), in the LLaVA layout:\n\n"
        f"| part | what |\n|---|---|\n{table}"
    )


def _training(recipe: dict | None) -> str:
    stage = (recipe or {}).get("stage")
    text = f"""## Training

`e2wm train-video` trains it in three stages:

1. the encoder, with a linear head, classifies the event in each {FRAMES_PER_STEP}-frame step of rendered
   clips;
2. with the encoder and the LM frozen, the projector learns to turn the encoder's features into LM tokens
   after which the LM keeps watching or narrates;
3. LoRA on the LM, with the projector trainable, merged into the LM's weights.

"""
    if stage in (2, 3):
        text += f"These weights are the output of stage {stage}."
    else:
        text += "These weights are the output of stage 2 or 3 (no recipe records which)."
    if recipe is not None:
        text += " `e2wm_recipe.yaml` is the recipe of the run (`e2wm train-video --config e2wm_recipe.yaml`)."
    return text


def _licence(licence: dict[str, str]) -> str:
    if licence["license"] == "other":
        return "Licence: `other` stands in for the language model's licence, which was not found; check it."
    return f"Licence: `{licence['license']}`, the language model's."


def _usage(repo_id: str) -> str:
    return f"""## Usage

The weights are safetensors, and loading needs no `trust_remote_code`: importing `e2wm.multimodal` (from
`pip install e2wm`) registers the config, the model and the processor with transformers' Auto classes.

```python
from e2wm.multimodal import StreamingNarrator  # registers model_type e2wm_video with the Auto classes
from transformers import AutoModelForCausalLM, AutoProcessor

model = AutoModelForCausalLM.from_pretrained("{repo_id}", use_safetensors=True)  # E2WMVideoForCausalLM
processor = AutoProcessor.from_pretrained("{repo_id}")  # the tokenizer and the frame preprocessing
narrator = StreamingNarrator(model, processor)
said = narrator.feed(frames)  # uint8 RGB frames [T, H, W, 3] as they arrive -> [(seconds, utterance)]
```

To narrate a video file as a stream (`pip install "e2wm[video]"`): `hf download {repo_id} --local-dir
narrator`, then `e2wm stream --model narrator --video clip.mp4`."""
