"""Text and frames -> model inputs: ``<video>`` expansion, frame preprocessing, stream training sequences.

A stream sequence interleaves, for each 4-frame feature step ``i`` of a clip, ``k`` ``<video>`` tokens and the
model's decision: ``<next>`` (keep watching) or ``<feedback> caption </feedback>`` for the captions whose time
falls in that step (``int(time * fps // 4) == i``; several are joined with a space). A question asked in that
step follows the decision: `` Question: TEXT Answer:`` then ``<feedback> answer </feedback>``. Labels are -100
on the prompt, the ``<video>`` tokens and the questions; the decisions, utterances and answers are targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoProcessor, BatchFeature, ProcessorMixin
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from e2wm.errors import E2WMError
from e2wm.multimodal.configuration import FRAMES_PER_STEP, E2WMVideoConfig
from e2wm.multimodal.encoder import IMAGE_MEAN, IMAGE_STD, frames_to_pixels
from e2wm.multimodal.modeling import FEEDBACK_END, FEEDBACK_START, NEXT_TOKEN, SPECIAL_TOKENS, VIDEO_TOKEN


class E2WMVideoProcessor(ProcessorMixin):
    """The tokenizer (with the four special tokens) plus frame preprocessing; saved with the model
    (``processor_config.json`` and the tokenizer files)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        tokens_per_step: int = 1,
        image_size: int = 64,
        image_mean: Sequence[float] = IMAGE_MEAN,
        image_std: Sequence[float] = IMAGE_STD,
        chat_template: str | None = None,
    ):
        super().__init__(tokenizer, chat_template=chat_template)
        vocab = tokenizer.get_vocab()
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise E2WMError(f"tokenizer lacks {', '.join(missing)}: add them with from_language_model")
        if tokens_per_step < 1:
            raise E2WMError(f"tokens_per_step must be at least 1, got {tokens_per_step}")
        self.tokens_per_step = tokens_per_step
        self.image_size = image_size
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.video_token_id, self.next_token_id, self.feedback_start_id, self.feedback_end_id = (
            vocab[t] for t in (VIDEO_TOKEN, NEXT_TOKEN, FEEDBACK_START, FEEDBACK_END)
        )

    def preprocess_frames(self, frames) -> torch.Tensor:
        """uint8 RGB frames ``[T, H, W, 3]`` -> float ``[3, T, size, size]``, see ``frames_to_pixels``."""
        return frames_to_pixels(frames, self.image_size, self.image_mean, self.image_std)

    def prompt_ids(self, prompt: str = "") -> list[int]:
        """The token ids before the first video step (with the tokenizer's own special prefix, if any)."""
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def question_ids(self, text: str) -> list[int]:
        """The tokens that ask ``text`` mid-stream; the answer follows as an utterance."""
        return self.tokenizer(f" Question: {' '.join(text.split())} Answer:", add_special_tokens=False)[
            "input_ids"
        ]

    def utterance_ids(self, text: str) -> list[int]:
        return self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]

    def decode_utterance(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def __call__(self, text: str | list[str], videos=None, **kwargs) -> BatchFeature:
        """Tokenize ``text`` with each ``<video>`` expanded to ``k`` tokens per 4-frame step of its clip.

        ``videos``: one uint8 clip ``[T, H, W, 3]`` per text (a single clip for a single text); trailing
        frames beyond a multiple of 4 are dropped; clips of one batch need the same length. Extra keyword
        arguments go to the tokenizer (e.g. ``padding=True`` for batches). Returns PyTorch tensors.
        """
        texts = [text] if isinstance(text, str) else list(text)
        clips = [] if videos is None else [videos] if isinstance(text, str) else list(videos)
        counts = [t.count(VIDEO_TOKEN) for t in texts]
        if counts != [1 if clips else 0] * len(texts) or (clips and len(clips) != len(texts)):
            raise E2WMError(
                f"each text needs exactly one {VIDEO_TOKEN} per clip: got {counts} placeholders "
                f"for {len(clips)} clip(s) and {len(texts)} text(s)"
            )
        pixels = [self.preprocess_frames(self._whole_steps(c)) for c in clips]
        if len({p.shape for p in pixels}) > 1:
            raise E2WMError("clips batched together need the same number of frames")
        if pixels:
            steps = pixels[0].shape[1] // FRAMES_PER_STEP
            texts = [t.replace(VIDEO_TOKEN, VIDEO_TOKEN * steps * self.tokens_per_step) for t in texts]
        data = dict(self.tokenizer(texts, return_tensors="pt", **kwargs))
        if pixels:
            data["pixel_values_videos"] = torch.stack(pixels)
        return BatchFeature(data=data)

    def stream_example(
        self,
        frames,
        fps: float,
        captions: Sequence[tuple[float, str]],
        prompt: str = "",
        questions: Sequence[tuple[float, str, str]] = (),
    ) -> dict[str, torch.Tensor]:
        """A stream training sequence for one clip (uint8 ``[T, H, W, 3]``; trailing frames beyond a multiple
        of 4 are dropped), its timed captions (seconds, text) and questions (seconds, question, answer): 1-D
        ``input_ids``, ``attention_mask``, ``labels`` and ``pixel_values_videos`` ``[3, T, S, S]``."""
        frames = self._whole_steps(frames)
        steps = frames.shape[0] // FRAMES_PER_STEP

        def step_of(time: float, what: str) -> int:
            step = int(time * fps // FRAMES_PER_STEP)
            if time < 0 or step >= steps:
                raise E2WMError(
                    f"{what} at {time:.2f} s is outside the clip "
                    f"({steps} steps of {FRAMES_PER_STEP} frames at {fps:g} fps)"
                )
            return step

        said: dict[int, list[str]] = {}
        for time, text in captions:
            step = step_of(time, f"caption {text!r}")
            if not text.strip():
                raise E2WMError(f"empty caption at {time:.2f} s")
            said.setdefault(step, []).append(text.strip())
        asked: dict[int, list[tuple[str, str]]] = {}
        for time, text, answer in questions:
            if not text.strip() or not answer.strip():
                raise E2WMError(f"question at {time:.2f} s needs a text and an answer")
            asked.setdefault(step_of(time, f"question {text!r}"), []).append((text, answer))
        ids = self.prompt_ids(prompt)
        labels = [-100] * len(ids)
        for step in range(steps):
            ids += [self.video_token_id] * self.tokens_per_step
            labels += [-100] * self.tokens_per_step
            if step in said:
                decision = [
                    self.feedback_start_id,
                    *self.utterance_ids(" ".join(said[step])),
                    self.feedback_end_id,
                ]
            else:
                decision = [self.next_token_id]
            ids += decision
            labels += decision
            for text, answer in asked.get(step, []):
                question = self.question_ids(text)
                reply = [self.feedback_start_id, *self.utterance_ids(answer), self.feedback_end_id]
                ids += question + reply
                labels += [-100] * len(question) + reply
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "labels": torch.tensor(labels),
            "pixel_values_videos": self.preprocess_frames(frames),
        }

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Batch ``stream_example`` rows (tensors, arrays or lists): right-pad the token columns (labels with
        -100) and stack the clips, which must have the same length. Use as a Trainer's ``data_collator``."""
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        columns = {"input_ids": pad, "attention_mask": 0, "labels": -100}
        batch = {}
        for name, value in columns.items():
            seqs = [torch.as_tensor(r[name], dtype=torch.long) for r in rows if name in r]
            if seqs:
                batch[name] = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)
        clips = [torch.as_tensor(r["pixel_values_videos"], dtype=torch.float32) for r in rows]
        if len({c.shape for c in clips}) > 1:
            raise E2WMError("clips batched together need the same number of frames")
        batch["pixel_values_videos"] = torch.stack(clips)
        return batch

    @staticmethod
    def _whole_steps(frames) -> torch.Tensor:
        frames = torch.as_tensor(frames)
        usable = frames.shape[0] - frames.shape[0] % FRAMES_PER_STEP if frames.ndim else 0
        if usable == 0:
            raise E2WMError(
                f"a clip needs at least {FRAMES_PER_STEP} frames, got shape {tuple(frames.shape)}"
            )
        return frames[:usable]


AutoProcessor.register(E2WMVideoConfig, E2WMVideoProcessor, exist_ok=True)
