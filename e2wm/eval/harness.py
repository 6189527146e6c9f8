"""e2wm's multiple-choice tasks run by EleutherAI's lm-evaluation-harness, reported as results rows.

The tasks are the YAMLs in ``e2wm/eval/lm_eval_tasks/e2wm`` (package data), one per corpus task and test split
(``e2wm_<task>_seen``, ``e2wm_<task>_unseen``); their loader reads the corpus named by the lm-eval
metadata ``e2wm_corpus``. lm-eval's ``acc`` is plain log-likelihood, normalization ``"sum"`` of
``e2wm.eval.scoring``. Nothing is fetched: the model is an embedded name or a local directory, loaded
from safetensors, the adapter from ``adapter_model.safetensors``, the corpus from a local directory
(every path made absolute, so lm-eval never takes one for a Hub id).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e2wm.corpus.tasks import MULTIPLE_CHOICE
from e2wm.errors import E2WMError, error_line
from e2wm.eval.scoring import wilson_interval
from e2wm.training.models import resolve_model

if TYPE_CHECKING:
    from lm_eval.models.huggingface import HFLM

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"  # package data: installed with e2wm
TEST_SPLITS = ("test_seen", "test_unseen")
BATCH_SIZE = 16


def harness_task(task: str, split: str) -> str:
    """The lm-eval task name of a corpus task on a test split, e.g. ``e2wm_housework_qa_seen``."""
    return f"e2wm_{task}_{split.removeprefix('test_')}"


def _choose_tasks(tasks: Sequence[str] | None) -> list[str]:
    from e2wm.corpus.tasks import TASKS

    if tasks is None:
        return list(MULTIPLE_CHOICE)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise E2WMError(f"unknown task(s) {', '.join(unknown)}: expected some of {', '.join(TASKS)}")
    chosen = [t for t in MULTIPLE_CHOICE if t in tasks]
    if not chosen:
        raise E2WMError(
            f"no multiple-choice task among {', '.join(tasks)}: lm-eval runs {', '.join(MULTIPLE_CHOICE)}"
        )
    return chosen


def corpus_pairs(corpus: str, splits: Sequence[str], tasks: Sequence[str]) -> list[tuple[str, str]]:
    """The (task, split) pairs of ``tasks`` x ``splits`` with at least one multiple-choice example."""
    from e2wm.corpus.read import open_corpus

    if not Path(corpus).is_dir():
        raise E2WMError(f"corpus not found: {corpus}")
    loaded = open_corpus(corpus, hub=False)
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise E2WMError(f"corpus {corpus} has no split(s) {', '.join(missing)} (it has {', '.join(loaded)})")
    for split in splits:
        lacking = [c for c in ("task", "prompt", "choices", "label") if c not in loaded[split].column_names]
        if lacking:
            raise E2WMError(f"corpus {corpus}: split {split} lacks column(s) {', '.join(lacking)}")
    present = {
        split: {t for t, c in zip(loaded[split]["task"], loaded[split]["choices"], strict=True) if c}
        for split in splits
    }
    pairs = [(task, split) for task in tasks for split in splits if task in present[split]]
    if not pairs:
        raise E2WMError(f"corpus {corpus} has no {', '.join(tasks)} examples in {', '.join(splits)}")
    return pairs


def load_lm(model: str, adapter: str | None) -> HFLM:
    """lm-eval's HF model: local safetensors weights, float32, the adapter applied if given."""
    import torch
    from lm_eval.models.huggingface import HFLM

    path = Path(resolve_model(model))
    if not path.is_dir():
        raise E2WMError(f"model {model!r} is neither an embedded model name nor a local model directory")
    if adapter:
        if not Path(adapter).is_dir():
            raise E2WMError(f"adapter not found: {adapter}")
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            if not (Path(adapter) / name).is_file():
                raise E2WMError(f"adapter {adapter}: {name} not found")
    try:
        return HFLM(
            pretrained=str(path.resolve()),
            peft=str(Path(adapter).resolve()) if adapter else None,
            device="cuda" if torch.cuda.is_available() else "cpu",
            dtype="float32",
            batch_size=BATCH_SIZE,
            trust_remote_code=False,
            use_safetensors=True,
        )
    except (OSError, ValueError, RuntimeError) as exc:
        with_adapter = f" with adapter {adapter}" if adapter else ""
        raise E2WMError(f"cannot load model {model}{with_adapter}: {error_line(exc)}") from None


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """Only lm-eval's errors while it runs: it warns once per task about custom-dataset kwargs."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_tasks(
    lm: HFLM, corpus: str, names: Sequence[str], limit: int | None, log_samples: bool = False
) -> dict[str, Any]:
    """lm-eval's results for the named e2wm tasks on ``corpus`` (first ``limit`` examples of each)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(TASKS_DIR),
        include_defaults=False,
        metadata={"e2wm_corpus": str(Path(corpus).resolve())},
    )
    with _quiet_lm_eval():
        return simple_evaluate(
            model=lm,
            tasks=list(names),
            task_manager=manager,
            limit=limit,
            bootstrap_iters=0,
            log_samples=log_samples,
        )


def lm_eval_rows(
    model: str,
    adapter: str | None,
    corpus: str,
    splits: Sequence[str],
    limit: int | None,
    tasks: Sequence[str] | None,
) -> list[dict]:
    """Accuracy rows (results schema) of the multiple-choice ``tasks`` (all if None) on ``splits``.

    Tasks without multiple-choice examples in a split are left out; other tasks in ``tasks`` are skipped.
    ``limit`` takes the first examples of each task and split (lm-eval's ``--limit``).
    """
    bad = [s for s in splits if s not in TEST_SPLITS]
    if bad or not splits:
        raise E2WMError(f"lm-eval splits must be some of {', '.join(TEST_SPLITS)}, got {', '.join(splits)}")
    if limit is not None and limit < 1:
        raise E2WMError(f"limit must be a positive number of examples, got {limit}")
    pairs = corpus_pairs(corpus, splits, _choose_tasks(tasks))
    lm = load_lm(model, adapter)
    results = run_tasks(lm, corpus, [harness_task(t, s) for t, s in pairs], limit)
    rows = []
    for task, split in pairs:
        name = harness_task(task, split)
        accuracy, n = results["results"][name]["acc,none"], int(results["n-samples"][name]["effective"])
        low, high = wilson_interval(round(accuracy * n), n)
        rows.append(
            {
                "variant": "fine-tuned" if adapter else "base",
                "task": task,
                "split": split,
                "metric": "accuracy",
                "value": accuracy,
                "n": n,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return rows
