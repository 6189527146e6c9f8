"""The task registry: one ``TaskSpec`` per task family, read by the corpus builder and its card, the eval
suite, the model card and the lm-eval task files (``e2wm/eval/lm_eval_tasks``, checked against it by a
test)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e2wm.corpus.tasks.activity_inference import activity_inference
from e2wm.corpus.tasks.counting import counting
from e2wm.corpus.tasks.housework import housework_qa, housework_qa_negation
from e2wm.corpus.tasks.object_location import object_location
from e2wm.corpus.tasks.object_path import object_path
from e2wm.corpus.tasks.plans import activity_recognition, activity_recognition_mc, plan_generation
from e2wm.corpus.tasks.state_tracking import state_tracking_grab, state_tracking_holding, state_tracking_open


@dataclass(frozen=True)
class TaskSpec:
    """One task family: how its examples are built, what they ask, and how answers are scored."""

    build: Callable[..., list[dict[str, Any]]]  # (trace, context, rng, wording) -> examples
    description: str  # the dataset card's line
    metric: str  # what a row reports first: "accuracy" for multiple choice, else the generation metric
    tracking: bool = False  # about state over an episode: evaluations also report it by episode length
    # Multiple choice (scored by answer log-likelihood): the form and normalization, chosen with
    # bench/mc_instrument.py on the validation split (SmolLM2-135M, 16-30 items per task): among the pairs at
    # or above chance, the one that picks the same answer when the options are reversed, then the most
    # accurate. Cloze wins everywhere but the negation, where without the options the model picks the
    # item most related to the activity, "not" or not (0.04-0.21 against 0.25 chance).
    mc_form: str | None = None
    normalization: str | None = None
    max_new_tokens: int | None = None  # generation: the answer's budget

    @property
    def multiple_choice(self) -> bool:
        return self.mc_form is not None


def _mc(build: Callable, description: str, form: str, normalization: str, tracking: bool = False) -> TaskSpec:
    return TaskSpec(build, description, "accuracy", tracking, form, normalization)


SPECS: dict[str, TaskSpec] = {
    spec.build.__name__: spec
    for spec in (
        TaskSpec(plan_generation, "activity, items and initial conditions -> step-by-step plan", "rouge_l",
                 max_new_tokens=160),
        TaskSpec(activity_recognition, "plan -> activity name (generative)", "rouge_l", max_new_tokens=16),
        _mc(activity_recognition_mc, "plan -> activity name among distractors", "cloze", "mean"),
        _mc(activity_inference, "described state of a person -> plausible activity (multiple choice)",
            "cloze", "unconditional"),
        TaskSpec(counting, "narrated episode -> how many moved items end up on/in a place, and which",
                 "exact_match", tracking=True, max_new_tokens=32),
        TaskSpec(object_path, "narrated multi-person episode -> rooms an object passed through, in order",
                 "path_overlap", tracking=True, max_new_tokens=32),
        _mc(object_location, "narrated episode -> where an object was before an event (multiple choice)",
            "cloze", "mean", tracking=True),
        _mc(housework_qa, "activity -> an item used in it (multiple choice)", "cloze", "sum"),
        _mc(housework_qa_negation, "activity -> an item not used in it (multiple choice)", "listed",
            "unconditional"),
        _mc(state_tracking_open, "narrated actions -> is an object they open or close open now (yes/no)",
            "cloze", "sum", tracking=True),
        TaskSpec(state_tracking_holding, "narrated actions -> what a person is holding", "exact_match",
                 tracking=True, max_new_tokens=24),
        TaskSpec(state_tracking_grab, "narrated actions -> can a person pick an object up, and if not why",
                 "exact_match", tracking=True, max_new_tokens=32),
    )
}  # fmt: skip
TASKS: dict[str, Callable[..., list[dict[str, Any]]]] = {name: spec.build for name, spec in SPECS.items()}
TRACKING_TASKS = tuple(name for name, spec in SPECS.items() if spec.tracking)
MULTIPLE_CHOICE = tuple(name for name, spec in SPECS.items() if spec.multiple_choice)
GENERATION = tuple(name for name, spec in SPECS.items() if not spec.multiple_choice)
