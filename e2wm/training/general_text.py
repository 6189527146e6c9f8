"""Offline general English text of two genres: Python reference prose and news articles.

EWC needs the Fisher information of the *base* model on general text (what fine-tuning should not
forget), and the eval suite needs held-out general text for a perplexity-retention check. Both must
work offline and reproducibly. Two sources, each split into two disjoint parts:

* ``"fisher"``: for Fisher estimation (``e2wm.training.fisher``) and replay (``replay_fraction`` in training);
* ``"retention"``: held out, for the eval suite's general-text perplexity check.

Source ``"pydoc"`` (the default; technical prose) is the prose that ships with every CPython install:
the standard library module ``pydoc_data.topics`` (the Language Reference topics that ``help()``
shows): about 0.26 MB of edited technical English prose once code is dropped. Each topic's prose
paragraphs (headings, ``****``/``====`` underline rules, grammar productions, code examples and
interactive sessions dropped; lines re-flowed) are merged, in order, into passages of at most about
1,500 characters. Topics are divided deterministically into the two parts by the sha256 of the topic
name (about 80/20 of topics); a paragraph that several topics repeat is used once, and never in
``"fisher"`` when a retention topic has it. The text depends on the Python version's ``pydoc_data``
(fixed within one interpreter version).

Source ``"news"`` (news reports, another genre) is the Lee news corpus (Lee, Pincombe and Welsh, 2005;
Australian Broadcasting Corporation news articles) that ships as data files inside the PyPI wheel
``gensim==4.4.0`` (``gensim/test/test_data``; gensim is only located, never imported):
``lee_background.cor`` (300 articles, one per line, 293 distinct) is ``"fisher"`` and ``lee.cor`` (50
other articles) is ``"retention"``; no article is in both. Each article (HTML tags dropped, whitespace
re-flowed) is cut at sentence ends into passages of at most 1,500 characters; articles are not merged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

from e2wm.errors import E2WMError

PARTS = ("fisher", "retention")
SOURCES = ("pydoc", "news")
NEWS_FILES = {"fisher": "lee_background.cor", "retention": "lee.cor"}  # in gensim/test/test_data
NEWS_PACKAGE = "gensim==4.4.0"
MAX_PASSAGE_CHARS = 1500
RETENTION_PERCENT = 20  # share of topics (by sha256 of the name) held out for retention

_RULE = re.compile(r"^\s*([*=\-~^#+])\1{2,}\s*$")  # underline rules: ****, ====, ----, ...
_WORD = re.compile(r"[A-Za-z]+")
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+(?=[A-Z\"*(])")
# News sentences also end inside closing quotes: `... he said." The ...`.
_NEWS_SENTENCE_END = re.compile(r"(?:(?<=[.?!])|(?<=[.?!][\"']))\s+(?=[A-Z\"'(])")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")


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


def _split_long(paragraph: str, sentence_end: re.Pattern[str] = _SENTENCE_END) -> list[str]:
    """A paragraph longer than MAX_PASSAGE_CHARS cut at sentence ends into pieces that fit."""
    if len(paragraph) <= MAX_PASSAGE_CHARS:
        return [paragraph]
    pieces: list[str] = []
    for sentence in sentence_end.split(paragraph):
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


def _news_dir() -> Path:
    """gensim's test-data folder, located without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise E2WMError(
            f"general-text source 'news' reads the Lee corpus shipped in the gensim wheel: "
            f"pip install {NEWS_PACKAGE}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"


@functools.cache
def _news_passages() -> dict[str, tuple[str, ...]]:
    folder = _news_dir()
    parts: dict[str, list[str]] = {}
    seen: set[str] = set()
    for part in ("retention", "fisher"):  # retention first: an article in both files stays held out
        path = folder / NEWS_FILES[part]
        if not path.is_file():
            raise E2WMError(f"{path} is missing: reinstall the news text with pip install {NEWS_PACKAGE}")
        # The files are Latin-1 (a pound sign is their only non-ASCII character).
        articles = path.read_text(encoding="latin-1").splitlines()
        parts[part] = []
        for article in articles:
            text = _clean(_TAG.sub("", article))
            if len(text) < 50 or text in seen:
                continue
            seen.add(text)
            parts[part].extend(_split_long(text, _NEWS_SENTENCE_END))
    return {part: tuple(parts[part]) for part in PARTS}


def passages(part: str, source: str = "pydoc") -> list[str]:
    """The passages of one part (``"fisher"`` or ``"retention"``) of one source (``"pydoc"`` or
    ``"news"``), in a fixed order."""
    if part not in PARTS:
        raise E2WMError(f"unknown general-text part {part!r}: expected one of {', '.join(PARTS)}")
    if source not in SOURCES:
        raise E2WMError(f"unknown general-text source {source!r}: expected one of {', '.join(SOURCES)}")
    found = _all_passages() if source == "pydoc" else _news_passages()
    return list(found[part])
