"""Stream clips through a trained narrator, 4 frames at a time, and score when and what it says.

``evaluate_stream`` is what ``e2wm stream`` runs: per clip a fresh stream, its utterances (optionally echoed
as they come, ``[  3.94s] grabbed the mug``), the frames/s of the model's work (time spent inside
``StreamingNarrator.feed`` and ``ask``), for clips with reference captions ``score_stream``'s metrics, and
the answers to questions asked mid-stream, scored against the clips' own (``answer_matches``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from e2wm.errors import E2WMError, error_line
from e2wm.multimodal.configuration import FRAMES_PER_STEP
from e2wm.multimodal.metrics import score_stream
from e2wm.multimodal.modeling import E2WMVideoForCausalLM
from e2wm.multimodal.processing import E2WMVideoProcessor
from e2wm.multimodal.questions import answer_matches, draw_questions
from e2wm.multimodal.streaming import StreamingNarrator
from e2wm.multimodal.video_io import Clip, Question
from e2wm.splits import SPLITS

Utterance = tuple[float, str]


@dataclass
class StreamConfig:
    """``e2wm stream``: the narrator, one source of video (a file, clips, or rollouts rendered as they
    stream), and how it is scored."""

    model: str = field(metadata={"help": "video model directory (e2wm.training.train_video stage 2 or 3)"})
    video: str | None = field(
        default=None, metadata={"help": "a video file (scored if FILE.json has its captions)"}
    )
    rollouts: str | None = field(
        default=None, metadata={"help": "rollout shards, rendered as they are streamed"}
    )
    clips: str | None = field(default=None, metadata={"help": "directory of clips (NAME.mp4 + NAME.json)"})
    split: str | None = field(
        default=None, metadata={"help": "--rollouts: only this split's episodes", "choices": SPLITS}
    )
    episodes: int | None = field(default=None, metadata={"help": "--rollouts, --clips: the first N only"})
    layout_seed: int | None = field(
        default=None, metadata={"help": "--rollouts: place objects by this seed (a layout not trained on)"}
    )
    threshold: float = field(default=0.5, metadata={"help": "keep watching while p(<next>) >= this"})
    tolerance: float = field(default=1.0, metadata={"help": "seconds an utterance may be off its caption"})
    realtime: bool = field(default=False, metadata={"help": "feed frames at the video's rate, not at once"})
    questions: int = field(
        default=0,
        metadata={
            "help": "ask up to this many of each clip's own questions (renders: answered by the simulator) "
            "at their times, and score the answers"
        },
    )
    ask: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "ask these of every clip, each at its time (e.g. '3.5:what is person 1 holding?')",
            "metavar": "SECONDS:QUESTION",
        },
    )
    video_blind: bool = field(
        default=False,
        metadata={"help": "stream black frames instead of the video: the same model's video-blind baseline"},
    )

    def validate(self) -> None:
        sources = [s for s in (self.video, self.rollouts, self.clips) if s is not None]
        if len(sources) != 1:
            raise E2WMError("give exactly one of --video, --rollouts and --clips")
        if self.episodes is not None and self.episodes < 1:
            raise E2WMError(f"--episodes must be at least 1, got {self.episodes}")
        if self.questions < 0:
            raise E2WMError(f"--questions must be non-negative, got {self.questions}")
        self.asked()

    def asked(self) -> list[Question]:
        """The ``--ask`` questions (unscored: no answer)."""
        questions = []
        for item in self.ask:
            seconds, _, text = item.partition(":")
            try:
                at = float(seconds)
            except ValueError:
                at = -1.0
            if not 0 <= at < float("inf") or not text.strip():
                raise E2WMError(f"--ask takes SECONDS:QUESTION with SECONDS >= 0, got {item!r}")
            questions.append(Question(at, text.strip(), "", "asked"))
        return questions


def load_narrator(model_dir: str | Path, threshold: float = 0.5) -> StreamingNarrator:
    """The model and processor a training stage saved (``e2wm.training.train_video`` stage 2 or 3), as a
    narrator."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

    import e2wm.multimodal  # noqa: F401  # registers the video model with the Auto classes

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise E2WMError(f"{path}: no trained video model here (no config.json)")
    if not 0 <= threshold <= 1:
        raise E2WMError(f"threshold must be in [0, 1], got {threshold}")
    try:
        model_type = AutoConfig.from_pretrained(path).model_type
        if model_type != "e2wm_video":
            raise E2WMError(
                f"{path} holds a {model_type!r} model, not a video narrator (stage 2 or 3 output)"
            )
        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
        processor = AutoProcessor.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise E2WMError(f"{path}: cannot load the model ({error_line(exc)})") from None
    if not isinstance(model, E2WMVideoForCausalLM) or not isinstance(processor, E2WMVideoProcessor):
        raise E2WMError(f"{path}: not a video narrator with its processor")
    return StreamingNarrator(model, processor, threshold=threshold)


def stream_clip(
    narrator: StreamingNarrator,
    clip: Clip,
    realtime: bool = False,
    echo: Callable[[str], None] | None = None,
    questions: Sequence[Question] = (),
) -> tuple[list[Utterance], float, list[str]]:
    """Feed ``clip`` from a fresh stream in chunks of 4 frames, asking each of ``questions`` once the step
    its time falls in has been fed (those past the end, at the end); its utterances, the seconds spent
    feeding and answering, and the answers.

    ``realtime`` waits for each chunk's time to come (frames arrive at the clip's rate) before feeding it.
    """
    narrator.reset()
    said: list[Utterance] = []
    answers: list[str] = []
    pending = sorted(questions, key=lambda q: q.time)
    busy = 0.0
    start = time.perf_counter()
    for first in range(0, len(clip.frames), FRAMES_PER_STEP):
        chunk = clip.frames[first : first + FRAMES_PER_STEP]
        if realtime:
            time.sleep(max(0.0, start + (first + len(chunk)) / clip.fps - time.perf_counter()))
        began = time.perf_counter()
        new = narrator.feed(chunk)
        busy += time.perf_counter() - began
        for utterance in new:
            if echo is not None:
                echo(utterance_line(*utterance))
        said += new
        last = first + len(chunk) >= len(clip.frames)
        while pending and (last or int(pending[0].time * clip.fps // FRAMES_PER_STEP) < narrator.steps):
            question = pending.pop(0)
            began = time.perf_counter()
            answers.append(narrator.ask(question.text))
            busy += time.perf_counter() - began
            if echo is not None:
                echo(question_line(question, answers[-1]))
    return said, busy, answers


def question_line(question: Question, said: str) -> str:
    """``[  3.94s] Q: what is person 1 holding? A: the mug (expected: the mug)``, on one line."""
    expected = f" (expected: {question.answer})" if question.answer else ""
    return f"[{question.time:7.2f}s] Q: {question.text} A: {' '.join(said.split())}{expected}"


def utterance_line(seconds: float, text: str) -> str:
    """``[  3.94s] grabbed the mug``: one line, whatever whitespace the model said."""
    return f"[{seconds:7.2f}s] {' '.join(text.split())}"


def evaluate_stream(
    model: str | Path | StreamingNarrator,
    clips: Iterable[Clip],
    threshold: float = 0.5,
    tolerance: float = 1.0,
    scored: bool = True,
    realtime: bool = False,
    echo: Callable[[str], None] | None = None,
    questions: int = 0,
    asked: Sequence[Question] = (),
    video_blind: bool = False,
) -> dict[str, Any]:
    """Narrate every clip with ``model`` (a directory from ``e2wm.training.train_video``, or a loaded
    narrator) at ``threshold``; frames, seconds, frames/s and the predictions, plus ``score_stream`` metrics
    against the clips' captions (``scored=False``: clips without references).

    ``questions``: also ask up to this many of each clip's questions (a seeded draw) and report their
    accuracy, overall and per kind; ``asked``: questions for every clip, answered but not scored.
    ``video_blind``: black frames instead of each clip's (the same model, blind)."""
    if tolerance < 0:
        raise E2WMError(f"tolerance must be non-negative, got {tolerance}")
    if not 0 <= threshold <= 1:
        raise E2WMError(f"threshold must be in [0, 1], got {threshold}")
    narrator = model if isinstance(model, StreamingNarrator) else load_narrator(model)
    narrator.threshold = threshold
    if questions < 0:
        raise E2WMError(f"questions must be non-negative, got {questions}")
    names, predictions, references, scores = [], [], [], []
    frames, seconds = 0, 0.0
    for clip in clips:
        if echo is not None:
            echo(f"--- {clip.name}: {len(clip.frames)} frames, {len(clip.frames) / clip.fps:.2f} s ---")
        if video_blind:
            clip = replace(clip, frames=np.zeros_like(clip.frames))
        drawn = [*draw_questions(clip.questions, questions, 0, clip.name), *asked]
        said, busy, answers = stream_clip(narrator, clip, realtime, echo, drawn)
        scores += [
            (q.kind, answer_matches(a, q.answer)) for q, a in zip(drawn, answers, strict=True) if q.answer
        ]
        names.append(clip.name)
        predictions.append(said)
        references.append(clip.captions)
        frames += len(clip.frames) - len(clip.frames) % FRAMES_PER_STEP
        seconds += busy
    if not names:
        raise E2WMError("no clips to stream")
    result: dict[str, Any] = {
        "clips": len(names),
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds if seconds > 0 else float("inf"),
        "fps": narrator.fps,
        "predictions": dict(zip(names, predictions, strict=True)),
    }
    if scored:
        result.update(score_stream(predictions, references, tolerance))
    if questions:
        result["questions"] = len(scores)
        result["question_accuracy"] = sum(ok for _, ok in scores) / len(scores) if scores else float("nan")
        result["question_accuracy_by_kind"] = {
            kind: sum(ok for k, ok in scores if k == kind) / sum(k == kind for k, _ in scores)
            for kind in sorted({k for k, _ in scores})
        }
    return result
