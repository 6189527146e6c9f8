"""Training configs: e2wm's own dataclasses, parsed with TRL's ``SFTConfig`` and ``ModelConfig``.

A recipe is one YAML mapping whose keys are fields of these four dataclasses; ``TrlParser`` reads it
(``--config recipe.yaml``) and command-line flags override it (``--learning_rate 1e-4``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import ModelConfig, SFTConfig, TrlParser

from e2wm.corpus.tasks import TASKS
from e2wm.errors import E2WMError
from e2wm.general_text import SOURCES


@dataclass
class ScriptArguments:
    """Which corpus to train on (a directory from ``e2wm build``, or a Hub dataset id)."""

    dataset: str = field(
        default="outputs/demo/corpus", metadata={"help": "corpus directory or Hub dataset id"}
    )
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str | None = field(
        default="validation", metadata={"help": "split to evaluate on (none: skip)"}
    )
    tasks: list[str] | None = field(default=None, metadata={"help": "train on these tasks only"})
    task_weights: str | None = field(
        default=None,
        metadata={
            "help": "loss weight per task replacing the corpus's `weight` column: a mapping in the recipe, "
            "JSON on the command line ('{\"counting\": 0.7}')"
        },
    )
    max_train_examples: int | None = field(default=None, metadata={"help": "use at most this many examples"})
    eval_suite: str | None = field(
        default=None,
        metadata={
            "help": "after training, run `e2wm eval` on the adapter into OUTPUT_DIR/eval: "
            "embodied, general or all (none: skip)"
        },
    )
    eval_limit: int | None = field(
        default=None, metadata={"help": "eval_suite: examples per task per test split (none: all)"}
    )
    replay_fraction: float = field(
        default=0.0,
        metadata={
            "help": "share of training examples that are general prose from e2wm.general_text part "
            '"fisher" (never the retention part), mixed into the train split: n_replay = '
            "round(fraction / (1 - fraction) * n_train), cycling passages if needed; 0: none"
        },
    )
    replay_source: str = field(
        default="pydoc", metadata={"help": "replay_fraction: general-text source, pydoc or news"}
    )

    def __post_init__(self) -> None:
        self.check_replay()
        unknown = sorted(set(self.tasks or ()) - set(TASKS)) + sorted(set(self.weights()) - set(TASKS))
        if unknown:
            raise E2WMError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")

    def check_replay(self) -> None:
        """``replay_fraction`` in [0, 1) and ``replay_source`` a known general-text source."""
        if not 0.0 <= self.replay_fraction < 1.0:
            raise E2WMError(f"replay_fraction must be in [0, 1), got {self.replay_fraction}")
        if self.replay_source not in SOURCES:
            raise E2WMError(
                f"unknown replay_source {self.replay_source!r}: expected one of {', '.join(SOURCES)}"
            )

    def weights(self) -> dict[str, float]:
        """``task_weights`` as a mapping, whether the recipe gave a mapping or the command line JSON."""
        value = self.task_weights
        if not isinstance(value, str):
            return dict(value or {})
        try:
            return {str(k): float(v) for k, v in json.loads(value).items()}
        except (ValueError, AttributeError):
            raise E2WMError(
                f'task_weights must be a JSON mapping like {{"counting": 0.7}}, got {value!r}'
            ) from None


@dataclass
class EWCConfig:
    """Elastic weight consolidation: lambda * sum F * dW^2, F the base model's Fisher on general text."""

    ewc_lambda: float = field(default=0.0, metadata={"help": "penalty weight; 0 is plain (LoRA) fine-tuning"})
    fisher_path: str | None = field(
        default=None, metadata={"help": "Fisher file from `e2wm fisher`; computed and saved there if missing"}
    )
    fisher_data: str = field(
        default="general", metadata={"help": "general (offline English prose), model-samples, or a dataset"}
    )
    fisher_samples: int = field(default=64, metadata={"help": "examples the Fisher is estimated from"})
    fisher_max_length: int = field(default=256, metadata={"help": "tokens per Fisher example"})
    fisher_rank: int = field(
        default=0, metadata={"help": "> 0: store F factored at this rank (fast exact path)"}
    )


def parser() -> TrlParser:
    return TrlParser((ScriptArguments, SFTConfig, ModelConfig, EWCConfig))


def parse(argv: list[str] | None = None) -> tuple[ScriptArguments, SFTConfig, ModelConfig, EWCConfig]:
    """Parse ``--config recipe.yaml`` and command-line overrides into the four configs."""
    return tuple(parser().parse_args_and_config(argv))  # type: ignore[return-value]
