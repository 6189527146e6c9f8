"""Videos with timestamped captions: one ``NAME.mp4`` (any container PyAV decodes) and one ``NAME.json``.

The JSON is ``{"fps": 16, "frames": T, "captions": [{"time": 1.4375, "text": "grabbed the mug",
"slots": {"verb": "grab", "object": "mug"}}, ...]}``: caption times in seconds from the first frame,
sorted; ``slots`` is optional (real videos rarely have it) and ``fps``/``frames`` describe the video as
written (the video itself is the authority). Rendered rollouts and real videos read the same way. An
optional ``"questions": [{"time": 2.9375, "text": "what is person 1 holding?", "answer": "the mug",
"kind": "holding"}, ...]`` asks about what the video has shown up to ``time`` (renders compute the answers
in the simulator).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import av
import cv2
import numpy as np

from e2wm.errors import E2WMError, error_line

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")


@dataclass(frozen=True)
class Caption:
    """An utterance at ``time`` seconds, with the event slots it states (verb, object, state, ...)."""

    time: float
    text: str
    slots: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "text": self.text, "slots": dict(self.slots)}


@dataclass(frozen=True)
class Question:
    """A question about what the video has shown up to ``time`` seconds, its answer, and what it asks about
    (``kind``: e.g. holding, state, count)."""

    time: float
    text: str
    answer: str
    kind: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "text": self.text, "answer": self.answer, "kind": self.kind}


@dataclass
class Clip:
    """A video (``frames`` uint8 [T, H, W, 3] RGB at ``fps``), its captions and questions about it."""

    name: str
    frames: np.ndarray
    fps: float
    captions: list[Caption]
    questions: list[Question] = field(default_factory=list)


def _size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as (height, width): an int is a square."""
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise E2WMError(f"video size must be positive, got {size}")
    return height, width


def load_video(
    path: str | Path, size: int | tuple[int, int] | None = None, fps: float | None = None
) -> tuple[np.ndarray, float]:
    """Decode a video to RGB frames uint8 [T, H, W, 3] and its frame rate.

    ``size`` (an int for square, or (height, width)) resizes every frame; ``fps`` resamples in time by
    showing, at each output time i / fps, the latest source frame whose timestamp is not after it (frames
    are dropped or repeated; variable frame rates are handled by the timestamps).
    """
    path = Path(path)
    if not path.is_file():
        raise E2WMError(f"{path}: no such video file")
    if fps is not None and fps <= 0:
        raise E2WMError(f"fps must be positive, got {fps}")
    shape = _size(size)
    frames, times = [], []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise E2WMError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else 0.0
            for frame in container.decode(stream):
                image = frame.to_ndarray(format="rgb24")
                if shape is not None and image.shape[:2] != shape:
                    shrink = shape[0] * shape[1] < image.shape[0] * image.shape[1]
                    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                    image = cv2.resize(image, (shape[1], shape[0]), interpolation=interpolation)
                frames.append(image)
                times.append(frame.time)
    except av.FFmpegError as exc:
        raise E2WMError(f"{path}: cannot decode video ({error_line(exc)})") from None
    if not frames:
        raise E2WMError(f"{path}: the video has no frames")
    if source_fps <= 0:
        raise E2WMError(f"{path}: the video has no frame rate")
    video = np.stack(frames)
    if fps is None or math.isclose(fps, source_fps):
        return video, source_fps
    if None in times:  # no timestamps: assume a constant frame rate
        stamps = np.arange(len(frames)) / source_fps
    else:
        stamps = np.asarray(times, dtype=np.float64) - times[0]
    duration = stamps[-1] + 1.0 / source_fps
    count = max(1, round(duration * fps))
    wanted = np.arange(count) / fps
    index = np.clip(np.searchsorted(stamps, wanted + 1e-9, side="right") - 1, 0, len(frames) - 1)
    return video[index], float(fps)


def _time(path: Path, what: str, item: dict) -> float:
    time = item.get("time")
    if isinstance(time, bool) or not isinstance(time, int | float) or not math.isfinite(time) or time < 0:
        raise E2WMError(f"{path}: {what} needs a non-negative number 'time', got {time!r}")
    return float(time)


def _caption(path: Path, k: int, item: Any) -> Caption:
    if not isinstance(item, dict):
        raise E2WMError(f"{path}: caption {k} is not an object")
    time, text, slots = _time(path, f"caption {k}", item), item.get("text"), item.get("slots", {})
    if not isinstance(text, str) or not text.strip():
        raise E2WMError(f"{path}: caption {k} needs a non-empty 'text'")
    if not isinstance(slots, dict) or not all(
        isinstance(key, str) and isinstance(v, str) for key, v in slots.items()
    ):
        raise E2WMError(f"{path}: caption {k} 'slots' must map strings to strings")
    return Caption(time, text, dict(slots))


def _question(path: Path, k: int, item: Any) -> Question:
    if not isinstance(item, dict):
        raise E2WMError(f"{path}: question {k} is not an object")
    time, kind = _time(path, f"question {k}", item), item.get("kind", "")
    text, answer = item.get("text"), item.get("answer")
    if not all(isinstance(v, str) and v.strip() for v in (text, answer)) or not isinstance(kind, str):
        raise E2WMError(f"{path}: question {k} needs a non-empty 'text' and 'answer' (and a string 'kind')")
    return Question(time, text, answer, kind)


def load_annotations(path: str | Path) -> tuple[list[Caption], list[Question]]:
    """Read and validate a caption file: an object whose ``captions`` are sorted by time, and its optional
    ``questions``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise E2WMError(f"{path}: no such caption file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise E2WMError(f"{path}: not valid JSON ({error_line(exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("captions"), list):
        raise E2WMError(f"{path}: expected a JSON object with a 'captions' list")
    if not isinstance(data.get("questions", []), list):
        raise E2WMError(f"{path}: 'questions' must be a list")
    captions = [_caption(path, k, item) for k, item in enumerate(data["captions"])]
    for k in range(1, len(captions)):
        if captions[k].time < captions[k - 1].time:
            raise E2WMError(f"{path}: captions are not sorted by time (caption {k} comes before {k - 1})")
    return captions, [_question(path, k, item) for k, item in enumerate(data.get("questions", []))]


def load_captions(path: str | Path) -> list[Caption]:
    """The captions of a caption file (``load_annotations``)."""
    return load_annotations(path)[0]


class VideoCaptionDirectory(Sequence[Clip]):
    """The clips of a directory: every video with a same-named ``.json`` of captions, sorted by name.

    Captions are read and checked when the directory is opened; videos are decoded on access, resized to
    ``size`` and resampled to ``fps`` (None: as recorded).
    """

    def __init__(
        self, directory: str | Path, size: int | tuple[int, int] | None = None, fps: float | None = 16
    ):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise E2WMError(f"{self.directory}: no such directory")
        self.size = _size(size)
        self.fps = fps
        videos = sorted(
            p
            for p in self.directory.iterdir()
            if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith(".")
        )
        if not videos:
            raise E2WMError(f"{self.directory}: no videos ({', '.join(VIDEO_SUFFIXES)})")
        self.videos: list[Path] = []
        self.captions: list[list[Caption]] = []
        self.questions: list[list[Question]] = []
        for video in videos:
            annotations = video.with_suffix(".json")
            if not annotations.is_file():
                raise E2WMError(f"{video}: no caption file {annotations.name} next to it")
            captions, questions = load_annotations(annotations)
            self.videos.append(video)
            self.captions.append(captions)
            self.questions.append(questions)

    def __len__(self) -> int:
        return len(self.videos)

    @overload
    def __getitem__(self, index: int) -> Clip: ...
    @overload
    def __getitem__(self, index: slice) -> list[Clip]: ...
    def __getitem__(self, index: int | slice) -> Clip | list[Clip]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        video = self.videos[index]
        frames, fps = load_video(video, self.size, self.fps)
        captions = self.captions[index]
        duration = len(frames) / fps
        late = [c for c in [*captions, *self.questions[index]] if c.time >= duration]
        if late:
            raise E2WMError(
                f"{video}: caption or question at {late[0].time:.3f} s is past the video's end "
                f"({duration:.3f} s)"
            )
        return Clip(video.stem, frames, fps, list(captions), list(self.questions[index]))
