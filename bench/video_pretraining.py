"""Stage 0 at a small label budget: the stage-1 encoder's slot accuracy with 10% of the labels, with and
without label-free pretraining (stage 0), against 100% of the labels.

Three runs of ``e2wm.training.train_video`` on the same sprite renders of the demo's rollouts (validation
episodes rendered with another layout seed, so positions seen in training do not help):

- ``full``: stage 1 on every labelled training window (the baseline);
- ``10%``: stage 1 on a seeded tenth of them, for as many steps;
- ``stage0+10%``: stage 0 (predict the encoder's own features 2 steps ahead, VICReg terms) on the training
  episodes and more without their captions, then stage 1 on the same tenth from it.

Each prints per slot the encoder's accuracy on the validation windows' event steps; the majority guess and the
raw-frame linear probe of the ``full`` run stand beside them. Rollouts: ``outputs/demo/rollouts`` (``make
demo``), else a few random episodes collected here. ``--quick``: 32-pixel frames, a handful of episodes and
steps (a smoke run, under a minute: its figures mean little). At full size (README, video section), stage
0 then 10% of the labels reached 85% of the full-label verb accuracy and 41% of its object accuracy.

    python bench/video_pretraining.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from e2wm.rollouts.collect import CollectConfig, collect
from e2wm.training import train_video
from e2wm.training.train_video import METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
ROLLOUTS = ROOT / "outputs" / "demo" / "rollouts"
STAGE0 = ROOT / "recipes" / "video_stage0_future_cpu.yaml"
STAGE1 = ROOT / "recipes" / "video_stage1_encoder_cpu.yaml"
QUICK = [
    "--image_size", "32", "--episodes", "6", "--eval_episodes", "2", "--max_steps", "6",
    "--per_device_train_batch_size", "4", "--eval_strategy", "no", "--save_strategy", "no",
]  # fmt: skip


def rollouts(work: Path) -> Path:
    """The demo's rollouts, else 24 random episodes collected into ``work``."""
    if ROLLOUTS.is_dir():
        return ROLLOUTS
    out = work / "rollouts"
    collect(CollectConfig(agent="random", episodes=24, out=str(out), workers=1), progress=False)
    return out


def run(recipe: Path, work: Path, name: str, extra: list[str]) -> tuple[dict, int]:
    """Train one stage: its ``slot_accuracy.json`` (stage 1) or output directory (stage 0), and its steps."""
    out = work / name
    argv = ["--config", str(recipe), "--output_dir", str(out), "--render_cache", str(work / "cache"), *extra]
    trainer = train_video.train(*train_video.parse(argv))
    report = out / "slot_accuracy.json"
    return (
        json.loads(report.read_text()) if report.exists() else {"dir": str(out)}
    ), trainer.state.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny frames and few steps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        common = ["--rollouts", str(rollouts(work)), "--report_to", "none", *(QUICK if args.quick else [])]
        results = {}
        results["full"], steps = run(STAGE1, work, "full", common)
        # a tenth of the labels, as many optimiser steps as the full run: fewer labels, not less training
        tenth = [*common, "--label_fraction", "0.1", "--max_steps", str(steps)]
        results["10%"], _ = run(STAGE1, work, "tenth", tenth)
        stage0, _ = run(STAGE0, work, "stage0", common)
        results["stage0+10%"], _ = run(STAGE1, work, "stage0-tenth", [*tenth, "--init_from", stage0["dir"]])
    full = results["full"]
    print(f"{'slot':<8} {'majority':>8} {'probe':>6} " + " ".join(f"{k:>10}" for k in results))
    for slot in METRIC_NAMES.values():
        row = [results[k]["encoder"].get(f"eval_{slot}_accuracy") for k in results]
        if None in row:
            continue
        guess, probe = (
            full["encoder"][f"eval_{slot}_majority"],
            full["raw_frame_probe"].get(slot, float("nan")),
        )
        print(f"{slot:<8} {guess:8.3f} {probe:6.3f} " + " ".join(f"{v:10.3f}" for v in row))
    for slot in ("event", "object"):
        base = full["encoder"][f"eval_{slot}_accuracy"]
        value = results["stage0+10%"]["encoder"][f"eval_{slot}_accuracy"]
        ratio = value / base if base else float("nan")
        metric = f"{slot}_accuracy_stage0_10pct"
        print(f"bench video_pretraining: {metric} = {value:.3f} ({ratio:.2f}x vs 100% labels)")


if __name__ == "__main__":
    main()
