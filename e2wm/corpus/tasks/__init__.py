"""The task builders, by task name: each turns one episode trace into examples."""

from __future__ import annotations

from collections.abc import Callable

from e2wm.corpus.tasks.activity_inference import activity_inference
from e2wm.corpus.tasks.counting import counting
from e2wm.corpus.tasks.housework import housework_qa, housework_qa_negation
from e2wm.corpus.tasks.object_location import object_location
from e2wm.corpus.tasks.object_path import object_path
from e2wm.corpus.tasks.plans import activity_recognition, activity_recognition_mc, plan_generation
from e2wm.corpus.tasks.state_tracking import state_tracking_grab, state_tracking_holding, state_tracking_open

TASKS: dict[str, Callable] = {
    f.__name__: f
    for f in (
        plan_generation,
        activity_recognition,
        activity_recognition_mc,
        activity_inference,
        counting,
        object_path,
        object_location,
        housework_qa,
        housework_qa_negation,
        state_tracking_open,
        state_tracking_holding,
        state_tracking_grab,
    )
}
# Tasks about tracking state over an episode: evaluations report them by episode length too.
TRACKING_TASKS = (
    "counting",
    "object_path",
    "object_location",
    "state_tracking_open",
    "state_tracking_holding",
    "state_tracking_grab",
)
# Tasks whose examples have choices: evaluations score them by answer log-likelihood.
MULTIPLE_CHOICE = (
    "activity_recognition_mc",
    "activity_inference",
    "housework_qa",
    "housework_qa_negation",
    "object_location",
    "state_tracking_open",
)
