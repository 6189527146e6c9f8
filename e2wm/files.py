"""Files every job reads or writes: safetensors checked before loading, and one writer per output.

Outputs are written under a temporary name and renamed into place (each job does that itself); this
module holds what spans jobs:

- ``check_safetensors`` reads only a file's header and size, so a truncated or foreign file is refused
  before any model is built;
- ``output_lock`` refuses a second job writing the same output at once. It is an advisory ``flock`` on
  a hidden file beside the output, which the kernel releases when its process dies, even by ``kill -9``:
  a killed job never leaves a stale lock;
- ``staged`` and ``staged_file`` write a directory or a file under a temporary name, renamed into
  place only when complete and removed when writing fails (a full disk, Ctrl-C).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

from e2wm.errors import E2WMError, error_line

HEADER_LIMIT = 100 * 1024 * 1024  # safetensors refuses headers above 100 MB


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is to be looked up on the Hub: no local path, and the Hub's ``owner/name`` shape."""
    return not Path(name).exists() and not name.startswith((".", "/", "~")) and name.count("/") == 1


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The YAML mapping in the file at ``path`` (a recipe, a job's ``--config``); a one-line E2WMError
    naming it as ``what`` when it is missing, unreadable or not a mapping."""
    import yaml

    try:
        mapping = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise E2WMError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise E2WMError(f"{what} {path}: not readable YAML ({error_line(exc)})") from None
    if not isinstance(mapping, dict):
        raise E2WMError(f"{what} {path}: not a YAML mapping of fields to values")
    return mapping


def check_safetensors(path: str | Path, what: str = "file") -> dict:
    """The header of the safetensors file ``path`` (tensor name -> dtype, shape, data_offsets), after
    checking that it parses and that the data it promises is all there; one-line E2WMError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise E2WMError(f"{what} {path}: no such file")
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(HEADER_LIMIT, size - 8):
                raise ValueError("header length past the end of the file")
            header = json.loads(f.read(length))
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise E2WMError(f"{what} {path}: not a safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise E2WMError(f"{what} {path}: not a safetensors file (its header is not a mapping)")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise E2WMError(f"{what} {path}: not a safetensors file (malformed header)") from None
    if 8 + length + end != size:
        raise E2WMError(
            f"{what} {path}: truncated or padded safetensors file "
            f"({size:,} bytes; its header promises {8 + length + end:,})"
        )
    return header


def lock_path(out: str | Path, part: str = "") -> Path:
    out = Path(out).absolute()
    return out.with_name(f".{out.name}{'.' + part if part else ''}.lock")


@contextlib.contextmanager
def output_lock(out: str | Path, part: str = "") -> Iterator[None]:
    """Hold the lock on output ``out`` (a file or directory, existing or not), or on the ``part`` of it
    a job writes (jobs writing different parts may run at once), for the block; a one-line E2WMError
    at once if another job holds it."""
    path = lock_path(out, part)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise E2WMError(f"cannot write to {path.parent}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise E2WMError(
                f"another e2wm job is writing to {out} (it holds {path}); wait for it to finish, "
                "or write elsewhere"
            ) from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged(out: str | Path) -> Iterator[Path]:
    """A fresh temporary directory beside ``out`` for the block to fill; it replaces ``out`` when the
    block ends, and is removed (``out`` left as it was) when the block raises."""
    out = Path(out)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_file(out: str | Path) -> Iterator[Path]:
    """A temporary path beside the file ``out`` (hidden, named by process) for the block to write; it
    replaces ``out`` when the block ends, and is removed when the block raises."""
    out = Path(out)
    for stale in out.parent.glob(f".tmp-*-{out.name}"):  # left by a killed writer of the same file
        stale.unlink(missing_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
