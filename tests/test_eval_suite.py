"""The `e2wm eval` suite: metrics, greedy generation, retention, the suite end to end, bad input."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from support.tiny_lm import save_tiny_corpus, save_tiny_eval_corpus
from support.tolerances import float32_tolerance, llama_roundings
from test_train import argv as train_argv
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from e2wm.cli import main
from e2wm.corpus.build import BuildConfig, build
from e2wm.corpus.read import open_corpus
from e2wm.corpus.tasks import MULTIPLE_CHOICE, TRACKING_TASKS
from e2wm.errors import E2WMError
from e2wm.eval.config import FORMAT, REPORTED_SPLITS, EvalConfig, primary_metric
from e2wm.eval.constant import best_constant, constant_answers
from e2wm.eval.data import sample_examples
from e2wm.eval.generation import generate_answers
from e2wm.eval.metrics import (
    SCORERS,
    count_match,
    exact_match,
    path_overlap,
    plan_rouge_l,
    rouge_l,
    yes_no_match,
)
from e2wm.eval.retention import perplexity
from e2wm.eval.run import evaluate, plan_checks
from e2wm.eval.statistics import length_buckets
from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.training.config import parse
from e2wm.training.train import train

METRIC_OF = {
    "state_tracking_open": {"accuracy"},
    "housework_qa": {"accuracy"},
    "counting": {"exact_match"},
    "object_path": {"path_overlap"},
    "state_tracking_holding": {"exact_match"},
    "state_tracking_grab": {"exact_match"},
    "activity_recognition": {"rouge_l"},
    "plan_generation": {"rouge_l", "executability", "goal_success"},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return save_tiny_eval_corpus(tmp_path_factory.mktemp("corpus") / "corpus")


def _adapter(lm: Path, folder: Path, scale: float) -> Path:
    """A LoRA adapter on the tiny LM whose B matrices are random times ``scale`` (0: a no-op adapter)."""
    torch.manual_seed(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(lm)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.mul_(scale)
    peft.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(lm, tmp_path_factory) -> Path:
    return _adapter(lm, tmp_path_factory.mktemp("adapter"), scale=50.0)


# --- metrics --------------------------------------------------------------------------------------------


def test_metrics_on_hand_made_cases() -> None:
    assert rouge_l("Walk to kitchen. Grab mug.", "walk to kitchen grab mug") == 1.0
    # LCS 3 of 3 predicted and 4 reference tokens: P 1, R 3/4, F 6/7
    assert rouge_l("walk to kitchen", "walk to the kitchen") == pytest.approx(6 / 7)
    assert rouge_l("sit on chair", "walk to kitchen") == 0.0
    assert path_overlap("dining room, home office", "dining room, home office") == 1.0
    # longest common run [kitchen, bedroom] of 2, longer path 4
    assert path_overlap("kitchen, bedroom", "bathroom, kitchen, bedroom, home office") == 0.5
    assert path_overlap("bedroom, kitchen", "kitchen and bedroom") == 0.5  # order matters
    assert path_overlap("The Kitchen, the bathroom.", "kitchen, bathroom") == 1.0
    assert path_overlap("", "kitchen") == 0.0
    assert plan_rouge_l("1. Walk to kitchen. 2. Grab cup.", "Walk to kitchen. Grab cup.") == 1.0
    assert (
        plan_rouge_l("Step 1: Walk to kitchen. Step 2: Grab cup.", "1. Walk to kitchen. 2. Grab cup.") == 1.0
    )
    assert plan_rouge_l("Grab cup.", "Walk to kitchen. Grab cup.") == rouge_l(
        "Grab cup.", "Walk to kitchen. Grab cup."
    )
    assert count_match("2: mug, cup", "2: book, tv") == 1.0
    assert count_match("12: mug", "1: mug") == 0.0
    assert count_match("two: mug, cup", "2: mug, cup") == 1.0  # counts in words or digits
    assert count_match("There are Three.", "3") == 1.0 and count_match("three", "thirteen") == 0.0
    assert count_match("none of them", "0: none") == 0.0  # no count given
    assert exact_match("The laser pointer.", "the laser pointer") == 1.0
    assert exact_match("the mug and the cup", "the mug") == 0.0
    assert yes_no_match("No, she is too far away", "no, Liam is not close to the scarf") == 1.0
    assert yes_no_match("yes", "no, Liam is not close to the scarf") == 0.0
    assert yes_no_match("maybe", "maybe") == 0.0


# --- generation -----------------------------------------------------------------------------------------


def _bigram_lm() -> tuple[transformers.PreTrainedModel, transformers.PreTrainedTokenizerFast]:
    """A Llama whose greedy next token depends only on the current one: walk -> to -> kitchen -> newline
    -> walk, grab -> mug -> newline (one-hot embeddings, attention and MLP outputs zeroed)."""
    words = ["<pad>", "<s>", "</s>", "<unk>", "walk", "to", "kitchen", "\n", "grab", "mug"]
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"), pre_tokenizers.Split("\n", "isolated")]
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = transformers.LlamaConfig(
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=len(vocab),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config)
    following = {"walk": "to", "to": "kitchen", "kitchen": "\n", "\n": "walk", "grab": "mug", "mug": "\n"}
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(len(vocab), 16))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for word, after in following.items():
            model.lm_head.weight[vocab[after], vocab[word]] = 1.0
    return model, tokenizer


def test_generation_stops_once_every_row_has_a_newline() -> None:
    model, tokenizer = _bigram_lm()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    # "to kitchen \n" (3 tokens); "\n walk to kitchen \n" (5: a leading newline does not end the answer);
    # "mug \n" (2); prompts of different lengths, left-padded into one batch
    answers = generate_answers(model, tokenizer, ["walk", "kitchen", "walk grab"], max_new_tokens=20)
    assert answers == ["to kitchen", "walk to kitchen", "mug"]
    assert len(calls) == 5  # one forward per new token, up to the slowest row's newline, not 20
    calls.clear()
    assert generate_answers(model, tokenizer, ["walk"], max_new_tokens=2) == ["to kitchen"]
    assert len(calls) == 2


def test_batched_generation_equals_one_prompt_at_a_time(lm) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(lm)
    model = transformers.AutoModelForCausalLM.from_pretrained(lm)
    prompts = ["walk to the kitchen", "grab mug", "how many items are on table put mug put mug ?", "tv"]
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=4)
    alone = [generate_answers(model, tokenizer, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == alone and all(batched)


# --- retention ------------------------------------------------------------------------------------------


def test_retention_perplexity_is_exp_of_mean_token_nll(lm) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(lm)
    model = transformers.AutoModelForCausalLM.from_pretrained(lm)
    passages = ["walk to the kitchen . grab the mug . open the fridge .", "sit on chair read book"]
    nlls = []
    for passage in passages:
        ids = tokenizer(passage)["input_ids"]
        with torch.no_grad():
            nlls.append(
                [
                    -model(torch.tensor([ids[:t]])).logits[0, -1].log_softmax(-1)[ids[t]].item()
                    for t in range(1, len(ids))
                ]
            )

    def rel(nll: list[float]) -> float:
        """Token NLLs (>= 0) from two float32 computations, each within its rounding bound (tolerances.py)
        of the exact ones: the model on any sequence it takes, then a float32 sum over the tokens. exp turns
        an absolute error of the mean NLL into a relative one of the perplexity."""
        config = model.config
        roundings = llama_roundings(config, config.max_position_embeddings) + len(nll)
        return 2 * float32_tolerance(roundings, sum(nll) / len(nll))

    one = perplexity(model, tokenizer, passages[:1])
    assert one.tokens == len(nlls[0])
    assert one.perplexity == pytest.approx(math.exp(sum(nlls[0]) / len(nlls[0])), rel=rel(nlls[0]))
    both = perplexity(model, tokenizer, passages, batch_size=2)  # right padding must not count
    flat = nlls[0] + nlls[1]
    assert both.tokens == len(flat)
    assert both.perplexity == pytest.approx(math.exp(sum(flat) / len(flat)), rel=rel(flat))
    cut = perplexity(model, tokenizer, passages[:1], max_length=4)
    assert cut.tokens == 3


# --- the suite ------------------------------------------------------------------------------------------


def test_sample_is_seeded_and_not_the_first_examples() -> None:
    ds = datasets.Dataset.from_dict({"task": ["counting"] * 50, "prompt": [str(i) for i in range(50)]})
    config = EvalConfig(tasks=("counting",), limit=5)
    first = [e["prompt"] for e in sample_examples({"test_seen": ds}, config)[("test_seen", "counting")]]
    again = [e["prompt"] for e in sample_examples({"test_seen": ds}, config)[("test_seen", "counting")]]
    config.seed = 1
    other = [e["prompt"] for e in sample_examples({"test_seen": ds}, config)[("test_seen", "counting")]]
    assert first == again and len(first) == 5 and first != other
    assert first != [str(i) for i in range(5)]
    assert [int(p) for p in first] == sorted(int(p) for p in first)


def test_length_buckets_cover_every_length_once() -> None:
    buckets = length_buckets((5, 10, 20))
    assert [b[0] for b in buckets] == ["1-5", "6-10", "11-20", "21+"]
    for length in range(1, 60):
        assert sum(low <= length and (high is None or length <= high) for _, low, high in buckets) == 1


def _predictions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_suite_end_to_end(lm, corpus, adapter, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(lm), "--adapter", str(adapter), "--corpus", str(corpus)]
    main([*argv, "--suite", "all", "--limit", "2", "--out", str(out), "--quiet"])
    printed = capsys.readouterr().out
    assert "| task | metric | split | n | chance |" in printed and "retention (news text)" in printed
    assert "Transfer to held-out wordings" in printed and "| test_unseen_transfer_kshot | 8 |" in printed
    assert {p.name for p in out.iterdir()} == {
        "results.json",
        "results.md",
        "predictions.jsonl",
        "base_vs_finetuned.png",
        "accuracy_by_length.png",
    }
    assert not list(tmp_path.glob(".tmp-*"))
    for png in ("base_vs_finetuned.png", "accuracy_by_length.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["format"] == FORMAT and results["backend"] == "e2wm" and results["suite"] == "all"
    assert results["model"] == str(lm) and results["adapter"] == str(adapter) and results["limit"] == 2
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    assert results["adapter_sha256"] == hashlib.sha256(weights).hexdigest()
    assert len(results["corpus_fingerprint"]) == 64
    assert results["corpus"] == str(corpus)
    # one row per (variant, task, split, metric), 2 sampled examples each, metric names as the schema says
    rows = results["results"]
    keys = {"variant", "task", "split", "metric", "value", "n", "ci_low", "ci_high"}
    for r in rows:
        assert r["n"] == 2 and r["ci_low"] <= r["value"] <= r["ci_high"]
        # multiple choice carries its chance level, every task's primary metric the constant answer's score
        extra = {"chance"} if r["task"] in MULTIPLE_CHOICE else set()
        extra |= {"constant"} if r["metric"] == primary_metric(r["task"]) else set()
        assert set(r) == keys | extra
        if "chance" in r:
            assert r["chance"] == 1 / (2 if "open" in r["task"] else 4)
        if "constant" in r:
            assert 0 <= r["constant"] <= 1
    metrics = defaultdict(set)
    for r in rows:
        metrics[r["task"]].add(r["metric"])
    assert dict(metrics) == METRIC_OF
    assert Counter((r["variant"], r["split"]) for r in rows) == {
        (v, s): sum(map(len, METRIC_OF.values())) for v in ("base", "fine-tuned") for s in REPORTED_SPLITS
    }
    # the transfer splits few-shot: the same examples with their solved examples first
    records = _predictions(out)
    for split in ("test_seen_transfer", "test_unseen_transfer"):
        zero = [(p["variant"], p["task"], p["episode_id"]) for p in records if p["split"] == split]
        few = [(p["variant"], p["task"], p["episode_id"]) for p in records if p["split"] == split + "_kshot"]
        assert zero == few and zero
    # the transfer summary: one line per transfer split, a relative gain per task
    summary = {s["split"]: s for s in results["transfer"]}
    assert set(summary) == {s for s in REPORTED_SPLITS if "transfer" in s}
    chance = {"housework_qa": 0.25, "state_tracking_open": 0.5}
    for s in summary.values():
        assert s["n_tasks"] == len(METRIC_OF) == len(s["tasks"])
        for t in s["tasks"]:
            floor = max(t["base"], 0.05, chance.get(t["task"], 0.0))
            assert t["relative_gain"] == pytest.approx((t["fine_tuned"] - t["base"]) / floor)
        gains = [t["relative_gain"] for t in s["tasks"]]
        assert s["mean_relative_gain"] == pytest.approx(sum(gains) / len(gains))
        assert s["better"] == sum(t["fine_tuned"] > t["base"] for t in s["tasks"])
        for t in s["tasks"]:
            key = ("base", t["task"], s["split"])
            row = next(r for r in rows if (r["variant"], r["task"], r["split"]) == key)
            assert t["blind"] == max(row.get("chance", 0.0), row["constant"])
        assert s["above_blind"] == sum(t["fine_tuned"] > t["blind"] for t in s["tasks"])
    # every tracking example lands in exactly one length bucket
    assert len(records) == 2 * len(REPORTED_SPLITS) * 2 * len(METRIC_OF)
    for r in rows:
        if r["task"] in TRACKING_TASKS and r["metric"] == primary_metric(r["task"]):
            same = [
                b
                for b in results["by_length"]
                if (b["variant"], b["task"], b["split"]) == (r["variant"], r["task"], r["split"])
            ]
            assert sum(b["n"] for b in same) == r["n"]
            assert len({b["bucket"] for b in same}) == len(same)
            mean = sum(b["value"] * b["n"] for b in same) / r["n"]
            assert mean == pytest.approx(r["value"])
    tracked = [p for p in records if p["task"] in TRACKING_TASKS]
    assert sum(b["n"] for b in results["by_length"]) == len(tracked)
    for b in results["by_length"]:
        assert set(b) == keys | {"bucket", "low", "high"}
        members = [
            p
            for p in tracked
            if (p["variant"], p["task"], p["split"]) == (b["variant"], b["task"], b["split"])
            and b["low"] <= p["length"] <= (b["high"] or 10**9)
        ]
        assert len(members) == b["n"]
    # a non-zero adapter changes the model: base and fine-tuned differ
    retention = {r["variant"]: r for r in results["retention"]}
    assert set(retention) == {"base", "fine-tuned"}
    assert retention["base"]["relative_change"] is None
    change = retention["fine-tuned"]["perplexity"] / retention["base"]["perplexity"] - 1
    assert retention["fine-tuned"]["relative_change"] == pytest.approx(change) != 0
    by_variant = defaultdict(list)
    for p in records:
        by_variant[p["variant"]].append(p["prediction"])
    assert by_variant["base"] != by_variant["fine-tuned"]
    table = (out / "results.md").read_text()
    assert "| plan_generation | executability | test_seen | 2 |" in table
    assert "| chance | constant answer |" in table and "| fine-tuned above a blind guess |" in table
    # the constant answer's score: its answer, chosen on train, scored on the sampled examples
    constants = constant_answers(open_corpus(str(corpus))["train"], list(METRIC_OF))
    for r in rows:
        if "constant" in r:
            key = ("base", r["task"], r["split"])
            sampled = [p for p in records if (p["variant"], p["task"], p["split"]) == key]
            scorer = SCORERS.get(r["task"], exact_match)
            expected = sum(scorer(constants[r["task"]], p["reference"]) for p in sampled) / len(sampled)
            assert r["constant"] == pytest.approx(expected)


def test_the_constant_answer_is_the_common_answer_that_scores_best_under_the_tasks_metric() -> None:
    # "yes" is the most common single answer, but the metric scores the leading yes / no: "no, ..." wins
    grab = ["yes"] * 3 + ["no, Bob is far", "no, Ann is far", "no, the box is shut", "no, Bob holds two"]
    assert best_constant("state_tracking_grab", grab).startswith("no, ")
    # counts are scored on the number only: a "1: ..." answer beats the single most common "0: none"
    counts = ["0: none"] * 3 + ["1: cup", "1: mug", "1: pen", "1: box", "2: cup, mug"]
    assert best_constant("counting", counts).startswith("1: ")
    # multiple choice (exact match of the text): the most common answer; a tie goes to the first seen
    assert best_constant("state_tracking_open", ["no", "yes", "no"]) == "no"
    assert best_constant("state_tracking_open", ["yes", "no"]) == "yes"


def test_zero_adapter_gives_base_results(lm, corpus, tmp_path) -> None:
    adapter = _adapter(lm, tmp_path / "zero", scale=0.0)
    config = EvalConfig(
        model=str(lm),
        adapter=str(adapter),
        corpus=str(corpus),
        suite="all",
        tasks=("housework_qa", "counting", "state_tracking_open"),
        limit=3,
        out=str(tmp_path / "eval"),
        retention_passages=4,
    )
    results = evaluate(config)
    values = defaultdict(dict)
    for r in results["results"]:
        values[(r["task"], r["split"], r["metric"])][r["variant"]] = r["value"]
    assert len(values) == 3 * len(REPORTED_SPLITS)
    assert all(v["base"] == v["fine-tuned"] for v in values.values())
    ppl = {(r["variant"], r["source"]): r["perplexity"] for r in results["retention"]}
    for source in ("pydoc", "news"):  # B = 0: every LoRA layer adds an exact zero
        assert ppl[("base", source)] == ppl[("fine-tuned", source)]
    only_base = evaluate(
        EvalConfig(model=str(lm), corpus=str(corpus), suite="general", out=config.out, retention_passages=4)
    )
    assert [r["variant"] for r in only_base["retention"]] == ["base", "base"] and only_base["results"] == []
    assert only_base["adapter_sha256"] is None and only_base["retention"][0]["relative_change"] is None


def _bad_cases(lm: Path, corpus: Path, adapter: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    (corrupt / "dataset_dict.json").write_text("{not json")
    no_config = tmp / "no_config"
    shutil.copytree(adapter, no_config)
    (no_config / "adapter_config.json").unlink()
    small = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=45,
        )
    )
    get_peft_model(small, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp / "other")
    old = tmp / "old"
    open_corpus(str(corpus)).map(lambda e: {"meta": "{}"}, keep_in_memory=True).save_to_disk(old)
    in_template_only = tmp / "in_template_only"
    full = open_corpus(str(corpus))
    datasets.DatasetDict({s: full[s] for s in ("train", "test_seen", "test_unseen")}).save_to_disk(
        in_template_only
    )
    return {
        "missing corpus": (["--corpus", str(tmp / "missing")], "no such directory"),
        "corrupt corpus": (["--corpus", str(corrupt)], "cannot load corpus"),
        "no test splits": (["--corpus", str(save_tiny_corpus(tmp / "train_only"))], "has no split"),
        "corpus without plan episodes": (["--corpus", str(old)], "rebuild it"),
        "missing adapter": (["--adapter", str(tmp / "nowhere")], "no such directory"),
        "adapter without config": (["--adapter", str(no_config)], "no adapter_config.json"),
        "adapter of another model": (["--adapter", str(tmp / "other")], "does not fit model"),
        "unknown task": (["--tasks", "counting", "juggling"], "unknown task"),
        "unknown normalization": (["--normalization", "housework_qa=median"], "unknown normalization"),
        "normalization of open-ended task": (["--normalization", "counting=sum"], "not a multiple-choice"),
        "unknown multiple-choice form": (["--mc-form", "housework_qa=essay"], "unknown multiple-choice form"),
        "corpus without transfer splits": (
            ["--corpus", str(in_template_only), "--splits", "test_seen", "test_seen_transfer"],
            "rebuild it",
        ),
    }


def test_bad_input_is_one_error_line_and_exit_2(lm, corpus, adapter, tmp_path, capsys) -> None:
    cases = _bad_cases(lm, corpus, adapter, tmp_path)
    out = tmp_path / "out"
    capsys.readouterr()
    for name, (flags, message) in cases.items():
        argv = ["eval", "--model", str(lm), "--corpus", str(corpus), "--suite", "embodied", "--out", str(out)]
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--limit", "1", "--quiet", *flags])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, name
        assert err.count("\n") == 1 and err.startswith("e2wm eval: error: ") and message in err, (name, err)
        assert not out.exists(), name


def test_plan_check_of_a_real_corpus_example(tmp_path) -> None:
    rollouts = tmp_path / "rollouts"
    collect(CollectConfig(agent="replay", out=str(rollouts), episodes=2, shard_size=2), progress=False)
    built = build(
        BuildConfig(rollouts=str(rollouts), out=str(tmp_path / "corpus"), tasks=("plan_generation",)),
        progress=False,
    )
    examples = [e for split in built.values() for e in split]
    assert examples
    checks = plan_checks(examples, [e["completion"] for e in examples], "corpus")
    assert [c.executability for c in checks] == [1.0] * len(examples)
    garbage = plan_checks(examples, ["Dance wildly."] * len(examples), "corpus")
    assert all(c.executability == 0.0 and not c.goal_success for c in garbage)


def _train_argv(lm: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return train_argv(lm, corpus, out, "--max_steps", "2", *extra)


def test_training_ends_with_the_suite_on_the_trained_adapter(lm, corpus, tmp_path) -> None:
    out = tmp_path / "run"
    train(*parse(_train_argv(lm, corpus, out, "--eval_suite", "embodied", "--eval_limit", "1")))
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["adapter"] == str(out) and results["limit"] == 1
    weights = (out / "adapter_model.safetensors").read_bytes()
    assert results["adapter_sha256"] == hashlib.sha256(weights).hexdigest()
    assert {r["variant"] for r in results["results"]} == {"base", "fine-tuned"}
    assert {r["n"] for r in results["results"]} == {1}
    with pytest.raises(E2WMError, match="unknown eval_suite"):  # checked before any training
        train(*parse(_train_argv(lm, corpus, tmp_path / "bad", "--eval_suite", "everything")))
    assert not (tmp_path / "bad").exists()


def test_lm_eval_backend_scores_multiple_choice(lm, corpus, adapter, tmp_path) -> None:
    config = EvalConfig(
        model=str(lm),
        adapter=str(adapter),
        corpus=str(corpus),
        suite="embodied",
        backend="lm-eval",
        tasks=("housework_qa", "state_tracking_open", "counting"),
        limit=2,
        out=str(tmp_path / "eval"),
    )
    results = evaluate(config)
    assert results["backend"] == "lm-eval"
    cells = {(r["variant"], r["task"], r["split"], r["metric"]): r["n"] for r in results["results"]}
    variants, splits = ("base", "fine-tuned"), REPORTED_SPLITS
    tasks = {"housework_qa": "accuracy", "state_tracking_open": "accuracy", "counting": "exact_match"}
    assert cells == {(v, t, s, m): 2 for v in variants for t, m in tasks.items() for s in splits}
    # lm-eval gives no per-example scores: only the open-ended tracking task is bucketed by length on the
    # in-template splits (the transfer splits are scored by e2wm)
    assert {b["task"] for b in results["by_length"] if "transfer" not in b["split"]} == {"counting"}
    assert (tmp_path / "eval" / "base_vs_finetuned.png").exists()


def test_the_model_loads_on_the_configured_device_and_dtype(lm):
    import torch

    from e2wm.eval.models import load_model, placement

    model, _ = load_model(EvalConfig(model=str(lm), device="cpu", dtype="bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    auto = placement(EvalConfig(model=str(lm)))
    if torch.cuda.is_available():
        assert auto == {"dtype": torch.bfloat16, "device_map": "auto"}
    else:
        assert auto == {"dtype": torch.float32, "device_map": "cpu"}
        with pytest.raises(E2WMError, match="no CUDA GPU here"):
            placement(EvalConfig(model=str(lm), device="cuda"))


def test_the_model_defaults_to_the_adapters_base(lm, adapter, tmp_path) -> None:
    assert EvalConfig(adapter=str(adapter)).resolved().model == str(lm)
    no_config = EvalConfig(adapter=str(tmp_path))  # an adapter config that does not say: the default
    assert EvalConfig().resolved().model == no_config.resolved().model == "smollm2-135m"
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    cached = "/cache/e2wm/models/smollm2-135m"
    (embedded / "adapter_config.json").write_text(f'{{"base_model_name_or_path": "{cached}"}}')
    assert EvalConfig(adapter=str(embedded), model="other/model").resolved().model == "other/model"
    assert (
        EvalConfig(adapter=str(embedded)).resolved().model == "smollm2-135m"
    )  # the embedded cache: its name


def test_adapter_and_corpus_may_be_hub_ids(lm, corpus, adapter, tmp_path) -> None:
    """Both are fetched from the Hub (the stand-in), the model defaults to the adapter's base, and the
    results name them as given; then, offline, the same command runs from the Hub cache."""
    from support.hub_stand_in import HubStandIn

    hub_corpus = tmp_path / "hub-corpus"
    (hub_corpus / "data").mkdir(parents=True)
    for split, ds in open_corpus(str(corpus)).items():
        ds.to_parquet(str(hub_corpus / "data" / f"{split}-00000-of-00001.parquet"))
    configs = [{"split": s, "path": f"data/{s}-*.parquet"} for s in open_corpus(str(corpus))]
    (hub_corpus / "README.md").write_text(
        f"---\nconfigs:\n- config_name: all\n  data_files: {json.dumps(configs)}\n---\n"
    )
    evaluate = [
        "eval", "--adapter", "tester/tiny-adapter", "--corpus", "tester/tiny-corpus", "--suite", "embodied",
        "--splits", "test_seen", "--no-transfer-kshot", "--tasks", "housework_qa", "counting", "--limit", "1",
        "--quiet", "--out",
    ]  # fmt: skip
    upload = (
        "from huggingface_hub import HfApi\napi = HfApi()\n"
        "api.create_repo('tester/tiny-adapter')\n"
        f"api.upload_folder(folder_path={str(adapter)!r}, repo_id='tester/tiny-adapter')\n"
        "api.create_repo('tester/tiny-corpus', repo_type='dataset')\n"
        f"api.upload_folder(folder_path={str(hub_corpus)!r}, repo_id='tester/tiny-corpus',"
        " repo_type='dataset')\n"
    )
    run = "from e2wm.cli import main\nmain({argv!r})\n"
    with HubStandIn() as hub:
        env = hub.client_env("hf_test_token", home=tmp_path / "hf-home")
        script = upload + run.format(argv=[*evaluate, str(tmp_path / "online")])
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = run.format(argv=[*evaluate, str(tmp_path / "offline")])
    proc = subprocess.run([sys.executable, "-c", script], env=offline, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    online, cached = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("online", "offline"))
    assert online["adapter"] == "tester/tiny-adapter" and online["corpus"] == "tester/tiny-corpus"
    assert online["model"] == str(lm)  # the adapter's base
    assert (
        online["adapter_sha256"]
        == hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes()).hexdigest()
    )
    assert {(r["task"], r["variant"]) for r in online["results"]} == {
        (t, v) for t in ("housework_qa", "counting") for v in ("base", "fine-tuned")
    }
    assert [r["value"] for r in cached["results"]] == [r["value"] for r in online["results"]]
