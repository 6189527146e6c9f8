"""Killing a job at a random point, as a crash or an impatient user would."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from e2wm.files import lock_path

ROOT = Path(__file__).resolve().parents[2]


def kill_midway(argv: list[str], out: Path, seed: int) -> None:
    """Run ``e2wm ARGV`` in its own process group; once it holds its output lock (its input checked,
    its work begun), wait a random 0-2 s and kill the group with SIGKILL (if it has not finished)."""
    job = subprocess.Popen(
        [sys.executable, "-m", "e2wm.cli", *argv],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while not lock_path(out).exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(seed).uniform(0.0, 2.0))
    if job.poll() is None:
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()
