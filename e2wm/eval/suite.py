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
their rows carry the chance level. ``transfer`` in the results summarises each transfer split: the mean
over tasks of the relative gain (fine-tuned - base) / max(base, chance, 0.05), how many tasks got
better, and how many got worse beyond the interval (the fine-tuned interval's top below the base score).

Intervals (95%): Wilson for proportions (accuracy, exact match, goal success), the normal approximation
of the mean (clipped to [0, 1]) for ROUGE-L, path overlap and executability.

With ``backend="lm-eval"`` the multiple-choice tasks are scored by lm-evaluation-harness
(``e2wm.eval.harness.lm_eval_rows``: its own choice of examples, no per-length rows); open-ended tasks and
retention are scored here as with the default backend.

The output directory receives ``results.json`` (format ``e2wm-eval/1``), ``results.md``,
``predictions.jsonl`` (one line per example and variant) and the charts, written to a temporary
directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import random
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2wm.corpus.build import TRANSFER_SPLITS
from e2wm.corpus.read import open_corpus
from e2wm.corpus.tasks import MULTIPLE_CHOICE, TASKS, TRACKING_TASKS
from e2wm.errors import E2WMError, release
from e2wm.eval.mc_forms import FORMS, as_form
from e2wm.eval.metrics import METRICS
from e2wm.eval.scoring import NORMALIZATIONS, Z_95, wilson_interval
from e2wm.files import check_safetensors, staged
from e2wm.hub import sha256_file
from e2wm.models import DEFAULT_MODEL, check_adapter_fits, check_model

FORMAT = "e2wm-eval/1"
SUITES = ("embodied", "general", "all")
BACKENDS = ("e2wm", "lm-eval")
TEST_SPLITS = ("test_seen", "test_unseen", *TRANSFER_SPLITS)
KSHOT_SUFFIX = "_kshot"  # a transfer split scored few-shot is reported as <split>_kshot
REPORTED_SPLITS = (*TEST_SPLITS, *(s + KSHOT_SUFFIX for s in TRANSFER_SPLITS))
VARIANTS = ("base", "fine-tuned")
# Chosen with bench/mc_instrument.py on the validation split (SmolLM2-135M, 16-30 items per task): among
# the form/normalization pairs at or above chance, the one that picks the same answer when the options are
# reversed, then the most accurate. Cloze wins everywhere but the negation, where without the options the
# model picks the item most related to the activity, "not" or not (0.04-0.21 against 0.25 chance).
DEFAULT_MC_FORM = {
    "activity_recognition_mc": "cloze",
    "activity_inference": "cloze",
    "housework_qa": "cloze",
    "housework_qa_negation": "listed",
    "object_location": "cloze",
    "state_tracking_open": "cloze",
}
DEFAULT_NORMALIZATION = {
    "activity_recognition_mc": "mean",
    "activity_inference": "unconditional",
    "housework_qa": "sum",
    "housework_qa_negation": "unconditional",
    "object_location": "mean",
    "state_tracking_open": "sum",
}
MAX_NEW_TOKENS = {
    "plan_generation": 160,
    "activity_recognition": 16,
    "counting": 32,
    "object_path": 32,
    "state_tracking_holding": 24,
    "state_tracking_grab": 32,
}
# general text of two genres: the technical prose the Fisher is estimated on (other passages), and news
RETENTION_SOURCES = ("pydoc", "news")
PROPORTIONS = {"accuracy", "exact_match", "goal_success"}
COLUMNS = ("task", "prompt", "prompt_kshot", "completion", "choices", "label", "episode_id", "length", "meta")


def primary_metric(task: str) -> str:
    """The metric a task is charted by: accuracy for multiple choice, else its generation metric."""
    return "accuracy" if task in MULTIPLE_CHOICE else METRICS[task][0]


@dataclass
class EvalConfig:
    """What to evaluate, on what, and where the results go."""

    model: str = DEFAULT_MODEL  # embedded name, Hub id or local path
    adapter: str | None = None  # PEFT adapter directory (LoRA from `e2wm train`)
    corpus: str = "outputs/demo/corpus"
    suite: str = "all"
    splits: tuple[str, ...] = TEST_SPLITS
    tasks: tuple[str, ...] | None = None  # None: every task
    limit: int | None = 20  # examples per task per split (a seeded sample); None: all
    seed: int = 0
    kshot: bool = False  # prompt every split with ``prompt_kshot`` (solved train examples first)
    transfer_kshot: bool = True  # also score the transfer splits few-shot (as <split>_kshot)
    normalization: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_NORMALIZATION
    mc_form: dict[str, str] = field(default_factory=dict)  # overrides of DEFAULT_MC_FORM
    length_edges: tuple[int, ...] = (5, 10, 20, 30)  # bucket upper bounds: 1-5, 6-10, 11-20, 21-30, 31+
    out: str = "outputs/eval"
    base: bool = True  # with an adapter: evaluate the base model too
    backend: str = "e2wm"
    batch_size: int = 8
    retention_passages: int = 24  # the first passages of general_text "retention" (48 in all)
    retention_max_length: int = 512

    def validate(self) -> None:
        if self.suite not in SUITES:
            raise E2WMError(f"unknown suite {self.suite!r}: choose one of {', '.join(SUITES)}")
        if self.backend not in BACKENDS:
            raise E2WMError(f"unknown backend {self.backend!r}: choose one of {', '.join(BACKENDS)}")
        unknown = sorted(set(self.tasks or ()) - set(TASKS))
        if unknown:
            raise E2WMError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASKS)}")
        if self.tasks is not None and not self.tasks:
            raise E2WMError("no tasks selected")
        for flag, overrides, allowed in (
            ("normalization", self.normalization, NORMALIZATIONS),
            ("multiple-choice form", self.mc_form, FORMS),
        ):
            for task, value in overrides.items():
                if task not in TASKS:
                    raise E2WMError(f"{flag}: unknown task {task!r}")
                if task not in MULTIPLE_CHOICE:
                    raise E2WMError(f"{flag}: {task} is not a multiple-choice task")
                if value not in allowed:
                    raise E2WMError(
                        f"unknown {flag} {value!r} for {task}: choose one of {', '.join(allowed)}"
                    )
        bad_splits = sorted(set(self.splits) - set(TEST_SPLITS))
        if not self.splits or bad_splits:
            raise E2WMError(f"splits must be among {', '.join(TEST_SPLITS)}, got {', '.join(self.splits)}")
        if self.limit is not None and self.limit < 1:
            raise E2WMError(f"limit must be 1 or more, got {self.limit}")
        edges = list(self.length_edges)
        if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise E2WMError(f"length bucket edges must be increasing positive integers, got {edges}")
        if self.retention_passages < 1 or self.retention_max_length < 2:
            raise E2WMError("retention needs at least 1 passage and a max length of 2 tokens or more")
        if self.adapter is None and not self.base:
            raise E2WMError("nothing to evaluate: no adapter and the base model turned off")

    def normalizations(self) -> dict[str, str]:
        return {**DEFAULT_NORMALIZATION, **self.normalization}

    def mc_forms(self) -> dict[str, str]:
        return {**DEFAULT_MC_FORM, **self.mc_form}

    def variants(self) -> list[str]:
        if self.adapter is None:
            return ["base"]
        return list(VARIANTS) if self.base else ["fine-tuned"]

    def selected_tasks(self) -> list[str]:
        return [t for t in TASKS if self.tasks is None or t in self.tasks]


# --- inputs ---------------------------------------------------------------------------------------------


def load_test_splits(config: EvalConfig) -> dict[str, Any]:
    """The corpus's evaluated test splits (``datasets.Dataset`` by split), checked."""
    import datasets

    datasets.disable_progress_bars()
    corpus = open_corpus(config.corpus, hub=False)
    missing = [s for s in config.splits if s not in corpus]
    if missing:
        hint = "; rebuild it with `e2wm build`" if set(missing) & set(TRANSFER_SPLITS) else ""
        raise E2WMError(
            f"corpus {config.corpus} has no split(s) {', '.join(missing)} (it has {', '.join(corpus)}){hint}"
        )
    for split in config.splits:
        lacking = sorted(set(COLUMNS) - set(corpus[split].column_names))
        if lacking:
            raise E2WMError(f"corpus {config.corpus}: split {split} lacks column(s) {', '.join(lacking)}")
    return {split: corpus[split] for split in config.splits}


def corpus_fingerprint(splits: dict[str, Any]) -> str:
    """sha256 of the evaluated splits' rows (canonical JSON, in order), split names included."""
    digest = hashlib.sha256()
    for split, ds in sorted(splits.items()):
        digest.update(f"split:{split}\n".encode())
        for batch in ds.iter(batch_size=256):
            for row in zip(*(batch[c] for c in sorted(batch)), strict=True):
                digest.update(json.dumps(dict(zip(sorted(batch), row, strict=True))).encode() + b"\n")
    return digest.hexdigest()


def sample_examples(splits: dict[str, Any], config: EvalConfig) -> dict[tuple[str, str], list[dict]]:
    """(split, task) -> a seeded sample of at most ``limit`` of its examples, in corpus order."""
    samples = {}
    tasks = config.selected_tasks()
    for split, ds in splits.items():
        by_task: dict[str, list[int]] = defaultdict(list)
        for i, task in enumerate(ds["task"]):
            by_task[task].append(i)
        for task in tasks:
            indices = by_task.get(task, [])
            if config.limit is not None and len(indices) > config.limit:
                rng = random.Random(f"{config.seed}:{split}:{task}")
                indices = sorted(rng.sample(indices, config.limit))
            if indices:
                samples[(split, task)] = [ds[i] for i in indices]
    if not samples:
        raise E2WMError(
            f"corpus {config.corpus} has no examples of {', '.join(tasks)} in {', '.join(config.splits)}"
        )
    return samples


def prompted(
    samples: dict[tuple[str, str], list[dict]], config: EvalConfig
) -> dict[tuple[str, str], list[dict]]:
    """(reported split, task) -> examples whose ``demos`` (solved examples, or "") go before ``prompt``:
    every sample as configured (``kshot``), and the transfer splits few-shot too (``transfer_kshot``)."""

    def with_demos(ex: dict, kshot: bool) -> dict:
        demos = ex["prompt_kshot"][: -len(ex["prompt"])] if kshot else ""
        return {**ex, "demos": demos}

    out = {}
    for (split, task), exs in samples.items():
        out[(split, task)] = [with_demos(ex, config.kshot) for ex in exs]
        if config.transfer_kshot and not config.kshot and split in TRANSFER_SPLITS:
            out[(split + KSHOT_SUFFIX, task)] = [with_demos(ex, True) for ex in exs]
    return out


def plan_episodes(examples: Sequence[dict], corpus: str) -> list[dict[str, Any]]:
    """The episode record each plan_generation example carries in its ``meta`` (for ``check_plan``)."""
    episodes = []
    for ex in examples:
        episode = json.loads(ex["meta"]).get("episode")
        if episode is None:
            raise E2WMError(
                f"corpus {corpus}: plan_generation examples carry no episode to check plans against "
                "(built before plan checks); rebuild it with `e2wm build`"
            )
        episodes.append(episode)
    return episodes


def adapter_sha256(adapter: str, model: str) -> str:
    """Check that ``adapter`` is a PEFT adapter directory whose weights are whole and fit ``model``
    (before either is loaded); the sha256 of its adapter_model.safetensors."""
    path = Path(adapter)
    if not path.is_dir():
        raise E2WMError(f"adapter {adapter}: no such directory")
    if not (path / "adapter_config.json").is_file():
        raise E2WMError(f"adapter {adapter} has no adapter_config.json (not a PEFT adapter directory)")
    try:
        json.loads((path / "adapter_config.json").read_text())
    except (UnicodeDecodeError, ValueError):
        raise E2WMError(f"adapter {adapter}: adapter_config.json is not JSON") from None
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise E2WMError(f"adapter {adapter} has no adapter_model.safetensors")
    check_adapter_fits(check_safetensors(weights, "adapter weights"), model, adapter)
    return sha256_file(weights)


def load_model(config: EvalConfig) -> tuple[Any, Any]:
    """(model, tokenizer): float32 on CPU from safetensors, wrapped with the adapter if there is one."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from e2wm.models import resolve_model

    transformers_logging.disable_progress_bar()
    path = resolve_model(config.model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise E2WMError(f"cannot load model {config.model}: {_first_line(exc)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if config.adapter is not None:
        try:
            with warnings.catch_warnings():  # peft calls a transformers method deprecated in 5.x
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, config.adapter, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape mismatch, missing target modules
            lines = str(exc).splitlines()
            reason = next((line.strip() for line in lines if "mismatch" in line), _first_line(exc))
            raise E2WMError(f"adapter {config.adapter} does not fit model {config.model}: {reason}") from None
    model.eval()
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


@contextlib.contextmanager
def as_variant(model: Any, variant: str) -> Iterator[None]:
    """Run the block as ``variant``: "base" disables the adapter (if any), "fine-tuned" keeps it."""
    if variant == "base" and hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield
    else:
        yield


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
    model: Any, tokenizer: Any, items: list[tuple[str, dict]], config: EvalConfig, variant: str
) -> list[dict[str, Any]]:
    """One record per (split, example) in ``items``: the chosen answer and its accuracy."""
    from e2wm.eval.scoring import mc_predictions

    forms = config.mc_forms()
    guesses = mc_predictions(
        model, tokenizer, [as_form(ex, forms[ex["task"]]) for _, ex in items], config.normalizations()
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
) -> list[dict[str, Any]]:
    """Greedy answers to one open-ended task, scored; plans are also executed in the simulator."""
    from e2wm.eval.generation import generate_answers

    prompts = [ex["demos"] + ex["prompt"] for _, ex in items]
    answers = generate_answers(
        model, tokenizer, prompts, MAX_NEW_TOKENS[task], config.batch_size, tokens=tokens
    )
    metric, score = METRICS[task]
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


# --- summaries ------------------------------------------------------------------------------------------


def mean_interval(values: Sequence[float], z: float = Z_95) -> tuple[float, float]:
    """Normal-approximation interval of the mean of values in [0, 1], clipped to [0, 1]."""
    n = len(values)
    if n < 2:
        return 0.0, 1.0
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def summary_row(metric: str, values: Sequence[float], chances: Sequence[float] = ()) -> dict[str, Any]:
    """value (the mean), n and the 95% interval of one metric's per-example values; with ``chances`` (the
    per-example chance levels of multiple choice), their mean as ``chance``."""
    n, value = len(values), sum(values) / len(values)
    low, high = wilson_interval(round(sum(values)), n) if metric in PROPORTIONS else mean_interval(values)
    # the interval holds the value exactly, whatever the rounding
    row = {"metric": metric, "value": value, "n": n, "ci_low": min(low, value), "ci_high": max(high, value)}
    if chances:
        row["chance"] = sum(chances) / len(chances)
    return row


def length_buckets(edges: Sequence[int]) -> list[tuple[str, int, int | None]]:
    """(label, low, high) per bucket: 1..edges[0], edges[0]+1..edges[1], ..., then edges[-1]+1 and up."""
    bounds = [1, *(e + 1 for e in edges)]
    buckets = [(f"{low}-{high - 1}", low, high - 1) for low, high in zip(bounds, bounds[1:], strict=False)]
    return [*buckets, (f"{bounds[-1]}+", bounds[-1], None)]


def _bucket(length: int, buckets: list[tuple[str, int, int | None]]) -> tuple[str, int, int | None]:
    return next((b for b in buckets if b[2] is not None and length <= b[2]), buckets[-1])


_METRIC_ORDER = ("accuracy", "rouge_l", "exact_match", "path_overlap", "executability", "goal_success")


def _order(row: dict[str, Any]) -> tuple:
    return (
        VARIANTS.index(row["variant"]),
        list(TASKS).index(row["task"]),
        REPORTED_SPLITS.index(row["split"]),
        _METRIC_ORDER.index(row["metric"]),
        row.get("low", 0),
    )


def summarize(records: Sequence[dict[str, Any]], edges: Sequence[int]) -> tuple[list[dict], list[dict]]:
    """(results rows, by_length rows) of per-example records, in a stable order."""
    groups: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    chances: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    by_length: dict[tuple[str, str, str, str, tuple], list[float]] = defaultdict(list)
    buckets = length_buckets(edges)
    for r in records:
        for metric, value in r["scores"].items():
            groups[(r["variant"], r["task"], r["split"], metric)].append(value)
            if "chance" in r:
                chances[(r["variant"], r["task"], r["split"], metric)].append(r["chance"])
        if r["task"] in TRACKING_TASKS:
            metric = primary_metric(r["task"])
            key = (r["variant"], r["task"], r["split"], metric, _bucket(r["length"], buckets))
            by_length[key].append(r["scores"][metric])
    rows = [
        {"variant": v, "task": t, "split": s, **summary_row(m, values, chances.get((v, t, s, m), ()))}
        for (v, t, s, m), values in groups.items()
    ]
    length_rows = []
    for (v, t, s, m, (label, low, high)), values in by_length.items():
        row = {"variant": v, "task": t, "split": s, **summary_row(m, values)}
        length_rows.append({**row, "bucket": label, "low": low, "high": high})
    return sorted(rows, key=_order), sorted(length_rows, key=_order)


RELATIVE_FLOOR = 0.05  # a relative gain is taken against at least this score (and at least chance)


def transfer_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per transfer split (zero- and few-shot): each task's primary metric, base vs fine-tuned, its relative
    gain (fine-tuned - base) / max(base, chance, 0.05), and over the tasks their mean, how many got better
    and how many got worse beyond the interval (fine-tuned ci_high below the base score)."""
    cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r["split"].removesuffix(KSHOT_SUFFIX) in TRANSFER_SPLITS and r["metric"] == primary_metric(
            r["task"]
        ):
            cells[(r["split"], r["task"])][r["variant"]] = r
    summary = []
    for split in REPORTED_SPLITS:
        tasks = []
        for task in TASKS:
            pair = cells.get((split, task), {})
            if len(pair) < 2:
                continue
            base, tuned = pair["base"], pair["fine-tuned"]
            floor = max(base["value"], base.get("chance", 0.0), RELATIVE_FLOOR)
            tasks.append(
                {
                    "task": task,
                    "metric": base["metric"],
                    "base": base["value"],
                    "fine_tuned": tuned["value"],
                    "relative_gain": (tuned["value"] - base["value"]) / floor,
                    "better": tuned["value"] > base["value"],
                    "better_beyond_interval": tuned["ci_low"] > base["value"],
                    "worse_beyond_interval": tuned["ci_high"] < base["value"],
                }
            )
        if tasks:
            summary.append(
                {
                    "split": split,
                    "tasks": tasks,
                    "mean_relative_gain": sum(t["relative_gain"] for t in tasks) / len(tasks),
                    "better": sum(t["better"] for t in tasks),
                    "better_beyond_interval": sum(t["better_beyond_interval"] for t in tasks),
                    "worse_beyond_interval": sum(t["worse_beyond_interval"] for t in tasks),
                    "n_tasks": len(tasks),
                }
            )
    return summary


def retention_rows(perplexities: dict[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """One row per (variant, text source); the fine-tuned row's relative change is against the base on the
    same source (None without it)."""
    rows = []
    for (variant, source), result in perplexities.items():
        base = perplexities.get(("base", source))
        change = None
        if variant == "fine-tuned" and base is not None:
            change = (result.perplexity - base.perplexity) / base.perplexity
        rows.append(
            {
                "variant": variant,
                "source": source,
                "perplexity": result.perplexity,
                "tokens": result.tokens,
                "relative_change": change,
            }
        )
    return rows


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
    embodied = config.suite in ("embodied", "all")
    splits = load_test_splits(config) if embodied else {}
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
    generative = [t for t in METRICS if t in by_task]
    # lm-evaluation-harness scores the in-template splits; the transfer splits are always scored here
    harness_splits = (
        [s for s in config.splits if s not in TRANSFER_SPLITS] if config.backend == "lm-eval" else []
    )
    local_mc = [item for item in mc_items if item[0] not in harness_splits]
    model = tokenizer = None
    if config.suite != "embodied" or local_mc or generative:
        _say(
            progress,
            f"loading {config.model}" + (f" with adapter {config.adapter}" if config.adapter else ""),
        )
        model, tokenizer = load_model(config)
    tokens = None
    if generative:
        from e2wm.eval.generation import LineTokens

        tokens = LineTokens.of(tokenizer)
    records: list[dict[str, Any]] = []
    harness_rows: list[dict[str, Any]] = []
    perplexities = {}
    for variant in config.variants():
        if harness_splits and len(local_mc) < len(mc_items):
            from e2wm.eval.harness import lm_eval_rows

            _say(progress, f"{variant}: multiple choice with lm-evaluation-harness")
            adapter = config.adapter if variant == "fine-tuned" else None
            mc_tasks = [t for t in MULTIPLE_CHOICE if t in by_task]
            harness_rows += lm_eval_rows(
                config.model, adapter, config.corpus, harness_splits, config.limit, mc_tasks
            )
        with as_variant(model, variant):
            if local_mc:
                _say(progress, f"{variant}: multiple choice, {len(local_mc)} examples")
                records += score_multiple_choice(model, tokenizer, local_mc, config, variant)
            for task in generative:
                _say(progress, f"{variant}: {task}, {len(by_task[task])} examples")
                records += score_generation(model, tokenizer, task, by_task[task], config, variant, tokens)
            if config.suite != "embodied":
                from e2wm.eval.retention import retention_perplexity

                for source in RETENTION_SOURCES:
                    _say(progress, f"{variant}: general-text perplexity ({source})")
                    perplexities[(variant, source)] = retention_perplexity(
                        model, tokenizer, config.retention_passages, config.retention_max_length, source
                    )
    rows, length_rows = summarize(records, config.length_edges)
    rows = sorted(rows + harness_rows, key=_order)
    results = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "backend": config.backend,
        "model": config.model,
        "adapter": config.adapter,
        "adapter_sha256": sha,
        "corpus": config.corpus,
        "corpus_fingerprint": corpus_fingerprint(splits) if embodied else None,
        "suite": config.suite,
        "limit": config.limit,
        "splits": list(config.splits),
        "seed": config.seed,
        "kshot": config.kshot,
        "transfer_kshot": config.transfer_kshot,
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
    from e2wm.eval.report import write_report

    with staged(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        with (tmp / "predictions.jsonl").open("w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        write_report(results, tmp)
