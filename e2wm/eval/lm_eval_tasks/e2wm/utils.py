"""Data of the e2wm lm-eval tasks: one corpus task's multiple-choice examples on one test split.

The corpus is, first found: lm-eval metadata ``e2wm_corpus`` (``--metadata e2wm_corpus=DIR``), the
``E2WM_CORPUS`` environment variable, or ``outputs/demo/corpus`` in the repository holding this file
(found from this file's location, not the working directory). It is a corpus folder from ``e2wm build``,
or a Hub dataset id with the same splits and columns.
"""

from __future__ import annotations

import os
from pathlib import Path

import datasets

from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError

DEFAULT_CORPUS = Path(__file__).resolve().parents[4] / "outputs" / "demo" / "corpus"  # the repository root
COLUMNS = ("task", "prompt", "choices", "label")


def corpus_location(e2wm_corpus: str | None = None) -> tuple[str, str]:
    """The corpus location and where it came from (metadata, environment or default)."""
    if e2wm_corpus:
        return str(e2wm_corpus), "metadata e2wm_corpus"
    if os.environ.get("E2WM_CORPUS"):
        return os.environ["E2WM_CORPUS"], "$E2WM_CORPUS"
    return str(DEFAULT_CORPUS), "the default demo corpus"


def read_corpus(location: str, origin: str) -> datasets.DatasetDict:
    """A corpus directory from ``e2wm build``, or a Hub dataset id (``e2wm.corpus.read.open_corpus``)."""
    path = Path(location).expanduser()
    if not path.exists() and location.startswith(("/", ".", "~")):
        raise E2WMError(
            f"e2wm corpus not found: {location} ({origin}); set E2WM_CORPUS to a corpus directory"
        )
    try:
        return open_corpus(str(path) if path.exists() else location)
    except E2WMError as exc:
        raise E2WMError(f"{exc} ({origin})") from None


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
