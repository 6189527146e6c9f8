"""Multiple-choice eval speed: items/s of ``evaluate_multiple_choice`` vs the naive scorer, in one run.

Both score the same items with the same model under the ``"unconditional"`` normalization (the most
forwards for the naive way) and must predict the same choices. Ours packs several items per forward: their
prompts in one sequence under a block-diagonal causal mask, then all their choices on the prompts' KV
cache; the normaliser context "Answer:" is encoded once and each distinct answer scored once. The naive
scorer runs one full forward of prompt + choice per choice plus one of "Answer:" + choice per normaliser.

Items: the corpus's multiple-choice items (``outputs/demo/corpus``, their k-shot prompts, about
150-400 tokens, 4 short choices) when it exists, else prompts synthesized from the general text
(``e2wm.training.general_text.passages("retention")``). The model has SmolLM2-135M's shape with random weights
(``bench/_fisher.py``), the tokenizer a byte-level BPE trained offline on the general text.

Measured on 2 shared CPU cores (``--quick``, 8 items of 220-352 tokens): 1.8 items/s, 7.0x the naive
scorer (target 4x). Packing matters on a CPU because every forward pays for reading all the weights.

    python bench/eval.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from _fisher import make_model, make_tokenizer

from e2wm.corpus.read import open_corpus
from e2wm.eval.scoring import argmax, evaluate_multiple_choice, naive_choice_logprobs, normalize
from e2wm.training import general_text

CORPUS = Path(__file__).resolve().parent.parent / "outputs" / "demo" / "corpus"


def load_items(n: int, tokenizer) -> list[dict]:
    """``n`` multiple-choice items shaped like the corpus's: a prompt of 150-400 tokens, 4 short choices."""
    if CORPUS.exists():
        rows = [r for r in open_corpus(str(CORPUS))["validation"] if len(r["choices"]) == 4]
        rows = [r for r in rows if 150 <= len(tokenizer(r["prompt_kshot"])["input_ids"]) <= 400]
        rows = random.Random(0).sample(rows, n)
        return [
            {"task": r["task"], "prompt": r["prompt_kshot"], "choices": r["choices"], "label": r["label"]}
            for r in rows
        ]
    rng = random.Random(0)
    passages = general_text.passages("retention")
    words = sorted({w.strip(".,;:!?\"'()") for p in passages for w in p.split() if w.isalpha()})
    items = []
    for i in range(n):
        prompt = " ".join(passages[(i + k) % len(passages)] for k in range(3))[:1200]
        choices = [" ".join(rng.sample(words, rng.randint(1, 3))) for _ in range(4)]
        items.append({"task": "synthetic", "prompt": prompt + "\nAnswer:", "choices": choices, "label": 0})
    return items


def naive_predictions(model, tokenizer, items: list[dict]) -> list[int]:
    """Unconditional-normalized predictions, one full forward per choice and per normaliser."""
    preds = []
    for item in items:
        conts = [" " + c for c in item["choices"]]
        scores = naive_choice_logprobs(model, tokenizer, item["prompt"], conts)
        uncond = [s for s, _ in naive_choice_logprobs(model, tokenizer, "Answer:", conts)]
        preds.append(argmax(normalize(scores, "unconditional", uncond)))
    return preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer items (under a minute on 2 CPU cores)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = make_tokenizer(general_text.passages("fisher") + general_text.passages("retention"))
    model = make_model(device)
    items = load_items(8 if args.quick else 48, tokenizer)
    lengths = [len(tokenizer(it["prompt"])["input_ids"]) for it in items]
    evaluate_multiple_choice(model, tokenizer, items[:1], "unconditional")  # warm-up
    naive_predictions(model, tokenizer, items[:1])

    start = time.perf_counter()
    results = evaluate_multiple_choice(model, tokenizer, items, "unconditional")
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_predictions(model, tokenizer, items)
    naive_s = time.perf_counter() - start

    naive_acc = sum(p == it["label"] for p, it in zip(naive, items, strict=True)) / len(items)
    ours_acc = sum(r["accuracy"] * r["n"] for r in results.values()) / len(items)
    assert abs(ours_acc - naive_acc) < 1e-9, (ours_acc, naive_acc)
    distinct = len({c for it in items for c in it["choices"]})
    print(
        f"{len(items)} items on {device}, prompts {min(lengths)}-{max(lengths)} tokens, {distinct} distinct "
        f"choices; ours {ours_s:.2f} s, naive {naive_s:.2f} s; accuracy {ours_acc:.3f} (both)"
    )
    print(f"bench eval: items_per_s = {len(items) / ours_s:.2f} ({naive_s / ours_s:.1f}x vs naive scorer)")


if __name__ == "__main__":
    main()
