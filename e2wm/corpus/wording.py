"""Wording families: the ways one question can be put, split into *train* and *held-out* families.

A model fine-tuned on one wording per question learns the template, not the fact. So every example is
laid out by a ``Wording`` drawn per example by seed from one family set, along four axes:

* the layout (``LAYOUTS``): the label before the question, the label the answer follows, and how
  multiple-choice options are listed (inline, lettered lines, bullets, lettered in parentheses);
* the question (``QUESTIONS``): several phrasings per task;
* the narration style of the story-based tasks (``NARRATIONS``): present-tense prose, numbered
  present-tense steps, past-tense prose;
* the answer form (``ANSWER_FORMS``): counts as digits or words, with or without the items; plans as
  sentences or numbered steps.

The fixed rule: every axis lists its values under ``"train"`` and ``"held_out"``, here in this module.
Train, validation and the in-template test splits (``test_seen``, ``test_unseen``) use train families
only; the transfer splits (``test_seen_transfer``, ``test_unseen_transfer``) ask the same held-out
episodes in held-out families only, so a transfer score measures facts learned, not templates learned.
Answers keep their content in every family: only their form changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Layout:
    """How a prompt is laid out around the question."""

    name: str
    question: str  # label before the question ("" for none)
    answer: str  # label the answer follows
    options: str  # how choices are listed: inline | lettered | bullets | parenthesized

    def list_options(self, choices: list[str]) -> str:
        if self.options == "inline":
            return "Options: " + ", ".join(choices) + "."
        if self.options == "lettered":
            return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
        if self.options == "bullets":
            return "Choices:\n" + "\n".join(f"- {c}" for c in choices)
        return "Possible answers: " + " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))


LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "train": (
        Layout("question-answer", "Question: ", "Answer:", "inline"),
        Layout("bare", "", "Answer:", "lettered"),
        # two more answer labels, so that no answer form is tied to "Answer:" (with only that label, a
        # fine-tuned model listed the rooms of a path after it and named one room after "A:")
        Layout("task-solution", "Task: ", "Solution:", "inline"),
        Layout("input-output", "Input: ", "Output:", "lettered"),
    ),
    "held_out": (
        Layout("q-a", "Q: ", "A:", "bullets"),
        Layout("query-response", "Query: ", "Response:", "parenthesized"),
    ),
}

# Question phrasings per task. Placeholders: {activity}, {obj}, {place}, {word} (on / in), {person},
# {event} (a past-tense event), {state} (open, ...).
QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "plan_generation": {
        "train": (
            "Write the steps to do the activity.",
            "List the actions needed to carry out this activity.",
        ),
        "held_out": (
            "How would someone do this, step by step?",
            "Give a step-by-step plan that accomplishes the task.",
        ),
    },
    "activity_recognition": {
        "train": ("What activity is this plan for?", "Name the activity these steps carry out."),
        "held_out": ("What is the person trying to do?", "Which household task do these actions achieve?"),
    },
    "activity_recognition_mc": {
        "train": ("What activity is this plan for?", "Name the activity these steps carry out."),
        "held_out": ("What is the person trying to do?", "Which household task do these actions achieve?"),
    },
    "activity_inference": {
        "train": ("What is the person most likely doing?", "Which activity best explains this scene?"),
        "held_out": ("What has the person probably been up to?", "Guess the activity from this state."),
    },
    "counting": {
        "train": (
            "At the end, how many of the things that were picked up are {word} the {place}, and which?",
            "How many picked-up items are {word} the {place} when the story ends? Name them.",
        ),
        "held_out": (
            "Once everything is done, how many of the carried objects lie {word} the {place}?",
            "Count the moved items that finish {word} the {place}.",
        ),
    },
    "object_path": {
        "train": (
            "From when it was first picked up, which rooms did the {obj} pass through, in order?",
            "List, in order, the rooms the {obj} was in after someone first picked it up.",
        ),
        "held_out": (
            "Trace the {obj}: which rooms was it in, in order, starting when it was first picked up?",
            "After its first pick-up, through which rooms did the {obj} travel?",
        ),
    },
    "object_location": {
        "train": ("Where was the {obj} before {event}?", "Which room was the {obj} in just before {event}?"),
        "held_out": (
            "Right before {event}, in which room was the {obj}?",
            "Where could the {obj} be found just before {event}?",
        ),
    },
    "housework_qa": {
        "train": (
            "Which item is used when doing this activity?",
            "Which of the items is needed for this activity?",
        ),
        "held_out": ("What would you use to do this?", "Which object does this chore involve?"),
    },
    "housework_qa_negation": {
        "train": (
            "Which item is not used when doing this activity?",
            "Which of the items is not needed for this activity?",
        ),
        "held_out": ("What would you not need to do this?", "Which object does this chore not involve?"),
    },
    "state_tracking_open": {
        "train": ("Is the {obj} open now?", "At this point, is the {obj} open?"),
        "held_out": ("Would you find the {obj} open right now?", "Is the {obj} currently open or not?"),
    },
    "state_tracking_holding": {
        "train": ("What is {person} holding now?", "What does {person} have in hand at this point?"),
        "held_out": ("What is in {person}'s hands right now?", "What is {person} carrying at the moment?"),
    },
    "state_tracking_grab": {
        "train": (
            "Can {person} pick up the {obj} now? If not, why not?",
            "Is {person} able to grab the {obj} at this point? If not, what stops it?",
        ),
        "held_out": (
            "Could {person} take the {obj} right now? If not, explain why.",
            "Would {person} succeed in picking up the {obj} now? If not, give the reason.",
        ),
    },
}

NARRATIONS: dict[str, tuple[str, ...]] = {"train": ("present", "numbered"), "held_out": ("past",)}

# Answer forms of the tasks whose answers can be put several ways (see ``e2wm.corpus.tasks``).
ANSWER_FORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "counting": {"train": ("digits-items", "words-items"), "held_out": ("digits", "words")},
    "plan_generation": {"train": ("sentences",), "held_out": ("numbered",)},
}


@dataclass(frozen=True)
class Wording:
    """One example's layout, question phrasing, narration style and answer form."""

    family: str
    layout: Layout
    question: str
    narration: str
    answer_form: str

    def stem(self, context: str, question: str) -> str:
        """The prompt without options and answer label (kept in ``meta`` for other multiple-choice forms)."""
        return "\n".join(part for part in (context, self.layout.question + question) if part)

    def ask(self, context: str, question: str, choices: list[str] | None = None) -> str:
        """The prompt: the stem, the options if any, then the answer label."""
        options = [self.layout.list_options(choices)] if choices else []
        return "\n".join([self.stem(context, question), *options, self.layout.answer])


def draw(task: str, family: str, rng: random.Random) -> Wording:
    """A wording of ``task`` from ``family`` ("train" or "held_out"), every axis drawn by ``rng``."""
    forms = ANSWER_FORMS.get(task, {family: ("plain",)})[family]
    return Wording(
        family=family,
        layout=rng.choice(LAYOUTS[family]),
        question=rng.choice(QUESTIONS[task][family]),
        narration=rng.choice(NARRATIONS[family]),
        answer_form=rng.choice(forms),
    )


NUMBER_WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]


def number(n: int, form: str) -> str:
    """``n`` as digits, or as an English word up to twenty (digits past that)."""
    return NUMBER_WORDS[n] if form.startswith("words") and n < len(NUMBER_WORDS) else str(n)
