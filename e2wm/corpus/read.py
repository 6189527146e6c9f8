"""Reading a corpus back: the folder ``e2wm build`` saves (the Hub's ``data/`` layout of Parquet files), a
folder of JSONL or Parquet split files (the build's ``jsonl/`` export), a directory saved with
``save_to_disk`` (corpora of e2wm 0.1), or a Hub dataset id."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import datasets

from e2wm.corpus.build import CORPUS_SPLITS
from e2wm.errors import E2WMError, error_line
from e2wm.files import is_hub_id

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
# datasets pings its S3 bucket to count each use of its parquet/json loaders, local files included: e2wm
# reads local corpora without a network call
datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False


def split_files(folder: Path) -> dict[str, dict[str, list[str]]]:
    """Builder ("json" or "parquet") -> split -> files, for the data files under ``folder``. The split is
    the file name up to its first ``-`` or ``.``: ``train.jsonl``, ``test_seen-00000-of-00001.parquet``."""
    files: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(folder.rglob("*")):
        if path.suffix in FORMATS and path.is_file() and not path.name.startswith("."):
            split = path.name.split("-")[0].split(".")[0]
            files[FORMATS[path.suffix]][split].append(str(path))
    return files


def open_corpus(path: str, hub: bool = True) -> datasets.DatasetDict:
    """The corpus at ``path`` as a DatasetDict (with ``hub``, a path that is not local may be a Hub
    dataset id); one-line E2WMError when it is missing or unreadable."""
    folder = Path(path)
    try:
        if (folder / "dataset_dict.json").is_file():
            corpus = datasets.load_from_disk(str(folder))
        elif (folder / "state.json").is_file():  # one Dataset saved with save_to_disk
            raise E2WMError(f"cannot load corpus {path}: a single dataset, not a corpus with splits")
        elif folder.is_dir():
            files = split_files(folder / "data" if (folder / "data").is_dir() else folder)
            if not files:
                raise E2WMError(
                    f"cannot load corpus {path}: no data/ folder of Parquet files (a corpus from "
                    "`e2wm build`), nor JSONL or Parquet split files"
                )
            if len(files) > 1:
                raise E2WMError(f"cannot load corpus {path}: both JSONL and Parquet files; keep one format")
            [(builder, splits)] = files.items()
            order = sorted(
                splits,
                key=lambda s: (CORPUS_SPLITS.index(s) if s in CORPUS_SPLITS else len(CORPUS_SPLITS), s),
            )
            corpus = datasets.load_dataset(builder, data_files={s: splits[s] for s in order})
        elif hub and is_hub_id(path):
            corpus = datasets.load_dataset(path)
        else:
            raise E2WMError(f"cannot load corpus {path}: no such directory")
    except E2WMError:
        raise
    except Exception as exc:  # noqa: BLE001  # datasets and pyarrow raise many types for a bad corpus
        reason = error_line(exc)
        raise E2WMError(f"cannot load corpus {path}: {reason}") from None
    if not isinstance(corpus, datasets.DatasetDict):
        raise E2WMError(f"cannot load corpus {path}: a single dataset, not a corpus with splits")
    return corpus
