"""Which multiple-choice scoring measures knowledge: every form x normalization, on the base model.

For each multiple-choice task, a seeded sample of the corpus's *validation* split (never a test split)
is scored by the base model (SmolLM2-135M, embedded) in each form of ``e2wm.eval.mc_forms`` (``cloze``:
no option list; ``listed``: options in the prompt, the answer's text; ``lettered``: lettered options,
the letter) under each normalization (``sum``, ``mean``, ``unconditional``), twice: options as built,
and reversed. It reports, per task and scoring:

- accuracy (options as built), beside the chance level;
- a shuffled-label control: accuracy against a label drawn at random per item, which any scorer can only
  get at chance (a scorer far from chance there is reading something other than the answer);
- agreement: the share of items whose chosen answer (its text) is the same in both orders. A scorer that
  follows the position or the listing, not the content, disagrees with itself.

The pick per task: among scorings with accuracy at or above chance, the most self-consistent one
(agreement, then accuracy); ``e2wm.eval.config.DEFAULT_MC_FORM`` and ``DEFAULT_NORMALIZATION`` hold the
picks. Ends with one line per task: ``bench mc_instrument: TASK = FORM/NORM accuracy (RATIO x vs chance)``.

    python bench/mc_instrument.py [--quick] [--n 40] [--corpus outputs/demo/corpus]

``--quick``: 6 items per task (under a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from e2wm.corpus.read import open_corpus
from e2wm.corpus.tasks import MULTIPLE_CHOICE
from e2wm.eval.mc_forms import FORMS, as_form, reorder
from e2wm.eval.scoring import NORMALIZATIONS, UnconditionalScorer, argmax, normalize, packed_logprobs
from e2wm.training.models import resolve_model

ROOT = Path(__file__).resolve().parent.parent


def choices_made(model, tokenizer, examples: list[dict], form: str, scorer: UnconditionalScorer) -> dict:
    """normalization -> the chosen answer text of each example, scored in ``form``."""
    shaped = [as_form(ex, form) for ex in examples]
    scores = packed_logprobs(
        model, tokenizer, [(e["prompt"], [" " + c for c in e["choices"]]) for e in shaped]
    )
    chosen = {}
    for norm in NORMALIZATIONS:
        picks = []
        for ex, shape, sc in zip(examples, shaped, scores, strict=True):
            uncond = scorer(list(shape["choices"])) if norm == "unconditional" else None
            picks.append(ex["choices"][argmax(normalize(sc, norm, uncond))])
        chosen[norm] = picks
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="6 items per task")
    parser.add_argument("--n", type=int, default=40, help="validation items per task")
    parser.add_argument("--corpus", default=str(ROOT / "outputs" / "demo" / "corpus"))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "mc_instrument.json"))
    args = parser.parse_args()
    n = 6 if args.quick else args.n
    if not Path(args.corpus).is_dir():
        raise SystemExit(f"bench mc_instrument: no corpus at {args.corpus} (run `make demo` first)")
    start = time.perf_counter()
    datasets.disable_progress_bars()
    validation = open_corpus(args.corpus)["validation"]
    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
    scorer = UnconditionalScorer(model, tokenizer)
    table, picks = [], {}
    for task in MULTIPLE_CHOICE:
        rows = [r for r in validation if r["task"] == task]
        rows = random.Random(f"instrument:{task}").sample(rows, min(n, len(rows)))
        if not rows:
            continue
        flipped = [reorder(r, list(range(len(r["choices"])))[::-1]) for r in rows]
        answers = [r["choices"][r["label"]] for r in rows]
        rng = random.Random(f"shuffled:{task}")
        shuffled = [r["choices"][rng.randrange(len(r["choices"]))] for r in rows]
        chance = sum(1 / len(r["choices"]) for r in rows) / len(rows)
        candidates = []
        for form in FORMS:
            ours = choices_made(model, tokenizer, rows, form, scorer)
            theirs = choices_made(model, tokenizer, flipped, form, scorer)
            for norm in NORMALIZATIONS:
                accuracy = sum(a == b for a, b in zip(ours[norm], answers, strict=True)) / len(rows)
                control = sum(a == b for a, b in zip(ours[norm], shuffled, strict=True)) / len(rows)
                agreement = sum(a == b for a, b in zip(ours[norm], theirs[norm], strict=True)) / len(rows)
                row = {
                    "task": task,
                    "form": form,
                    "normalization": norm,
                    "n": len(rows),
                    "chance": chance,
                    "accuracy": accuracy,
                    "shuffled_label_accuracy": control,
                    "agreement": agreement,
                }
                table.append(row)
                candidates.append(row)
        fair = [r for r in candidates if r["accuracy"] >= r["chance"]] or candidates
        picks[task] = max(fair, key=lambda r: (r["agreement"], r["accuracy"]))
    print("| task | form | normalization | n | chance | accuracy | shuffled-label accuracy | agreement |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in table:
        mark = " **(pick)**" if picks[r["task"]] is r else ""
        print(
            f"| {r['task']} | {r['form']}{mark} | {r['normalization']} | {r['n']} | {r['chance']:.2f} | "
            f"{r['accuracy']:.2f} | {r['shuffled_label_accuracy']:.2f} | {r['agreement']:.2f} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": table, "picks": picks}, indent=2) + "\n")
    print(f"\n{time.perf_counter() - start:.0f} s; table in {args.out}")
    for task, r in picks.items():
        ratio = r["accuracy"] / r["chance"]
        print(
            f"bench mc_instrument: {task} = {r['form']}/{r['normalization']} accuracy {r['accuracy']:.2f}, "
            f"agreement {r['agreement']:.2f} ({ratio:.2f} x vs chance)"
        )


if __name__ == "__main__":
    main()
