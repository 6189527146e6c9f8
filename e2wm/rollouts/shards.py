"""Rollout shards on disk: the finished shards of a directory, written whole or not at all, read back as
episode dicts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from e2wm.errors import E2WMError, error_line
from e2wm.files import staged_file
from e2wm.rollouts.schema import SCHEMA


def shard_files(directory: str | os.PathLike) -> list[Path]:
    """The finished shards in a directory (temporary files of a running job are hidden)."""
    return sorted(p for p in Path(directory).glob("*.parquet") if not p.name.startswith("."))


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write, then rename: a reader never sees a half-written file."""
    with staged_file(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def load_episodes(directory: str) -> list[dict[str, Any]]:
    """Every episode of every shard in ``directory``, sorted by id."""
    files = shard_files(directory) if Path(directory).is_dir() else []
    if not files:
        raise E2WMError(f"{directory}: no rollout shards (*.parquet); run `e2wm collect` first")
    episodes = []
    for path in files:
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001  # pyarrow raises several types for a corrupt file
            raise E2WMError(f"{path}: unreadable shard ({error_line(exc)})") from None
        missing = set(SCHEMA.names) - set(table.column_names)
        if missing:
            raise E2WMError(f"{path}: not a rollout shard (missing columns {', '.join(sorted(missing))})")
        episodes += table.to_pylist()
    return sorted(episodes, key=lambda e: e["episode_id"])
