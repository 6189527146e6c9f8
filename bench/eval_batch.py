"""Eval throughput: ``e2wm eval --batch-size 8`` vs ``--batch-size 1``, and the CPU's bfloat16 autocast vs
float32, on the same items, in one run.

The items are what ``e2wm eval`` scores: multiple-choice questions (``score_multiple_choice``: with
``--batch-size N`` up to N items share a forward, their prompts packed under a block-diagonal mask) and
open-ended ones answered greedily (``score_generation``: N prompts per ``generate`` call, left-padded).
They come from the demo corpus's ``test_seen_transfer`` split when ``outputs/demo/corpus`` exists (few-shot
prompts, the long ones that dominate the eval's time; plans are also run in the simulator, the same work in
every run), else from prompts synthesized from the general text. The model is the embedded SmolLM2-135M
(float32 weights).

Three runs over the same items: float32 at batch size 1 (the baseline), float32 at 8, and at 8 under the
bfloat16 autocast ``--dtype auto`` picks on a CPU with AVX-512 BF16 or AMX (left out elsewhere: there
``auto`` is float32 on the CPU, the second run). Each line reports how many
answers agree with the baseline: batching changes only the order of float additions (packed and padded
rows are masked out), so answers agree except at near-ties; bfloat16 rounds every matmul input to 8 bits
of mantissa, so a few close multiple-choice calls may flip.

Measured on 2 CPU cores with AVX-512 BF16, 64 items (32 + 32) of the demo corpus: float32 at batch size 8
0.98 items/s, 1.24x batch size 1 (the same 64 answers; on the CPU a prompt of 1,000-1,600 tokens already
keeps both cores busy, so batching gains little there, most on the open-ended answers' decoding);
bfloat16 autocast 1.88 items/s, 1.93x float32 (59 of 64 answers the same). ``--quick`` (16 items): 0.94x
and 2.03x.

    python bench/eval_batch.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time
from pathlib import Path

from e2wm.corpus.read import open_corpus
from e2wm.corpus.tasks import GENERATION, MULTIPLE_CHOICE
from e2wm.eval.config import EvalConfig
from e2wm.eval.generation import LineTokens
from e2wm.eval.models import compute_context, load_model, precision
from e2wm.eval.run import score_generation, score_multiple_choice
from e2wm.training import general_text

CORPUS = Path(__file__).resolve().parent.parent / "outputs" / "demo" / "corpus"
SPLIT = "test_seen_transfer"


def corpus_items(n: int) -> tuple[list[tuple[str, dict]], dict[str, list[tuple[str, dict]]]]:
    """``n`` multiple-choice and ``n`` open-ended items of the demo corpus, few-shot prompted."""
    rows = list(open_corpus(str(CORPUS))[SPLIT])
    rng = random.Random(0)
    mc = rng.sample([r for r in rows if r["task"] in MULTIPLE_CHOICE], n)
    gen = rng.sample([r for r in rows if r["task"] in GENERATION], n)
    with_demos = [(SPLIT, {**r, "demos": r["prompt_kshot"][: -len(r["prompt"])]}) for r in mc + gen]
    by_task: dict[str, list[tuple[str, dict]]] = {}
    for item in with_demos[n:]:
        by_task.setdefault(item[1]["task"], []).append(item)
    return with_demos[:n], by_task


def synthetic_items(n: int) -> tuple[list[tuple[str, dict]], dict[str, list[tuple[str, dict]]]]:
    """Items shaped like the corpus's (prompts of a few hundred tokens), from the general text."""
    passages = general_text.passages("retention")
    words = sorted({w.strip(".,;:!?\"'()") for p in passages for w in p.split() if w.isalpha()})
    rng = random.Random(0)
    base = {"episode_id": "synthetic", "length": 1, "meta": "{}", "demos": ""}
    mc, gen = [], []
    for i in range(n):
        text = " ".join(passages[(i + k) % len(passages)] for k in range(3))[:1200]
        choices = [rng.choice(words) for _ in range(4)]
        mc.append((SPLIT, {**base, "task": "housework_qa", "prompt": text + "\nAnswer:", "choices": choices,
                           "label": 0, "completion": " " + choices[0]}))  # fmt: skip
        gen.append((SPLIT, {**base, "task": "counting", "prompt": text + "\nHow many?\nAnswer:",
                            "choices": [], "label": -1, "completion": " 2"}))  # fmt: skip
    return mc, {"counting": gen}


def run(model, tokenizer, config: EvalConfig, mc, by_task, tokens) -> tuple[float, list[str]]:
    """Seconds to score every item as ``e2wm eval`` does, and the answers in item order."""
    start = time.perf_counter()
    with compute_context(config):
        records = score_multiple_choice(model, tokenizer, mc, config, "base")
        for task, items in by_task.items():
            records += score_generation(model, tokenizer, task, items, config, "base", tokens)
    return time.perf_counter() - start, [r["prediction"] for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 + 8 items (under a minute on 2 CPU cores)")
    args = parser.parse_args()
    n = 8 if args.quick else 32
    mc, by_task = corpus_items(n) if CORPUS.exists() else synthetic_items(n)
    fp32 = EvalConfig(corpus=str(CORPUS), dtype="float32").resolved()  # the default model
    model, tokenizer = load_model(fp32)
    tokens = LineTokens.of(tokenizer)
    run(model, tokenizer, fp32, mc[:1], {t: i[:1] for t, i in by_task.items()}, tokens)  # warm-up
    auto = dataclasses.replace(fp32, dtype="auto")
    configs = {
        "float32, batch 1": dataclasses.replace(fp32, batch_size=1),
        "float32, batch 8": dataclasses.replace(fp32, batch_size=8),
        f"{precision(auto)}, batch 8": dataclasses.replace(auto, batch_size=8),
    }
    if "autocast" not in precision(auto):  # no CPU autocast here: the same run again (or, on a GPU, a reload)
        configs.pop(f"{precision(auto)}, batch 8")
    seconds, answers = {}, {}
    for name, config in configs.items():
        seconds[name], answers[name] = run(model, tokenizer, config, mc, by_task, tokens)
    total = len(mc) + sum(map(len, by_task.values()))
    baseline = "float32, batch 1"
    source = f"{SPLIT} of {CORPUS}" if CORPUS.exists() else "synthesized prompts"
    print(f"{total} items ({len(mc)} multiple choice, {total - len(mc)} open-ended) from {source}")
    for name in configs:
        same = sum(a == b for a, b in zip(answers[name], answers[baseline], strict=True))
        print(f"  {name}: {seconds[name]:.1f} s, {total / seconds[name]:.2f} items/s, "
              f"{same}/{total} answers as at batch 1")  # fmt: skip
    batch8 = "float32, batch 8"
    print(
        f"bench eval_batch: items_per_s = {total / seconds[batch8]:.2f} "
        f"({seconds[baseline] / seconds[batch8]:.2f}x vs batch size 1)"
    )
    fastest = list(configs)[-1]
    print(
        f"bench eval_precision: items_per_s = {total / seconds[fastest]:.2f} "
        f"({seconds[batch8] / seconds[fastest]:.2f}x vs float32, {fastest})"
    )


if __name__ == "__main__":
    main()
