"""``e2wm eval``: the evaluation suite run after training, base model against fine-tuned adapter.

Suites: ``embodied`` (the corpus test splits: multiple-choice accuracy, generated answers scored by
``e2wm.eval.metrics``, plans executed in the simulator), ``general`` (perplexity on held-out prose,
``e2wm.eval.retention``), ``all`` (both). Each task of each split is evaluated on a seeded sample of at
most ``limit`` examples, the same sample for every variant: "base" (the model, adapter disabled) and
"fine-tuned" (with the adapter). Tracking tasks are also reported by the example's ``length`` (episode
steps the question covers), in buckets.

The test splits are the in-template ones (``test_seen``, ``test_unseen``: train wordings) and the
transfer ones (``test_seen_transfer``, ``test_unseen_transfer``: the same episodes in held-out wordings,
``e2wm.corpus.wording``). Transfer splits are scored zero-shot and, with ``transfer_kshot``, also
few-shot, reported as ``<split>_kshot``. Multiple-choice tasks are scored in a form (``cloze``,
``listed`` or ``lettered``, ``e2wm.eval.mc_forms``) and a normalization chosen per task by measurement;
their rows carry the chance level, and the primary metric's rows of every task the score of the best
constant answer (``constant``, ``e2wm.eval.constant``). ``transfer`` in the results summarises each
transfer split: the mean over tasks of the relative gain (fine-tuned - base) / max(base, chance, 0.05),
how many tasks got better, how many got worse beyond the interval (the fine-tuned interval's top below
the base score), and how many the fine-tuned model scores above a blind guess (the better of chance and
the constant answer).

Intervals (95%): Wilson for proportions (accuracy, exact match, goal success), the normal approximation
of the mean (clipped to [0, 1]) for ROUGE-L, path overlap and executability.

With ``backend="lm-eval"`` the multiple-choice tasks are scored by lm-evaluation-harness
(``e2wm.eval.harness.lm_eval_rows``: the same seeded sample, no per-length rows); open-ended tasks and
retention are scored here as with the default backend.

The output directory receives ``results.json`` (format ``e2wm-eval/1``), ``results.md``,
``predictions.jsonl`` (one line per example and variant) and the charts, written to a temporary
directory and renamed into place.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from e2wm.corpus.build import TRANSFER_SPLITS
from e2wm.corpus.tasks import GENERATION, MULTIPLE_CHOICE, SPECS
from e2wm.errors import E2WMError, release
from e2wm.eval.chat import check_template, uses_chat
from e2wm.eval.config import (
    FORMAT,
    RETENTION_SOURCES,
    EvalConfig,
    primary_metric,
)
from e2wm.eval.constant import constant_answers, constant_scores
from e2wm.eval.data import (
    corpus_fingerprint,
    load_test_splits,
    plan_episodes,
    prompted,
    sample_examples,
)
from e2wm.eval.mc_forms import as_form
from e2wm.eval.metrics import SCORERS
from e2wm.eval.models import adapter_sha256, as_variant, compute_context, load_model, precision
from e2wm.eval.report import write_report
from e2wm.eval.statistics import (
    retention_rows,
    row_order,
    summarize,
    transfer_summary,
)
from e2wm.files import staged
from e2wm.training.models import check_model

# --- scoring --------------------------------------------------------------------------------------------


def _record(variant: str, split: str, ex: dict, prediction: str, scores: dict[str, float]) -> dict[str, Any]:
    chance = {"chance": 1 / len(ex["choices"])} if ex["choices"] else {}
    return {
        **chance,
        "variant": variant,
        "task": ex["task"],
        "split": split,
        "episode_id": ex["episode_id"],
        "length": ex["length"],
        "prediction": prediction,
        "reference": ex["completion"].strip(),
        "scores": scores,
    }


def score_multiple_choice(
    model: Any,
    tokenizer: Any,
    items: list[tuple[str, dict]],
    config: EvalConfig,
    variant: str,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """One record per (split, example) in ``items``: the chosen answer and its accuracy. With the chat
    template (``e2wm.eval.chat``) a choice continues the rendered prompt without a leading space, and the
    unconditional normaliser's context is "Answer:" rendered as a user turn."""
    from e2wm.eval.chat import chat_form, render
    from e2wm.eval.scoring import UNCONDITIONAL_CONTEXT, mc_predictions

    forms = config.mc_forms()
    style: dict[str, str] = {}
    if any(uses_chat(ex, config.apply_chat_template) for _, ex in items):
        examples = [chat_form(tokenizer, ex, forms[ex["task"]]) for _, ex in items]
        style = {"separator": "", "unconditional_context": render(tokenizer, [], UNCONDITIONAL_CONTEXT)}
    else:
        examples = [as_form(ex, forms[ex["task"]]) for _, ex in items]
    guesses = mc_predictions(
        model,
        tokenizer,
        examples,
        config.normalizations(),
        batch_size=config.batch_size,
        progress=progress,
        **style,
    )
    return [
        _record(variant, split, ex, ex["choices"][g], {"accuracy": float(g == ex["label"])})
        for (split, ex), g in zip(items, guesses, strict=True)
    ]


def score_generation(
    model: Any,
    tokenizer: Any,
    task: str,
    items: list[tuple[str, dict]],
    config: EvalConfig,
    variant: str,
    tokens: Any,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Greedy answers to one open-ended task, scored; plans are also executed in the simulator. Prompts are
    rendered with the chat template when ``e2wm.eval.chat.uses_chat`` says so."""
    from e2wm.eval.chat import render
    from e2wm.eval.generation import generate_answers

    chat = any(uses_chat(ex, config.apply_chat_template) for _, ex in items)
    prompts = [
        render(tokenizer, ex["demos"], ex["prompt"]) if chat else ex["demos"] + ex["prompt"]
        for _, ex in items
    ]
    answers = generate_answers(
        model,
        tokenizer,
        prompts,
        SPECS[task].max_new_tokens,
        config.batch_size,
        tokens=tokens,
        progress=progress,
    )
    metric, score = SPECS[task].metric, SCORERS[task]
    scores = [{metric: score(a, ex["completion"].strip())} for a, (_, ex) in zip(answers, items, strict=True)]
    if task == "plan_generation":
        checks = plan_checks([ex for _, ex in items], answers, config.corpus)
        for s, check in zip(scores, checks, strict=True):
            s.update(executability=check.executability, goal_success=float(check.goal_success))
    return [
        _record(variant, split, ex, a, s) for (split, ex), a, s in zip(items, answers, scores, strict=True)
    ]


def plan_checks(examples: Sequence[dict], plans: Sequence[str], corpus: str) -> list[Any]:
    """``check_plan`` of each plan text against its plan_generation example's episode."""
    from e2wm.eval.plans import check_plan
    from e2wm.simulator.virtualhome.backend import VirtualHomeSimulator

    sim = VirtualHomeSimulator()
    episodes = plan_episodes(examples, corpus)
    return [check_plan(text, episode, sim) for text, episode in zip(plans, episodes, strict=True)]


# --- the run --------------------------------------------------------------------------------------------


def _check_out(out: str) -> Path:
    """The output directory, if it may be (re)placed: absent, empty, or a previous eval's output."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise E2WMError(f"--out {out} is a file")
    if path.is_dir() and any(path.iterdir()) and not (path / "results.json").exists():
        raise E2WMError(f"--out {out} exists and is not an e2wm eval output; choose another directory")
    return path


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"[eval] {message}", file=sys.stderr, flush=True)


def evaluate(config: EvalConfig, progress: bool = False) -> dict[str, Any]:
    """Run the configured suite, write the output directory, and return the results (``results.json``)."""
    config.validate()
    out = _check_out(config.out)
    requested = config.adapter  # as the user named it (a directory or a Hub id), for the results
    config = config.resolved()
    embodied = config.suite in ("embodied", "all")
    splits, train = load_test_splits(config) if embodied else ({}, None)
    samples = prompted(sample_examples(splits, config), config) if embodied else {}
    plans = [ex for (_, task), exs in samples.items() if task == "plan_generation" for ex in exs]
    plan_episodes(plans, config.corpus)  # fail before loading any model
    check_model(config.model)
    sha = adapter_sha256(config.adapter, config.model) if config.adapter is not None else None
    release()  # the input is checked: show what libraries said so far, and the progress from here on
    by_task: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for (split, task), exs in samples.items():
        by_task[task] += [(split, ex) for ex in exs]
    mc_items = [item for t in MULTIPLE_CHOICE for item in by_task.get(t, [])]
    generative = [t for t in GENERATION if t in by_task]
    # lm-evaluation-harness scores the in-template splits; the transfer splits are always scored here
    harness_splits = (
        [s for s in config.splits if s not in TRANSFER_SPLITS] if config.backend == "lm-eval" else []
    )
    local_mc = [item for item in mc_items if item[0] not in harness_splits]
    model = tokenizer = None
    if config.suite != "embodied" or mc_items or generative:  # one model for every variant and scorer
        _say(
            progress,
            f"loading {config.model}" + (f" with adapter {config.adapter}" if config.adapter else ""),
        )
        model, tokenizer = load_model(config)
        if any(uses_chat(ex, config.apply_chat_template) for exs in samples.values() for ex in exs):
            check_template(tokenizer, config.model)  # before any scoring
    tokens = None
    if generative:
        from e2wm.eval.generation import LineTokens

        tokens = LineTokens.of(tokenizer)
    records: list[dict[str, Any]] = []
    harness_rows: list[dict[str, Any]] = []
    perplexities = {}
    for variant in config.variants():
        with as_variant(model, variant), compute_context(config):
            if harness_splits and len(local_mc) < len(mc_items):
                from e2wm.eval.harness import lm_eval_rows

                _say(progress, f"{variant}: multiple choice with lm-evaluation-harness")
                in_harness = {key: exs for key, exs in samples.items() if key[0] in harness_splits}
                harness_rows += lm_eval_rows(config, variant, in_harness, progress, (model, tokenizer))
            if local_mc:
                _say(progress, f"{variant}: multiple choice, {len(local_mc)} examples")
                records += score_multiple_choice(model, tokenizer, local_mc, config, variant, progress)
            for task in generative:
                _say(progress, f"{variant}: {task}, {len(by_task[task])} examples")
                records += score_generation(
                    model, tokenizer, task, by_task[task], config, variant, tokens, progress
                )
            if config.suite != "embodied":
                from e2wm.eval.retention import retention_perplexity

                for source in RETENTION_SOURCES:
                    _say(progress, f"{variant}: general-text perplexity ({source})")
                    perplexities[(variant, source)] = retention_perplexity(
                        model,
                        tokenizer,
                        config.retention_passages,
                        config.retention_max_length,
                        source,
                        progress=progress,
                    )
    rows, length_rows = summarize(records, config.length_edges)
    rows = sorted(rows + harness_rows, key=row_order)
    if embodied:
        constants = constant_scores(samples, constant_answers(train, config.selected_tasks()))
        for row in rows:
            if row["metric"] == primary_metric(row["task"]) and (row["split"], row["task"]) in constants:
                row["constant"] = constants[(row["split"], row["task"])]
    results = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backend": config.backend,
        "model": config.model,
        "adapter": requested,
        "adapter_sha256": sha,
        "corpus": config.corpus,
        "corpus_fingerprint": corpus_fingerprint(splits) if embodied else None,
        "suite": config.suite,
        "limit": config.limit,
        "splits": list(config.splits),
        "seed": config.seed,
        "dtype": precision(config) if model is not None else None,
        "kshot": config.kshot,
        "transfer_kshot": config.transfer_kshot,
        "apply_chat_template": config.apply_chat_template,
        "normalization": config.normalizations(),
        "mc_form": config.mc_forms(),
        "results": rows,
        "transfer": transfer_summary(rows),
        "by_length": length_rows,
        "retention": retention_rows(perplexities),
    }
    write_outputs(results, records, out)
    return results


def write_outputs(results: dict[str, Any], records: Sequence[dict[str, Any]], out: Path) -> None:
    """results.json, predictions.jsonl, results.md and the charts, into a temporary dir renamed to ``out``."""

    with staged(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        with (tmp / "predictions.jsonl").open("w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        write_report(results, tmp)
