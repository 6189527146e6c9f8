"""EWC cost: training-step time of EWC-LoRA vs plain LoRA and vs a naive penalty; Fisher examples/s.

One run, same model and batch: SmolLM2-135M's architecture (random weights, no download), LoRA r=8 on
q_proj/v_proj, a batch of 4 x 128 tokens, AdamW. Each step is forward, backward and optimizer step.
- plain LoRA: cross-entropy only;
- EWC-LoRA: plus ``e2wm.training.ewc.EWC`` (chunked, fp32);
- naive: plus sum F * dW^2 with dW = ``get_delta_weight()`` materialized for every layer every step,
  as EWC is commonly written.
The variants are timed in alternating rounds, each scored by its median step. Then the Fisher figure:
examples/s of ``e2wm.training.fisher.compute_fisher`` (batched, per-example gradients from hooks) vs the same
estimate one example at a time (``bench/_fisher.py``).

    python bench/ewc.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _fisher import make_model, measure
from peft import LoraConfig, get_peft_model

from e2wm.training.ewc import EWC

BATCH, TOKENS = 4, 128


def step_times(quick: bool) -> dict[str, float]:
    """Median seconds per training step of each variant."""
    model = get_peft_model(
        make_model("cpu").train(), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    )
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.01)  # dW != 0 from the first step, as mid-training
    layers = {
        n.replace("base_model.model.", "") + ".weight": m
        for n, m in model.named_modules()
        if hasattr(m, "get_delta_weight")
    }
    fisher = {name: torch.rand_like(m.base_layer.weight) * 1e-4 for name, m in layers.items()}
    ewc = EWC(model, fisher, lam=100.0)

    def naive() -> torch.Tensor:
        return 100.0 * sum(
            (fisher[name] * m.get_delta_weight("default") ** 2).sum() for name, m in layers.items()
        )

    penalties = {"plain LoRA": lambda: 0.0, "EWC-LoRA": ewc.penalty, "naive": naive}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, TOKENS))
    times: dict[str, list[float]] = {name: [] for name in penalties}
    for _ in range(2 if quick else 5):
        for name, penalty in penalties.items():
            start = time.perf_counter()
            loss = model(input_ids=ids, labels=ids).loss + penalty()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t[1:] if len(t) > 2 else t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    args = parser.parse_args()
    times = step_times(args.quick)
    rate, ratio = measure(args.quick, "cuda" if torch.cuda.is_available() else "cpu")
    ewc, plain, naive = times["EWC-LoRA"], times["plain LoRA"], times["naive"]
    print(f"bench ewc: step_s = {ewc:.3f} ({ewc / plain:.3f}x vs plain LoRA, {plain:.3f} s)")
    print(f"bench ewc: step_s = {ewc:.3f} ({ewc / naive:.3f}x vs naive dW per layer, {naive:.3f} s)")
    print(f"bench ewc: fisher_examples_per_s = {rate:.2f} ({ratio:.1f}x vs batch-size-1 loop)")


if __name__ == "__main__":
    main()
