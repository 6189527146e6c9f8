"""Outputs under contention and failure: one writer per output, and nothing partial on a full or
read-only disk (simulated by a writer that fails part-way, as a full disk does)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import safetensors.torch
from support.tiny_lm import save_tiny_lm

from e2wm import cli
from e2wm.files import lock_path, output_lock
from e2wm.rollouts.collect import CollectConfig, collect

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rollouts")
    collect(CollectConfig(agent="replay", out=str(out), episodes=2), progress=False)
    return out


def _fails(argv: list[str], capfd) -> str:
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capfd.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_second_job_into_the_same_output_is_refused(rollouts, tmp_path, capfd) -> None:
    out = tmp_path / "corpus"
    argv = ["build", "--rollouts", str(rollouts), "--out", str(out), "--quiet"]
    with output_lock(out):  # a first job is writing
        err = _fails(argv, capfd)
        assert "another e2wm job is writing to" in err and not out.exists()
    cli.main(argv)  # once it is done, the same command runs
    assert (out / "data").is_dir() and (out / "README.md").exists() and not lock_path(out).exists()


def test_collect_runs_on_separate_shard_ranges_share_a_directory(tmp_path) -> None:
    out = tmp_path / "rollouts"
    with output_lock(out, "shards-0-1"):
        cli.main(
            ["collect", "--episodes", "2", "--shard-size", "1", "--shard-range", "1:2", "--out", str(out)]
        )
    assert len(list(out.glob("*.parquet"))) == 1


def test_a_killed_job_leaves_no_stale_lock(tmp_path) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom e2wm.files import output_lock\n"
         f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(600)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Exception, match="another e2wm job"), output_lock(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # kill -9 left the file, but the kernel dropped the lock
    with output_lock(out):
        pass


def _full_disk(path: os.PathLike | str) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_while_building_leaves_nothing(rollouts, tmp_path, capfd, monkeypatch) -> None:
    def save_half(self, path, **kwargs):
        Path(path).write_bytes(b"PAR1half")
        raise _full_disk(path)

    monkeypatch.setattr(datasets.Dataset, "to_parquet", save_half)
    out = tmp_path / "corpus"
    err = _fails(["build", "--rollouts", str(rollouts), "--out", str(out), "--quiet"], capfd)
    assert "No space left on device" in err and "nothing was kept" in err
    assert os.listdir(tmp_path) == []


def test_a_full_disk_while_collecting_leaves_no_shard(tmp_path, capfd, monkeypatch) -> None:
    def write_half(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1half")
        raise _full_disk(where)

    monkeypatch.setattr(pq, "write_table", write_half)
    out = tmp_path / "rollouts"
    err = _fails(["collect", "--episodes", "1", "--out", str(out), "--quiet"], capfd)
    assert "No space left on device" in err
    assert not [p for p in out.iterdir() if p.suffix == ".parquet" or p.name.startswith(".tmp-")]


def test_a_read_only_output_for_the_fisher_is_one_line(tmp_path, capfd, monkeypatch) -> None:
    def refuse(tensors, filename, metadata=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), filename)

    lm = save_tiny_lm(tmp_path / "lm")
    monkeypatch.setattr(safetensors.torch, "save_file", refuse)
    out = tmp_path / "fisher" / "f.safetensors"
    argv = ["fisher", "--model", str(lm), "--samples", "2", "--max-length", "16", "--out", str(out)]
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capfd.readouterr().err  # the failure comes after the work began: its progress bar shows
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert (
        err.splitlines()[-1]
        == f"e2wm fisher: error: cannot write in {out.parent}: Read-only file system; nothing was kept"
    )
    assert os.listdir(out.parent) == []
