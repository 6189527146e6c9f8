"""What ``e2wm eval`` runs: the suites, the test splits and variants, the per-task scoring choices, and
``EvalConfig``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from e2wm.corpus.build import TRANSFER_SPLITS
from e2wm.corpus.tasks import MULTIPLE_CHOICE, SPECS, TASKS
from e2wm.errors import E2WMError
from e2wm.eval.mc_forms import FORMS
from e2wm.eval.scoring import NORMALIZATIONS
from e2wm.training.models import DEFAULT_MODEL, adapter_base, fetch_adapter

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

    model: str | None = field(
        default=None,
        metadata={
            "help": f"embedded model name, Hub id or local path (default: the adapter's base model, else "
            f"{DEFAULT_MODEL})"
        },
    )
    adapter: str | None = field(
        default=None, metadata={"help": "PEFT adapter directory (LoRA from `e2wm train`)"}
    )
    corpus: str = field(
        default="outputs/demo/corpus", metadata={"help": "corpus directory from `e2wm build`"}
    )
    suite: str = field(
        default="all",
        metadata={"help": "embodied (corpus tests), general (perplexity) or all"},
    )
    splits: tuple[str, ...] = field(
        default=TEST_SPLITS,
        metadata={
            "help": "test splits: test_seen, test_unseen (train wordings), test_seen_transfer, "
            "test_unseen_transfer (held-out wordings)"
        },
    )
    tasks: tuple[str, ...] | None = field(
        default=None, metadata={"help": "evaluate these tasks only (default: every task)", "metavar": "TASK"}
    )
    limit: int | None = field(
        default=20, metadata={"help": "examples per task per split, a seeded sample (0 or None: all)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the per-task sample"})
    kshot: bool = field(
        default=False, metadata={"help": "prompt every split with solved train examples first"}
    )
    transfer_kshot: bool = field(
        default=True, metadata={"help": "also score the transfer splits few-shot (as <split>_kshot)"}
    )
    normalization: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "multiple-choice scoring per task: sum, mean or unconditional",
            "metavar": "TASK=NORM",
        },
    )
    mc_form: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "multiple-choice form per task: cloze (no option list), listed or lettered",
            "metavar": "TASK=FORM",
        },
    )
    apply_chat_template: bool = field(
        default=False,
        metadata={
            "help": "render every prompt with the model's chat template, solved examples as earlier turns (a "
            "conversational corpus always is)"
        },
    )
    length_edges: tuple[int, ...] = field(
        default=(5, 10, 20, 30),
        metadata={"help": "tracking tasks by length: bucket upper bounds (5 10 20 30: 1-5, ..., 21-30, 31+)"},
    )
    out: str = field(
        default="outputs/eval", metadata={"help": "output directory (results.json, results.md, charts)"}
    )
    base: bool = field(default=True, metadata={"help": "with an adapter: evaluate the base model too"})
    backend: str = field(
        default="e2wm", metadata={"help": "scorer of multiple-choice tasks: e2wm or lm-eval"}
    )
    batch_size: int = field(
        default=8, metadata={"help": "examples per forward pass (multiple choice: items packed per pass)"}
    )
    device: str = field(
        default="auto", metadata={"help": "cpu, cuda, cuda:N, or auto (every GPU if there is one, else cpu)"}
    )
    dtype: str = field(
        default="auto",
        metadata={
            "help": "float32, bfloat16, float16, or auto: bfloat16 on a GPU; on the CPU float32 weights, "
            "with bfloat16 matmuls (autocast) where the CPU has them natively (AVX-512 BF16, AMX)"
        },
    )
    retention_passages: int = field(
        default=24, metadata={"help": "general-text passages per source for perplexity (48 in all)"}
    )
    retention_max_length: int = field(default=512, metadata={"help": "tokens per general-text passage"})

    def __post_init__(self) -> None:
        if self.limit == 0:  # the command line's "0: all"
            self.limit = None

    def resolved(self) -> EvalConfig:
        """This config with a local adapter directory (a Hub adapter fetched, or taken from the cache when
        offline) and the model named: the adapter's base model unless one was given, else the default."""
        adapter = fetch_adapter(self.adapter) if self.adapter else None
        model = self.model or (adapter_base(adapter) if adapter else None) or DEFAULT_MODEL
        return dataclasses.replace(self, model=model, adapter=adapter)

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
        if self.apply_chat_template and self.backend != "e2wm":
            raise E2WMError("--apply-chat-template needs --backend e2wm (lm-eval scores the plain prompts)")
        if self.backend == "lm-eval":
            import lm_eval  # noqa: F401  # an optional dependency: if it is missing, say so before any work
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
