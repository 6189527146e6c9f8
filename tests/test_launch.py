"""``e2wm train --accelerate_config``: the shipped configs (package data, and the top-level link to them),
which flags go to ``accelerate launch``, one-line errors before any process starts, and a launch of two
data-parallel processes that trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from e2wm import cli
from e2wm.training.launch import CONFIGS_DIR, config_file, config_names, requested, split_argv

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["cpu", "ddp", "fsdp", "single_gpu", "zero2", "zero3"]


def tiny_argv(lm: Path, corpus: Path, out: Path) -> list[str]:
    return [
        "--model_name_or_path", str(lm), "--dtype", "float32", "--dataset", str(corpus),
        "--output_dir", str(out), "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8",
        "--lora_dropout", "0.0", "--lora_target_modules", "q_proj", "v_proj", "--learning_rate", "0.01",
        "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--eval_strategy", "no",
        "--max_length", "64", "--seed", "0",
    ]  # fmt: skip


def test_the_named_configs_ship_with_the_package_and_the_old_path_still_works():
    assert config_names() == SHIPPED
    assert CONFIGS_DIR == ROOT / "e2wm" / "accelerate_configs"
    assert (ROOT / "accelerate_configs").resolve() == CONFIGS_DIR  # `--config_file accelerate_configs/X.yaml`
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "accelerate_configs/*.yaml" in project["tool"]["setuptools"]["package-data"]["e2wm"]
    assert config_file("zero2") == str(CONFIGS_DIR / "zero2.yaml")
    assert config_file("accelerate_configs/cpu.yaml") == "accelerate_configs/cpu.yaml"  # a file, as given


def test_launcher_flags_are_those_no_recipe_field_takes():
    argv = [
        "--config", "r.yaml", "--accelerate_config", "ddp", "--num_processes", "2", "--debug",
        "--gradient_accumulation_steps", "2", "--main_process_port=29999", "--lora_target_modules", "q_proj",
        "v_proj", "--multi_gpu", "--verbose",
    ]  # fmt: skip
    config, launch, training = split_argv(argv)
    assert config == str(CONFIGS_DIR / "ddp.yaml")
    assert launch == ["--num_processes", "2", "--main_process_port=29999", "--multi_gpu"]
    # --debug and --gradient_accumulation_steps are TrainingArguments' fields too: the training's
    assert training == [
        "--config", "r.yaml", "--debug", "--gradient_accumulation_steps", "2",
        "--lora_target_modules", "q_proj", "v_proj", "--verbose",
    ]  # fmt: skip
    assert requested(["--accelerate-config=cpu"]) and not requested(["--config", "accelerate_config.yaml"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--accelerate_config", "zero9"], "unknown accelerate config 'zero9' (did you mean zero3?): "
         "name one of cpu, ddp, fsdp, single_gpu, zero2, zero3, or a config file"),
        (["--accelerate_config"], "--accelerate_config needs a config name (cpu, ddp"),
        (["--accelerate_config", "cpu", "--lerning_rate", "1"], "unknown flag --lerning_rate"),
        (["--accelerate_config", "cpu", "--num_processes", "two"],
         "accelerate launch: argument --num_processes"),
    ],
)  # fmt: skip
def test_bad_launch_input_is_one_line_before_any_process(argv, message, tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    launched = []
    monkeypatch.setattr("e2wm.training.launch.launch_command", launched.append)
    with pytest.raises(SystemExit) as exit_:
        cli.main(
            ["train", *argv, "--output_dir", str(tmp_path / "out"), "--use_cpu", "true", "--bf16", "false"]
        )
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("e2wm train: error: ") and message in err
    assert not launched and not (tmp_path / "out").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_launches_two_processes_that_train_the_adapter(lm, corpus, tmp_path):
    """4 examples, 2 per process and step: one epoch is one step with 2 processes (2 steps with one)."""
    out = tmp_path / "out"
    launch = ["--accelerate_config", "ddp", "--num_processes", "2", "--mixed_precision", "no"]
    launch += ["--main_process_port", str(_free_port())]
    train = ["--max_train_examples", "4", "--per_device_train_batch_size", "2", "--num_train_epochs", "1"]
    train += ["--save_strategy", "epoch"]
    proc = subprocess.run(
        [sys.executable, "-m", "e2wm", "train", *launch, *tiny_argv(lm, corpus, out), *train],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").is_file() and (out / "e2wm_recipe.yaml").is_file()
    (checkpoint,) = out.glob("checkpoint-*")
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == 1


def test_a_failing_process_gives_its_one_line_and_status(lm, tmp_path):
    """The cpu config's one process fails on a corpus that is not there: its line, its status, no more."""
    argv = tiny_argv(lm, tmp_path / "missing", tmp_path / "out")
    proc = subprocess.run(
        [sys.executable, "-m", "e2wm", "train", "--accelerate_config", "cpu", *argv],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"e2wm train: error: cannot load corpus {tmp_path / 'missing'}: no such directory"
    ]
    assert not (tmp_path / "out").exists()
