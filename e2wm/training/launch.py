"""``e2wm train --accelerate_config NAME|FILE``: the training processes launched through ``accelerate
launch``, as ``trl sft --accelerate_config`` launches them, from the accelerate configs shipped with e2wm
(``e2wm/accelerate_configs/NAME.yaml``) or any config file.

The command line is the training's (``--config recipe.yaml`` and its overrides) plus the flags of
``accelerate launch`` that no recipe field takes (``--num_processes 4``, ``--main_process_port 29501``),
which go to the launcher. The recipe and flags are checked once, here, before any process starts; each
process then runs ``python -m e2wm.training.train`` with the training flags.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import NoReturn

from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import launch_command, launch_command_parser
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from trl import ModelConfig, SFTConfig

from e2wm.errors import E2WMError, did_you_mean, error_line, release, reported
from e2wm.training.config import EWCConfig, ScriptArguments, parse, recipe_fields

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "accelerate_configs"  # package data
FLAG = "--accelerate_config"
# Flags of `accelerate launch` that name the config or the script: set here, never passed through
RESERVED = frozenset({"--config_file", "--config-file", "-m", "--module", "--no_python", "--no-python"})


def requested(argv: list[str]) -> bool:
    """Whether ``argv`` (of ``e2wm train``) asks for a launch: it has ``--accelerate_config``."""
    return any(_flag(arg) == FLAG for arg in argv)


def config_names() -> list[str]:
    """The names of the shipped accelerate configs (``cpu``, ``ddp``, ...)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def config_file(value: str) -> str:
    """The accelerate config that ``value`` names: a file, or the shipped config of that name."""
    if Path(value).is_file():
        return value
    shipped = CONFIGS_DIR / f"{value}.yaml"
    if shipped.is_file():
        return str(shipped)
    names = config_names()
    raise E2WMError(
        f"unknown accelerate config {value!r}{did_you_mean(value, names)}: "
        f"name one of {', '.join(names)}, or a config file"
    )


def split_argv(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """``argv`` of ``e2wm train`` as the accelerate config file, the flags for ``accelerate launch`` and
    the training's arguments. A flag goes to the launcher when ``accelerate launch`` takes it and no recipe
    field has its name (``--gradient_accumulation_steps`` and ``--debug`` stay the training's)."""
    fields = recipe_fields((ScriptArguments, SFTConfig, ModelConfig, EWCConfig))
    actions = launch_command_parser()._option_string_actions  # noqa: SLF001  # argparse keeps them here
    config, launch, training = None, [], []
    i = 0
    while i < len(argv):
        arg, flag = argv[i], _flag(argv[i])
        inline = "=" in arg
        follows = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if flag == FLAG:
            if not inline and not follows:
                raise E2WMError(f"{FLAG} needs a config name ({', '.join(config_names())}) or file")
            config = arg.partition("=")[2] if inline else argv[i + 1]
            i += 1 if inline else 2
            continue
        action = actions.get(flag)
        if action is None or flag in RESERVED or flag[2:].replace("-", "_") in fields:
            training.append(arg)
            i += 1
            continue
        width = 2 if action.nargs != 0 and not inline and follows else 1
        launch += argv[i : i + width]
        i += width
    if config is None:
        raise E2WMError(f"{FLAG} needs a config name ({', '.join(config_names())}) or file")
    return config_file(config), launch, training


def _flag(arg: str) -> str:
    """A command-line flag without its ``=value``, ``--accelerate-config`` spelt ``--accelerate_config``."""
    flag = arg.partition("=")[0]
    return FLAG if flag == "--accelerate-config" else flag


def check_config(path: str) -> None:
    """The accelerate config at ``path`` reads, and what it launches is installed."""
    try:
        config = load_config_from_file(path)
    except Exception as exc:  # noqa: BLE001  # yaml, json and the config classes raise several types
        raise E2WMError(f"accelerate config {path}: unreadable ({error_line(exc)})") from None
    if str(config.distributed_type).endswith("DEEPSPEED") and importlib.util.find_spec("deepspeed") is None:
        raise E2WMError(f"accelerate config {path} uses DeepSpeed: pip install 'e2wm[deepspeed]'")


def launch(argv: list[str]) -> None:
    """Check the training configuration and the accelerate config, then run the training processes."""
    config, launch_flags, training = split_argv(argv)
    parse([a for a in training if a != "--verbose"])  # fails here, once, not in every process
    check_config(config)
    parser = launch_command_parser()
    parser.error = _launcher_error  # one line, not argparse's usage
    args = parser.parse_args(
        ["--config_file", config, *launch_flags, "--module", "e2wm.training.train", *training]
    )
    release()  # the input is checked: the processes' own output shows from here on
    try:
        launch_command(args)
    except ValueError as exc:  # accelerate's checks of the launch flags against the config
        raise E2WMError(f"accelerate launch: {error_line(exc)}") from None
    except subprocess.CalledProcessError as exc:  # the process said why
        raise SystemExit(exc.returncode) from None
    except ChildFailedError as exc:  # one of several processes failed; they said why
        raise SystemExit(max(exc.get_first_failure()[1].exitcode, 1)) from None


def _launcher_error(message: str) -> NoReturn:
    raise E2WMError(f"accelerate launch: {message}")


def main(argv: list[str]) -> None:
    """``e2wm train ... --accelerate_config NAME|FILE``."""
    with reported("train", "--verbose" in argv):
        launch(argv)
