"""Multiple-choice forms: the ways one multiple-choice example can be put to a model for scoring.

A small model's answer likelihoods follow what it can copy from the prompt: with the options listed, it
tends to pick the option it read last, or the one that repeats a word of the question, whatever it
knows. So the eval can score each task in one of three forms, built from the example's ``stem`` (the
prompt without options and answer label) and ``answer_label``, both kept in ``meta`` by the corpus:

* ``cloze``: the stem and the answer label, no option list; each choice's text is the continuation;
* ``listed``: the example's own prompt (options listed in its layout); the choice's text continues it;
* ``lettered``: the stem, the options as ``A. text`` lines, the answer label; the continuation is the
  letter (`` A``, `` B``, ...).

A few-shot prompt keeps its solved examples (``demos``) before any form. Which form and normalization
each task uses is chosen by measurement (``bench/mc_instrument.py``): the base model at or above chance,
and the same answers whatever the order of the options.
"""

from __future__ import annotations

import json
from typing import Any

from e2wm.corpus.wording import LETTERS
from e2wm.errors import E2WMError

FORMS = ("cloze", "listed", "lettered")


def as_form(example: dict[str, Any], form: str) -> dict[str, Any]:
    """``example`` with ``prompt`` and ``choices`` rewritten for ``form`` (``label`` is unchanged).

    ``example["demos"]`` (solved examples, possibly empty) goes before the prompt; ``example["prompt"]`` is
    the zero-shot prompt. Examples without a ``stem`` (corpora built before the forms) only have ``listed``.
    """
    if form not in FORMS:
        raise E2WMError(f"unknown multiple-choice form {form!r}: choose one of {', '.join(FORMS)}")
    demos = example.get("demos", "")
    meta = json.loads(example["meta"])
    if form == "listed" or "stem" not in meta:
        return {**example, "prompt": demos + example["prompt"]}
    stem, label = meta["stem"], meta["answer_label"]
    if form == "cloze":
        return {**example, "prompt": f"{demos}{stem}\n{label}"}
    choices = list(example["choices"])
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return {
        **example,
        "prompt": f"{demos}{stem}\n{options}\n{label}",
        "choices": list(LETTERS[: len(choices)]),
    }


def reorder(example: dict[str, Any], order: list[int]) -> dict[str, Any]:
    """The same question with its choices in another ``order`` (a permutation), listed prompt rebuilt."""
    meta = json.loads(example["meta"])
    choices = [example["choices"][i] for i in order]
    prompt = example["prompt"]
    if "stem" in meta:
        listed = _listing(example["prompt"], meta, example["choices"])
        prompt = prompt.replace(listed, _listing_like(listed, example["choices"], choices))
    return {**example, "choices": choices, "label": order.index(example["label"]), "prompt": prompt}


def _listing(prompt: str, meta: dict[str, Any], choices: list[str]) -> str:
    """The part of a listed prompt between the stem and the answer label: the option list."""
    start = prompt.index(meta["stem"]) + len(meta["stem"]) + 1
    return prompt[start : prompt.rindex(meta["answer_label"]) - 1]


def _listing_like(listed: str, old: list[str], new: list[str]) -> str:
    """The option list with the choices in the new order, in the same layout (texts swapped in place)."""
    marks = [f"\x00{i}\x00" for i in range(len(old))]
    text = listed
    # longest first, so "cup" does not match inside "cupboard"
    for i in sorted(range(len(old)), key=lambda i: -len(old[i])):
        text = text.replace(old[i], marks[i], 1)
    for i, choice in enumerate(new):
        text = text.replace(marks[i], choice, 1)
    return text
