"""lm-eval integration: the e2wm task YAMLs, and ``e2wm eval --backend lm-eval`` scoring the same seeded
sample as e2wm's own backend, in the same forms, with the same sums where the rule is the same."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from support.tiny_lm import save_tiny_choice_corpus, save_tiny_lm
from support.tolerances import float32_tolerance, llama_roundings
from transformers import AutoModelForCausalLM, AutoTokenizer

import e2wm
import e2wm.eval.harness as harness
from e2wm.corpus.build import save_parquet
from e2wm.corpus.read import open_corpus
from e2wm.corpus.tasks import MULTIPLE_CHOICE
from e2wm.errors import E2WMError
from e2wm.eval.config import EvalConfig
from e2wm.eval.data import load_test_splits, prompted, sample_examples
from e2wm.eval.harness import METRICS, TASKS_DIR, harness_lm, harness_task, lm_eval_rows
from e2wm.eval.mc_forms import as_form
from e2wm.eval.run import evaluate
from e2wm.eval.scoring import choice_logprobs, evaluate_multiple_choice

pytestmark = pytest.mark.usefixtures("one_thread")

SPLITS = ("test_seen", "test_unseen")
ALL_NAMES = {harness_task(t, s) for t in MULTIPLE_CHOICE for s in SPLITS}
# every form in use: cloze by default, the negation listed
FORMS = {"activity_inference": "lettered", "housework_qa": "listed"}
# every normalization in use: sum on three tasks (housework_qa and state_tracking_open by default)
NORMALIZATIONS = {"activity_recognition_mc": "sum"}


def _save_choice_corpus(folder: Path) -> Path:
    """The tiny multiple-choice corpus (6 examples of each task per split) with every column e2wm eval
    reads: stems and answer labels for the forms, episode ids, lengths, few-shot prompts."""
    plain = open_corpus(str(save_tiny_choice_corpus(folder / "plain", n=6)))

    def complete(ex: dict, i: int) -> dict:
        meta = {"stem": ex["prompt"].removesuffix(" answer :"), "answer_label": "answer :"}
        return {
            "prompt_kshot": "read book . " + ex["prompt"],
            "episode_id": f"tiny-{i}",
            "length": 1 + i % 7,
            "meta": json.dumps(meta),
        }

    corpus = datasets.DatasetDict({s: ds.map(complete, with_indices=True) for s, ds in plain.items()})
    save_parquet(corpus, folder / "corpus")
    return folder / "corpus"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm_eval")
    model = save_tiny_lm(root / "model", seed=3)
    base = AutoModelForCausalLM.from_pretrained(model, use_safetensors=True)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # non-zero B
    get_peft_model(base, lora).save_pretrained(root / "adapter")
    return {"model": model, "corpus": _save_choice_corpus(root), "adapter": root / "adapter"}


def _config(tiny: dict[str, Path], out: Path, **changes) -> EvalConfig:
    fields = {
        "model": str(tiny["model"]),
        "corpus": str(tiny["corpus"]),
        "suite": "embodied",
        "splits": SPLITS,
        "tasks": (*MULTIPLE_CHOICE, "counting"),
        "limit": 3,
        "seed": 7,
        "mc_form": FORMS,
        "normalization": NORMALIZATIONS,
        "backend": "lm-eval",
        "device": "cpu",
        "dtype": "float32",  # no autocast: the float32 rounding bounds below hold
        "out": str(out),
    }
    return EvalConfig(**(fields | changes))


def _ours(model_dir: Path, adapter: Path | None = None):
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def _loglikelihoods(sample: dict) -> list[float]:
    return [float(ll) for ll, _ in sample["filtered_resps"]]


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


def _decided(lls: list[float], tolerances: list[float]) -> bool:
    """Whether every computation of these sums within the tolerances picks the same choice: the best beats
    each other by more than both their tolerances."""
    best = max(range(len(lls)), key=lls.__getitem__)
    return all(lls[best] - lls[j] > tolerances[best] + tolerances[j] for j in range(len(lls)) if j != best)


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


@pytest.fixture
def lm_eval_runs(monkeypatch) -> list[dict]:
    """lm-eval's results (per-example samples included) of every run the harness makes."""
    runs = []
    run_tasks = harness.run_tasks

    def recorded(*args, **kwargs):
        runs.append(run_tasks(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(harness, "run_tasks", recorded)
    return runs


def test_yamls_define_a_task_per_choice_task_and_split_and_three_groups():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(manager.all_subtasks) == ALL_NAMES
    assert set(manager.all_groups) == {"e2wm", "e2wm_seen", "e2wm_unseen"}


def test_lm_eval_scores_our_seeded_sample_in_our_forms_and_agrees_where_the_rule_is_ours(
    tiny, tmp_path, network_attempts, lm_eval_runs
):
    config = _config(tiny, tmp_path / "lm-eval")
    results = evaluate(config)
    ours = evaluate(_config(tiny, tmp_path / "e2wm", backend="e2wm"))
    assert not network_attempts
    [run] = lm_eval_runs
    sample = prompted(sample_examples(load_test_splits(config)[0], config), config)
    forms, norms = config.mc_forms(), config.normalizations()
    corpus = open_corpus(str(tiny["corpus"]))
    first = {
        (s, t): [ex["episode_id"] for ex in corpus[s] if ex["task"] == t]
        for s in SPLITS
        for t in MULTIPLE_CHOICE
    }
    assert set(run["samples"]) == ALL_NAMES
    model, tokenizer = _ours(tiny["model"])
    rows = {(r["task"], r["split"]): r for r in results["results"] if r["task"] in MULTIPLE_CHOICE}
    mine = {(r["task"], r["split"]): r for r in ours["results"] if r["task"] in MULTIPLE_CHOICE}
    assert set(rows) == set(mine) == {(t, s) for t in MULTIPLE_CHOICE for s in SPLITS}
    for split in SPLITS:
        for task in MULTIPLE_CHOICE:
            name, key = harness_task(task, split), (split, task)
            scored = sorted(run["samples"][name], key=lambda s: s["doc_id"])
            # the examples: our sample (3 of 6, not the first 3), in the task's form
            want = [as_form(ex, forms[task]) for ex in sample[key]]
            assert [s["doc"] for s in scored] == want
            assert [tuple(a) for s in scored for a in s["arguments"][: len(s["doc"]["choices"])]] == [
                (ex["prompt"], " " + c) for ex in want for c in ex["choices"]
            ]
            # the metric: lm-eval's for the task's normalization; the row is its mean
            metric = METRICS[norms[task]]
            assert [m["metric"] for m in run["configs"][name]["metric_list"]] == [metric]
            row = rows[(task, split)]
            assert (
                row["n"] == mine[(task, split)]["n"] == 3 and row["chance"] == mine[(task, split)]["chance"]
            )
            assert row["value"] == pytest.approx(sum(s[metric] for s in scored) / 3, abs=1e-12)
            if norms[task] != "sum":
                continue
            # the same rule: each sum within rounding of ours; the accuracies differ by at most the items
            # whose best choice rounding could change
            undecided = 0
            for s in scored:
                lls = _loglikelihoods(s)
                conts = [" " + c for c in s["doc"]["choices"]]
                sums = [v for v, _ in choice_logprobs(model, tokenizer, s["doc"]["prompt"], conts)]
                assert _within(lls, sums, _tolerances(model, sums)), (lls, sums)
                undecided += not _decided(lls, _tolerances(model, lls))
            assert abs(row["value"] - mine[(task, split)]["value"]) * 3 <= undecided
    assert any(
        [ex["episode_id"] for ex in sample[(s, t)]] != first[(s, t)][:3]
        for s in SPLITS
        for t in MULTIPLE_CHOICE
    )  # the seeded sample, not lm-eval's first items


def test_the_adapter_is_applied_to_the_fine_tuned_variant_only(
    tiny, tmp_path, network_attempts, lm_eval_runs
):
    config = _config(
        tiny, tmp_path, adapter=str(tiny["adapter"]), tasks=("housework_qa",), splits=("test_seen",)
    )
    sample = prompted(sample_examples(load_test_splits(config)[0], config), config)
    tuned_rows = lm_eval_rows(config, "fine-tuned", sample)
    base_rows = lm_eval_rows(config, "base", sample)
    assert [(r["variant"], r["task"], r["split"], r["n"]) for r in tuned_rows + base_rows] == [
        ("fine-tuned", "housework_qa", "test_seen", 3),
        ("base", "housework_qa", "test_seen", 3),
    ]
    assert not network_attempts
    tuned, base = (run["samples"][harness_task("housework_qa", "test_seen")] for run in lm_eval_runs)
    with_adapter, _ = _ours(tiny["model"], tiny["adapter"])
    model, tokenizer = _ours(tiny["model"])
    for run, right, wrong in ((tuned, with_adapter, model), (base, model, with_adapter)):
        for s in run:
            conts = [" " + c for c in s["doc"]["choices"]]
            want = [v for v, _ in choice_logprobs(right, tokenizer, s["doc"]["prompt"], conts)]
            other = [v for v, _ in choice_logprobs(wrong, tokenizer, s["doc"]["prompt"], conts)]
            lls = _loglikelihoods(s)
            assert _within(lls, want, _tolerances(model, want, lora_rank=4)), (lls, want)
            assert not _within(lls, other, _tolerances(model, other, lora_rank=4))  # by more than rounding


def _hub_corpus(corpus: Path, folder: Path) -> Path:
    """``corpus`` as a Hub dataset repo folder: one Parquet file per split, named in the card's configs."""
    (folder / "data").mkdir(parents=True)
    splits = open_corpus(str(corpus))
    for split, ds in splits.items():
        ds.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    configs = [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]
    (folder / "README.md").write_text(
        f"---\nconfigs:\n- config_name: all\n  data_files: {json.dumps(configs)}\n---\n"
    )
    return folder


def test_model_adapter_and_corpus_may_be_hub_ids(tiny, tmp_path):
    """Fetched from the Hub (the stand-in), then offline from the Hub cache, lm-eval scores what it scores
    with the same files given as local paths."""
    from support.hub_stand_in import HubStandIn

    hub_corpus = _hub_corpus(tiny["corpus"], tmp_path / "hub-corpus")
    argv = [
        "eval", "--model", "tester/tiny-model", "--adapter", "tester/tiny-adapter", "--corpus",
        "tester/tiny-corpus", "--backend", "lm-eval", "--suite", "embodied", "--splits", "test_seen",
        "--tasks", "housework_qa", "state_tracking_open", "--limit", "3", "--device", "cpu", "--dtype",
        "float32", "--quiet", "--out",
    ]  # fmt: skip
    upload = "".join(
        f"api.create_repo({repo!r}, repo_type={kind!r})\n"
        f"api.upload_folder(folder_path={str(folder)!r}, repo_id={repo!r}, repo_type={kind!r})\n"
        for repo, kind, folder in (
            ("tester/tiny-model", "model", tiny["model"]),
            ("tester/tiny-adapter", "model", tiny["adapter"]),
            ("tester/tiny-corpus", "dataset", hub_corpus),
        )
    )
    run = "from e2wm.cli import main\nmain({argv!r})\n"
    with HubStandIn() as hub:
        env = hub.client_env("hf_test_token", home=tmp_path / "hf-home")
        script = (
            "from huggingface_hub import HfApi\napi = HfApi()\n" + upload + run.format(argv=[*argv, "online"])
        )
        proc = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert not proc.stderr  # quiet: no progress bars, no lm-eval warnings
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = run.format(argv=[*argv, "offline"])
    proc = subprocess.run(
        [sys.executable, "-c", script], env=offline, cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = evaluate(
        _config(
            tiny,
            tmp_path / "local",
            adapter=str(tiny["adapter"]),
            splits=("test_seen",),
            tasks=("housework_qa", "state_tracking_open"),
            seed=0,
            mc_form={},
            normalization={},
        )
    )  # the command's defaults
    online, cached = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("online", "offline"))
    assert online["model"] == "tester/tiny-model" and online["corpus"] == "tester/tiny-corpus"
    want = [(r["variant"], r["task"], r["n"], r["value"]) for r in local["results"]]
    assert len(want) == 4 and {r[2] for r in want} == {3}
    for got in (online, cached):
        assert [(r["variant"], r["task"], r["n"], r["value"]) for r in got["results"]] == want


def test_cli_path_finds_the_corpus_through_the_env_from_another_directory(tiny, tmp_path, monkeypatch):
    """The shipped YAML tasks, as ``lm-eval run`` loads them: all examples, plain log-likelihood (``acc``)
    and the listed form, the same as e2wm's ``sum`` on the corpus prompts."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("E2WM_CORPUS", str(tiny["corpus"]))
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)  # no metadata, as the CLI
    model, tokenizer = _ours(tiny["model"])
    results = simple_evaluate(
        model=harness_lm(model, tokenizer, 8), tasks=["e2wm"], task_manager=manager, bootstrap_iters=0
    )
    assert set(results["results"]) == ALL_NAMES | {"e2wm", "e2wm_seen", "e2wm_unseen"}
    config = results["configs"][harness_task("housework_qa", "test_seen")]
    assert config["output_type"] == "multiple_choice" and config["target_delimiter"] == " "
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]
    corpus = open_corpus(str(tiny["corpus"]))
    guesses = {
        s: evaluate_multiple_choice(model, tokenizer, [ex for ex in corpus[s] if ex["choices"]], "sum")
        for s in SPLITS
    }
    correct = {split: sum(v["accuracy"] * v["n"] for v in g.values()) for split, g in guesses.items()}
    assert results["results"]["e2wm_seen"]["acc,none"] == pytest.approx(correct["test_seen"] / 36)
    assert results["results"]["e2wm"]["acc,none"] == pytest.approx(sum(correct.values()) / 72)


def test_the_in_process_tasks_keep_the_shipped_template(tiny, monkeypatch):
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("E2WM_CORPUS", str(tiny["corpus"]))
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    name = harness_task("housework_qa", "test_seen")
    docs = [{"prompt": "which is used to drink ? answer :", "choices": ["mug", "book"], "label": 0}]
    [shipped] = manager.load(name)["tasks"].values()
    [ours] = manager.load(harness.task_config(name, docs, "acc"))["tasks"].values()
    scoring = (
        "output_type",
        "test_split",
        "doc_to_text",
        "doc_to_choice",
        "doc_to_target",
        "target_delimiter",
    )
    assert [getattr(ours.config, k) for k in scoring] == [getattr(shipped.config, k) for k in scoring]
    assert ours.config.num_fewshot == shipped.config.num_fewshot == 0
    assert list(ours.test_docs()) == docs


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


def test_missing_corpus_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("E2WM_CORPUS", str(tmp_path / "no-corpus"))
    with pytest.raises(E2WMError, match=r"e2wm corpus not found: .*no-corpus \(\$E2WM_CORPUS\)"):
        _task_utils().load_task_split(e2wm_task="housework_qa", e2wm_split="test_seen")


@pytest.mark.parametrize(
    ("change", "variant", "message"),
    [
        ({"adapter": "TMP/missing"}, "fine-tuned", "missing: no such directory"),
        ({"adapter": "TMP/config-only"}, "fine-tuned", "has no adapter_model.safetensors"),
        ({"model": "TMP/missing"}, "base", "no such directory, nor a Hub model id"),
        ({}, "fine-tuned", "the fine-tuned variant needs an adapter"),
        ({}, "tuned", "unknown variant 'tuned'"),
        ({"tasks": ("counting",)}, "base", "no multiple-choice examples"),
    ],
)
def test_bad_input_is_one_line_error(tiny, tmp_path, change, variant, message):
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "adapter_config.json").write_text("{}")
    config = _config(tiny, tmp_path, tasks=change.get("tasks", ("housework_qa",)), splits=("test_seen",))
    sample = prompted(sample_examples(load_test_splits(config)[0], config), config)
    paths = {k: v.replace("TMP", str(tmp_path)) for k, v in change.items() if k != "tasks"}
    with pytest.raises(E2WMError, match=message) as error:
        lm_eval_rows(_config(tiny, tmp_path, **paths), variant, sample)
    assert "\n" not in str(error.value)
