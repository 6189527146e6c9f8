"""Multiple-choice forms: cloze, listed and lettered prompts built from one example; reordered options."""

import json
import random

import pytest

from e2wm.corpus.wording import LAYOUTS, QUESTIONS, Wording, draw
from e2wm.errors import E2WMError
from e2wm.eval.mc_forms import as_form, reorder

CHOICES = ["cup", "cupboard", "kitchen table", "mug"]
CONTEXT = "Activity: Make coffee."


def _example(layout) -> dict:
    wording = Wording("train", layout, QUESTIONS["housework_qa"]["train"][0], "present", "plain")
    question = wording.question
    return {
        "task": "housework_qa",
        "prompt": wording.ask(CONTEXT, question, CHOICES),
        "choices": list(CHOICES),
        "label": 1,
        "meta": json.dumps({"stem": wording.stem(CONTEXT, question), "answer_label": layout.answer}),
    }


@pytest.mark.parametrize("layout", [*LAYOUTS["train"], *LAYOUTS["held_out"]], ids=lambda layout: layout.name)
def test_forms_keep_the_stem_and_answer_label(layout):
    ex = _example(layout)
    stem = json.loads(ex["meta"])["stem"]
    listed = as_form(ex, "listed")
    assert listed["prompt"] == ex["prompt"] and listed["choices"] == CHOICES
    assert ex["prompt"].startswith(stem + "\n") and ex["prompt"].endswith("\n" + layout.answer)
    cloze = as_form({**ex, "demos": "solved.\n\n"}, "cloze")
    assert cloze["prompt"] == f"solved.\n\n{stem}\n{layout.answer}"
    assert all(c not in cloze["prompt"] for c in ("cupboard", "kitchen table"))
    lettered = as_form(ex, "lettered")
    assert lettered["choices"] == ["A", "B", "C", "D"] and lettered["label"] == 1
    assert lettered["prompt"] == f"{stem}\nA. cup\nB. cupboard\nC. kitchen table\nD. mug\n{layout.answer}"
    with pytest.raises(E2WMError, match="unknown multiple-choice form"):
        as_form(ex, "essay")


@pytest.mark.parametrize("layout", [*LAYOUTS["train"], *LAYOUTS["held_out"]], ids=lambda layout: layout.name)
def test_reordered_options_are_listed_in_the_new_order(layout):
    ex = _example(layout)
    order = [3, 2, 0, 1]
    moved = reorder(ex, order)
    assert moved["choices"] == ["mug", "kitchen table", "cup", "cupboard"]
    assert moved["choices"][moved["label"]] == "cupboard"
    # the same prompt as laying the new order out from scratch ("cup" is inside "cupboard": swapped whole)
    assert moved["prompt"] == Wording("train", layout, QUESTIONS["housework_qa"]["train"][0], "", "").ask(
        CONTEXT, QUESTIONS["housework_qa"]["train"][0], moved["choices"]
    )


def test_examples_without_a_stem_only_have_the_listed_form():
    ex = {**_example(LAYOUTS["train"][0]), "meta": "{}"}
    assert as_form(ex, "cloze")["prompt"] == ex["prompt"] == as_form(ex, "lettered")["prompt"]


def test_draw_takes_every_axis_from_one_family():
    rng = random.Random(0)
    for _ in range(50):
        for family in ("train", "held_out"):
            w = draw("counting", family, rng)
            assert w.layout in LAYOUTS[family] and w.question in QUESTIONS["counting"][family]
            assert w.family == family
