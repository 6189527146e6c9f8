"""A causal, steppable 3D-CNN video encoder: one feature vector per 4 frames, computable as frames arrive.

Input: ``pixel_values_videos`` float ``[B, C, T, H, W]``, made from uint8 RGB frames by ``frames_to_pixels``
(``/255``, resized to ``image_size``, then ``(x - mean) / std`` with mean = std = 0.5: values in [-1, 1]).
Output: ``[B, T // 4, hidden_size]``.

Motion: the stem reads each frame and, in a separate group of channels normalised on their own, its
difference from the frame before, so that what moved or changed stands out however small it is (a person's
dot, an object changing colour); the head pools space by mean and by max, so a small local event is not
averaged away. (With frames and differences mixed in one normalisation, and mean pooling only, the encoder
learned the step's phase instead of what happened.)

Causality: every temporal convolution pads on the left only, and that padding is its state: the last
``kernel - stride`` frames of its input (zeros at the start); the stem's state is the last frame it read
(zeros at the start, so the first difference is the first frame itself). ``forward`` is ``step`` from
``init_state``, so a whole clip and the same clip fed in chunks give the same features, and feature step
``i`` depends only on frames ``< 4 (i + 1)``. Normalisation is per frame (GroupNorm over channels and space
of each frame), squeeze-excite pools space only, so nothing mixes time except the stem's difference and the
causal convolutions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from e2wm.errors import E2WMError
from e2wm.multimodal.configuration import FRAMES_PER_STEP, VideoEncoderConfig

IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

# The stem's last input frame, then one tensor per block: the last input frames its depthwise temporal
# convolution still needs.
EncoderState = list[torch.Tensor]


def frames_to_pixels(
    frames,
    image_size: int,
    mean: tuple[float, ...] = IMAGE_MEAN,
    std: tuple[float, ...] = IMAGE_STD,
) -> torch.Tensor:
    """uint8 RGB frames ``[T, H, W, 3]`` (numpy or torch) -> float32 ``[3, T, image_size, image_size]``.

    Frames are scaled to [0, 1], resized (bilinear, antialiased; non-square frames are stretched) and
    normalised per channel with ``mean``/``std``.
    """
    video = torch.as_tensor(frames)
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise E2WMError(
            f"expected uint8 RGB frames [T, H, W, 3], got {video.dtype} with shape {tuple(video.shape)}"
        )
    x = video.permute(0, 3, 1, 2).float().div_(255)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.permute(1, 0, 2, 3).contiguous()


class FrameNorm(nn.GroupNorm):
    """GroupNorm over the channels and space of each frame on its own: statistics never span time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        y = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(b, t, c, h, w).transpose(1, 2)


def _norm(channels: int, groups: int) -> FrameNorm:
    g = groups
    while channels % g:
        g -= 1
    return FrameNorm(g, channels)


class Pointwise(nn.Conv3d):
    """A 1x1x1 convolution, run as a matrix product over the flattened frames (faster on CPU than conv3d)."""

    def __init__(self, c_in: int, c_out: int, bias: bool = False):
        super().__init__(c_in, c_out, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = torch.matmul(self.weight.flatten(1), x.reshape(b, c, t * h * w))
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1)
        return y.view(b, -1, t, h, w)


class SqueezeExcite(nn.Module):
    """Channel gating from the spatial mean of each frame."""

    def __init__(self, channels: int):
        super().__init__()
        squeezed = max(8, channels // 4)
        self.reduce = Pointwise(channels, squeezed, bias=True)
        self.expand = Pointwise(squeezed, channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(3, 4), keepdim=True)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class InvertedResidual(nn.Module):
    """Expand (1x1x1), causal depthwise (k_t x 3 x 3, strided), optional squeeze-excite, project (1x1x1)."""

    def __init__(
        self, config: VideoEncoderConfig, c_in: int, c_out: int, expand: int, stride_t: int, stride_s: int
    ):
        super().__init__()
        hidden = c_in * expand
        self.context = config.temporal_kernel - stride_t
        self.expand = Pointwise(c_in, hidden)
        self.expand_norm = _norm(hidden, config.norm_groups)
        self.depthwise = nn.Conv3d(
            hidden,
            hidden,
            kernel_size=(config.temporal_kernel, 3, 3),
            stride=(stride_t, stride_s, stride_s),
            padding=(0, 1, 1),
            groups=hidden,
            bias=False,
        )
        self.depthwise_norm = _norm(hidden, config.norm_groups)
        self.squeeze_excite = SqueezeExcite(hidden) if config.use_squeeze_excite else nn.Identity()
        self.project = Pointwise(hidden, c_out)
        self.project_norm = _norm(c_out, config.norm_groups)
        self.residual = stride_t == 1 and stride_s == 1 and c_in == c_out
        self.hidden_channels = hidden
        self.stride_s = stride_s

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.silu(self.expand_norm(self.expand(x)))
        h = torch.cat([state, h], dim=2)
        new_state = h[:, :, h.shape[2] - self.context :]
        h = F.silu(self.depthwise_norm(self.depthwise(h)))
        h = self.project_norm(self.project(self.squeeze_excite(h)))
        return (x + h if self.residual else h), new_state


class VideoEncoder(PreTrainedModel):
    """Stem (each frame and, as a separate group, its difference from the one before; 3x3, stride 2) ->
    inverted-residual stages -> 1x1x1 head -> spatial mean and max -> linear."""

    config_class = VideoEncoderConfig
    main_input_name = "pixel_values_videos"
    input_modalities = ("video",)
    base_model_prefix = "video_encoder"

    def __init__(self, config: VideoEncoderConfig):
        super().__init__(config)
        self.stem = nn.Conv3d(
            2 * config.num_channels,
            config.stem_channels,
            kernel_size=(1, 3, 3),
            stride=(1, 2, 2),
            padding=(0, 1, 1),
            groups=2,
            bias=False,
        )
        self.stem_norm = _norm(config.stem_channels, config.norm_groups)
        blocks, c_in = [], config.stem_channels
        for c_out, depth, expand, stride_t, stride_s in zip(
            config.stage_channels,
            config.stage_depths,
            config.stage_expand_ratios,
            config.stage_temporal_strides,
            config.stage_spatial_strides,
            strict=True,
        ):
            for i in range(depth):
                first = i == 0
                blocks.append(
                    InvertedResidual(
                        config, c_in, c_out, expand, stride_t if first else 1, stride_s if first else 1
                    )
                )
                c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = Pointwise(c_in, config.head_channels)
        self.head_norm = _norm(config.head_channels, config.norm_groups)
        self.proj = nn.Linear(2 * config.head_channels, config.hidden_size)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv3d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def init_state(
        self,
        batch_size: int,
        height: int | None = None,
        width: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> EncoderState:
        """The state before the first frame: zeros, exactly the left padding a whole-clip forward uses."""
        p = next(self.parameters())
        height, width = height or self.config.image_size, width or self.config.image_size
        device, dtype = device or p.device, dtype or p.dtype
        state = [
            torch.zeros((batch_size, self.config.num_channels, 1, height, width), device=device, dtype=dtype)
        ]
        h, w = -(-height // 2), -(-width // 2)  # the stem halves the frame (rounding up)
        for block in self.blocks:
            shape = (batch_size, block.hidden_channels, block.context, h, w)
            state.append(torch.zeros(shape, device=device, dtype=dtype))
            h, w = -(-h // block.stride_s), -(-w // block.stride_s)
        return state

    def step(
        self, pixel_values_videos: torch.Tensor, state: EncoderState
    ) -> tuple[torch.Tensor, EncoderState]:
        """The next ``t`` frames (``t`` a multiple of 4) -> features ``[B, t // 4, D]`` and the new state."""
        self._check(pixel_values_videos, state)
        frames = pixel_values_videos.to(self.stem.weight.dtype)
        before = torch.cat([state[0], frames[:, :, :-1]], dim=2)
        x = F.silu(self.stem_norm(self.stem(torch.cat([frames, frames - before], dim=1))))
        new_state = [frames[:, :, -1:]]
        for block, s in zip(self.blocks, state[1:], strict=True):
            x, s = block(x, s)
            new_state.append(s)
        x = F.silu(self.head_norm(self.head(x)))
        pooled = torch.cat([x.mean(dim=(3, 4)), x.amax(dim=(3, 4))], dim=1)
        features = self.proj(pooled.transpose(1, 2))
        return features, new_state

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Whole clips ``[B, C, T, H, W]`` (T a multiple of 4) -> features ``[B, T // 4, hidden_size]``."""
        if pixel_values_videos.ndim != 5:
            self._check(pixel_values_videos, [])
        b, _, _, h, w = pixel_values_videos.shape
        return self.step(pixel_values_videos, self.init_state(b, h, w, pixel_values_videos.device))[0]

    def _check(self, x: torch.Tensor, state: EncoderState) -> None:
        shape = tuple(x.shape)
        if x.ndim != 5 or shape[1] != self.config.num_channels or not x.is_floating_point():
            raise E2WMError(
                f"video encoder expects float frames [B, {self.config.num_channels}, T, H, W], "
                f"got {x.dtype} with shape {shape}"
            )
        if shape[2] == 0 or shape[2] % FRAMES_PER_STEP:
            raise E2WMError(f"video encoder steps over multiples of {FRAMES_PER_STEP} frames, got {shape[2]}")
        expected = self.init_state(shape[0], shape[3], shape[4], device="meta")
        if len(state) != len(expected) or any(
            s.shape != e.shape for s, e in zip(state, expected, strict=True)
        ):
            raise E2WMError(
                "video encoder state does not fit these frames (batch size or frame size changed); "
                "start a new one with init_state"
            )
