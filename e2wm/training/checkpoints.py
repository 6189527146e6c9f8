"""Where a run starts and how it ends: the checkpoint a rerun resumes from (the newest complete one), and
the processes of a distributed run let go of each other."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-N`` in ``output_dir`` whose ``trainer_state.json`` (the file the Trainer
    writes last) reads back, or None. A job killed while saving leaves a checkpoint without it, or with
    it cut short; resuming from that one would fail, so the one before is taken."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(m.group(1)), p)
        for p in folder.iterdir()
        if p.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", p.name))
    )
    for _, checkpoint in reversed(steps):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(checkpoint)
    return None


def resume_point(args: Any) -> str | None:
    """The checkpoint a run starts from (``args.resume_from_checkpoint``, else the newest complete one in
    ``args.output_dir``), said on stderr when there is one."""
    checkpoint = args.resume_from_checkpoint or last_complete_checkpoint(args.output_dir)
    if checkpoint:
        print(f"resuming from {checkpoint}", file=sys.stderr, flush=True)
    return checkpoint


def end_processes(trainer: Any) -> None:
    """Once every process has saved: the process group goes (and the trackers finish) before the processes
    exit. A rank that exits still holding a gloo group can abort in its threads' teardown ("terminate called
    without an active exception", 1 run in 4 of the two-process test)."""
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
