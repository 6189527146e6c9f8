"""The task registry (``e2wm.corpus.tasks.SPECS``) is the one place task facts live; what reads it agrees."""

from __future__ import annotations

import pytest

from e2wm.corpus.build import BuildConfig
from e2wm.corpus.card import dataset_card
from e2wm.corpus.tasks import GENERATION, MULTIPLE_CHOICE, SPECS, TASKS, TRACKING_TASKS
from e2wm.eval.config import DEFAULT_MC_FORM, DEFAULT_NORMALIZATION, primary_metric
from e2wm.eval.mc_forms import FORMS
from e2wm.eval.metrics import SCORERS
from e2wm.eval.scoring import NORMALIZATIONS
from e2wm.hub.card import METRICS


@pytest.mark.parametrize("task", sorted(SPECS))
def test_every_task_is_fully_specified(task):
    spec = SPECS[task]
    assert TASKS[task] is spec.build and spec.build.__name__ == task and spec.description
    if spec.multiple_choice:
        assert spec.metric == "accuracy" and spec.mc_form in FORMS and spec.normalization in NORMALIZATIONS
        assert spec.max_new_tokens is None and task not in SCORERS
    else:
        assert spec.normalization is None and spec.max_new_tokens and spec.max_new_tokens > 0
        assert task in SCORERS
    assert spec.metric in METRICS  # the model card defines every metric a row can report
    assert primary_metric(task) == spec.metric


def test_the_task_groups_partition_the_registry_in_its_order():
    assert set(MULTIPLE_CHOICE) | set(GENERATION) == set(SPECS)
    assert not set(MULTIPLE_CHOICE) & set(GENERATION)
    assert list(TASKS) == list(SPECS)
    assert [t for t in SPECS if t in TRACKING_TASKS] == list(TRACKING_TASKS)
    assert set(SCORERS) == set(GENERATION)
    assert {t: SPECS[t].mc_form for t in MULTIPLE_CHOICE} == DEFAULT_MC_FORM
    assert {t: SPECS[t].normalization for t in MULTIPLE_CHOICE} == DEFAULT_NORMALIZATION


def test_the_dataset_card_describes_each_task_from_the_registry():
    import datasets

    corpus = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"task": ["counting", "housework_qa", "counting"]})}
    )
    config = BuildConfig(rollouts="rollouts", out="corpus")
    card = dataset_card(corpus, config, {"random": 1}, 0)
    assert f"| counting | {SPECS['counting'].description} | 2 |" in card
    assert f"| housework_qa | {SPECS['housework_qa'].description} | 1 |" in card
