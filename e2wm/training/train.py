r"""Fine-tune a causal LM on an e2wm corpus with LoRA (or full fine-tuning) plus EWC.

    accelerate launch --config_file accelerate_configs/cpu.yaml -m e2wm.training.train \
        --config recipes/RECIPE.yaml
    e2wm train --config recipes/RECIPE.yaml [--field value ...]

The recipe maps onto ``ScriptArguments``, TRL's ``SFTConfig`` and ``ModelConfig``, and ``EWCConfig``
(``e2wm.training.config``); flags override it. The Fisher is read from ``fisher_path``, or estimated on
the base model and saved there first (by the main process; the others wait). A run whose ``output_dir``
holds checkpoints resumes from the last one. The adapter (or model) and tokenizer are saved to ``output_dir``.
"""

from __future__ import annotations

import contextlib
import random
import sys
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig, get_peft_config, get_quantization_config

from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError, did_you_mean, libraries_deprecation, release, reported
from e2wm.eval.config import SUITES, EvalConfig
from e2wm.eval.run import evaluate
from e2wm.files import output_lock
from e2wm.training import general_text
from e2wm.training.checkpoints import end_processes, resume_point
from e2wm.training.config import EWCConfig, ScriptArguments, parse
from e2wm.training.fisher import estimate_fisher, factor, load_fisher, save_fisher
from e2wm.training.models import DEFAULT_MODEL, check_model, resolve_model
from e2wm.training.recipe import save_recipe
from e2wm.training.trainer import EWCSFTTrainer

COLUMNS = ("prompt", "completion", "weight")
# bitsandbytes warns on every CPU import that an optional kernel package is missing; 4-bit CPU kernels


def load_corpus(script: ScriptArguments, split: str) -> datasets.Dataset:
    """One split of the corpus, reduced to prompt, completion and weight (with ``task_weights`` applied)."""
    corpus = open_corpus(script.dataset)
    if split not in corpus:
        raise E2WMError(f"corpus {script.dataset} has no split {split!r} (it has {', '.join(corpus)})")
    ds = corpus[split]
    missing = {"prompt", "completion", "task"} - set(ds.column_names)
    if missing:
        raise E2WMError(
            f"corpus {script.dataset}: split {split} lacks column(s) {', '.join(sorted(missing))}"
        )
    if script.tasks:
        ds = ds.filter(lambda e: e["task"] in script.tasks)
    weights = script.weights()
    if weights:
        ds = ds.map(lambda e: {"weight": float(weights.get(e["task"], e.get("weight", 1.0)))})
    elif "weight" not in ds.column_names:
        ds = ds.add_column("weight", [1.0] * len(ds))
    if script.max_train_examples is not None and split == script.train_split:
        ds = ds.select(range(min(script.max_train_examples, len(ds))))
    if len(ds) == 0:
        raise E2WMError(f"corpus {script.dataset}: no examples left in split {split}")
    return ds.select_columns(list(COLUMNS))


def mix_replay(script: ScriptArguments, ds: datasets.Dataset, seed: int) -> datasets.Dataset:
    """The train split with ``replay_fraction`` of general prose mixed in, shuffled with ``seed``.

    round(f / (1 - f) * n) passages of ``e2wm.training.general_text`` part "fisher" (never "retention", which
    the eval holds out) of ``replay_source``, taken in a seeded order and cycled if more are needed, each an
    example ``{"prompt": "", "completion": passage, "weight": 1.0}``. With ``completion_only_loss`` TRL
    masks the tokens of the tokenized prompt, which for "" is no token (or the tokenizer's BOS, if it adds
    one): the loss covers the whole passage. ``replay_fraction`` 0 returns ``ds`` unchanged.
    """
    script.check_replay()
    if script.replay_fraction == 0:
        return ds
    count = round(script.replay_fraction / (1 - script.replay_fraction) * len(ds))
    if count == 0:
        return ds
    texts = general_text.passages("fisher", script.replay_source)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    replay = datasets.Dataset.from_dict(
        {
            "prompt": [""] * count,
            "completion": [texts[order[i % len(order)]] for i in range(count)],
            "weight": [1.0] * count,
        },
        features=ds.features,
    )
    return datasets.concatenate_datasets([ds, replay]).shuffle(seed=seed).flatten_indices()


def fisher_for(
    ewc: EWCConfig, model: Any, tokenizer: Any, targets: list[str] | str
) -> dict[str, torch.Tensor]:
    """The Fisher at ``ewc.fisher_path``, estimated and saved there (by one process) if missing."""
    if ewc.fisher_path is None:
        raise E2WMError("ewc_lambda > 0 needs fisher_path (a file from `e2wm fisher`, or where to save one)")
    path = Path(ewc.fisher_path)
    with PartialState().main_process_first():
        if not path.exists() and PartialState().is_main_process:
            fisher, metadata = estimate_fisher(
                model, tokenizer, ewc.fisher_data, ewc.fisher_samples, ewc.fisher_max_length, targets
            )
            if ewc.fisher_rank > 0:
                fisher, metadata = factor(fisher, metadata, ewc.fisher_rank)
            save_fisher(path, fisher, metadata)
    return load_fisher(path)[0]


def eval_config(script: ScriptArguments, training: SFTConfig, model_args: ModelConfig) -> EvalConfig | None:
    """The ``e2wm eval`` run on the trained adapter that ``eval_suite`` asks for (None: none), checked."""
    if script.eval_suite is None:
        return None
    if script.eval_suite not in SUITES:
        raise E2WMError(
            f"unknown eval_suite {script.eval_suite!r}: choose one of {', '.join(SUITES)}"
            + did_you_mean(script.eval_suite, SUITES)
        )
    if get_peft_config(model_args) is None:
        raise E2WMError("eval_suite evaluates a LoRA adapter: set use_peft, or leave eval_suite unset")
    config = EvalConfig(
        model=model_args.model_name_or_path or DEFAULT_MODEL,
        adapter=training.output_dir,
        corpus=script.dataset,
        suite=script.eval_suite,
        limit=script.eval_limit,
        out=str(Path(training.output_dir) / "eval"),
    )
    config.validate()
    return config


def train(
    script: ScriptArguments, training: SFTConfig, model_args: ModelConfig, ewc: EWCConfig
) -> EWCSFTTrainer:
    """Train as configured; returns the trainer (its model holds the trained adapter). A second job
    training into the same ``output_dir`` at once is refused."""
    main = PartialState().is_main_process  # the other processes write nothing of their own
    with output_lock(training.output_dir) if main else contextlib.nullcontext():
        return _train(script, training, model_args, ewc)


def _train(
    script: ScriptArguments, training: SFTConfig, model_args: ModelConfig, ewc: EWCConfig
) -> EWCSFTTrainer:
    evaluation = eval_config(script, training, model_args)  # a bad eval_suite fails before training
    check_model(model_args.model_name_or_path or DEFAULT_MODEL, model_args.model_revision)
    train_ds = load_corpus(script, script.train_split)  # bad data fails before any model is loaded
    train_ds = mix_replay(script, train_ds, training.seed)
    eval_ds = load_corpus(script, script.eval_split) if script.eval_split else None
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    model_path = resolve_model(model_args.model_name_or_path or DEFAULT_MODEL)
    remote = training.trust_remote_code  # off unless the recipe asks for it
    tokenizer = AutoTokenizer.from_pretrained(
        model_path, revision=model_args.model_revision, trust_remote_code=remote
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    quantization = get_quantization_config(model_args)
    model = AutoModelForCausalLM.from_pretrained(
        model_path,
        revision=model_args.model_revision,
        trust_remote_code=remote,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype or "auto",
        quantization_config=quantization,
        # k-bit weights load straight onto each process's own device
        device_map={"": PartialState().local_process_index} if quantization is not None else None,
        use_safetensors=True,
    )
    peft_config = get_peft_config(model_args)
    targets = (model_args.lora_target_modules or "all-linear") if peft_config is not None else "all-linear"
    fisher = fisher_for(ewc, model, tokenizer, targets) if ewc.ewc_lambda > 0 else None
    if training.completion_only_loss is None:
        training.completion_only_loss = True
    with libraries_deprecation(".*is_gradient_checkpointing.*"):  # PEFT's get_peft_model calls it
        trainer = EWCSFTTrainer(
            model=model,
            args=training,
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            processing_class=tokenizer,
            peft_config=peft_config,
            fisher=fisher,
            ewc_lambda=ewc.ewc_lambda,
        )
    trainer.train(resume_from_checkpoint=resume_point(training))
    trainer.save_model(training.output_dir)
    end_processes(trainer)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training.output_dir)
        save_recipe(training.output_dir, script, training, model_args, ewc)
        if evaluation is not None:
            evaluate(evaluation, progress=True)
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m e2wm.training.train`` / ``accelerate launch -m e2wm.training.train``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    with reported("train", verbose):
        train(*parse([a for a in argv if a != "--verbose"]))


if __name__ == "__main__":
    main()
