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
import copy
import random
import sys
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig, get_peft_config, get_quantization_config
from trl.data_utils import is_conversational

from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError, did_you_mean, libraries_deprecation, release, reported
from e2wm.eval.config import SUITES, EvalConfig
from e2wm.eval.run import evaluate
from e2wm.files import is_hub_id, output_lock
from e2wm.memory import keep_freed_memory
from e2wm.training import general_text
from e2wm.training.checkpoints import end_processes, resume_point
from e2wm.training.config import EWCConfig, ScriptArguments, parse
from e2wm.training.fisher import estimate_fisher, factor, load_fisher, save_fisher
from e2wm.training.mixture import MIXTURE_SEED, load_mixture
from e2wm.training.models import DEFAULT_MODEL, check_model, resolve_model
from e2wm.training.recipe import save_recipe
from e2wm.training.trainer import EWCSFTTrainer

COLUMNS = ("prompt", "completion", "weight")


def load_corpus(script: ScriptArguments, split: str) -> datasets.Dataset:
    """One split of the training data, reduced to prompt, completion and weight (with ``task_weights``
    applied): of the corpus ``dataset``, or, with ``datasets``, of the mixture (the train split, and the eval
    split when ``test_split_size`` holds part of it out). ``tasks`` and ``task_weights`` apply to the examples
    that have a task (a corpus's); ``max_train_examples`` takes the first of a corpus, a seeded sample of a
    mixture (whose first entries would fill it otherwise)."""
    train = split == script.train_split
    mixed = bool(script.datasets) and (train or script.test_split_size is not None)
    ds = load_mixture(script, train) if mixed else corpus_split(script.dataset, split)
    if script.tasks:
        ds = ds.filter(lambda e: e["task"] is None or e["task"] in script.tasks)
    weights = script.weights()
    if weights:
        ds = ds.map(lambda e: {"weight": float(weights.get(e["task"], e.get("weight", 1.0)))})
    elif "weight" not in ds.column_names:
        ds = ds.add_column("weight", [1.0] * len(ds))
    if script.max_train_examples is not None and train:
        if mixed:
            ds = ds.shuffle(seed=MIXTURE_SEED)
        ds = ds.select(range(min(script.max_train_examples, len(ds))))
    if len(ds) == 0:
        where = "the mixture (datasets)" if mixed else f"corpus {script.dataset}"
        raise E2WMError(f"{where}: no examples left in split {split}")
    return ds.select_columns(list(COLUMNS))


def corpus_split(path: str, split: str) -> datasets.Dataset:
    """``split`` of the corpus at ``path``, checked to have prompt, completion and task columns."""
    corpus = open_corpus(path)
    if split not in corpus:
        raise E2WMError(f"corpus {path} has no split {split!r} (it has {', '.join(corpus)})")
    ds = corpus[split]
    missing = {"prompt", "completion", "task"} - set(ds.column_names)
    if missing:
        raise E2WMError(f"corpus {path}: split {split} lacks column(s) {', '.join(sorted(missing))}")
    return ds


def mix_replay(script: ScriptArguments, ds: datasets.Dataset, seed: int) -> datasets.Dataset:
    """The train split with ``replay_fraction`` of general prose mixed in, shuffled with ``seed``.

    round(f / (1 - f) * n) passages of ``e2wm.training.general_text`` part "fisher" (never "retention", which
    the eval holds out) of ``replay_source``, taken in a seeded order and cycled if more are needed, each an
    example ``{"prompt": "", "completion": passage, "weight": 1.0}``. With ``completion_only_loss`` TRL
    masks the tokens of the tokenized prompt, which for "" is no token (or the tokenizer's BOS, if it adds
    one): the loss covers the whole passage. In a conversational corpus (chat messages) a passage is an
    assistant turn after an empty user turn, and the loss covers the passage and the end of its turn.
    ``replay_fraction`` 0 returns ``ds`` unchanged.
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
    passages = [texts[order[i % len(order)]] for i in range(count)]
    prompts: list = [""] * count
    if isinstance(ds.features["prompt"], datasets.List):
        # Kept in a conversational corpus (replay is what holds general text against forgetting), with a
        # user turn: all rows share one schema, and TRL tells a row's format by its prompt's first message
        # (an empty list fails there). The turn is empty, so it says nothing the answers could lean on.
        prompts = [[{"role": "user", "content": ""}]] * count
        passages = [[{"role": "assistant", "content": p}] for p in passages]
    replay = datasets.Dataset.from_dict(
        {"prompt": prompts, "completion": passages, "weight": [1.0] * count}, features=ds.features
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


def hub_repo(training: SFTConfig, model_args: ModelConfig) -> str | None:
    """The model repo ``push_to_hub`` publishes to (None: no push): ``hub_model_id``, in the token's user's
    namespace when it names no owner, or as the Trainer names it, the user's repo named after ``output_dir``.
    Asking the Hub whose token it is checks the token before any training."""
    if not training.push_to_hub:
        return None
    from huggingface_hub import HfApi, get_token

    from e2wm.hub.push import check_repo_id, hub_errors

    if get_peft_config(model_args) is None:
        raise E2WMError("push_to_hub publishes a LoRA adapter as `e2wm push` does: set use_peft")
    if training.hub_token is None and get_token() is None:
        raise E2WMError(
            "push_to_hub needs a Hugging Face token: set HF_TOKEN or hub_token, or run `hf auth login`"
        )
    name = training.hub_model_id or Path(training.output_dir).absolute().name
    with hub_errors(name):
        user = HfApi(token=training.hub_token).whoami()["name"]
    repo_id = name if "/" in name else f"{user}/{name}"
    check_repo_id(repo_id, "hub_model_id")
    return repo_id


def trainer_args(training: SFTConfig) -> SFTConfig:
    """``training`` for the Trainer, its own Hub pushes off: they would create the repo at the start and
    upload ``output_dir`` as it is (TRL's card, training_args.bin) at each save. e2wm publishes the folder
    ``e2wm push`` stages once training (and the eval suite) is done instead."""
    if not training.push_to_hub:
        return training
    args = copy.copy(training)
    args.push_to_hub = False
    return args


def log_results(trainer: EWCSFTTrainer, results: dict[str, Any]) -> None:
    """The eval suite's scores to the trainer's trackers (``report_to``) at the final step, one scalar per
    split, task, variant and metric (``eval/SPLIT/TASK/VARIANT/METRIC``), and the retention perplexities
    (``eval/retention/SOURCE/VARIANT/perplexity``)."""
    logs = {
        f"eval_{r['split']}/{r['task']}/{r['variant']}/{r['metric']}": float(r["value"])
        for r in results.get("results") or []
    }
    logs |= {
        f"eval_retention/{r['source']}/{r['variant']}/perplexity": float(r["perplexity"])
        for r in results.get("retention") or []
        if r.get("perplexity") is not None
    }
    if logs:
        trainer.log(logs)


def publish(script: ScriptArguments, training: SFTConfig, repo_id: str, results: Path | None) -> None:
    """Push ``output_dir`` to ``repo_id`` as ``e2wm push`` does, with the eval suite's ``results`` if it ran;
    a corpus on the Hub is named in the card (and its scores go to ``.eval_results``), not pushed."""
    from e2wm.hub.push import push

    url = push(
        training.output_dir,
        repo_id,
        private=bool(training.hub_private_repo),
        dataset_repo_id=script.dataset if is_hub_id(script.dataset) else None,
        results=results,
        token=training.hub_token,
    )
    print(f"pushed {training.output_dir} to the Hub as model {repo_id}: {url}")


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
    repo_id = hub_repo(training, model_args)  # so does a push_to_hub without a valid token
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
    if len(train_ds) and is_conversational(train_ds[0]) and not tokenizer.chat_template:
        raise E2WMError(
            f"model {model_args.model_name_or_path or DEFAULT_MODEL} has no chat template, and the corpus is "
            "conversational (chat messages): train a chat model, or build the corpus with --format standard"
        )
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
            args=trainer_args(training),
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
            log_results(trainer, evaluate(evaluation, progress=True))
        if repo_id is not None:
            publish(script, training, repo_id, Path(evaluation.out) / "results.json" if evaluation else None)
    return trainer


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m e2wm.training.train`` / ``accelerate launch -m e2wm.training.train``."""
    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    with reported("train", verbose):
        train(*parse([a for a in argv if a != "--verbose"]))


if __name__ == "__main__":
    main()
