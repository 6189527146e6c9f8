"""Streaming narration speed: the steppable encoder vs recomputing its receptive field; end-to-end frames/s.

(a) Per-step latency of ``VideoEncoder.step`` (4 new frames, the causal convolutions' state carried) vs a
stateless encoder that, at every step, re-encodes the last frames its receptive field spans (30 frames for the
default config, so 32: 8 steps) and keeps the last feature. Both give the same features (checked). Batch 1,
64x64 frames, the default small encoder (``VideoEncoderConfig()``), random weights.

(b) End-to-end frames/s of ``StreamingNarrator`` (encoder step + projector + SmolLM2-135M with its KV cache,
utterances decoded greedily) fed 4 frames at a time, as a ratio to the 16 fps input: above 1x keeps up with
real time. The model is ``--model`` (default: the demo's stage-3 output, ``outputs/video/stage3-lora``, when
it exists); without one, an untrained narrator with SmolLM2-135M, which speaks at every step (8 tokens at
most), about three times as often as the renders' captions: a pessimistic case. Frames: held-out rendered
rollouts (``outputs/demo/rollouts``, split test_seen) when they exist, else a synthetic moving square.

Measured on 2 CPU cores (``--quick``, the demo's stage-3 model): 6.22 ms per encoder step, 11.9x
recomputing 32 frames; 16.3 frames/s end to end, 1.02x real time (the untrained narrator: 8.8 frames/s).

    python bench/stream.py [--quick] [--model DIR]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from e2wm.multimodal import StreamingNarrator, VideoEncoder, VideoEncoderConfig
from e2wm.multimodal.configuration import FRAMES_PER_STEP

ROOT = Path(__file__).resolve().parent.parent
ROLLOUTS = ROOT / "outputs" / "demo" / "rollouts"
TRAINED = ROOT / "outputs" / "video" / "stage3-lora"


def receptive_field(config: VideoEncoderConfig) -> int:
    """How many input frames the last feature of a step depends on (the stem reads a frame and the one
    before it)."""
    frames, jump = 2, 1
    for stride, depth in zip(config.stage_temporal_strides, config.stage_depths, strict=True):
        for block in range(depth):
            frames += (config.temporal_kernel - 1) * jump
            jump *= stride if block == 0 else 1
    return frames


@torch.inference_mode()
def encoder_latency(steps: int) -> tuple[float, float, int]:
    """Median ms per step: stepping with state, and recomputing the receptive field; the window in frames."""
    torch.manual_seed(0)
    encoder = VideoEncoder(VideoEncoderConfig()).eval()
    size = encoder.config.image_size
    window = -(-receptive_field(encoder.config) // FRAMES_PER_STEP) * FRAMES_PER_STEP
    pixels = torch.randn(1, 3, steps * FRAMES_PER_STEP, size, size)
    state = encoder.init_state(1)
    stepped, recomputed = [], []
    for i in range(steps):
        end = (i + 1) * FRAMES_PER_STEP
        start = time.perf_counter()
        feature, state = encoder.step(pixels[:, :, end - FRAMES_PER_STEP : end], state)
        stepped.append(time.perf_counter() - start)
        start = time.perf_counter()
        again = encoder(pixels[:, :, max(0, end - window) : end])[:, -1:]
        recomputed.append(time.perf_counter() - start)
        torch.testing.assert_close(again, feature, atol=1e-4, rtol=1e-4)
    skip = min(2, steps - 1)  # warm-up
    return 1e3 * statistics.median(stepped[skip:]), 1e3 * statistics.median(recomputed[skip:]), window


def narrator(model_dir: Path | None) -> tuple[StreamingNarrator, str]:
    """The trained narrator in ``model_dir``, or an untrained one around SmolLM2-135M."""
    if model_dir is not None:
        from e2wm.multimodal.evaluate import load_narrator

        return load_narrator(model_dir), f"trained model {model_dir}"
    from transformers import AutoTokenizer

    from e2wm.multimodal import E2WMVideoForCausalLM, E2WMVideoProcessor
    from e2wm.training.models import resolve_model

    torch.manual_seed(0)
    path = resolve_model("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = E2WMVideoForCausalLM.from_language_model(path, tokenizer, VideoEncoderConfig())
    processor = E2WMVideoProcessor(tokenizer, image_size=model.config.video_config.image_size)
    return StreamingNarrator(model, processor, max_utterance_tokens=8), "untrained model (speaks every step)"


def frames(count: int, size: int) -> tuple[np.ndarray, str]:
    """``count`` frames of held-out rendered rollouts (several episodes back to back), else synthetic."""
    if ROLLOUTS.is_dir():
        from e2wm.multimodal.data import rollout_clips
        from e2wm.multimodal.render import RenderConfig

        clips, total = [], 0
        for clip in rollout_clips(ROLLOUTS, "test_seen", None, RenderConfig(size=size)):
            clips.append(clip.frames)
            total += len(clip.frames)
            if total >= count:
                return np.concatenate(clips)[:count], f"{len(clips)} rendered test_seen episode(s)"
    video = np.zeros((count, size, size, 3), np.uint8)
    for t in range(count):
        x = (3 * t) % (size - 8)
        video[t, 20:28, x : x + 8] = 255
    return video, "a synthetic moving square"


def stream_rate(model_dir: Path | None, count: int) -> tuple[float, str]:
    """Frames/s of feeding ``count`` frames, 4 at a time, with the model's work timed."""
    narrate, what = narrator(model_dir)
    video, source = frames(count, narrate.processor.image_size)
    narrate.feed(video[:8])  # warm-up
    narrate.reset()
    said, busy = 0, 0.0
    for first in range(0, count, FRAMES_PER_STEP):
        start = time.perf_counter()
        said += len(narrate.feed(video[first : first + FRAMES_PER_STEP]))
        busy += time.perf_counter() - start
    print(f"{what}, {count} frames of {source}: {said} utterance(s) in {count // FRAMES_PER_STEP} steps")
    return count / busy, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and frames (under a minute)")
    parser.add_argument("--model", type=Path, default=None, help="a trained video model directory")
    args = parser.parse_args()
    model_dir = args.model or (TRAINED if (TRAINED / "config.json").is_file() else None)
    step_ms, recompute_ms, window = encoder_latency(24 if args.quick else 96)
    rate, _ = stream_rate(model_dir, 160 if args.quick else 640)
    fps = VideoEncoderConfig().fps
    print(f"encoder per step: {step_ms:.2f} ms stepping, {recompute_ms:.2f} ms recomputing {window} frames")
    print(f"bench stream: encoder_step_ms = {step_ms:.2f} ({recompute_ms / step_ms:.1f}x vs recompute)")
    print(f"bench stream: frames_per_s = {rate:.1f} ({rate / fps:.2f}x vs {fps:g} fps real time)")


if __name__ == "__main__":
    main()
