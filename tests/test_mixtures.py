"""Training mixtures in TRL's shape (``datasets:``, ``test_split_size``): what each entry contributes, the
``fraction`` shares and held-out share as ``trl sft`` computes them, e2wm's task filters and weights on
them, a run that trains on one and records it, and one-line errors for bad entries before any model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from e2wm import cli
from e2wm.errors import E2WMError
from e2wm.training.config import parse
from e2wm.training.recipe import RECIPE_NAME
from e2wm.training.train import load_corpus, train

pytestmark = pytest.mark.usefixtures("one_thread")
EXTRA = ("mug", "book", "tv", "chair", "table", "fridge")  # the second dataset: one example per word


@pytest.fixture(scope="module")
def extra(tmp_path_factory) -> Path:
    """A JSONL file of prompt/completion examples (no task, no weight), in the tiny LM's vocabulary."""
    path = tmp_path_factory.mktemp("extra") / "extra.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"what is this {w} ?", "completion": f" {w}"}) + "\n" for w in EXTRA)
    )
    return path


def _named(entry: dict | str, names: dict[str, str]) -> dict | str:
    """``entry`` with the placeholders CORPUS and EXTRA (as whole values) replaced by the fixtures' paths."""
    if isinstance(entry, str):
        return names.get(entry, entry)
    return {k: names.get(v, v) if isinstance(v, str) else v for k, v in entry.items()}


def recipe(tmp_path: Path, mixture: dict, *extra_keys: str) -> list[str]:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump({"output_dir": str(tmp_path / "out"), "use_cpu": True, "bf16": False, **mixture})
    )
    return ["--config", str(path), *extra_keys]


def two(corpus: Path, extra: Path, fraction: float | None = None) -> list[dict]:
    """The tiny corpus's train split (16 examples, two tasks) and the JSONL file, named as TRL's are."""
    entries = [
        {"path": str(corpus), "split": "train"},
        {"path": "json", "data_files": str(extra), "split": "train", "columns": ["prompt", "completion"]},
    ]
    return [{**e, "fraction": fraction} for e in entries] if fraction else entries


def test_the_mixture_is_both_datasets_in_their_order(corpus, extra, tmp_path):
    script, *_ = parse(recipe(tmp_path, {"datasets": two(corpus, extra)}))
    ds = load_corpus(script, "train")
    assert ds.column_names == ["prompt", "completion", "weight"]
    assert len(ds) == 16 + len(EXTRA)
    assert ds["completion"][16:] == [f" {w}" for w in EXTRA] and ds["weight"][16:] == [1.0] * len(EXTRA)
    assert Counter(ds["completion"][:16]) == {" drink": 8, " no items": 8}


def test_fractions_and_the_held_out_share_follow_trl(corpus, extra, tmp_path):
    """Shares 1/2 and 1/2 of 16 and 6 rows: N = min(16, 6) / (1/2) = 12, the first 6 rows of each; a test
    share of 1/4 holds out ceil(12 / 4) = 3 of them for evaluation, the same ones on every load."""
    script, *_ = parse(recipe(tmp_path, {"datasets": two(corpus, extra, 0.5), "test_split_size": 0.25}))
    held_out, trained = load_corpus(script, "validation"), load_corpus(script, "train")
    assert (len(trained), len(held_out)) == (9, 3)
    rows = Counter(trained["prompt"]) + Counter(held_out["prompt"])
    whole = parse(recipe(tmp_path, {"datasets": two(corpus, extra)}))[0]
    everything = load_corpus(whole, "train")["prompt"]
    assert rows == Counter(everything[:6] + everything[16:])
    assert load_corpus(script, "validation")["prompt"] == held_out["prompt"]


def test_task_filters_and_weights_apply_to_the_corpus_rows(corpus, extra, tmp_path):
    mixture = {"datasets": two(corpus, extra), "tasks": ["counting"], "task_weights": {"counting": 0.5}}
    ds = load_corpus(parse(recipe(tmp_path, mixture))[0], "train")
    weights = dict(zip(ds["completion"], ds["weight"], strict=True))
    assert len(ds) == 8 + len(EXTRA) and " drink" not in weights
    assert weights[" no items"] == 0.5 and all(weights[f" {w}"] == 1.0 for w in EXTRA)


def test_max_train_examples_takes_the_same_sample_of_the_mixture_each_time(corpus, extra, tmp_path):
    script, *_ = parse(recipe(tmp_path, {"datasets": two(corpus, extra), "max_train_examples": 5}))
    sample = load_corpus(script, "train")["prompt"]
    assert len(sample) == 5 and sample == load_corpus(script, "train")["prompt"]
    assert not Counter(sample) - Counter(
        load_corpus(parse(recipe(tmp_path, {"datasets": two(corpus, extra)}))[0], "train")["prompt"]
    )


def test_text_and_chat_messages_do_not_mix(corpus, tmp_path):
    chat = tmp_path / "chat.jsonl"
    turn = {
        "prompt": [{"role": "user", "content": "what is this ?"}],
        "completion": [{"role": "assistant", "content": "mug"}],
    }
    chat.write_text(json.dumps(turn) + "\n")
    script, *_ = parse(recipe(tmp_path, {"datasets": [{"path": str(corpus)}, {"path": str(chat)}]}))
    with pytest.raises(
        E2WMError, match=r"datasets\[1\] .*chat.jsonl: its prompt and completion are not of the kind"
    ):
        load_corpus(script, "train")


def test_paths_on_the_command_line_are_entries_at_split_train(corpus, extra, tmp_path):
    script, *_ = parse(recipe(tmp_path, {}, "--datasets", str(corpus), str(extra)))
    assert [(e.path, e.split) for e in script.datasets] == [(str(corpus), "train"), (str(extra), "train")]
    assert len(load_corpus(script, "train")) == 16 + len(EXTRA)  # a data file read by its format's builder


def test_a_run_trains_on_the_mixture_and_records_it(lm, corpus, extra, tmp_path):
    flags = [
        "--model_name_or_path", str(lm), "--dtype", "float32", "--use_peft", "true", "--lora_r", "4",
        "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--report_to", "none", "--save_strategy", "no",
        "--eval_strategy", "no", "--max_length", "64", "--eval_split", "validation",
    ]  # fmt: skip
    args = recipe(tmp_path, {"datasets": two(corpus, extra), "dataset": str(corpus)}, *flags)
    trainer = train(*parse(args))
    assert len(trainer.train_dataset) == 16 + len(EXTRA)
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file()
    again, *_ = parse(["--config", str(out / RECIPE_NAME)])
    assert again.datasets == parse(args)[0].datasets


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([{"split": "train"}], "datasets[0]: no path"),
        ([{"path": "json", "splt": "train"}], "datasets[0]: unknown key 'splt' (did you mean split?)"),
        (
            [{"path": "nowhere", "split": "train"}],
            "datasets[0]: path nowhere: no such file or folder, nor a Hub",
        ),
        ([{"path": "json", "split": "train"}], "datasets[0]: path json reads data_files (or data_dir)"),
        ([{"path": "CORPUS", "split": None}], "datasets[0] CORPUS: no split"),
        ([{"path": "CORPUS", "fraction": 0.5}, {"path": "CORPUS"}], "give every entry a fraction, or none"),
        (["CORPUS"], "datasets[0]: expected a mapping of path, name"),
    ],
)
def test_a_bad_entry_is_one_line_at_parse(entries, message, corpus, tmp_path):
    entries = [_named(e, {"CORPUS": str(corpus)}) for e in entries]
    with pytest.raises(E2WMError) as error:
        parse(recipe(tmp_path, {"datasets": entries}))
    assert message.replace("CORPUS", str(corpus)) in str(error.value)


def test_a_held_out_share_needs_a_mixture_and_a_share(corpus, tmp_path):
    with pytest.raises(E2WMError, match="test_split_size holds out a share of a mixture: set datasets too"):
        parse(recipe(tmp_path, {"test_split_size": 0.1}))
    with pytest.raises(E2WMError, match=r"test_split_size must be in \(0, 1\), got 1.5"):
        parse(recipe(tmp_path, {"datasets": [{"path": str(corpus)}], "test_split_size": 1.5}))


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"path": "CORPUS", "split": "test"},
            "datasets[0] CORPUS: no split 'test' (it has train, validation)",
        ),
        (
            {"path": "json", "data_files": "EXTRA", "split": "validation"},
            'datasets[0] json: Unknown split "validation"',
        ),
        (
            {"path": "json", "data_files": "EXTRA", "columns": ["prompt"]},
            "datasets[0] json: split train lacks column(s) completion (it has prompt)",
        ),
        (
            {"path": "json", "data_files": "EXTRA", "columns": ["answer"]},
            "datasets[0] json: Column name ['answer'] not in the dataset",
        ),
    ],
)
def test_data_that_is_not_there_is_one_line_before_any_model(
    entry, message, lm, corpus, extra, tmp_path, capfd, monkeypatch
):
    """Through ``e2wm train``: exit status 2, the one line, and no model was resolved."""
    entry = _named(entry, {"CORPUS": str(corpus), "EXTRA": str(extra)})
    resolved = []
    monkeypatch.setattr("e2wm.training.train.resolve_model", resolved.append)
    args = recipe(tmp_path, {"datasets": [entry], "model_name_or_path": str(lm), "eval_split": None})
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", *args])
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert message.replace("CORPUS", str(corpus)) in err
    assert not resolved and not (tmp_path / "out").exists()
