"""lm-eval integration: the e2wm task YAMLs, `lm_eval_rows`, and agreement with e2wm's own scorer."""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from support.tiny_lm import save_tiny_choice_corpus, save_tiny_lm
from support.tolerances import float32_tolerance, llama_roundings
from transformers import AutoModelForCausalLM, AutoTokenizer

import e2wm
from e2wm.corpus.read import open_corpus
from e2wm.errors import E2WMError
from e2wm.eval.harness import (
    MULTIPLE_CHOICE,
    TASKS_DIR,
    TEST_SPLITS,
    harness_task,
    lm_eval_rows,
    load_lm,
    run_tasks,
)
from e2wm.eval.scoring import choice_logprobs, evaluate_multiple_choice

ALL_NAMES = {harness_task(t, s) for t in MULTIPLE_CHOICE for s in TEST_SPLITS}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm_eval")
    model = save_tiny_lm(root / "model", seed=3)
    base = AutoModelForCausalLM.from_pretrained(model, use_safetensors=True)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero B
    get_peft_model(base, lora).save_pretrained(root / "adapter")
    return {"model": model, "corpus": save_tiny_choice_corpus(root / "corpus"), "adapter": root / "adapter"}


def _ours(model_dir: Path, adapter: Path | None = None):
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def _mc_examples(corpus: Path, split: str) -> list[dict]:
    return [ex for ex in open_corpus(str(corpus))[split] if ex["choices"]]


def _loglikelihoods(samples: list[dict]) -> list[list[float]]:
    return [[float(ll) for ll, _ in s["filtered_resps"]] for s in samples]


def _tolerances(model, scores: list[float], lora_rank: int = 0) -> list[float]:
    """How far two float32 computations of each sum of token log-probabilities may be apart: each within
    its rounding bound (tolerances.py) of the exact sum, the model on any sequence it takes plus a sum over
    a few tokens; every term is <= 0, so |sum| is the sum of |terms|."""
    config = model.config
    roundings = llama_roundings(config, config.max_position_embeddings, lora_rank) + 8
    return [2 * float32_tolerance(roundings, abs(s)) for s in scores]


def _within(got: list[float], want: list[float], tolerances: list[float]) -> bool:
    return len(got) == len(want) and all(
        abs(g - w) <= t for g, w, t in zip(got, want, tolerances, strict=True)
    )


@pytest.fixture
def network_attempts(monkeypatch) -> list:
    """Refuses and records every name lookup or connection (lm-eval swallows errors of some Hub calls)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_yamls_define_a_task_per_choice_task_and_split_and_three_groups():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(manager.all_subtasks) == ALL_NAMES
    assert set(manager.all_groups) == {"e2wm", "e2wm_seen", "e2wm_unseen"}


def test_rows_match_our_sum_scorer_item_by_item(tiny, network_attempts):
    rows = lm_eval_rows(str(tiny["model"]), None, str(tiny["corpus"]), TEST_SPLITS, None, None)
    assert {(r["task"], r["split"]) for r in rows} == {(t, s) for t in MULTIPLE_CHOICE for s in TEST_SPLITS}
    model, tokenizer = _ours(tiny["model"])
    for split in TEST_SPLITS:
        ours = evaluate_multiple_choice(model, tokenizer, _mc_examples(tiny["corpus"], split), "sum")
        for row in (r for r in rows if r["split"] == split):
            assert row["variant"] == "base" and row["metric"] == "accuracy"
            assert row["n"] == ours[row["task"]]["n"] == 4
            assert row["value"] == pytest.approx(ours[row["task"]]["accuracy"])
            assert row["ci_low"] == pytest.approx(ours[row["task"]]["ci_low"])
            assert row["ci_high"] == pytest.approx(ours[row["task"]]["ci_high"])

    names = sorted(ALL_NAMES)
    results = run_tasks(load_lm(str(tiny["model"]), None), str(tiny["corpus"]), names, None, log_samples=True)
    for name in names:
        for sample, lls in zip(
            results["samples"][name], _loglikelihoods(results["samples"][name]), strict=True
        ):
            doc = sample["doc"]
            # the context is the prompt as is, each continuation " " + choice (as the corpus completion)
            assert [tuple(a) for a in sample["arguments"]] == [
                (doc["prompt"], " " + c) for c in doc["choices"]
            ]
            mine = [
                s
                for s, _ in choice_logprobs(
                    model, tokenizer, doc["prompt"], [" " + c for c in doc["choices"]]
                )
            ]
            assert _within(lls, mine, _tolerances(model, mine)), (lls, mine)
            guess = max(range(len(mine)), key=mine.__getitem__)
            assert sample["acc"] == float(guess == doc["label"])
    assert not network_attempts


def test_adapter_is_applied_and_rows_are_fine_tuned(tiny, network_attempts):
    rows = lm_eval_rows(
        str(tiny["model"]),
        str(tiny["adapter"]),
        str(tiny["corpus"]),
        ["test_seen"],
        2,
        ["housework_qa", "counting"],
    )
    assert [(r["variant"], r["task"], r["split"], r["n"]) for r in rows] == [
        ("fine-tuned", "housework_qa", "test_seen", 2)
    ]
    name = harness_task("housework_qa", "test_seen")
    tuned = run_tasks(load_lm(str(tiny["model"]), str(tiny["adapter"])), str(tiny["corpus"]), [name], 2, True)
    model, tokenizer = _ours(tiny["model"], tiny["adapter"])
    base, _ = _ours(tiny["model"])
    for sample, lls in zip(tuned["samples"][name], _loglikelihoods(tuned["samples"][name]), strict=True):
        conts = [" " + c for c in sample["doc"]["choices"]]
        with_adapter = [s for s, _ in choice_logprobs(model, tokenizer, sample["doc"]["prompt"], conts)]
        without = [s for s, _ in choice_logprobs(base, tokenizer, sample["doc"]["prompt"], conts)]
        assert _within(lls, with_adapter, _tolerances(model, with_adapter, lora_rank=4)), (lls, with_adapter)
        assert not _within(lls, without, _tolerances(model, without, lora_rank=4))  # by more than rounding
    assert not network_attempts


def test_cli_path_finds_the_corpus_through_the_env_from_another_directory(tiny, tmp_path, monkeypatch):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("E2WM_CORPUS", str(tiny["corpus"]))
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)  # no metadata, as the CLI
    results = simple_evaluate(
        model=load_lm(str(tiny["model"]), None), tasks=["e2wm"], task_manager=manager, bootstrap_iters=0
    )
    assert set(results["results"]) == ALL_NAMES | {"e2wm", "e2wm_seen", "e2wm_unseen"}
    config = results["configs"][harness_task("housework_qa", "test_seen")]
    assert config["output_type"] == "multiple_choice" and config["target_delimiter"] == " "
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    model, tokenizer = _ours(tiny["model"])
    examples = {split: _mc_examples(tiny["corpus"], split) for split in TEST_SPLITS}
    guesses = {
        split: evaluate_multiple_choice(model, tokenizer, exs, "sum") for split, exs in examples.items()
    }
    correct = {split: sum(v["accuracy"] * v["n"] for v in g.values()) for split, g in guesses.items()}
    assert results["results"]["e2wm_seen"]["acc,none"] == pytest.approx(correct["test_seen"] / 24)
    assert results["results"]["e2wm"]["acc,none"] == pytest.approx(sum(correct.values()) / 48)


def _task_utils():
    spec = importlib.util.spec_from_file_location("e2wm_task_utils", TASKS_DIR / "e2wm" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_corpus_is_the_repository_demo_corpus_whatever_the_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("E2WM_CORPUS", raising=False)
    location, _ = _task_utils().corpus_location()
    assert Path(location) == Path(e2wm.__file__).resolve().parents[1] / "outputs" / "demo" / "corpus"


def test_missing_corpus_is_a_clear_error(tiny, tmp_path, monkeypatch):
    missing = tmp_path / "no-corpus"
    with pytest.raises(E2WMError, match="corpus not found"):
        lm_eval_rows(str(tiny["model"]), None, str(missing), TEST_SPLITS, None, None)
    monkeypatch.setenv("E2WM_CORPUS", str(missing))
    with pytest.raises(E2WMError, match=r"e2wm corpus not found: .*no-corpus \(\$E2WM_CORPUS\)"):
        _task_utils().load_task_split(e2wm_task="housework_qa", e2wm_split="test_seen")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adapter": "missing"}, "adapter not found"),
        ({"adapter": "config-only"}, "adapter_model.safetensors not found"),
        ({"model": "missing"}, "neither an embedded model name nor a local model directory"),
        ({"splits": ["validation"]}, "splits must be some of"),
        ({"tasks": ["counting"]}, "no multiple-choice task among counting"),
        ({"tasks": ["cooking"]}, "unknown task"),
        ({"limit": 0}, "limit must be a positive"),
        ({"corpus": "seen-only"}, r"has no split\(s\) test_unseen \(it has test_seen\)"),
        ({"corpus": "no-choices"}, r"split test_seen lacks column\(s\) choices, label"),
        ({"corpus": "one-dataset"}, "a single dataset, not a corpus with splits"),
    ],
)
def test_bad_input_is_one_line_error(tiny, tmp_path, change, message):
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "adapter_config.json").write_text("{}")
    test_seen = open_corpus(str(tiny["corpus"]))["test_seen"]
    datasets.DatasetDict({"test_seen": test_seen}).save_to_disk(str(tmp_path / "seen-only"))
    no_choices = test_seen.remove_columns(["choices", "label"])
    datasets.DatasetDict({s: no_choices for s in TEST_SPLITS}).save_to_disk(str(tmp_path / "no-choices"))
    test_seen.save_to_disk(str(tmp_path / "one-dataset"))
    args = {"model": str(tiny["model"]), "adapter": None, "corpus": str(tiny["corpus"])}
    args |= {"splits": TEST_SPLITS, "limit": None, "tasks": None}
    args |= {k: str(tmp_path / v) if k in ("adapter", "model", "corpus") else v for k, v in change.items()}
    with pytest.raises(E2WMError, match=message) as error:
        lm_eval_rows(
            args["model"], args["adapter"], args["corpus"], args["splits"], args["limit"], args["tasks"]
        )
    assert "\n" not in str(error.value)
