"""A training mixture in the shape of TRL's ``DatasetMixtureConfig`` (the ``datasets:`` of a ``trl sft``
recipe), loaded as ``trl sft`` loads it, into the columns e2wm trains on: prompt, completion, task, weight."""

from __future__ import annotations

from pathlib import Path

import datasets
from trl.scripts.utils import DatasetConfig

from e2wm.corpus.read import FORMATS, open_corpus
from e2wm.errors import E2WMError, error_line
from e2wm.training.config import ScriptArguments

# The held-out share and the max_train_examples sample: the same in every process and every resumed run
MIXTURE_SEED = 0


def load_mixture(script: ScriptArguments, train: bool) -> datasets.Dataset:
    """The mixture ``datasets`` as ``trl sft`` makes it (each entry's split and columns; with ``fraction``,
    the first round(share * N) rows of each, N the largest total that repeats no row), with task and
    weight columns; its train part, or the ``test_split_size`` share it holds out (``not train``)."""
    parts = [mixture_part(entry, i) for i, entry in enumerate(script.datasets)]
    fractions = [entry.fraction for entry in script.datasets]
    if fractions[0] is not None:
        shares = [f / sum(fractions) for f in fractions]
        total = min(len(part) / share for part, share in zip(parts, shares, strict=True))
        parts = [part.select(range(round(share * total))) for part, share in zip(parts, shares, strict=True)]
    features = datasets.Features(
        {
            "prompt": parts[0].features["prompt"],
            "completion": parts[0].features["completion"],
            "task": datasets.Value("string"),
            "weight": datasets.Value("float32"),
        }
    )
    for i, part in enumerate(parts):
        try:
            parts[i] = part.cast(features)
        except Exception:  # noqa: BLE001  # pyarrow and datasets raise several types for a failed cast
            raise E2WMError(
                f"datasets[{i}] {script.datasets[i].path}: its prompt and completion are not of the kind of "
                "datasets[0]'s (text or chat messages); mix one kind"
            ) from None
    ds = datasets.concatenate_datasets(parts)
    if script.test_split_size is None:
        return ds
    try:
        held = ds.train_test_split(test_size=script.test_split_size, seed=MIXTURE_SEED)
    except ValueError as exc:  # a share that leaves either part empty
        raise E2WMError(f"test_split_size {script.test_split_size}: {error_line(exc)}") from None
    return held["train" if train else "test"]


def mixture_part(entry: DatasetConfig, index: int) -> datasets.Dataset:
    """Entry ``index`` of a mixture: its split (and ``columns``), with task and weight columns added where
    it lacks them (none; 1.0); one-line errors for data that cannot be read or lacks prompt or completion."""
    where = f"datasets[{index}] {entry.path}"
    try:
        ds = _load_entry(entry)
        if entry.columns is not None:
            ds = ds.select_columns(entry.columns)
    except E2WMError as exc:
        raise E2WMError(f"{where}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  # datasets raises many types for missing or bad data
        raise E2WMError(f"{where}: {error_line(exc)}") from None
    missing = {"prompt", "completion"} - set(ds.column_names)
    if missing:
        raise E2WMError(
            f"{where}: split {entry.split} lacks column(s) {', '.join(sorted(missing))} "
            f"(it has {', '.join(ds.column_names)})"
        )
    if "task" not in ds.column_names:
        ds = ds.add_column("task", [None] * len(ds))
    if "weight" not in ds.column_names:
        ds = ds.add_column("weight", [1.0] * len(ds))
    return ds.select_columns(["prompt", "completion", "task", "weight"])


def _load_entry(entry: DatasetConfig) -> datasets.Dataset:
    """A corpus folder through ``open_corpus`` (every layout e2wm reads), a data file through the builder of
    its format, anything else through ``datasets.load_dataset`` as TRL loads it."""
    path = Path(entry.path)
    plain = entry.name is None and entry.data_dir is None and entry.data_files is None
    if plain and path.is_dir():
        corpus = open_corpus(entry.path, hub=False)
        if entry.split not in corpus:
            raise E2WMError(f"no split {entry.split!r} (it has {', '.join(corpus)})")
        return corpus[entry.split]
    if plain and path.is_file():
        builder = FORMATS.get(path.suffix, path.suffix.lstrip("."))
        return datasets.load_dataset(builder, data_files=str(path), split=entry.split)
    return datasets.load_dataset(
        entry.path,
        name=entry.name,
        data_dir=entry.data_dir,
        data_files=entry.data_files,
        split=entry.split,
    )
