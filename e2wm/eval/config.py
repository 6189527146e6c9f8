"""What ``e2wm eval`` runs: the suites, the test splits and variants, the per-task scoring choices, and
``EvalConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field

from e2wm.corpus.build import TRANSFER_SPLITS
from e2wm.corpus.tasks import MULTIPLE_CHOICE, SPECS, TASKS
from e2wm.errors import E2WMError
from e2wm.eval.mc_forms import FORMS
from e2wm.eval.scoring import NORMALIZATIONS
from e2wm.training.models import DEFAULT_MODEL

FORMAT = "e2wm-eval/1"
SUITES = ("embodied", "general", "all")
BACKENDS = ("e2wm", "lm-eval")
TEST_SPLITS = ("test_seen", "test_unseen", *TRANSFER_SPLITS)
KSHOT_SUFFIX = "_kshot"  # a transfer split scored few-shot is reported as <split>_kshot
REPORTED_SPLITS = (*TEST_SPLITS, *(s + KSHOT_SUFFIX for s in TRANSFER_SPLITS))
VARIANTS = ("base", "fine-tuned")
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Per-task defaults, from the task registry (``e2wm.corpus.tasks.SPECS``)
DEFAULT_MC_FORM = {task: SPECS[task].mc_form for task in MULTIPLE_CHOICE}
DEFAULT_NORMALIZATION = {task: SPECS[task].normalization for task in MULTIPLE_CHOICE}
# general text of two genres: the technical prose the Fisher is estimated on (other passages), and news
RETENTION_SOURCES = ("pydoc", "news")
PROPORTIONS = {"accuracy", "exact_match", "goal_success"}


def primary_metric(task: str) -> str:
    """The metric a task is charted by: accuracy for multiple choice, else its generation metric."""
    return SPECS[task].metric


@dataclass
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    model: str = DEFAULT_MODEL  # embedded name, Hub id or local path
    adapter: str | None = None  # PEFT adapter directory (LoRA from `e2wm train`)
    corpus: str = "outputs/demo/corpus"
    suite: str = "all"
    splits: tuple[str, ...] = TEST_SPLITS
    tasks: tuple[str, ...] | None = None  # None: every task
    limit: int | None = 20  # examples per task per split (a seeded sample); None: all
    seed: int = 0
    kshot: bool = False  # prompt every split with ``prompt_kshot`` (solved train examples first)
    transfer_kshot: bool = True  # also score the transfer splits few-shot (as <split>_kshot)
    normalization: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_NORMALIZATION
    mc_form: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_MC_FORM
    length_edges: tuple[int, ...] = (5, 10, 20, 30)  # bucket upper bounds: 1-5, 6-10, 11-20, 21-30, 31+
    out: str = "outputs/eval"
    base: bool = True  # with an adapter: evaluate the base model too
    backend: str = "e2wm"
    batch_size: int = 8  # examples per forward pass (multiple choice: items packed per pass)
    device: str = (
        "auto"  # cpu, cuda, cuda:N, or auto: every GPU (device_map="auto") if there is one, else cpu
    )
    dtype: str = "auto"  # float32, bfloat16, float16, or auto: bfloat16 on a GPU, float32 on the CPU
    retention_passages: int = 24  # the first passages of general_text "retention" (48 in all)
    retention_max_length: int = 512

    def validate(self) -> None:
        if self.dtype not in DTYPES:
            raise E2WMError(f"unknown dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise E2WMError(f"unknown device {self.device!r}: cpu, cuda, cuda:N or auto")
        if self.batch_size < 1:
            raise E2WMError(f"batch size must be 1 or more, got {self.batch_size}")
        if self.suite not in SUITES:
            raise E2WMError(f"unknown suite {self.suite!r}: choose one of {', '.join(SUITES)}")
        if self.backend not in BACKENDS:
            raise E2WMError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        unknown = sorted(set(self.tasks or ()) - set(TASKS))
        if unknown:
            raise E2WMError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")
        if self.tasks is not None and not self.tasks:
            raise E2WMError("no tasks selected")
        for flag, overrides, allowed in (
            ("normalization", self.normalization, NORMALIZATIONS),
            ("multiple-choice form", self.mc_form, FORMS),
        ):
            for task, value in overrides.items():
                if task not in TASKS:
                    raise E2WMError(f"{flag}: unknown task {task!r}")
                if task not in MULTIPLE_CHOICE:
                    raise E2WMError(f"{flag}: {task} is not a multiple-choice task")
                if value not in allowed:
                    raise E2WMError(
                        f"unknown {flag} {value!r} for {task}: choose one of {', '.join(allowed)}"
                    )
        bad_splits = sorted(set(self.splits) - set(TEST_SPLITS))
        if not self.splits or bad_splits:
            raise E2WMError(f"splits must be among {', '.join(TEST_SPLITS)}, got {', '.join(self.splits)}")
        if self.limit is not None and self.limit < 1:
            raise E2WMError(f"limit must be 1 or more, got {self.limit}")
        edges = list(self.length_edges)
        if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise E2WMError(f"length bucket edges must be increasing positive integers, got {edges}")
        if self.retention_passages < 1 or self.retention_max_length < 2:
            raise E2WMError("retention needs at least 1 passage and a max length of 2 tokens or more")
        if self.adapter is None and not self.base:
            raise E2WMError("nothing to evaluate: no adapter and the base model turned off")

    def normalizations(self) -> dict[str, str]:
        return {**DEFAULT_NORMALIZATION, **self.normalization}

    def mc_forms(self) -> dict[str, str]:
        return {**DEFAULT_MC_FORM, **self.mc_form}

    def variants(self) -> list[str]:
        if self.adapter is None:
            return ["base"]
        return list(VARIANTS) if self.base else ["fine-tuned"]

    def selected_tasks(self) -> list[str]:
        return [t for t in TASKS if self.tasks is None or t in self.tasks]
