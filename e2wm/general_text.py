"""The offline default general English corpus: prose of the Python Language Reference.

EWC needs the Fisher information of the *base* model on general text (what fine-tuning should not
forget), and the eval suite needs held-out general text for a perplexity-retention check. Both must
work offline and reproducibly, so the default text is the prose that ships with every CPython
install: the standard library module ``pydoc_data.topics`` (the Language Reference topics that
``help()`` shows): about 0.26 MB of edited technical English prose once code is dropped.

Each topic's prose paragraphs (headings, ``****``/``====`` underline rules, grammar productions,
code examples and interactive sessions dropped; lines re-flowed) are merged, in order, into passages
of at most about 1,500 characters. Topics are divided deterministically into two disjoint parts by
the sha256 of the topic name (about 80/20 of topics); a paragraph that several topics repeat is used
once, and never in ``"fisher"`` when a retention topic has it:

* ``"fisher"``: for Fisher estimation (``e2wm.fisher``);
* ``"retention"``: held out, for the eval suite's general-text perplexity check.

The text depends on the Python version's ``pydoc_data`` (fixed within one interpreter version).
"""

from __future__ import annotations

import functools
import hashlib
import re

from e2wm.errors import E2WMError

PARTS = ("fisher", "retention")
MAX_PASSAGE_CHARS = 1500
RETENTION_PERCENT = 20  # share of topics (by sha256 of the name) held out for retention

_RULE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")  # underline rules: ****, ====, ----, ...
_WORD = re.compile(r"[A-Za-z]+")


def part_of(topic: str) -> str:
    """Which part a topic belongs to: ``"retention"`` for ~20% of topic names by sha256, else ``"fisher"``."""
    bucket = int.from_bytes(hashlib.sha256(topic.encode("utf-8")).digest()[:8], "big") % 100
    return "retention" if bucket < RETENTION_PERCENT else "fisher"


def _is_prose(paragraph: str) -> bool:
    """A paragraph of running English text (not a heading, grammar production, code or table)."""
    if "::=" in paragraph or ">>>" in paragraph or "...:" in paragraph:
        return False
    lines = paragraph.splitlines()
    if any(_RULE.match(line) for line in lines) or paragraph.lstrip().startswith(("-[", "+--", "|")):
        return False
    text = " ".join(line.strip() for line in lines)
    words = _WORD.findall(text)
    if len(words) < 8 or not re.search(r"[.?!:]\"?\)?$", text):
        return False
    non_space = [c for c in text if not c.isspace()]
    letters = sum(c.isalpha() for c in non_space)
    return letters / len(non_space) >= 0.8


def _clean(paragraph: str) -> str:
    text = " ".join(line.strip() for line in paragraph.splitlines())
    return re.sub(r"\s+", " ", text).strip()


def _split_long(paragraph: str) -> list[str]:
    """A paragraph longer than MAX_PASSAGE_CHARS cut at sentence ends into pieces that fit."""
    if len(paragraph) <= MAX_PASSAGE_CHARS:
        return [paragraph]
    pieces: list[str] = []
    for sentence in re.split(r"(?<=[.?!])\s+(?=[A-Z\"*(])", paragraph):
        if pieces and len(pieces[-1]) + 1 + len(sentence) <= MAX_PASSAGE_CHARS:
            pieces[-1] += " " + sentence
        else:
            pieces.append(sentence)
    return pieces


def _paragraphs(text: str) -> list[str]:
    """The prose paragraphs of one topic, cleaned, long ones cut at sentence ends."""
    return [piece for p in re.split(r"\n\s*\n", text) if _is_prose(p) for piece in _split_long(_clean(p))]


def _merge(paragraphs: list[str]) -> list[str]:
    """Consecutive paragraphs merged into passages of at most ~MAX_PASSAGE_CHARS."""
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if current and size + 2 + len(paragraph) > MAX_PASSAGE_CHARS:
            passages.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + (2 if size else 0)
    if current:
        passages.append("\n\n".join(current))
    return passages


@functools.cache
def _all_passages() -> dict[str, tuple[str, ...]]:
    from pydoc_data.topics import topics

    # Several topics repeat the same paragraphs: a paragraph is used once, and never in "fisher" when a
    # retention topic has it, so that the held-out text really is held out.
    held_out = {p for topic in topics if part_of(topic) == "retention" for p in _paragraphs(topics[topic])}
    seen: set[str] = set()
    parts: dict[str, list[str]] = {part: [] for part in PARTS}
    for topic in sorted(topics):
        part = part_of(topic)
        kept = []
        for paragraph in _paragraphs(topics[topic]):
            if paragraph in seen or (part == "fisher" and paragraph in held_out):
                continue
            seen.add(paragraph)
            kept.append(paragraph)
        parts[part].extend(_merge(kept))
    return {part: tuple(found) for part, found in parts.items()}


def passages(part: str) -> list[str]:
    """The passages of one part (``"fisher"`` or ``"retention"``), in a fixed order."""
    if part not in PARTS:
        raise E2WMError(f"unknown general-text part {part!r}: expected one of {', '.join(PARTS)}")
    return list(_all_passages()[part])
