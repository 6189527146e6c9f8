r"""Train the video narrator in three stages (and an optional stage 0), each from a recipe and the previous
stage's output:

    accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train_video \
        --config recipes/X.yaml

0. ``stage: 0`` (optional) encoder pretraining without labels: the encoder learns to predict its own
   features a few steps ahead (``e2wm.multimodal.pretraining``); stage 1 starts from it with ``init_from``.
1. ``stage: 1`` encoder pretraining: the causal video encoder and linear heads classify, per feature step (4
   frames), the event that happened in it: its caption's verb (or none), object, place and actor. Saves the
   encoder; with eval clips, each slot's accuracy beside the training majority and a linear probe on the raw
   frames (``slot_accuracy.json``).
2. ``stage: 2`` projector alignment: the LM (``model_name_or_path``) and the stage-1 encoder (``init_from``)
   are frozen; the projector learns to turn the encoder's features into LM tokens on which the LM keeps
   watching (``<next>``) or narrates (``<feedback> ... </feedback>``). Saves the model and its processor.
3. ``stage: 3`` LoRA on the LM (``use_peft``, ``lora_*``) with the projector trainable too, from the stage-2
   model (``init_from``). Saves the merged model, which ``e2wm stream --model OUTPUT_DIR`` loads.

The recipe maps onto ``VideoScriptArguments``, TRL's ``SFTConfig`` and ``ModelConfig``; flags override it.
Clips come from a directory (NAME.mp4 + NAME.json) or are rendered from rollout shards into a cache (in
``render_style``; ``eval_layout_seed`` places the eval renders' objects where training never saw them). The
encoder is frozen in stages 2 and 3, so its features are computed once, before training. A run whose
``output_dir`` holds checkpoints resumes from the last one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from torch import nn
from transformers import (
    AutoConfig,
    AutoProcessor,
    AutoTokenizer,
    EvalPrediction,
    PreTrainedModel,
    Trainer,
    set_seed,
)
from transformers.modeling_outputs import TokenClassifierOutput
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from e2wm.errors import E2WMError, error_line, libraries_deprecation, reported
from e2wm.files import output_lock, staged_file
from e2wm.memory import keep_freed_memory
from e2wm.multimodal import E2WMVideoForCausalLM, E2WMVideoProcessor, VideoEncoder, VideoEncoderConfig
from e2wm.multimodal.data import (
    EVENT_CLASSES,
    IGNORE,
    SLOTS,
    EventWindows,
    FeatureCollator,
    stream_rows,
)
from e2wm.multimodal.pretraining import VideoFuturePredictor
from e2wm.multimodal.probe import probe_accuracy, step_pixels
from e2wm.multimodal.render import RENDER_FORMAT, STYLES, RenderConfig, render_rollouts
from e2wm.multimodal.video_io import Clip, VideoCaptionDirectory
from e2wm.training.checkpoints import end_processes, resume_point
from e2wm.training.config import parse_recipe
from e2wm.training.models import DEFAULT_MODEL, resolve_model
from e2wm.training.recipe import save_recipe

STAGES = (0, 1, 2, 3)


@dataclass
class VideoScriptArguments:
    """Which stage to train, on which clips, and the shape of the encoder and of the stream sequences."""

    stage: int = field(
        default=1,
        metadata={
            "help": "0 encoder pretraining without labels (optional), 1 encoder pretraining on event slots, "
            "2 projector alignment, 3 LoRA"
        },
    )
    clips: str | None = field(default=None, metadata={"help": "directory of clips (NAME.mp4 + NAME.json)"})
    rollouts: str | None = field(
        default=None, metadata={"help": "or: rollout shards, rendered into render_cache (instead of clips)"}
    )
    split: str = field(default="train", metadata={"help": "rollouts: the split to train on"})
    episodes: int | None = field(default=None, metadata={"help": "rollouts: the first N episodes of split"})
    eval_clips: str | None = field(default=None, metadata={"help": "directory of clips to evaluate on"})
    eval_split: str | None = field(default=None, metadata={"help": "or: rollouts' split to evaluate on"})
    eval_episodes: int | None = field(default=None, metadata={"help": "rollouts: the first N of eval_split"})
    render_cache: str = field(
        default="outputs/video/cache", metadata={"help": "where rendered rollouts go (SPLIT-EPISODES/)"}
    )
    render_style: str = field(
        default="sprites",
        metadata={
            "help": "stage 1, rollouts: how objects look in the renders (sprites: a look per class; squares: "
            "coloured by state only); later stages and e2wm stream render as the encoder was trained"
        },
    )
    layout_seed: int | None = field(
        default=None, metadata={"help": "rollouts: place the train renders' objects by this seed"}
    )
    layout_per_episode: bool = field(
        default=False,
        metadata={
            "help": "rollouts: place each train render's objects by its own seed (a layout per episode), so "
            "that positions tell nothing of what a thing is"
        },
    )
    eval_layout_seed: int | None = field(
        default=None,
        metadata={"help": "rollouts: place the eval renders' objects by this seed (one not trained on)"},
    )
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "stage 1: a stage-0 encoder (optional); stage 2: the stage-1 encoder; stage 3: the "
            "stage-2 model (directories)"
        },
    )
    label_fraction: float = field(
        default=1.0, metadata={"help": "stage 1: train on this share of the labelled windows (a seeded draw)"}
    )
    questions_per_window: int = field(
        default=0,
        metadata={
            "help": "stages 2-3: a window that starts its clip also asks up to this many of the clip's "
            "questions (renders: answered by the simulator), each answer trained as an utterance"
        },
    )
    augment: bool = field(
        default=False,
        metadata={
            "help": "stages 0 and 1: turn and mirror each training window at random (one of the frame's 8 "
            "symmetries), so the encoder tells objects by their look, not by where the training layouts "
            "put them"
        },
    )
    slot_loss_weights: list[float] = field(
        default_factory=lambda: [1.0, 0.1, 0.1, 0.1],
        metadata={
            "help": "stage 1: loss weight of each slot (verb, object, place, actor). The objects, places "
            "and actors (dozens of classes) are too many to learn first: at equal weights their loss "
            "drowned the verbs' and the encoder learned only the slots' priors"
        },
    )
    predict_steps: int = field(
        default=2, metadata={"help": "stage 0: predict the encoder's feature this many 4-frame steps ahead"}
    )
    window_frames: int = field(default=64, metadata={"help": "frames per training window (a multiple of 4)"})
    window_stride: int | None = field(
        default=None, metadata={"help": "frames between windows (default: one)"}
    )
    tokens_per_step: int = field(default=1, metadata={"help": "stage 2: LM tokens per 4-frame feature step"})
    decision_loss_weight: float = field(
        default=1.0, metadata={"help": "stages 2-3: loss weight of the <next>/<feedback> decisions"}
    )
    train_decision_tokens: bool = field(
        default=True,
        metadata={
            "help": "stage 3: also train the embeddings of <next>, <feedback>, </feedback> (new tokens)"
        },
    )
    image_size: int = field(default=64, metadata={"help": "stage 1: encoder frame size"})
    fps: float = field(default=16.0, metadata={"help": "stage 1: frame rate the encoder watches"})
    stem_channels: int = field(default=16, metadata={"help": "stage 1: encoder stem channels"})
    stage_channels: list[int] = field(
        default_factory=lambda: [16, 24, 40, 64], metadata={"help": "stage 1: channels of the 4 stages"}
    )
    stage_depths: list[int] = field(
        default_factory=lambda: [1, 2, 2, 1], metadata={"help": "stage 1: blocks in each of the 4 stages"}
    )
    head_channels: int = field(default=256, metadata={"help": "stage 1: encoder head channels"})
    encoder_hidden_size: int = field(default=256, metadata={"help": "stage 1: encoder feature size"})

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise E2WMError(f"stage must be 0, 1, 2 or 3, got {self.stage}")
        if (self.clips is None) == (self.rollouts is None):
            raise E2WMError("give exactly one of clips (a directory of clips) and rollouts (rollout shards)")
        if self.eval_split is not None and self.rollouts is None:
            raise E2WMError("eval_split renders rollouts: set rollouts, or use eval_clips")
        if self.eval_clips is not None and self.eval_split is not None:
            raise E2WMError("give at most one of eval_clips and eval_split")
        for name in ("clips", "rollouts", "eval_clips"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_dir():
                raise E2WMError(f"{name}: {path}: no such directory")
        if self.render_style not in STYLES:
            raise E2WMError(f"unknown render_style {self.render_style!r}: choose from {', '.join(STYLES)}")
        if self.stage == 0 and self.init_from is not None:
            raise E2WMError("stage 0 trains a new encoder: init_from is for stages 1 to 3")
        weights = self.slot_loss_weights
        if len(weights) != len(SLOTS) or min(weights) < 0 or weights[0] <= 0:
            raise E2WMError(
                f"slot_loss_weights: one weight >= 0 per slot ({', '.join(SLOTS)}), the verb's > 0; "
                f"got {weights}"
            )
        if not 0 < self.label_fraction <= 1:
            raise E2WMError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.stage == 0 and not 1 <= self.predict_steps < self.window_frames // 4:
            raise E2WMError(
                f"predict_steps must be at least 1 and less than a window's {self.window_frames // 4} "
                f"steps, got {self.predict_steps}"
            )
        if self.stage == 3 and self.init_from is None:
            raise E2WMError("stage 3 needs init_from: the output_dir of stage 2")
        if self.init_from is not None and not (Path(self.init_from) / "config.json").is_file():
            raise E2WMError(f"init_from: {self.init_from} holds no trained model (no config.json)")
        for name in ("window_frames", "window_stride"):
            frames = getattr(self, name)
            if frames is not None and (frames < 4 or frames % 4):
                raise E2WMError(f"{name} must be a positive multiple of 4 frames, got {frames}")
        if self.tokens_per_step < 1 or self.decision_loss_weight < 0 or self.questions_per_window < 0:
            raise E2WMError(
                "tokens_per_step must be >= 1, decision_loss_weight >= 0 and questions_per_window >= 0"
            )

    def encoder_config(self) -> VideoEncoderConfig:
        return VideoEncoderConfig(
            image_size=self.image_size,
            fps=self.fps,
            render_style=self.render_style,
            stem_channels=self.stem_channels,
            stage_channels=list(self.stage_channels),
            stage_depths=list(self.stage_depths),
            head_channels=self.head_channels,
            hidden_size=self.encoder_hidden_size,
        )


def parse(argv: list[str] | None = None) -> tuple[VideoScriptArguments, SFTConfig, ModelConfig]:
    """Parse ``--config recipe.yaml`` and command-line overrides into the three configs."""
    return parse_recipe((VideoScriptArguments, SFTConfig, ModelConfig), argv)  # type: ignore[return-value]


# --- data --------------------------------------------------------------------------------------------------


def load_clips(
    script: VideoScriptArguments, encoder: VideoEncoderConfig, train: bool
) -> Sequence[Clip] | None:
    """The train (or eval) clips, at the encoder's frame size and rate; None: no eval clips."""
    directory = script.clips if train else script.eval_clips
    if directory is None and script.rollouts is not None and (train or script.eval_split is not None):
        directory = render(script, script.split if train else script.eval_split, encoder, train)
    if directory is None:
        return None
    return VideoCaptionDirectory(directory, size=encoder.image_size, fps=encoder.fps)


def render(script: VideoScriptArguments, split: str, encoder: VideoEncoderConfig, train: bool) -> str:
    """Render a split of the rollouts into the cache (clips already there are kept) and return its path."""
    episodes = script.episodes if train else script.eval_episodes
    size = max(16, encoder.image_size + encoder.image_size % 2)
    layout_seed = script.layout_seed if train else script.eval_layout_seed
    style = encoder.render_style
    config = RenderConfig(
        size=size,
        fps=round(encoder.fps),
        style=style,
        layout_seed=layout_seed,
        layout_per_episode=train and script.layout_per_episode,
    )
    key = zlib.crc32(repr((RENDER_FORMAT, config)).encode())  # other settings or output: rendered anew
    out = Path(script.render_cache) / f"{split}-{episodes or 'all'}-{size}px-{encoder.fps:g}fps-{key:08x}"
    render_rollouts(script.rollouts, out, episodes, split, config)
    return str(out)


# --- stage 1 -----------------------------------------------------------------------------------------------


class VideoEventClassifier(PreTrainedModel):
    """The video encoder with a linear head per slot of ``SLOTS``: per feature step, logits over the verbs
    (``config.id2label``, ``none`` first) and over each other slot's classes (``config.slot_labels``),
    concatenated in that order; the loss is the sum of the slots' cross-entropies, each times its
    ``slot_weights`` entry."""

    config_class = VideoEncoderConfig
    main_input_name = "pixel_values_videos"

    def __init__(self, config: VideoEncoderConfig, slot_weights: Sequence[float] = (1.0,) * len(SLOTS)):
        super().__init__(config)
        self.video_encoder = VideoEncoder(config)
        self.sizes = slot_sizes(config)
        self.slot_weights = tuple(slot_weights)
        self.classifier = nn.Linear(config.hidden_size, sum(self.sizes))
        self.post_init()

    def forward(
        self, pixel_values_videos: torch.Tensor, labels: torch.Tensor | None = None
    ) -> TokenClassifierOutput:
        logits = self.classifier(self.video_encoder(pixel_values_videos))
        loss = None
        if labels is not None:
            loss = sum(
                self.slot_weights[k]
                * nn.functional.cross_entropy(
                    part.flatten(0, 1), labels[..., k].flatten(), ignore_index=IGNORE, reduction="sum"
                )
                / (labels[..., k] != IGNORE).sum().clamp_min(1)
                for k, part in enumerate(logits.split(self.sizes, dim=-1))
            )
        return TokenClassifierOutput(loss=loss, logits=logits)


# The metrics' name of each slot: the verb's accuracy on event steps has always been ``event_accuracy``.
METRIC_NAMES = {"verb": "event", **{slot: slot for slot in SLOTS[1:]}}


def slot_sizes(config: VideoEncoderConfig) -> list[int]:
    """The number of classes of each slot of ``SLOTS``, in order (verbs: ``num_labels``)."""
    return [config.num_labels, *(len(config.slot_labels[slot]) for slot in SLOTS[1:])]


def majority(labels: Sequence[torch.Tensor]) -> list[int]:
    """Per slot, the most common class on the steps where something happened (verbs: not ``none``)."""
    stacked = torch.cat([rows.reshape(-1, len(SLOTS)) for rows in labels])
    events = stacked[stacked[:, 0] > 0]
    return [int(torch.mode(col[col != IGNORE]).values) if (col != IGNORE).any() else 0 for col in events.T]


def slot_metrics(sizes: Sequence[int], guess: Sequence[int]) -> Callable[[EvalPrediction], dict[str, float]]:
    """``compute_metrics`` of stage 1: per-step verb ``accuracy`` (``none`` included); on the steps where
    something happened, each slot's accuracy (``event_accuracy`` the verb's, ``object_accuracy``, ...) and
    that of always guessing the training majority ``guess`` (``event_majority``, ``object_majority``, ...)."""

    def metrics(prediction: EvalPrediction) -> dict[str, float]:
        logits, labels = prediction.predictions, prediction.label_ids.reshape(-1, len(SLOTS))
        parts = np.split(logits.reshape(len(labels), -1), np.cumsum(sizes)[:-1], axis=-1)
        predicted = np.stack([part.argmax(-1) for part in parts], axis=-1)
        scored, events = labels[:, 0] != IGNORE, labels[:, 0] > 0
        out = {"accuracy": float((predicted[:, 0] == labels[:, 0])[scored].mean())}
        for k, slot in enumerate(SLOTS):
            name = METRIC_NAMES[slot]
            rows = events & (labels[:, k] != IGNORE)
            if rows.any():
                out[f"{name}_accuracy"] = float((predicted[rows, k] == labels[rows, k]).mean())
                out[f"{name}_majority"] = float((labels[rows, k] == guess[k]).mean())
        return out

    return metrics


def probe_slots(train: EventWindows, evaluated: EventWindows) -> dict[str, float]:
    """Per slot, the accuracy of a linear probe on the raw frames of the steps where something happened."""
    xs = [np.concatenate([step_pixels(w) for w in d.windows]) for d in (train, evaluated)]
    ys = [torch.cat(d.labels).numpy() for d in (train, evaluated)]
    out = {}
    for k, slot in enumerate(SLOTS):
        rows = [(y[:, 0] > 0) & (y[:, k] != IGNORE) for y in ys]
        if rows[0].any() and rows[1].any():
            size = len(EVENT_CLASSES) if k == 0 else len(train.vocabulary[slot])
            fit = (xs[0][rows[0]], ys[0][rows[0], k], xs[1][rows[1]], ys[1][rows[1], k])
            out[METRIC_NAMES[slot]] = probe_accuracy(*fit, num_classes=size)
    return out


def slot_report(metrics: dict[str, float], probe: dict[str, float]) -> str:
    """The stage-1 table: per slot, the encoder's accuracy on event steps, the majority and the probe."""
    lines = ["slot      encoder  majority  raw-frame probe   (event steps of the eval clips)"]
    for slot in SLOTS:
        name = METRIC_NAMES[slot]
        encoder, guess = metrics.get(f"eval_{name}_accuracy"), metrics.get(f"eval_{name}_majority")
        if encoder is not None and name in probe:
            lines.append(f"{slot:<8}  {encoder:7.3f}  {guess:8.3f}  {probe[name]:15.3f}")
    return "\n".join(lines)


def train_encoder(script: VideoScriptArguments, training: SFTConfig) -> Trainer:
    """Stage 1: event-slot classification; the encoder (without the heads) is saved to ``output_dir``.
    With eval clips, the per-slot accuracies beside the majority and a raw-frame probe are printed and saved
    to ``output_dir/slot_accuracy.json``."""
    pretrained = load_model(VideoEncoder, script.init_from) if script.init_from else None
    config = pretrained.config if pretrained is not None else script.encoder_config()
    train_clips = load_clips(script, config, train=True)
    eval_clips = load_clips(script, config, train=False)
    windows = script.window_frames, script.window_stride, config.image_size
    train_rows = EventWindows(train_clips, *windows, share=script.label_fraction, augment=script.augment)
    eval_rows = EventWindows(eval_clips, *windows, train_rows.vocabulary) if eval_clips is not None else None
    config.id2label = dict(enumerate(EVENT_CLASSES))
    config.label2id = {name: i for i, name in enumerate(EVENT_CLASSES)}
    config.slot_labels = train_rows.vocabulary  # what the heads told apart: saved with the encoder
    # SFTConfig turns activation checkpointing on by default; the encoder has none (and needs none).
    training.activation_checkpointing = training.gradient_checkpointing = False
    set_seed(training.seed)
    model = VideoEventClassifier(config, script.slot_loss_weights)
    if pretrained is not None:
        model.video_encoder.load_state_dict(pretrained.state_dict())
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train_rows,
        eval_dataset=eval_rows,
        compute_metrics=slot_metrics(model.sizes, majority(train_rows.labels)),
    )
    resume(trainer)
    metrics = trainer.evaluate() if eval_rows is not None else None  # every process takes part
    if trainer.is_world_process_zero():
        publish(training.output_dir, trainer.model.video_encoder.save_pretrained)
        if metrics is not None:
            probe = probe_slots(train_rows, eval_rows)
            with staged_file(Path(training.output_dir) / "slot_accuracy.json") as tmp:
                tmp.write_text(json.dumps({"encoder": metrics, "raw_frame_probe": probe}, indent=1))
            print(slot_report(metrics, probe))
    return trainer


def train_future(script: VideoScriptArguments, training: SFTConfig) -> Trainer:
    """Stage 0: the encoder learns to predict its own features ``predict_steps`` ahead, from the frames
    alone (``pretraining.VideoFuturePredictor``); the encoder is saved to ``output_dir``, for stage 1's
    ``init_from``."""
    config = script.encoder_config()
    train_clips = load_clips(script, config, train=True)
    eval_clips = load_clips(script, config, train=False)
    windows = script.window_frames, script.window_stride, config.image_size
    training.activation_checkpointing = training.gradient_checkpointing = False
    set_seed(training.seed)
    trainer = Trainer(
        model=VideoFuturePredictor(config, script.predict_steps),
        args=training,
        train_dataset=EventWindows(train_clips, *windows, labelled=False, augment=script.augment),
        eval_dataset=EventWindows(eval_clips, *windows, labelled=False) if eval_clips is not None else None,
    )
    resume(trainer)
    if trainer.is_world_process_zero():
        publish(training.output_dir, trainer.model.video_encoder.save_pretrained)
    return trainer


# --- stages 2 and 3 ----------------------------------------------------------------------------------------


class StreamTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss is the model's own, decision-weighted one (``config.decision_loss_weight``),
    from a single forward (TRL's fused LM head would score an unweighted token mean)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {**inputs, "use_cache": False}
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def build_video_model(
    script: VideoScriptArguments, model_args: ModelConfig, seed: int
) -> tuple[E2WMVideoForCausalLM, E2WMVideoProcessor]:
    """The stage-2 starting point: the LM with the stage-1 encoder (or a fresh one) and a fresh projector,
    the same for the same ``seed``."""
    encoder = load_model(VideoEncoder, script.init_from) if script.init_from else None
    lm = resolve_model(model_args.model_name_or_path or DEFAULT_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(lm, revision=model_args.model_revision)
    set_seed(seed)
    model = E2WMVideoForCausalLM.from_language_model(
        lm,
        tokenizer,
        encoder.config if encoder is not None else script.encoder_config(),
        tokens_per_step=script.tokens_per_step,
        decision_loss_weight=script.decision_loss_weight,
    )
    if encoder is not None:
        model.model.video_encoder.load_state_dict(encoder.state_dict())
    image_size = model.config.video_config.image_size
    return model, E2WMVideoProcessor(tokenizer, tokens_per_step=script.tokens_per_step, image_size=image_size)


def train_projector(script: VideoScriptArguments, training: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """Stage 2: only the projector trains; the model and processor are saved to ``output_dir``."""
    model, processor = build_video_model(script, model_args, training.seed)
    model.requires_grad_(False)
    model.model.multi_modal_projector.requires_grad_(True)
    trainer = stream_trainer(script, training, model, processor, peft_config=None)
    resume(trainer)
    if trainer.is_world_process_zero():
        publish(training.output_dir, lambda d: save_model(trainer.model, processor, d))
    return trainer


def train_lora(script: VideoScriptArguments, training: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """Stage 3: LoRA on the LM, the projector in full and (``train_decision_tokens``) the decision tokens'
    embeddings; the merged model is saved to ``output_dir``."""
    peft_config = get_peft_config(model_args)
    if peft_config is None:
        raise E2WMError("stage 3 trains LoRA adapters: set use_peft: true")
    model = load_model(E2WMVideoForCausalLM, script.init_from)
    processor = load_processor(script.init_from)
    model.config.decision_loss_weight = script.decision_loss_weight
    peft_config.target_modules = lm_targets(model, model_args.lora_target_modules)
    peft_config.modules_to_save = ["multi_modal_projector", *(peft_config.modules_to_save or [])]
    if script.train_decision_tokens:  # new tokens: their embedding and LM-head rows start as random draws
        config = model.config
        ids = [config.next_token_id, config.feedback_start_id, config.feedback_end_id]
        ends = (model.get_input_embeddings(), model.get_output_embeddings())
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if any(m is e for e in ends)})
        peft_config.trainable_token_indices = dict.fromkeys(names, ids)  # tied weights: PEFT trains them once
    trainer = stream_trainer(script, training, model, processor, peft_config)
    resume(trainer)
    if trainer.is_world_process_zero():
        merged = trainer.model.merge_and_unload()
        publish(training.output_dir, lambda d: save_model(merged, processor, d))
    return trainer


def lm_targets(model: E2WMVideoForCausalLM, names: Sequence[str] | str | None) -> str:
    """A regular expression for the LM's linear layers called ``names`` (``all-linear``: every one but the
    head), so LoRA leaves the encoder and the projector alone."""
    prefix = "model.language_model."
    linear = {
        n.rsplit(".", 1)[-1]
        for n, m in model.named_modules()
        if n.startswith(prefix) and isinstance(m, nn.Linear)
    }
    wanted = (
        linear
        if names in (None, "all-linear", ["all-linear"])
        else set([names] if isinstance(names, str) else names)
    )
    if not wanted <= linear:
        raise E2WMError(
            f"lora_target_modules {sorted(wanted - linear)} are not linear layers of the LM "
            f"(it has {', '.join(sorted(linear))})"
        )
    return rf"{re.escape(prefix)}.*\.({'|'.join(sorted(wanted))})"


def stream_trainer(
    script: VideoScriptArguments,
    training: SFTConfig,
    model: E2WMVideoForCausalLM,
    processor: E2WMVideoProcessor,
    peft_config,
) -> StreamTrainer:
    """An SFT trainer over the stream sequences of the clips, with the encoder's features precomputed."""
    video = model.config.video_config
    train_clips = load_clips(script, video, train=True)
    eval_clips = load_clips(script, video, train=False)
    encoder = model.model.video_encoder
    rows = script.window_frames, script.window_stride
    asked = {"questions": script.questions_per_window, "seed": training.seed}
    training.remove_unused_columns = False
    training.prediction_loss_only = True  # evaluation reports the loss: no need to gather every logit
    training.dataset_kwargs = {**(training.dataset_kwargs or {}), "skip_prepare_dataset": True}
    evaluated = None if eval_clips is None else stream_rows(eval_clips, processor, encoder, *rows, **asked)
    with libraries_deprecation(".*is_gradient_checkpointing.*"):  # PEFT's get_peft_model calls it
        return StreamTrainer(
            model=model,
            args=training,
            train_dataset=stream_rows(train_clips, processor, encoder, *rows, **asked),
            eval_dataset=evaluated,
            data_collator=FeatureCollator(processor),
            processing_class=processor.tokenizer,
            peft_config=peft_config,
        )


# --- loading and saving ------------------------------------------------------------------------------------


def load_model(cls: type[PreTrainedModel], path: str) -> PreTrainedModel:
    """A model of class ``cls`` from a directory of a previous stage (safetensors only)."""
    expected = cls.config_class.model_type
    try:
        found = AutoConfig.from_pretrained(path).model_type
        if found != expected:
            raise E2WMError(f"{path} holds a {found!r} model, not a {expected!r} one: check init_from")
        return cls.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise E2WMError(f"{path}: cannot load the model ({error_line(exc)})") from None


def load_processor(path: str) -> E2WMVideoProcessor:
    try:
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise E2WMError(f"{path}: cannot load the processor ({error_line(exc)})") from None
    if not isinstance(processor, E2WMVideoProcessor):
        raise E2WMError(f"{path}: no video processor (processor_config.json) next to the model")
    return processor


def save_model(model: PreTrainedModel, processor: E2WMVideoProcessor, directory: str) -> None:
    model.save_pretrained(directory, safe_serialization=True)
    processor.save_pretrained(directory)


def resume(trainer: Trainer) -> None:
    """Train, from the last checkpoint in ``output_dir`` if there is one."""
    trainer.train(resume_from_checkpoint=resume_point(trainer.args))


def publish(output_dir: str, save: Callable[[str], None]) -> None:
    """``save`` into a temporary directory, then move the files into ``output_dir``, ``config.json`` last
    (a directory whose ``config.json`` exists holds a complete model)."""
    out = Path(output_dir)
    staging = out / ".tmp-final"
    shutil.rmtree(staging, ignore_errors=True)
    save(str(staging))
    for path in sorted(staging.iterdir(), key=lambda p: p.name == "config.json"):
        os.replace(path, out / path.name)
    staging.rmdir()


def train(script: VideoScriptArguments, training: SFTConfig, model_args: ModelConfig) -> Trainer:
    """Run the configured stage; returns its trainer. A second job training into the same ``output_dir``
    at once is refused."""
    script.validate()
    main = PartialState().is_main_process  # the other processes write nothing of their own
    with output_lock(training.output_dir) if main else contextlib.nullcontext():
        if script.stage == 0:
            trainer = train_future(script, training)
        elif script.stage == 1:
            trainer = train_encoder(script, training)
        elif script.stage == 2:
            trainer = train_projector(script, training, model_args)
        else:
            trainer = train_lora(script, training, model_args)
        if main:  # what made this stage's model: its pushed card names the stage from it
            save_recipe(training.output_dir, script, training, model_args)
    end_processes(trainer)
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m e2wm.training.train_video`` and
    ``accelerate launch -m e2wm.training.train_video``."""
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    with reported("train-video", "--verbose" in argv):
        train(*parse([a for a in argv if a != "--verbose"]))


if __name__ == "__main__":
    main()
