"""Where a run starts and how it ends: the checkpoint a rerun resumes from (the newest complete one), and
the processes of a distributed run let go of each other."""

from __future__ import annotations

import json
import re
import sys
import time
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


def import_before_the_group() -> None:
    """Import what would otherwise bind the process group on its first import; call it before the group
    exists (``SFTConfig`` creates it under torchrun). DeepSpeed's ``TorchBackend`` takes the WORLD group as
    a default argument, and accelerate imports it when a Trainer is built: a group still held that way
    is torn down with the interpreter, not by ``end_processes``."""
    from accelerate.utils import is_deepspeed_available

    if is_deepspeed_available():
        import deepspeed.comm  # noqa: F401


WORKERS_SETTLE_S = 0.5  # a worker needs the GIL for microseconds; ample even on a loaded machine


def end_processes(trainer: Any) -> None:
    """Once every process has saved: the process group goes (and the trackers finish) before the processes
    exit, and so do its gloo worker threads. ``destroy_process_group`` leaves them running while anything
    still holds the group (the DDP wrapper does, and DeepSpeed unless ``import_before_the_group`` ran);
    a rank whose threads are torn down with the interpreter aborts now and then ("terminate called
    without an active exception": 1 run in 4 of the two-process test before the group was destroyed,
    1 CI run in ~30 while the wrapper still held it).

    Where the last reference goes matters too: the group's destructor joins its worker threads while this
    thread holds the GIL, and a worker still finishing the last collective needs the GIL to free its
    tensors: a deadlock (seen once: rank 1 hung in ``~ProcessGroupGloo`` when dropping the wrapper freed
    the group right after the final barrier). So the wrapper goes first, while the group's registry still
    holds the group, then this thread sleeps (releasing the GIL) so that the workers finish, and only then
    does ``destroy_process_group`` drop the last reference, to idle workers."""
    trainer.accelerator.wait_for_everyone()
    trainer.model_wrapped = trainer.model
    trainer.accelerator.free_memory()  # drops the accelerator's references, then collects the garbage
    if trainer.accelerator.num_processes > 1:
        time.sleep(WORKERS_SETTLE_S)
    trainer.accelerator.end_training()
