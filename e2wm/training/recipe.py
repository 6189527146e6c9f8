"""The effective recipe of a training run, saved next to its adapter as ``e2wm_recipe.yaml``.

It holds the fields of the four configs (``ScriptArguments``, TRL's ``SFTConfig`` and ``ModelConfig``,
``EWCConfig``) whose values differ from their defaults, in the recipe format, so
``e2wm train --config OUTPUT_DIR/e2wm_recipe.yaml`` repeats the run. A recipe holds config fields only,
so the e2wm version that trained it heads the file as a comment.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from e2wm.errors import E2WMError, error_line

RECIPE_NAME = "e2wm_recipe.yaml"
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"  # the shipped recipes: package data
HEADER = "# e2wm {version}: the effective recipe of this run; e2wm train --config {name} repeats it\n"
# Never recorded: a secret, what the launcher or a resumed run sets, and the deprecated aliases that
# mirror activation_checkpointing*.
SKIPPED = frozenset(
    {
        "hub_token",
        "local_rank",
        "resume_from_checkpoint",
        "gradient_checkpointing",
        "gradient_checkpointing_kwargs",
    }
)


def recipe_path(name: str) -> str:
    """``name`` if it is a file; else the shipped recipe it names (``smollm2_ewc_lora_cpu``, or
    ``recipes/smollm2_ewc_lora_cpu.yaml`` run from outside a checkout); else ``name`` unchanged."""
    if Path(name).is_file():
        return name
    stem = Path(name).name
    shipped = [p for p in (RECIPES_DIR / stem, RECIPES_DIR / f"{stem}.yaml") if p.is_file()]
    return str(shipped[0]) if shipped else name


def e2wm_version() -> str:
    try:
        return version("e2wm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def plain(value: Any) -> Any:
    """``value`` as YAML the parser reads back: enums by value, dataclasses as mappings, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _resolved_defaults(config: Any) -> dict[str, Any]:
    """What ``TrainingArguments.__post_init__`` makes of these fields' defaults on this machine."""
    from transformers import TrainingArguments
    from transformers.trainer_pt_utils import AcceleratorConfig

    if not isinstance(config, TrainingArguments):
        return {}
    checkpointing = next(f for f in dataclasses.fields(config) if f.name == "gradient_checkpointing")
    return {
        "activation_checkpointing": bool(_default(checkpointing)),
        "disable_tqdm": logging.getLogger("transformers.training_args").getEffectiveLevel() > logging.WARN,
        "report_to": [],
        "debug": [],
        "accelerator_config": plain(AcceleratorConfig()),
        "dataloader_pin_memory": not config.use_cpu,
        "pad_to_multiple_of": None,  # SFTConfig's "auto" (128 on Neuron devices only)
    }


def recipe_dict(*configs: Any) -> dict[str, Any]:
    """The fields of ``configs`` (dataclass instances) whose values differ from their defaults."""
    recipe: dict[str, Any] = {}
    for config in configs:
        resolved = _resolved_defaults(config)
        for field in dataclasses.fields(config):
            if not field.init or field.name in SKIPPED:
                continue
            value = plain(getattr(config, field.name))
            defaults = [plain(_default(field))] + ([resolved[field.name]] if field.name in resolved else [])
            if value not in defaults:
                recipe[field.name] = value
    return recipe


def save_recipe(output_dir: str | Path, *configs: Any) -> Path:
    """Write ``recipe_dict(*configs)`` to ``output_dir/e2wm_recipe.yaml`` (through a temporary name)."""
    path = Path(output_dir) / RECIPE_NAME
    text = HEADER.format(version=e2wm_version(), name=RECIPE_NAME)
    text += yaml.safe_dump(recipe_dict(*configs), sort_keys=False)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def read_recipe(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """The recipe at ``path`` and the e2wm version its header names (None if it names none)."""
    try:
        text = Path(path).read_text()
        recipe = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise E2WMError(f"{path}: unreadable recipe ({error_line(exc)})") from None
    if not isinstance(recipe, dict):
        raise E2WMError(f"{path}: a recipe is a YAML mapping of config fields")
    found = re.match(r"# e2wm (\S+):", text)
    return recipe, found.group(1) if found else None
