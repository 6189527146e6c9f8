"""e2wm's multiple-choice examples scored by EleutherAI's lm-evaluation-harness, reported as results rows.

``e2wm eval --backend lm-eval`` hands lm-eval exactly the examples the default backend scores: the seeded
sample of each (split, task) (``e2wm.eval.data.sample_examples``), prompted as configured and put in the
task's multiple-choice form (``e2wm.eval.mc_forms.as_form``), each (split, task) as one in-memory lm-eval
task ``e2wm_<task>_<split>`` (``test_`` dropped) with the shipped template's settings
(``lm_eval_tasks/e2wm/_default_template_yaml``: context the prompt, continuations ``" " + choice``).

Each task's normalization is scored by lm-eval's metric for it (``METRICS``): ``sum`` by ``acc`` (the same
rule); lm-eval has neither of the other two, so ``mean`` (per token) is scored by its per-character
``acc_norm`` and ``unconditional`` (minus the answer's log-likelihood after "Answer:") by
``acc_mutual_info`` (after lm-eval's empty context, the tokenizer's start token).

Under ``e2wm eval`` lm-eval scores the model the run already holds, in the variant and precision being
scored. Called alone, the model is loaded as the default backend loads it
(``e2wm.eval.models.load_model``: an embedded name, a local directory or a Hub id, from safetensors, in the
configured device and dtype; the adapter a directory or a Hub id fetched by ``EvalConfig.resolved``). It is
handed to lm-eval as an object: lm-eval itself loads nothing and makes no network call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from e2wm.corpus.tasks import MULTIPLE_CHOICE
from e2wm.errors import E2WMError
from e2wm.eval.config import VARIANTS, EvalConfig
from e2wm.eval.mc_forms import as_form
from e2wm.eval.statistics import summary_row

if TYPE_CHECKING:
    from lm_eval.models.huggingface import HFLM

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"  # package data: installed with e2wm
TEMPLATE = TASKS_DIR / "e2wm" / "_default_template_yaml"
METRICS = {"sum": "acc", "mean": "acc_norm", "unconditional": "acc_mutual_info"}


def harness_task(task: str, split: str) -> str:
    """The lm-eval task name of a corpus task on a test split, e.g. ``e2wm_housework_qa_seen``."""
    return f"e2wm_{task}_{split.removeprefix('test_')}"


class _TemplateLoader(yaml.SafeLoader):
    """Reads the template with its ``!function`` loader left empty: the in-process tasks bring their docs."""


_TemplateLoader.add_constructor("!function", lambda loader, node: None)


def task_config(name: str, docs: Sequence[dict], metric: str) -> dict[str, Any]:
    """An lm-eval task config of ``docs`` (each with ``prompt``, ``choices``, ``label``), scored by ``metric``
    with the shipped template's settings."""
    import datasets

    template = yaml.load(TEMPLATE.read_text(), Loader=_TemplateLoader)
    dataset = datasets.DatasetDict({"test": datasets.Dataset.from_list(list(docs))})
    return {
        **{k: v for k, v in template.items() if k != "custom_dataset"},
        "task": name,
        "custom_dataset": lambda **_: dataset,  # lm-eval passes it the task metadata
        "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}],
    }


def harness_lm(model: Any, tokenizer: Any, batch_size: int) -> HFLM:
    """lm-eval's HF model around a loaded model (an adapter, if any, applied) and its tokenizer."""
    from lm_eval.models.huggingface import HFLM

    with _quiet_lm_eval():  # it warns that a model object leaves its loading arguments unused
        return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """Only lm-eval's errors while it runs: it warns once per task about custom-dataset kwargs."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_tasks(lm: HFLM, configs: Sequence[dict[str, Any]], progress: bool = False) -> dict[str, Any]:
    """lm-eval's results, per-example samples included, of the task ``configs`` (``task_config``); its
    progress bars only with ``progress``. lm-eval's ``evaluate``, not ``simple_evaluate``: that one also
    seeds the global random generators, asks the Hub about the model and runs git and pip for the record."""
    from lm_eval import evaluate
    from lm_eval.tasks import TaskManager

    # lm-eval's bars cannot be turned off, but they write to the sys.stderr of the moment
    bars = contextlib.nullcontext() if progress else contextlib.redirect_stderr(io.StringIO())
    with _quiet_lm_eval(), bars:
        tasks = TaskManager(include_defaults=False).load(list(configs))  # not lm-eval's own task files
        return evaluate(lm=lm, task_dict=tasks, bootstrap_iters=0, log_samples=True)


def harness_docs(
    samples: Mapping[tuple[str, str], Sequence[dict]], forms: Mapping[str, str]
) -> dict[tuple[str, str], list[dict]]:
    """(split, task) -> the multiple-choice examples of ``samples`` in their task's form."""
    return {
        (split, task): [as_form(ex, forms[task]) for ex in exs]
        for (split, task), exs in samples.items()
        if task in MULTIPLE_CHOICE and exs
    }


def _variant_config(config: EvalConfig, variant: str) -> EvalConfig:
    """``config`` resolved (model named, adapter local), without its adapter for the base variant."""
    if variant not in VARIANTS:
        raise E2WMError(f"unknown variant {variant!r}: {' or '.join(VARIANTS)}")
    if variant == "fine-tuned" and config.adapter is None:
        raise E2WMError("the fine-tuned variant needs an adapter")
    config = config.resolved()
    return config if variant == "fine-tuned" else dataclasses.replace(config, adapter=None)


def lm_eval_rows(
    config: EvalConfig,
    variant: str,
    samples: Mapping[tuple[str, str], Sequence[dict]],
    progress: bool = False,
    loaded: tuple[Any, Any] | None = None,
) -> list[dict]:
    """Accuracy rows (results schema) of ``variant`` on the multiple-choice tasks of ``samples``, (split,
    task) -> examples (``sample_examples``, prompted), scored by lm-eval in ``config``'s forms and (as
    ``METRICS``) normalizations; other tasks are left out. lm-eval shows its progress bars with
    ``progress``. ``loaded``: the (model, tokenizer) ``e2wm eval`` already runs, already checked and set to
    the variant and precision; without it the variant's model is checked and loaded here."""
    from e2wm.eval.models import adapter_sha256, compute_context, load_model
    from e2wm.training.models import check_model

    docs = harness_docs(samples, config.mc_forms())
    if not docs:
        raise E2WMError("no multiple-choice examples for lm-eval to score")
    metrics = {task: METRICS[norm] for task, norm in config.normalizations().items()}
    names = {key: harness_task(key[1], key[0]) for key in docs}
    configs = [task_config(names[key], exs, metrics[key[1]]) for key, exs in docs.items()]
    if loaded is not None:
        results = run_tasks(harness_lm(*loaded, config.batch_size), configs, progress)
    else:
        config = _variant_config(config, variant)
        check_model(config.model)
        if config.adapter is not None:
            adapter_sha256(config.adapter, config.model)  # a whole adapter that fits, before loading
        model, tokenizer = load_model(config)
        with compute_context(config):
            results = run_tasks(harness_lm(model, tokenizer, config.batch_size), configs, progress)
    rows = []
    for (split, task), exs in docs.items():
        scored = sorted(results["samples"][names[(split, task)]], key=lambda s: s["doc_id"])
        values = [float(s[metrics[task]]) for s in scored]
        chances = [1 / len(ex["choices"]) for ex in exs]
        rows.append(
            {"variant": variant, "task": task, "split": split, **summary_row("accuracy", values, chances)}
        )
    return rows
