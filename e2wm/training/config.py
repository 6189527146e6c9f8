"""Training configs: e2wm's own dataclasses, parsed with TRL's ``SFTConfig`` and ``ModelConfig``.

A recipe is one YAML mapping whose keys are fields of these four dataclasses; ``TrlParser`` reads it
(``--config recipe.yaml``) and command-line flags override it (``--learning_rate 1e-4``). ``parse``
checks the whole configuration first (unknown keys with a "did you mean", values of the wrong type,
values out of range, the Fisher file) so that a bad one fails in one line before any data
set or model is loaded.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ModelConfig, SFTConfig, TrlParser
from trl.scripts.utils import DatasetConfig

from e2wm.corpus.tasks import TASKS
from e2wm.errors import E2WMError, did_you_mean, error_line, libraries_deprecation
from e2wm.files import check_safetensors, is_hub_id, read_yaml_mapping
from e2wm.flags import unwrap_optional
from e2wm.training.checkpoints import import_before_the_group
from e2wm.training.fisher import DEFAULT_TARGETS
from e2wm.training.general_text import SOURCES
from e2wm.training.models import DEFAULT_MODEL
from e2wm.training.recipe import recipe_path

TRL_NAMES = {  # trl.ScriptArguments' name -> e2wm's
    "dataset_name": "dataset",
    "dataset_train_split": "train_split",
    "dataset_test_split": "eval_split",
}
MIXTURE_KEYS = tuple(f.name for f in dataclasses.fields(DatasetConfig))  # of an entry of `datasets`
# datasets' builders of tables that can hold prompt and completion columns (`path: json` with `data_files`)
FILE_BUILDERS = ("json", "csv", "parquet", "arrow")


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
            "help": "share of training examples that are general prose from e2wm.training.general_text part "
            '"fisher" (never the retention part), mixed into the train split: n_replay = '
            "round(fraction / (1 - fraction) * n_train), cycling passages if needed; 0: none"
        },
    )
    replay_source: str = field(
        default="pydoc", metadata={"help": "replay_fraction: general-text source, pydoc or news"}
    )
    # TRL's names of dataset, train_split and eval_split (trl.ScriptArguments), so recipes and command lines
    # written for `trl sft` work as they are
    dataset_name: str | None = field(default=None, metadata={"help": "TRL's name of `dataset`"})
    dataset_train_split: str | None = field(default=None, metadata={"help": "TRL's name of `train_split`"})
    dataset_test_split: str | None = field(default=None, metadata={"help": "TRL's name of `eval_split`"})
    # A mixture in the shape of TRL's DatasetMixtureConfig, so the `datasets:` of a `trl sft` recipe works
    datasets: list[DatasetConfig] = field(
        default_factory=list,
        metadata={
            "help": "train on this mixture instead of `dataset`: in a recipe a list of {path, name, "
            "data_dir, data_files, split, columns, fraction} (TRL's DatasetConfig), on the command line "
            "paths (split train); eval stays on `eval_split` of `dataset` unless test_split_size is set"
        },
    )
    test_split_size: float | None = field(
        default=None,
        metadata={"help": "datasets: hold out this share of the mixture (0 to 1) as the eval split"},
    )

    def __post_init__(self) -> None:
        for trl_name, ours in TRL_NAMES.items():  # TRL's name, when given, sets ours
            if getattr(self, trl_name) is not None:
                setattr(self, ours, getattr(self, trl_name))
                setattr(self, trl_name, None)
        self.check_replay()
        self.check_mixture()
        for name in ("max_train_examples", "eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise E2WMError(f"{name} must be 1 or more (or unset), got {value}")
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

    def check_mixture(self) -> None:
        """Each ``datasets`` entry a ``DatasetConfig`` naming a local path, a builder or a Hub dataset id,
        with a split; ``fraction`` on every entry or none; ``test_split_size`` a share of a mixture."""
        self.datasets = [mixture_entry(entry, i) for i, entry in enumerate(self.datasets)]
        fractions = [entry.fraction for entry in self.datasets]
        if fractions.count(None) not in (0, len(fractions)):
            raise E2WMError("datasets: give every entry a fraction, or none (as TRL does)")
        if any(f is not None and not f > 0 for f in fractions):
            raise E2WMError(f"datasets: each fraction must be > 0, got {fractions}")
        if self.test_split_size is not None:
            if not self.datasets:
                raise E2WMError("test_split_size holds out a share of a mixture: set datasets too")
            if not 0 < self.test_split_size < 1:
                raise E2WMError(f"test_split_size must be in (0, 1), got {self.test_split_size}")

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


def mixture_entry(entry: Any, index: int) -> DatasetConfig:
    """``entry`` of ``datasets`` (a recipe's mapping, or a parsed ``DatasetConfig``) as a checked
    ``DatasetConfig``: a path that exists, is a file builder with its data files, or is a Hub dataset id."""
    where = f"datasets[{index}]"
    if isinstance(entry, dict):
        unknown = sorted(str(key) for key in set(entry) - set(MIXTURE_KEYS))
        if unknown:
            raise E2WMError(
                f"{where}: unknown key {unknown[0]!r}{did_you_mean(unknown[0], MIXTURE_KEYS)}; "
                f"an entry has {', '.join(MIXTURE_KEYS)}"
            )
        entry = DatasetConfig(**{"path": None, **entry})
    if not isinstance(entry, DatasetConfig):
        raise E2WMError(f"{where}: expected a mapping of {', '.join(MIXTURE_KEYS)}, got {entry!r}")
    if not entry.path or not isinstance(entry.path, str):
        kinds = f"a corpus folder, a data file, {', '.join(FILE_BUILDERS)} or a Hub id"
        raise E2WMError(f"{where}: no path ({kinds})")
    if not entry.split or not isinstance(entry.split, str):
        raise E2WMError(f"{where} {entry.path}: no split")
    if entry.path in FILE_BUILDERS and entry.data_files is None and entry.data_dir is None:
        raise E2WMError(f"{where}: path {entry.path} reads data_files (or data_dir): name them")
    if not (Path(entry.path).exists() or entry.path in FILE_BUILDERS or is_hub_id(entry.path)):
        raise E2WMError(f"{where}: path {entry.path}: no such file or folder, nor a Hub dataset id")
    if entry.columns is not None and not isinstance(entry.columns, list):
        raise E2WMError(f"{where} {entry.path}: columns must be a list of names, got {entry.columns!r}")
    return entry


@dataclass
class FisherConfig:
    """``e2wm fisher``: the model, the data and size of a Fisher estimate, and the file it goes to."""

    out: str = field(metadata={"help": "output .safetensors file"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "embedded model name, Hub id or local path"})
    data: str = field(
        default="general", metadata={"help": "general (offline English prose), model-samples, or a dataset"}
    )
    samples: int = field(default=64, metadata={"help": "examples the Fisher is estimated from"})
    max_length: int = field(default=256, metadata={"help": "tokens per example"})
    targets: tuple[str, ...] = field(
        default=DEFAULT_TARGETS,
        metadata={"help": "linear layers LoRA targets (names), or all-linear, or all"},
    )
    rank: int = field(default=0, metadata={"help": "> 0: store each matrix factored at this rank"})

    def validate(self) -> None:
        if self.samples < 1 or self.max_length < 2 or self.rank < 0:
            raise E2WMError("--samples must be >= 1, --max-length >= 2 and --rank >= 0")
        if self.data not in ("general", "model-samples") and not Path(self.data).exists():
            from huggingface_hub.utils import HFValidationError, validate_repo_id

            try:
                validate_repo_id(self.data)
            except HFValidationError:
                raise E2WMError(f"--data {self.data}: no such directory, nor a Hub dataset id") from None


@dataclass
class EWCConfig:
    """Elastic weight consolidation: lambda * sum F * dW^2, F the base model's Fisher on general text."""

    ewc_lambda: float = field(default=0.0, metadata={"help": "penalty weight; 0 is plain (LoRA) fine-tuning"})
    fisher_path: str | None = field(
        default=None, metadata={"help": "Fisher file from `e2wm fisher`; computed and saved there if missing"}
    )
    fisher_data: str = field(
        default=FisherConfig.data,
        metadata={"help": "general (offline English prose), model-samples, or a dataset"},
    )
    fisher_samples: int = field(
        default=FisherConfig.samples, metadata={"help": "examples the Fisher is estimated from"}
    )
    fisher_max_length: int = field(
        default=FisherConfig.max_length, metadata={"help": "tokens per Fisher example"}
    )
    fisher_rank: int = field(
        default=FisherConfig.rank, metadata={"help": "> 0: store F factored at this rank (fast exact path)"}
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.ewc_lambda) and self.ewc_lambda >= 0):
            raise E2WMError(
                f"ewc_lambda must be a finite number >= 0, got {self.ewc_lambda:g} "
                "(a negative penalty would reward forgetting)"
            )
        if self.fisher_samples < 1:
            raise E2WMError(f"fisher_samples must be 1 or more, got {self.fisher_samples}")
        if self.fisher_max_length < 2:
            raise E2WMError(f"fisher_max_length must be 2 tokens or more, got {self.fisher_max_length}")
        if self.fisher_rank < 0:
            raise E2WMError(f"fisher_rank must be 0 (full) or more, got {self.fisher_rank}")
        if self.ewc_lambda > 0 and self.fisher_path and Path(self.fisher_path).exists():
            check_safetensors(self.fisher_path, "fisher_path")


def parse(argv: list[str] | None = None) -> tuple[ScriptArguments, SFTConfig, ModelConfig, EWCConfig]:
    """Parse ``--config recipe.yaml`` and command-line overrides into the four configs, checked."""
    script, training, model_args, ewc = parse_recipe(
        (ScriptArguments, SFTConfig, ModelConfig, EWCConfig), argv
    )
    check_training(training, model_args)
    return script, training, model_args, ewc


YAML_ONLY = ("env",)  # TrlParser: environment variables to set


def parse_recipe(classes: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """``TrlParser(classes)`` on ``argv``, after checking every recipe key and flag (known, of the right
    type), with TRL's and transformers' own checks of the values turned into one-line errors."""
    argv = list(argv or [])
    fields = recipe_fields(classes)
    check_flags(argv, fields)
    if "--config" in argv:
        at = argv.index("--config") + 1
        argv[at] = recipe_path(argv[at])
        check_recipe(argv[at], fields)
    import_before_the_group()
    try:
        # TRL's SFTConfig default sets transformers' renamed gradient_checkpointing
        with libraries_deprecation(".*gradient_checkpointing.*"):
            return tuple(TrlParser(classes).parse_args_and_config(argv))
    except ValueError as exc:  # transformers' and TRL's own checks of the arguments
        raise E2WMError(f"bad training config: {error_line(exc)}") from None


def recipe_fields(classes: tuple[type, ...]) -> dict[str, Any]:
    """Every recipe key of ``classes``: field name -> its type (Optional stripped)."""
    fields = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.init:
                fields[f.name] = unwrap_optional(hints[f.name])
    return fields


def check_flags(argv: list[str], fields: dict[str, Any]) -> None:
    """Every ``--flag`` names a recipe field (``--no_X`` a boolean one); --config names a file."""
    for i, arg in enumerate(argv):
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        if name == "config":
            if i + 1 >= len(argv):
                raise E2WMError("--config needs a recipe file")
            continue
        if name.startswith("no_") and fields.get(name[3:]) is bool:
            continue
        if name in fields:
            value = arg.split("=", 1)[1] if "=" in arg else argv[i + 1] if i + 1 < len(argv) else None
            if fields[name] is not bool and value is None:
                raise E2WMError(f"--{name} needs a value")
            if typing.get_origin(fields[name]) in (list, tuple) and "=" not in arg:
                value = list(itertools.takewhile(lambda v: not v.startswith("--"), argv[i + 1 :]))
                if not _fits(value, fields[name]):
                    raise E2WMError(f"--{name} must be {_describe(fields[name])}, got {' '.join(value)!r}")
            elif value is not None and not value.startswith("--") and not _fits(value, fields[name]):
                raise E2WMError(f"--{name} must be {_describe(fields[name])}, got {value!r}")
            continue
        raise E2WMError(f"unknown flag --{name}{did_you_mean(f'--{name}', [f'--{f}' for f in fields])}")


def check_recipe(path: str, fields: dict[str, Any]) -> None:
    """The recipe at ``path`` is a YAML mapping of known keys whose values have their fields' types."""
    for key, value in read_yaml_mapping(path, "recipe").items():
        if key in YAML_ONLY:
            continue
        if key not in fields:
            raise E2WMError(f"recipe {path}: unknown key {key!r}{did_you_mean(str(key), fields)}")
        if not _fits(value, fields[key]):
            raise E2WMError(f"recipe {path}: {key} must be {_describe(fields[key])}, got {value!r}")


def _fits(value: Any, kind: Any) -> bool:
    """Whether a YAML value can stand for a field of type ``kind`` (argparse converts strings later); a list
    field's value (or each of its items) as its items' type."""
    if typing.get_origin(kind) in (list, tuple):
        items = [t for t in typing.get_args(kind) if t is not Ellipsis]
        if len(items) == 1:
            return all(_fits(v, items[0]) for v in (value if isinstance(value, list) else [value]))
    if value is None or kind not in (bool, int, float):
        return True  # None unsets; other types are checked by the dataclasses themselves
    if kind is bool:
        return isinstance(value, bool) or str(value).lower() in ("true", "false", "yes", "no", "1", "0")
    if isinstance(value, bool):
        return False
    try:
        number = kind(value)
    except (TypeError, ValueError):
        return False
    return kind is float or number == float(value)


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) in (list, tuple) and typing.get_args(kind):
        return f"a list of {_describe(typing.get_args(kind)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "an integer", float: "a number"}.get(kind, str(kind))


def check_training(training: SFTConfig, model_args: ModelConfig) -> None:
    """Ranges of the TRL and transformers fields that their own checks let through."""
    positive = {
        "learning_rate": training.learning_rate,
        "per_device_train_batch_size": training.per_device_train_batch_size,
        "per_device_eval_batch_size": training.per_device_eval_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "logging_steps": training.logging_steps,
        "max_length": training.max_length,
        "save_total_limit": training.save_total_limit,
    }
    if training.max_steps <= 0:
        positive["num_train_epochs"] = training.num_train_epochs
    if model_args.use_peft:
        positive |= {"lora_r": model_args.lora_r, "lora_alpha": model_args.lora_alpha}
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise E2WMError(f"{name} must be > 0, got {value}")
    for name in ("warmup_steps", "weight_decay"):
        if getattr(training, name) < 0:
            raise E2WMError(f"{name} must be >= 0, got {getattr(training, name)}")
    if training.max_steps == 0 or training.max_steps < -1:
        raise E2WMError(f"max_steps must be -1 (use num_train_epochs) or >= 1, got {training.max_steps}")
    if not 0.0 <= model_args.lora_dropout < 1.0:
        raise E2WMError(f"lora_dropout must be in [0, 1), got {model_args.lora_dropout}")
    resume = training.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() not in ("true", "false") and not Path(resume).is_dir():
        raise E2WMError(f"resume_from_checkpoint {resume}: no such checkpoint directory")
