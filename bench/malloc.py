"""Training-step time with ``e2wm.memory.keep_freed_memory`` vs glibc's default malloc thresholds.

The default recipe's step, at the recipe's scale: SmolLM2-135M's architecture (random weights, no
download) with TRL's fused LM head, LoRA r=16 on all seven projections, bf16 autocast, a batch of
8 x 256 tokens whose last quarter is the completion, forward, backward and AdamW step. The two
variants run in separate processes (the thresholds are process-wide), alternating, each scored by
its median step; the figure also reports the kernel (sys) CPU time per step, where the difference
goes: page faults on memory glibc unmapped at the last ``free``.

    python bench/malloc.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

BATCH, TOKENS = 8, 256


def worker(keep: bool, steps: int) -> None:
    """Run ``steps`` training steps after one warm-up; print their seconds and sys seconds as JSON."""
    if keep:
        from e2wm.memory import keep_freed_memory

        keep_freed_memory()
    import torch
    from _fisher import make_model
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    model = make_model("cpu").train()
    add_fused_lm_head(model)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (BATCH, TOKENS))
    labels = ids.clone()
    labels[:, : TOKENS * 3 // 4] = -100  # the prompt: no loss, no LM head
    wall, sys_s = [], []
    for _ in range(steps + 1):
        start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_stime
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(input_ids=ids, labels=labels, fused_lm_head=True)
            loss = -out.log_probs.sum() / (labels != -100).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        wall.append(time.perf_counter() - start)
        sys_s.append(resource.getrusage(resource.RUSAGE_SELF).ru_stime - cpu)
    print(json.dumps({"wall": wall[1:], "sys": sys_s[1:]}))


def run(keep: bool, steps: int) -> dict[str, list[float]]:
    cmd = [sys.executable, __file__, "--worker", "keep" if keep else "default", "--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one round of 2 steps each (under a minute)")
    parser.add_argument("--worker", choices=["keep", "default"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker == "keep", args.steps)
        return
    rounds, steps = (1, 2) if args.quick else (2, 4)
    times = {keep: {"wall": [], "sys": []} for keep in (True, False)}
    for _ in range(rounds):
        for keep in (False, True):
            for key, values in run(keep, steps).items():
                times[keep][key] += values
    kept, default = (statistics.median(times[k]["wall"]) for k in (True, False))
    kept_sys, default_sys = (statistics.median(times[k]["sys"]) for k in (True, False))
    print(
        f"bench malloc: step_s = {kept:.2f} ({default / kept:.2f}x vs glibc defaults, {default:.2f} s; "
        f"sys {kept_sys:.2f} s vs {default_sys:.2f} s per step)"
    )


if __name__ == "__main__":
    main()
