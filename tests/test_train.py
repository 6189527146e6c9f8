"""EWC-LoRA training through TRL: adapters only, lambda 0 is plain LoRA, weights, resume, data parallel."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from support.tolerances import FLOAT32_EPS, float32_tolerance, llama_roundings
from transformers import AutoConfig, AutoModelForCausalLM, TrainerCallback
from trl import SFTTrainer

from e2wm.errors import E2WMError
from e2wm.training.config import parse
from e2wm.training.train import load_corpus, train

ROOT = Path(__file__).resolve().parents[1]


def argv(lm, corpus, out, *extra):
    return [
        "--model_name_or_path", str(lm), "--dtype", "float32", "--dataset", str(corpus),
        "--output_dir", str(out),
        "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0",
        "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "3", "--per_device_train_batch_size", "4",
        "--learning_rate", "0.01", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
        "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "1", "--max_length", "64",
        "--seed", "0", *extra,
    ]  # fmt: skip


def adapter(out):
    return load_file(str(Path(out) / "adapter_model.safetensors"))


def run(lm, corpus, out, *extra):
    return train(*parse(argv(lm, corpus, out, *extra)))


def adapter_atol(lm, weights: dict, steps: int = 3, lr: float = 0.01) -> float:
    """How far the adapters of two float32 runs of the same Adam steps (argv's) may end apart, to first order.

    Each gradient element is a float32 result (tolerances.py): the forward and backward passes through the
    LM with its rank-4 LoRA layers on up to 64 tokens, a sum over the batch's 4 x 64 tokens, an all-reduce
    (2): relative error at most rho (its terms do not cancel much). Adam's step lr * m_hat / (sqrt(v_hat) +
    eps) is then off by at most 2 rho times lr (|m_hat| / sqrt(v_hat) <= ~1 over a few steps), and each
    update of a weight rounds relative to it. Twice that, for two runs.
    """
    config = AutoConfig.from_pretrained(lm)
    rho = float32_tolerance(2 * llama_roundings(config, 64, lora_rank=4) + 4 * 64 + 2, 1.0)
    largest = max(v.abs().max().item() for v in weights.values())
    return 2 * steps * (lr * 2 * rho + FLOAT32_EPS * largest)


def test_three_steps_change_only_adapter_weights(lm, corpus, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(lm).state_dict()
    trainer = run(lm, corpus, tmp_path / "out")
    trained = {
        k.replace("base_model.model.", "").replace(".base_layer", ""): v
        for k, v in trainer.model.state_dict().items()
        if "lora_" not in k
    }
    assert all(torch.equal(trained[k], v) for k, v in base.items())
    lora = adapter(tmp_path / "out")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())
    assert trainer.state.global_step == 3


def test_lambda_zero_is_exactly_plain_lora(lm, corpus, tmp_path):
    ours = run(lm, corpus, tmp_path / "ours", "--ewc_lambda", "0")
    script, training, model_args, _ = parse(argv(lm, corpus, tmp_path / "plain"))
    from trl import get_peft_config

    from e2wm.training.train import load_corpus as corpus_split

    training.completion_only_loss = True
    plain = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(lm),
        args=training,
        train_dataset=corpus_split(script, "train").remove_columns("weight"),
        peft_config=get_peft_config(model_args),
    )
    plain.train()
    theirs = {k: v for k, v in plain.model.state_dict().items() if "lora_" in k}
    mine = {k: v for k, v in ours.model.state_dict().items() if "lora_" in k}
    assert mine.keys() == theirs.keys()
    atol = adapter_atol(lm, theirs)
    assert all(torch.allclose(mine[k], theirs[k], rtol=0.0, atol=atol) for k in mine)


def test_ewc_penalty_is_logged_and_holds_weights_back(lm, corpus, tmp_path):
    fisher = tmp_path / "fisher.safetensors"
    common = ("--fisher_path", str(fisher), "--fisher_samples", "8", "--fisher_max_length", "32")
    free = run(lm, corpus, tmp_path / "free", "--ewc_lambda", "0")
    held = run(lm, corpus, tmp_path / "held", "--ewc_lambda", "1e7", *common)
    assert fisher.exists()
    logs = [entry for entry in held.state.log_history if "ewc_penalty" in entry]
    assert logs and all("ce_loss" in entry for entry in logs) and logs[-1]["ewc_penalty"] > 0
    from e2wm.training.fisher import load_fisher

    values, metadata = load_fisher(fisher)
    assert metadata["data"] == "general"

    def distance(trainer):
        total = 0.0
        for name, module in trainer.model.named_modules():
            if hasattr(module, "get_delta_weight"):
                key = name.replace("base_model.model.", "") + ".weight"
                total += float((values[key] * module.get_delta_weight("default").detach() ** 2).sum())
        return total

    assert distance(held) < distance(free)


def test_task_weights_scale_each_examples_loss(lm, corpus, tmp_path):
    """With every example weighted 0, no gradient reaches the adapter: it stays at its initialization."""
    trainer = run(
        lm,
        corpus,
        tmp_path / "zero",
        "--task_weights",
        json.dumps({"counting": 0.0, "activity_recognition": 0.0}),
    )
    lora_b = [v for k, v in trainer.model.state_dict().items() if "lora_B" in k]
    assert all(torch.count_nonzero(v) == 0 for v in lora_b)
    counting_only = run(
        lm, corpus, tmp_path / "half", "--task_weights", json.dumps({"activity_recognition": 0.0})
    )
    assert any(
        torch.count_nonzero(v) > 0 for k, v in counting_only.model.state_dict().items() if "lora_B" in k
    )


class _Killed(Exception):
    pass


class _KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise _Killed


def test_resume_from_checkpoint_continues_identically(lm, corpus, tmp_path, monkeypatch):
    saving = ("--save_strategy", "steps", "--save_steps", "2", "--max_steps", "4")
    straight = run(lm, corpus, tmp_path / "straight", *saving)
    from e2wm.training import trainer as trainer_module

    original = trainer_module.EWCSFTTrainer.__init__

    def killed_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(_KillAfterSave())

    monkeypatch.setattr(trainer_module.EWCSFTTrainer, "__init__", killed_init)
    with pytest.raises(_Killed):
        run(lm, corpus, tmp_path / "resumed", *saving)
    monkeypatch.setattr(trainer_module.EWCSFTTrainer, "__init__", original)
    assert (tmp_path / "resumed" / "checkpoint-2").is_dir()
    resumed = run(lm, corpus, tmp_path / "resumed", *saving)
    assert resumed.state.global_step == 4
    a, b = adapter(tmp_path / "straight"), adapter(tmp_path / "resumed")
    # the resumed run repeats the straight run's operations on the same values: bit for bit
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.state.global_step == 4


DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
from e2wm.training.config import parse
from e2wm.training.train import train

trainer = train(*parse(sys.argv[1:-1]))
threads = sorted(p.read_text().strip() for p in Path(f"/proc/{os.getpid()}/task").glob("*/comm"))
ended = {"world": trainer.accelerator.num_processes, "threads": threads}
json.dump(ended, open(f"{sys.argv[-1]}.{trainer.accelerator.process_index}", "w"))
"""


def test_two_process_data_parallel_matches_one_process(lm, corpus, tmp_path):
    """torchrun, 2 CPU processes (gloo) with 2 examples each, equals 1 process with the global batch of 4."""
    small = ("--max_train_examples", "4")
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    world = tmp_path / "world.json"
    two = tmp_path / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
         str(script), *argv(lm, corpus, two, "--per_device_train_batch_size", "2", *small), str(world)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        ended = json.loads(Path(f"{world}.{rank}").read_text())
        assert ended["world"] == 2
        # the gloo group was freed before the interpreter's teardown: its worker threads are gone
        assert not [t for t in ended["threads"] if "gloo" in t], ended["threads"]
    one = run(lm, corpus, tmp_path / "one", "--per_device_train_batch_size", "4", *small)
    assert one.accelerator.num_processes == 1
    a, b = adapter(two), adapter(tmp_path / "one")
    atol = adapter_atol(lm, b)
    assert all(torch.allclose(a[k], b[k], rtol=0.0, atol=atol) for k in a)


def test_bad_corpus_is_one_line_error(lm, tmp_path):
    script, *_ = parse(argv(lm, tmp_path / "missing", tmp_path / "out"))
    with pytest.raises(E2WMError, match="cannot load corpus"):
        load_corpus(script, "train")
    proc = subprocess.run(
        [sys.executable, "-m", "e2wm.training.train", *argv(lm, tmp_path / "missing", tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "cannot load corpus" in proc.stderr


def test_unknown_task_in_a_recipe_is_one_line_error_before_any_model(lm, corpus, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tasks: [counting, juggling]\n")
    with pytest.raises(E2WMError, match="unknown task\\(s\\) juggling"):
        parse(["--config", str(recipe), *argv(lm, corpus, tmp_path / "out")])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "e2wm.training.train",
            "--config",
            str(recipe),
            *argv(lm, corpus, tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown task(s) juggling" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses_and_names_its_launch_command(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# accelerate launch --config_file accelerate_configs/")
    video = recipe.name.startswith("video_")  # the multimodal stages: e2wm.training.train_video
    entry = "train_video" if video else "train"
    assert first.endswith(f"-m e2wm.training.{entry} --config recipes/{recipe.name}")
    launch_config = ROOT / first.split("--config_file ")[1].split()[0]
    assert launch_config.exists()
    keys = yaml.safe_load(recipe.read_text())
    # Parse on this CPU machine: GPU precision flags are overridden, every other value is checked.
    flags = ["--config", str(recipe), "--bf16", "false", "--fp16", "false", "--use_cpu", "true"]
    if video:
        from e2wm.training.train_video import parse as parse_video

        script, training, model_args = parse_video(flags)
        assert script.stage == keys["stage"] and training.output_dir == keys["output_dir"]
        return
    script, training, model_args, ewc = parse(flags)
    assert model_args.model_name_or_path == keys["model_name_or_path"]
    assert training.output_dir == keys["output_dir"] and ewc.ewc_lambda == keys.get("ewc_lambda", 0.0)


@pytest.mark.parametrize("config", sorted((ROOT / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_accelerate_config_parses(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(str(config))
    assert str(loaded.distributed_type).split(".")[-1] in {"NO", "MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert loaded.num_processes >= 1


def test_a_rerun_resumes_from_the_newest_complete_checkpoint(tmp_path):
    """A job killed while saving leaves a checkpoint without its trainer state, or with it cut short:
    the rerun takes the one before (by step number, not by name: 10 after 9)."""
    from e2wm.training.checkpoints import last_complete_checkpoint

    assert last_complete_checkpoint(str(tmp_path / "none")) is None
    for step, state in ((9, "{}"), (10, '{"global_step": 10}'), (11, None), (12, '{"global_st')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")


def test_report_to_tensorboard_logs_the_losses_and_the_penalty(lm, corpus, tmp_path):
    """``report_to: tensorboard`` (the ``trackers`` extra): the Trainer's own callback writes the loss and
    e2wm's ``ce_loss`` and ``ewc_penalty`` beside it, one point per logged step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fisher = ("--fisher_path", str(tmp_path / "fisher.safetensors"), "--fisher_samples", "4")
    out = tmp_path / "run"
    args = argv(lm, corpus, out, "--ewc_lambda", "1e3", *fisher)
    args[args.index("--report_to") + 1] = "tensorboard"
    train(*parse(args))
    (events,) = {p.parent for p in (out / "runs").rglob("events.out.tfevents.*")}  # the Trainer's default
    scalars = EventAccumulator(str(events)).Reload()
    assert {"train/loss", "train/ce_loss", "train/ewc_penalty"} <= set(scalars.Tags()["scalars"])
    assert [e.step for e in scalars.Scalars("train/ewc_penalty")] == [1, 2, 3]


def test_trls_script_argument_names_are_accepted(corpus, tmp_path):
    """A recipe or command line written for ``trl sft`` names the data as TRL does."""
    recipe = tmp_path / "trl.yaml"
    recipe.write_text(
        f"dataset_name: {corpus}\ndataset_train_split: validation\noutput_dir: {tmp_path}\nuse_cpu: true\n"
    )
    script, *_ = parse(["--config", str(recipe), "--dataset_test_split", "train"])
    assert (script.dataset, script.train_split, script.eval_split) == (str(corpus), "validation", "train")
    assert script.dataset_name is None  # recorded once, under e2wm's name
