"""Forgetting vs gain: general-text perplexity change on two genres against the embodied transfer gain.

Runs: the default recipe (``recipes/smollm2_ewc_lora_cpu.yaml``: SmolLM2-135M, LoRA r=16 on every
linear layer) trained on ``--corpus`` at each ``--lambdas`` value (lambda 0 is plain LoRA), plus a
replay run at ``--replay-lambda`` (default 0: replay alone; ``replay_fraction`` ``--replay``: that share
of the training examples is prose of ``e2wm.training.general_text`` part "fisher", source pydoc). Each run
trains into its own directory under ``--out`` (``lambda10000/``, ``replay0.1_lambda10000/``; skipped
when its adapter exists, whatever ``--max-steps`` was then, resumed from its last checkpoint
otherwise), all sharing one Fisher file there.
Evaluations are cached in the run directories too (``eval/``).

Measures, per run:
- general perplexity change (%) against the base model on the held-out "retention" part of each
  general-text source, as `e2wm eval` reports it (``e2wm.eval.retention.retention_perplexity``: 24 evenly
  spaced passages, 512 tokens): "pydoc" (Python reference prose, the
  genre the Fisher and replay come from) and "news" (Lee news articles from the gensim wheel, a genre
  neither sees);
- the mean embodied gain on the transfer splits (``transfer_gain``: over tasks, (fine-tuned - base) /
  max(base, chance, 0.05) of each task's first metric on splits named ``*_transfer``) from the
  ``results.json`` of ``e2wm eval`` (suite "all", ``--limit`` examples per task per split; the base
  model evaluated once, in ``base/``). Without transfer splits it is "n/a"; the table then also shows
  the gain over every evaluated split, and the chart plots that instead, saying so on its axis.

Writes ``forgetting.md`` (the table), ``forgetting.png`` (x: perplexity change per source, y: gain; one
point per run and source) and ``forgetting.json``, and ends with the headline lines: each run's
perplexity change per source and its transfer gain, lambda 0 against the base (ratio of perplexities)
and the others against lambda 0 (ratio of changes).

``--quick`` (about 30 s on 2 CPU cores) runs the same pipeline on stand-ins, in a temporary directory:
a 2-layer Llama (hidden 64) and a byte-level BPE of 2,048 tokens, both fitted here in a few seconds
to the "fisher" parts of both sources (so that the base model has general text to forget), a
synthetic corpus of two multiple-choice tasks (transfer splits: held-out question wordings), the
recipe with 40 steps at learning rate 3e-3 and 64 tokens, lambdas 0 and 10000, replay 0.5, 8
retention passages of 128 tokens; the table and chart go to ``--out`` (default
``outputs/forgetting/quick``). It checks the pipeline, not the model: its perplexity side shows the
expected order (lambda 0 forgets most, EWC less, replay about nothing), but so small a model learns too
little of the corpus in 40 steps for its answers to change, so its gains stay near 0.

    python bench/forgetting.py [--quick] [--lambdas 0,10000] [--replay 0.2] [--replay-lambda 0]
        [--max-steps N]
        [--corpus outputs/demo/corpus] [--limit 20] [--out outputs/forgetting]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smollm2_ewc_lora_cpu.yaml"
SOURCES = ("pydoc", "news")  # e2wm.training.general_text.SOURCES


@dataclass(frozen=True)
class Run:
    name: str
    ewc_lambda: float
    replay: float = 0.0

    @property
    def label(self) -> str:
        return f"lambda {self.ewc_lambda:g}" + (f" + replay {self.replay:g}" if self.replay else "")


@dataclass
class Setup:
    """What the runs train and evaluate: the model, corpus, recipe overrides and measurement sizes."""

    model: str
    corpus: str
    overrides: list[str]
    limit: int | None
    passages: int = 24
    max_length: int = 512
    eval_tasks: tuple[str, ...] | None = None
    transfer_kshot: bool = True  # also score the transfer splits few-shot (not in the transfer gain)


# --- the embodied gain ----------------------------------------------------------------------------------


def embodied_gain(results: dict, suffix: str = "_transfer") -> float | None:
    """Mean over tasks of (fine-tuned - base) / max(base, chance, 0.05), each task scored by its first
    metric in row order, averaged over its splits ending in ``suffix`` that both variants have."""
    rows = [r for r in results.get("results", []) if r["split"].endswith(suffix)]
    metric: dict[str, str] = {}
    for row in rows:
        metric.setdefault(row["task"], row["metric"])
    values: dict[tuple[str, str, str], dict] = {}
    for row in rows:
        if row["metric"] == metric[row["task"]]:
            values[(row["variant"], row["task"], row["split"])] = row
    per_task: dict[str, list[float]] = defaultdict(list)
    for (variant, task, split), row in values.items():
        base = values.get(("base", task, split))
        if variant != "fine-tuned" or base is None:
            continue
        chance = max(float(row.get("chance") or 0.0), float(base.get("chance") or 0.0))
        per_task[task].append((row["value"] - base["value"]) / max(base["value"], chance, 0.05))
    if not per_task:
        return None
    return sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)


def transfer_gain(results: dict) -> float | None:
    """The mean embodied gain on the transfer splits (``*_transfer``); None without such rows."""
    return embodied_gain(results, "_transfer")


# --- training, evaluation, perplexity -------------------------------------------------------------------


def runs_for(lambdas: list[float], replay: float, replay_lambda: float = 0.0) -> list[Run]:
    runs = [Run(f"lambda{lam:g}", lam) for lam in lambdas]
    if replay > 0:
        runs.append(Run(f"replay{replay:g}_lambda{replay_lambda:g}", replay_lambda, replay))
    return runs


@contextlib.contextmanager
def logged_to(path: Path):
    """stdout and stderr (progress bars, trainer logs) into ``path``."""
    with path.open("a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def train_run(run: Run, folder: Path, setup: Setup, fisher: Path) -> str:
    """Train ``run`` into ``folder`` (skipped when its adapter exists); "trained" or "kept"."""
    if (folder / "adapter_model.safetensors").exists():
        return "kept"
    from e2wm.training.config import parse
    from e2wm.training.train import train

    argv = [
        "--config", str(RECIPE), "--model_name_or_path", setup.model, "--dataset", setup.corpus,
        "--output_dir", str(folder), "--fisher_path", str(fisher), "--ewc_lambda", f"{run.ewc_lambda:g}",
        "--replay_fraction", f"{run.replay:g}", "--disable_tqdm", "true", *setup.overrides,
    ]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    with logged_to(folder / "train.log"):
        trainer = train(*parse(argv))
    del trainer
    gc.collect()
    return "trained"


def eval_run(adapter: Path | None, folder: Path, setup: Setup) -> dict:
    """``e2wm eval`` suite "all" of the adapter alone, or of the base model (``adapter`` None), into
    ``folder/eval``; an existing results.json is read instead."""
    out = folder / "eval"
    if (out / "results.json").exists():
        return json.loads((out / "results.json").read_text())
    from e2wm.eval.config import EvalConfig
    from e2wm.eval.run import evaluate

    config = EvalConfig(
        model=setup.model,
        adapter=str(adapter) if adapter is not None else None,
        corpus=setup.corpus,
        suite="all",
        tasks=setup.eval_tasks,
        limit=setup.limit,
        out=str(out),
        base=adapter is None,
        retention_passages=setup.passages,
        retention_max_length=setup.max_length,
        transfer_kshot=setup.transfer_kshot,
    )
    folder.mkdir(parents=True, exist_ok=True)
    with logged_to(folder / "eval.log"):
        return evaluate(config, progress=True)


def report_vs_base(base: dict, tuned: dict, folder: Path) -> None:
    """The run's ``results.md`` and charts against the base model's (evaluated once, in ``base/``), as
    ``e2wm eval`` writes them for base and fine-tuned together: all rows, the transfer summary."""
    from e2wm.eval.report import write_report
    from e2wm.eval.statistics import retention_rows, row_order, transfer_summary

    rows = sorted(base["results"] + tuned["results"], key=row_order)
    perplexities = {
        (r["variant"], r["source"]): argparse.Namespace(perplexity=r["perplexity"], tokens=r["tokens"])
        for r in base["retention"] + tuned["retention"]
    }
    merged = {
        **tuned,
        "results": rows,
        "by_length": sorted(base["by_length"] + tuned["by_length"], key=row_order),
        "retention": retention_rows(perplexities),
        "transfer": transfer_summary(rows),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(merged, indent=2) + "\n")
    write_report(merged, folder)


def general_perplexity(results: dict) -> dict[str, float]:
    """Retention perplexity per general-text source, from an ``e2wm eval`` results.json (suite "all")."""
    return {r["source"]: r["perplexity"] for r in results["retention"]}


def change(ppl: float, base: float) -> float:
    return ppl / base - 1


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


def signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def ratio(value: float | None, baseline: float | None) -> str:
    if value is None or baseline is None or abs(baseline) < 1e-4:  # no change to compare with
        return "n/a"
    return f"{value / baseline:.2f}"


def table(runs: list[Run], rows: dict[str, dict], base: dict[str, float]) -> str:
    head = (
        "| run | ewc_lambda | replay | "
        + " | ".join(f"{s} ppl | {s} change" for s in SOURCES)
        + " | transfer gain | gain, all splits |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines.append("| base | | | " + " | ".join(f"{base[s]:.2f} | " for s in SOURCES) + " | | |")
    for run in runs:
        r = rows[run.name]
        cells = " | ".join(f"{r['ppl'][s]:.2f} | {percent(r['change'][s])}" for s in SOURCES)
        lines.append(
            f"| {run.name} | {run.ewc_lambda:g} | {run.replay:g} | {cells} | {signed(r['transfer_gain'])} "
            f"| {signed(r['gain_all'])} |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], rows: dict[str, dict], path: Path) -> None:
    """One panel per source: x the perplexity change, y the gain; the lambda runs joined in lambda
    order, the replay run a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    transfer = any(rows[r.name]["transfer_gain"] is not None for r in runs)
    key = "transfer_gain" if transfer else "gain_all"

    def point(run: Run, source: str) -> tuple[float, float]:
        gain = rows[run.name][key]
        return 100 * rows[run.name]["change"][source], math.nan if gain is None else gain

    fig, axes = plt.subplots(1, len(SOURCES), figsize=(10, 4.2), sharey=True)
    ewc = sorted((r for r in runs if not r.replay), key=lambda r: r.ewc_lambda)
    for ax, source in zip(axes, SOURCES, strict=True):
        xs, ys = zip(*(point(r, source) for r in ewc), strict=True) if ewc else ((), ())
        ax.plot(xs, ys, marker="o", linestyle=":", label="EWC-LoRA")
        for run in runs:
            x, y = point(run, source)
            if run.replay:
                ax.plot([x], [y], marker="*", markersize=12, linestyle="", color="C1", label=run.label)
            ax.annotate(run.label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_xlabel(f"{source} retention perplexity change vs base (%)")
        ax.set_title(f"general text: {source}")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(
        "mean embodied gain, transfer splits" if transfer else "mean embodied gain, all splits (no transfer)"
    )
    fig.suptitle("Forgetting vs gain: EWC lambda and replay")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def headlines(runs: list[Run], rows: dict[str, dict], base: dict[str, float]) -> list[str]:
    """``bench forgetting: METRIC = VALUE (RATIO x vs BASELINE)`` per run and figure."""
    zero = next((r for r in runs if r.ewc_lambda == 0 and not r.replay), None)
    lines = []
    for run in runs:
        r = rows[run.name]
        for source in SOURCES:
            metric = f"{source}_ppl_change_{run.name}"
            if run is zero:
                vs = f"{r['ppl'][source] / base[source]:.2f} x vs base"
            else:
                baseline = rows[zero.name]["change"][source] if zero else None
                vs = f"{ratio(r['change'][source], baseline)} x vs lambda 0"
            lines.append(f"bench forgetting: {metric} = {percent(r['change'][source])} ({vs})")
    for run in runs:
        gain = rows[run.name]["transfer_gain"]
        baseline = rows[zero.name]["transfer_gain"] if zero else None
        vs = f"{ratio(gain, baseline)} x vs lambda 0"
        lines.append(f"bench forgetting: transfer_gain_{run.name} = {signed(gain)} ({vs})")
    if all(rows[r.name]["transfer_gain"] is None for r in runs):  # no transfer splits: the all-splits gain
        for run in runs:
            gain = rows[run.name]["gain_all"]
            baseline = rows[zero.name]["gain_all"] if zero else None
            vs = f"{ratio(gain, baseline)} x vs lambda 0"
            lines.append(f"bench forgetting: all_splits_gain_{run.name} = {signed(gain)} ({vs})")
    return lines


# --- quick stand-ins ------------------------------------------------------------------------------------

ACTIVITIES = {  # activity -> (room, object)
    "drink": ("kitchen", "mug"),
    "read": ("bedroom", "book"),
    "watch": ("living room", "tv"),
    "cook": ("kitchen", "pan"),
    "wash": ("bathroom", "sink"),
    "sleep": ("bedroom", "bed"),
}


# Train wordings (train, validation, test_seen, test_unseen) and held-out ones (the transfer splits).
WORDINGS = {
    "activity_recognition_mc": (
        "{walk} What activity is this? Answer:",
        "{walk} What were they doing? Answer:",
    ),
    "housework_qa": (
        "Which activity needs the {thing}? Answer:",
        "You would use the {thing} to do what? Answer:",
    ),
}
QUICK_SPLITS = {
    "train": 96,
    "validation": 8,
    "test_seen": 24,
    "test_unseen": 24,
    "test_seen_transfer": 24,
    "test_unseen_transfer": 24,
}


def quick_corpus(folder: Path) -> Path:
    """Two multiple-choice tasks in e2wm's corpus format: train and validation, the test splits, and the
    transfer splits (the same kind of questions in held-out wordings)."""
    import datasets

    rng = random.Random(0)
    names = list(ACTIVITIES)
    splits = {}
    for split, n in QUICK_SPLITS.items():
        rows = []
        for i in range(n):
            answer = names[i % len(names)]
            room, thing = ACTIVITIES[answer]
            walk = f"Walk to the {room}. Find the {thing}. Grab the {thing}."
            choices = [answer, *rng.sample([a for a in names if a != answer], 3)]
            rng.shuffle(choices)
            task = "activity_recognition_mc" if i % 2 else "housework_qa"
            wording = WORDINGS[task][split.endswith("_transfer")]
            question = wording.format(walk=walk, thing=thing)
            rows.append(
                {
                    "task": task,
                    "prompt": question,
                    "prompt_kshot": question,
                    "completion": f" {answer}",
                    "choices": choices,
                    "label": choices.index(answer),
                    "weight": 1.0,
                    "episode_id": f"quick-{split}-{i}",
                    "length": 3,
                    "meta": "{}",
                    "split_group": "unseen" if "unseen" in split else "seen",
                }
            )
        splits[split] = datasets.Dataset.from_list(rows)
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def quick_tokenizer(texts: list[str]) -> Any:
    """A byte-level BPE of 2,048 tokens trained on ``texts`` (``bench/_fisher.py``'s, smaller), BOS first."""
    from _fisher import make_tokenizer

    return make_tokenizer(texts, vocab_size=2048)


def quick_model(folder: Path, corpus: Path) -> Path:
    """A 2-layer Llama and a byte-level BPE, both fitted for a few seconds to the general text's "fisher"
    parts (both sources), saved to ``folder``."""
    import torch
    import transformers

    from e2wm.corpus.read import open_corpus
    from e2wm.training import general_text

    texts = [p for s in SOURCES for p in general_text.passages("fisher", s)]
    corpus_texts = [r["prompt"] + r["completion"] for r in open_corpus(str(corpus))["train"]]
    tokenizer = quick_tokenizer(texts + corpus_texts)
    config = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    chunks = torch.tensor(ids[: len(ids) // 64 * 64]).view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(120):
        batch = chunks[torch.randint(len(chunks), (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


QUICK_OVERRIDES = [
    "--max_steps", "40", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
    "--warmup_steps", "0", "--max_length", "64", "--save_strategy", "no", "--logging_steps", "10",
    "--fisher_samples", "16", "--fisher_max_length", "64",
]  # fmt: skip


# --- main -----------------------------------------------------------------------------------------------


def measure(runs: list[Run], setup: Setup, out: Path) -> tuple[dict[str, float], dict[str, dict]]:
    """Train and evaluate every run; (base perplexity per source, per-run figures)."""
    fisher = out / "fisher.safetensors"
    base_results = eval_run(None, out / "base", setup)
    base_ppl = general_perplexity(base_results)
    rows = {}
    for run in runs:
        folder = out / run.name
        start = time.perf_counter()
        how = train_run(run, folder, setup, fisher)
        print(f"[forgetting] {run.name}: {how} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
        if how == "trained":  # measurements of an earlier, unfinished adapter are stale
            shutil.rmtree(folder / "eval", ignore_errors=True)
        results = eval_run(folder, folder, setup)
        ppl = general_perplexity(results)
        both = {"results": base_results["results"] + results["results"]}
        report_vs_base(base_results, results, folder / "vs_base")
        rows[run.name] = {
            "ppl": ppl,
            "change": {s: change(ppl[s], base_ppl[s]) for s in SOURCES},
            "transfer_gain": transfer_gain(both),
            "gain_all": embodied_gain(both, ""),
        }
    return base_ppl, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny stand-ins, under a minute")
    parser.add_argument("--lambdas", default=None, help="ewc_lambda values (default 0,10000)")
    parser.add_argument(
        "--replay", type=float, default=None, help="replay_fraction of the replay run (0: none)"
    )
    parser.add_argument(
        "--replay-lambda", type=float, default=0.0, help="ewc_lambda of the replay run (0: replay alone)"
    )
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    parser.add_argument("--corpus", default="outputs/demo/corpus", help="corpus from `e2wm build`")
    parser.add_argument("--limit", type=int, default=20, help="eval examples per task per split")
    parser.add_argument("--out", default=None, help="output directory (default outputs/forgetting)")
    args = parser.parse_args()
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    start = time.perf_counter()
    lambdas = [float(x) for x in (args.lambdas or "0,10000").split(",")]
    replay = args.replay if args.replay is not None else (0.5 if args.quick else 0.2)
    runs = runs_for(lambdas, replay, args.replay_lambda)
    out = Path(args.out or ("outputs/forgetting/quick" if args.quick else "outputs/forgetting"))
    out.mkdir(parents=True, exist_ok=True)
    steps = ["--max_steps", str(args.max_steps)] if args.max_steps else []
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            corpus = quick_corpus(Path(tmp) / "corpus")
            model = quick_model(Path(tmp) / "model", corpus)
            setup = Setup(
                str(model), str(corpus), QUICK_OVERRIDES + steps, args.limit, passages=8, max_length=128
            )
            setup.eval_tasks, setup.transfer_kshot = tuple(WORDINGS), False
            work = Path(tmp) / "runs"
        else:
            if not Path(args.corpus).is_dir():
                raise SystemExit(f"bench forgetting: no corpus at {args.corpus} (run `make demo` first)")
            setup = Setup("smollm2-135m", args.corpus, steps, args.limit)
            work = out
        base, rows = measure(runs, setup, work)
    (out / "forgetting.md").write_text(table(runs, rows, base))
    (out / "forgetting.json").write_text(
        json.dumps(
            {"base_ppl": base, "runs": {r.name: {**rows[r.name], "label": r.label} for r in runs}}, indent=2
        )
        + "\n"
    )
    plot(runs, rows, out / "forgetting.png")
    print(table(runs, rows, base))
    print(f"wrote {out / 'forgetting.md'}, {out / 'forgetting.png'} ({time.perf_counter() - start:.0f} s)")
    for line in headlines(runs, rows, base):
        print(line)


if __name__ == "__main__":
    main()
