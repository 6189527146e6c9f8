"""The one error type user-facing commands turn into a one-line message and a non-zero exit, and the
wrapper that does it.

``reported`` runs a command with its standard error held back (at the file-descriptor level, so the
warnings of C extensions, loggers bound at import and progress bars are held too) until the command
says its checks are done (``Held.release``) or ends. A command that fails before then shows its one
error line alone: the warnings libraries print on import or while loading are noise beside it. With
``verbose`` nothing is held.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator

# Errors of a full, read-only or forbidden output: the user's to fix, reported as one line.
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG)


class E2WMError(Exception):
    """Bad input or a failed job, reported to the user as a single line."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to ``word``, or ``""`` when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def error_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type name when it has none."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


class Held:
    """Standard error (file descriptor 2 and ``sys.stderr``) diverted to a temporary file until
    ``release`` (which shows what was held) or ``discard``."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._buffer = tempfile.TemporaryFile()  # noqa: SIM115  (closed by _restore)
        self._saved_fd = os.dup(2)
        self._saved_stream = sys.stderr
        os.dup2(self._buffer.fileno(), 2)
        sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")  # noqa: SIM115
        self.holding = True

    def _restore(self) -> bytes:
        sys.stderr.flush()
        os.dup2(self._saved_fd, 2)
        os.close(self._saved_fd)
        sys.stderr = self._saved_stream
        self._buffer.seek(0)
        held = self._buffer.read()
        self._buffer.close()
        self.holding = False
        return held

    def release(self) -> None:
        """Stop holding; show what was held."""
        if self.holding:
            held = self._restore()
            if held:
                sys.stderr.write(held.decode(errors="backslashreplace"))
                sys.stderr.flush()

    def discard(self) -> None:
        """Stop holding; drop what was held."""
        if self.holding:
            self._restore()


class _NotHeld:
    holding = False

    def release(self) -> None:
        pass

    def discard(self) -> None:
        pass


HOLD: Held | _NotHeld = _NotHeld()  # the running command's; jobs call HOLD.release() once checked
# Optional dependencies (pyproject extras): a command that needs one that is missing says which extra has it.
EXTRAS = {
    "av": "video",
    "cv2": "video",
    "deepspeed": "deepspeed",
    "bitsandbytes": "quantization",
    "lm_eval": "lm-eval",
    "tensorboard": "trackers",
    "requests": "unity",
    "PIL": "unity",
}


def release() -> None:
    """Show what the running command held back: its input is checked, the long work begins."""
    HOLD.release()


@contextlib.contextmanager
def reported(command: str, verbose: bool = False) -> Iterator[None]:
    """Run a command: an E2WMError, or an output that cannot be written, becomes one stderr line and exit
    status 2 (what the command printed to stderr before is dropped, unless ``verbose``); Ctrl-C exit 130."""
    global HOLD
    held = _NotHeld() if verbose or not _has_fd2() else Held()
    HOLD = held
    try:
        yield
    except E2WMError as exc:
        held.discard()
        _fail(command, str(exc))
    except BrokenPipeError:  # output piped into a pager or head that closed early
        held.discard()
        sys.stderr.close()
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            held.release()
            raise
        held.discard()
        where = ""
        if exc.filename:  # a temporary name says less than the folder it was in
            name = os.path.basename(exc.filename)
            where = f" in {os.path.dirname(exc.filename)}" if name.startswith(".tmp") else f" {exc.filename}"
        _fail(command, f"cannot write{where}: {exc.strerror or os.strerror(exc.errno)}; nothing was kept")
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").partition(".")[0])
        if extra is None:
            held.release()
            raise
        held.discard()
        _fail(command, f"this needs the optional dependency {exc.name}: pip install 'e2wm[{extra}]'")
    except KeyboardInterrupt:
        held.release()
        print(f"e2wm {command}: interrupted; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException:
        held.release()
        raise
    else:
        held.release()
    finally:
        HOLD = _NotHeld()


def _fail(command: str, message: str) -> None:
    print(f"e2wm {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2) from None


def _has_fd2() -> bool:
    try:
        os.fstat(2)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def libraries_deprecation(pattern: str) -> Iterator[None]:
    """Hide the FutureWarnings matching ``pattern`` that a library raises about its own call of a renamed
    API (PEFT and TRL calling transformers' ``is_gradient_checkpointing``): noise no user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
        yield
