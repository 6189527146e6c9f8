"""The fixed train / held-out rule for programs, by base program id and by activity.

1. An activity is *unseen* when ``sha256("activity:" + name.lower())`` modulo 100 is below
   ``UNSEEN_ACTIVITY_PERCENT``; no program of an unseen activity is ever trained on.
2. A base program id (``file27`` for variants ``file27_1``, ``file27_2``) falls into a bucket
   ``sha256("program:" + base_id)`` modulo 100: below ``TEST_PERCENT`` it is held out for test, below
   ``TEST_PERCENT + VALIDATION_PERCENT`` for validation, else it is trained on.
3. A base id with any variant of an unseen activity is held out for test whole, so no variant of
   it leaks into train.

A held-out program's split is ``test_unseen`` if its own activity is unseen, else ``test_seen``.
"""

from __future__ import annotations

import functools
import hashlib

from e2wm.simulator.virtualhome.resources import Program, programs

UNSEEN_ACTIVITY_PERCENT = 10
TEST_PERCENT = 15
VALIDATION_PERCENT = 10
SPLITS = ("train", "validation", "test_seen", "test_unseen")


def _bucket(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100


def is_unseen_activity(activity: str) -> bool:
    return _bucket("activity:" + activity.strip().lower()) < UNSEEN_ACTIVITY_PERCENT


@functools.cache
def _bases_with_unseen_activity() -> frozenset[str]:
    return frozenset(p.base_id for p in programs() if is_unseen_activity(p.activity))


def split_of(program: Program) -> str:
    """The split a shipped program belongs to (see the module docstring)."""
    if is_unseen_activity(program.activity):
        return "test_unseen"
    bucket = _bucket("program:" + program.base_id)
    if program.base_id in _bases_with_unseen_activity() or bucket < TEST_PERCENT:
        return "test_seen"
    return "validation" if bucket < TEST_PERCENT + VALIDATION_PERCENT else "train"
