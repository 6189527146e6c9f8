"""Linear probes: how much of an event slot a representation of a feature step holds, read off linearly.

Stage 1 reports its encoder's per-slot accuracy beside two references: always guessing the training majority,
and a linear probe on the step's raw frames (its 4 frames shrunk to ``PROBE_SIZE`` pixels a side, so that
the probe has fewer weights than there are training steps). A slot the encoder gets no better than the
probe is one its training did not teach it to see.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from e2wm.multimodal.configuration import FRAMES_PER_STEP
from e2wm.multimodal.video_io import Clip

PROBE_SIZE = 16


def step_pixels(window: Clip, size: int = PROBE_SIZE) -> np.ndarray:
    """``[steps, 4 * size * size * 3]`` float32 in [0, 1]: each feature step's frames, shrunk, flattened."""
    frames = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in window.frames])
    steps = len(frames) // FRAMES_PER_STEP
    return frames[: steps * FRAMES_PER_STEP].reshape(steps, -1).astype(np.float32) / 255.0


def probe_accuracy(
    train_x: np.ndarray,
    train_y: Sequence[int],
    eval_x: np.ndarray,
    eval_y: Sequence[int],
    num_classes: int,
    weight_decay: float = 1e-3,
    iterations: int = 100,
) -> float:
    """Accuracy on ``eval`` of a multinomial logistic regression fit on ``train`` (features standardised by
    the training statistics, L2 ``weight_decay`` on weights and biases, so that the optimum is finite even
    when ``train`` holds one class; full-batch L-BFGS from zero weights: deterministic)."""
    x = torch.as_tensor(train_x, dtype=torch.float32)
    mean, std = x.mean(0), x.std(0, correction=0).clamp_min(1e-3)  # one row: std 0, not NaN
    x = (x - mean) / std
    y = torch.as_tensor(list(train_y), dtype=torch.long)
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        penalty = linear.weight.square().sum() + linear.bias.square().sum()
        loss = torch.nn.functional.cross_entropy(linear(x), y) + weight_decay * penalty
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        scores = linear((torch.as_tensor(eval_x, dtype=torch.float32) - mean) / std)
    predicted = scores.argmax(-1).numpy()
    return float((predicted == np.asarray(list(eval_y))).mean())
