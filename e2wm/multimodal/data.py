"""Clips -> training rows: fixed-length windows with re-timed captions, then per-step event slots (encoder
pretraining) or stream sequences with precomputed encoder features (projector alignment and LoRA).

Every window has ``window_frames`` frames (a multiple of 4), so the rows of a batch have as many feature steps
and ``<video>`` tokens: windows start every ``stride`` frames, the last one ends at the clip's end (it may
overlap the one before), and a clip shorter than a window is padded with its last frame (a still scene, in
which nothing happens).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import torch
from torch.utils.data import Dataset

from e2wm.errors import E2WMError
from e2wm.multimodal.configuration import FRAMES_PER_STEP
from e2wm.multimodal.encoder import VideoEncoder, frames_to_pixels
from e2wm.multimodal.processing import E2WMVideoProcessor
from e2wm.multimodal.questions import draw_questions
from e2wm.multimodal.render import TEMPLATES, RenderConfig, parse_caption, render_episode
from e2wm.multimodal.video_io import Clip
from e2wm.rollouts.shards import load_episodes

# Stage-1 classes: what happened in a feature step, by the verb of its caption, and the slots it predicts:
# the verb, what was acted on, where it went (put in/on) and who acted (episodes with several people).
EVENT_CLASSES: tuple[str, ...] = ("none", *TEMPLATES)
VERBS = frozenset(TEMPLATES)
SLOTS: tuple[str, ...] = ("verb", "object", "place", "actor")
OTHER = "<other>"  # a slot value no training caption states: scored, never predicted
IGNORE = -100  # not scored: a slot the step's caption does not state, or a verb with no known class


def clip_windows(clip: Clip, window_frames: int, stride: int | None = None) -> list[Clip]:
    """Cut ``clip`` into windows of ``window_frames`` frames starting every ``stride`` (default: a window)
    frames, named ``NAME@START``; captions are kept in the window they fall in, timed from its start, and
    questions in the first window only (their answers count from the clip's start)."""
    stride = stride or window_frames
    if window_frames < FRAMES_PER_STEP or window_frames % FRAMES_PER_STEP:
        raise E2WMError(
            f"window_frames must be a positive multiple of {FRAMES_PER_STEP}, got {window_frames}"
        )
    if stride < FRAMES_PER_STEP or stride % FRAMES_PER_STEP:
        raise E2WMError(f"window stride must be a positive multiple of {FRAMES_PER_STEP}, got {stride}")
    total = len(clip.frames)
    if total == 0:
        raise E2WMError(f"clip {clip.name} has no frames")
    if total < window_frames:
        still = np.repeat(clip.frames[-1:], window_frames - total, axis=0)
        return [replace(clip, name=f"{clip.name}@0", frames=np.concatenate([clip.frames, still]))]
    last = (total - window_frames) // FRAMES_PER_STEP * FRAMES_PER_STEP
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return [_window(clip, start, window_frames) for start in starts]


def _window(clip: Clip, start: int, length: int) -> Clip:
    def inside(items: list) -> list:
        kept = []
        for item in items:
            frame = int(item.time * clip.fps + 1e-6)
            if start <= frame < start + length:
                # The middle of its frame, so that the step it falls in never depends on rounding.
                kept.append(replace(item, time=(frame - start + 0.5) / clip.fps))
        return kept

    # A question's answer counts from the clip's start: only the first window keeps them.
    questions = inside(clip.questions) if start == 0 else []
    frames = clip.frames[start : start + length]
    return Clip(f"{clip.name}@{start}", frames, clip.fps, inside(clip.captions), questions)


def step_slots(clip: Clip) -> list[dict[str, str] | None]:
    """Per feature step, the slots of the (first) caption said in it, else None.

    The slots are the caption's own, or what its text parses to with the renderer's templates ({} if
    nothing fits).
    """
    steps = len(clip.frames) // FRAMES_PER_STEP
    said: list[dict[str, str] | None] = [None] * steps
    for caption in clip.captions:
        step = int(caption.time * clip.fps + 1e-6) // FRAMES_PER_STEP
        if step < steps and said[step] is None:
            said[step] = dict(caption.slots) if "verb" in caption.slots else parse_caption(caption.text) or {}
    return said


def event_labels(clip: Clip) -> list[int]:
    """One class index per feature step: the verb of the caption said in that step, else ``none``; a step
    whose caption has no known verb is ``IGNORE``d."""
    return [
        0 if slots is None else EVENT_CLASSES.index(slots["verb"]) if slots.get("verb") in VERBS else IGNORE
        for slots in step_slots(clip)
    ]


def slot_vocabulary(clips: Iterable[Clip]) -> dict[str, list[str]]:
    """The classes of each slot but the verb: ``OTHER``, then every value the clips' captions state."""
    values: dict[str, set[str]] = {slot: set() for slot in SLOTS[1:]}
    for clip in clips:
        for slots in step_slots(clip):
            for slot in SLOTS[1:]:
                if slots and slot in slots:
                    values[slot].add(slots[slot])
    return {slot: [OTHER, *sorted(found)] for slot, found in values.items()}


def slot_labels(clip: Clip, vocabulary: dict[str, list[str]]) -> list[list[int]]:
    """Per feature step, one class index per slot of ``SLOTS``: the verb as ``event_labels`` gives it; for
    the other slots the value's index in ``vocabulary`` (``OTHER``, 0, for a value it lacks), ``IGNORE``
    where the step's caption states no such slot or has no known verb."""
    index = {slot: {name: i for i, name in enumerate(names)} for slot, names in vocabulary.items()}
    rows = []
    for verb, slots in zip(event_labels(clip), step_slots(clip), strict=True):
        row = [verb]
        for slot in SLOTS[1:]:
            value = (slots or {}).get(slot)
            row.append(IGNORE if value is None or verb == IGNORE else index[slot].get(value, 0))
        rows.append(row)
    return rows


class EventWindows(Dataset):
    """Stage-1 rows: ``pixel_values_videos`` ``[3, W, S, S]`` and per-step ``labels`` ``[W // 4, len(SLOTS)]``
    (``slot_labels``), over ``vocabulary`` (default: the one these windows' captions make).

    ``share`` < 1 keeps that share of the windows (a seeded draw: a smaller label budget); ``labelled=False``
    leaves the labels out of the rows (stage 0 learns from the frames alone). ``augment`` turns each row's
    window by a random one of the square's 8 symmetries (rotations by quarter turns, mirrored or not), the
    same for all its frames: where a thing stands in the training layouts then tells nothing of what it is.
    """

    def __init__(
        self,
        clips: Iterable[Clip],
        window_frames: int,
        stride: int | None,
        image_size: int,
        vocabulary: dict[str, list[str]] | None = None,
        share: float = 1.0,
        labelled: bool = True,
        augment: bool = False,
    ):
        self.image_size, self.labelled, self.augment = image_size, labelled, augment
        self.windows = [w for clip in clips for w in clip_windows(clip, window_frames, stride)]
        if not self.windows:
            raise E2WMError("no clips to train on")
        if share < 1:
            n = len(self.windows)
            kept = random.Random(f"share:{share}").sample(range(n), max(1, round(share * n)))
            self.windows = [self.windows[i] for i in sorted(kept)]
        if labelled:
            self.vocabulary = vocabulary or slot_vocabulary(self.windows)
            self.labels = [torch.tensor(slot_labels(w, self.vocabulary)) for w in self.windows]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pixels = frames_to_pixels(self.windows[index].frames, self.image_size)  # [3, W, S, S]
        if self.augment:
            turns, mirror = torch.randint(4, ()).item(), torch.randint(2, ()).item()
            pixels = torch.rot90(pixels, turns, dims=(2, 3))
            pixels = pixels.flip(3) if mirror else pixels
        return (
            {"pixel_values_videos": pixels, "labels": self.labels[index]}
            if self.labelled
            else {"pixel_values_videos": pixels}
        )


@torch.no_grad()
def stream_rows(
    clips: Iterable[Clip],
    processor: E2WMVideoProcessor,
    encoder: VideoEncoder,
    window_frames: int,
    stride: int | None = None,
    batch_size: int = 16,
    questions: int = 0,
    seed: int = 0,
) -> datasets.Dataset:
    """Stage-2/3 rows: ``processor.stream_example`` of every window, with its pixels replaced by the frozen
    ``encoder``'s features (``video_features`` ``[W // 4, D]``), computed once instead of every epoch.

    ``questions``: each window also asks up to this many of its clip's questions, drawn by ``seed`` and the
    window's name, at their times."""
    encoder.eval()
    columns: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": [], "video_features": []}
    for batch in _batches((w for c in clips for w in clip_windows(c, window_frames, stride)), batch_size):
        examples = [
            processor.stream_example(
                w.frames,
                w.fps,
                [(c.time, c.text) for c in w.captions],
                questions=[
                    (q.time, q.text, q.answer) for q in draw_questions(w.questions, questions, seed, w.name)
                ],
            )
            for w in batch
        ]
        pixels = torch.stack([e.pop("pixel_values_videos") for e in examples])
        features = encoder(pixels.to(encoder.device, encoder.dtype)).float().cpu().numpy()
        for example, feature in zip(examples, features, strict=True):
            for name in ("input_ids", "attention_mask", "labels"):
                columns[name].append(example[name].tolist())
            columns["video_features"].append(feature)
    if not columns["input_ids"]:
        raise E2WMError("no clips to train on")
    return datasets.Dataset.from_dict(columns).with_format("torch")


def _batches(items: Iterator[Clip], size: int) -> Iterator[list[Clip]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class FeatureCollator:
    """Batch ``stream_rows``: right-pad the token columns (labels with -100) and stack the features."""

    def __init__(self, processor: E2WMVideoProcessor):
        tokenizer = processor.tokenizer
        pad = tokenizer.pad_token_id
        self.pad = pad if pad is not None else (tokenizer.eos_token_id or 0)

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for name, value in (("input_ids", self.pad), ("attention_mask", 0), ("labels", IGNORE)):
            seqs = [torch.as_tensor(r[name], dtype=torch.long) for r in rows]
            batch[name] = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)
        batch["video_features"] = torch.stack([torch.as_tensor(r["video_features"]) for r in rows]).float()
        return batch


def rollout_clips(
    rollouts: str | Path, split: str | None, episodes: int | None, config: RenderConfig
) -> Iterator[Clip]:
    """The episodes of a directory of rollout shards (one split's, the first ``episodes`` by id), rendered
    as they are asked for."""
    rows = [e for e in load_episodes(str(rollouts)) if split is None or e["split"] == split]
    if not rows:
        raise E2WMError(f"{rollouts}: no episodes" + (f" in split {split}" if split else ""))
    for episode in rows[:episodes]:
        yield render_episode(episode, config)
