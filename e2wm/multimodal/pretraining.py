"""Stage 0: pretrain the causal video encoder on video without labels, by predicting its own future features.

JEPA-style, in latent space: from the feature of step ``t`` (the encoder has seen the frames up to ``t``), a
small predictor guesses the feature of step ``t + horizon``; the target is the encoder's own feature of that
step, detached. Alone this collapses (a constant feature predicts itself), so VICReg's variance and covariance
terms keep every feature dimension spread over the batch's steps (standard deviation at least 1) and the
dimensions decorrelated. The weights are VICReg's (prediction 25, variance 25, covariance 1). Captions are
not used: real video without them can train this stage.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from e2wm.multimodal.configuration import VideoEncoderConfig
from e2wm.multimodal.encoder import VideoEncoder

PREDICTION_WEIGHT, VARIANCE_WEIGHT, COVARIANCE_WEIGHT = 25.0, 25.0, 1.0


def variance_term(features: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of how far each one's standard deviation (over rows) falls below 1."""
    return torch.relu(1 - torch.sqrt(features.var(dim=0) + 1e-4)).mean()


def covariance_term(features: torch.Tensor) -> torch.Tensor:
    """Sum of the squared off-diagonal covariances of the dimensions (over rows), per dimension."""
    centred = features - features.mean(dim=0)
    cov = centred.T @ centred / max(1, len(features) - 1)
    return (cov.square().sum() - cov.diagonal().square().sum()) / features.shape[1]


class VideoFuturePredictor(PreTrainedModel):
    """The video encoder and an MLP that predicts its feature ``horizon`` steps ahead; the loss is the
    weighted sum of the prediction's mean squared error and the two anti-collapse terms."""

    config_class = VideoEncoderConfig
    main_input_name = "pixel_values_videos"

    def __init__(self, config: VideoEncoderConfig, horizon: int = 1):
        super().__init__(config)
        self.horizon = horizon
        self.video_encoder = VideoEncoder(config)
        size = config.hidden_size
        self.predictor = nn.Sequential(nn.Linear(size, 2 * size), nn.GELU(), nn.Linear(2 * size, size))
        self.post_init()

    def forward(self, pixel_values_videos: torch.Tensor, return_loss: bool = True) -> ModelOutput:
        features = self.video_encoder(pixel_values_videos)  # [B, T, D]
        if features.shape[1] <= self.horizon:
            raise ValueError(f"windows of {features.shape[1]} steps cannot predict {self.horizon} ahead")
        predicted = self.predictor(features[:, : -self.horizon])
        prediction = nn.functional.mse_loss(predicted, features[:, self.horizon :].detach())
        flat = features.flatten(0, 1)
        loss = (
            PREDICTION_WEIGHT * prediction
            + VARIANCE_WEIGHT * variance_term(flat)
            + COVARIANCE_WEIGHT * covariance_term(flat)
        )
        return ModelOutput(loss=loss, prediction_loss=prediction.detach())
