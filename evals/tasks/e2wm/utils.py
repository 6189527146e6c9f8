"""Data of the e2wm lm-eval tasks: one corpus task's multiple-choice examples on one test split.

The corpus is, first found: lm-eval metadata ``e2wm_corpus`` (``--metadata e2wm_corpus=DIR``; e2wm's
own harness passes it), the ``E2WM_CORPUS`` environment variable, or ``outputs/demo/corpus`` in the
repository holding this file (found from this file's location, not the working directory). It is a
corpus saved by ``e2wm build`` (``DatasetDict.save_to_disk``), or anything ``datasets.load_dataset``
reads with the same splits and columns (a Hub dataset id).
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from e2wm.errors import E2WMError

DEFAULT_CORPUS = Path(__file__).resolve().parents[3] / "outputs" / "demo" / "corpus"
COLUMNS = ("task", "prompt", "choices", "label")


def corpus_location(e2wm_corpus: str | None = None) -> tuple[str, str]:
    """The corpus location and where it came from (metadata, environment or default)."""
    if e2wm_corpus:
        return str(e2wm_corpus), "metadata e2wm_corpus"
    if os.environ.get("E2WM_CORPUS"):
        return os.environ["E2WM_CORPUS"], "$E2WM_CORPUS"
    return str(DEFAULT_CORPUS), "the default demo corpus"


def read_corpus(location: str, origin: str) -> datasets.DatasetDict:
    """A saved corpus directory, or a dataset ``datasets.load_dataset`` finds (a Hub id)."""
    path = Path(location).expanduser()
    if not path.exists() and location.startswith(("/", ".", "~")):
        raise E2WMError(
            f"e2wm corpus not found: {location} ({origin}); set E2WM_CORPUS to a corpus directory"
        )
    try:
        return datasets.load_from_disk(str(path)) if path.exists() else datasets.load_dataset(location)
    except Exception as exc:  # noqa: BLE001  # datasets raises many types for a bad path or repo
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise E2WMError(f"cannot load e2wm corpus {location} ({origin}): {reason}") from None


def load_task_split(
    e2wm_task: str, e2wm_split: str, e2wm_corpus: str | None = None, **_: object
) -> datasets.DatasetDict:
    """``{"test": examples}``: the examples of ``e2wm_task`` that have choices, in split ``e2wm_split``.

    lm-eval calls this as ``custom_dataset`` with the task's metadata (model arguments among them, ignored)
    and its ``dataset_kwargs``.
    """
    location, origin = corpus_location(e2wm_corpus)
    corpus = read_corpus(location, origin)
    if e2wm_split not in corpus:
        raise E2WMError(f"e2wm corpus {location} has no split {e2wm_split!r} (it has {', '.join(corpus)})")
    split = corpus[e2wm_split]
    missing = [c for c in COLUMNS if c not in split.column_names]
    if missing:
        raise E2WMError(f"e2wm corpus {location}: split {e2wm_split} lacks column(s) {', '.join(missing)}")
    rows = [
        i
        for i, (task, choices) in enumerate(zip(split["task"], split["choices"], strict=True))
        if task == e2wm_task and choices
    ]
    if not rows:
        raise E2WMError(f"e2wm corpus {location} has no multiple-choice {e2wm_task} examples in {e2wm_split}")
    return datasets.DatasetDict({"test": split.select(rows)})
