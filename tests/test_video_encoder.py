"""The causal video encoder: stepping equals the whole-clip forward, causality, gradients, shape errors."""

import pytest
import torch
from support.tiny_lm import TINY_ENCODER
from support.tolerances import (
    assert_float32_close,
    float32_differ,
    float32_tolerance,
    video_encoder_roundings,
)

from e2wm.errors import E2WMError
from e2wm.multimodal import VideoEncoder, VideoEncoderConfig, frames_to_pixels

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return VideoEncoder(VideoEncoderConfig(**TINY_ENCODER))


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(1)
    return torch.randn(2, 3, 24, 32, 32)


def stepped(encoder, clip, chunks):
    state, outs, t = encoder.init_state(clip.shape[0]), [], 0
    for n in chunks:
        features, state = encoder.step(clip[:, :, t : t + n], state)
        assert features.shape[1] == n // 4
        outs.append(features)
        t += n
    assert t == clip.shape[2]
    return torch.cat(outs, dim=1)


def roundings(encoder) -> int:
    return video_encoder_roundings(encoder.config)


def scale(features: torch.Tensor) -> float:
    """Two float32 results, each within its rounding bound (tolerances.py) of the exact features."""
    return 2 * features.abs().max().item()


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("chunks", [[4] * 6, [8] * 3, [12, 4, 8], [24]])
def test_stepping_equals_whole_clip(encoder, clip, chunks, train):
    encoder.train(train)
    with torch.no_grad():
        whole = encoder(clip)
        assert whole.shape == (2, 6, 24)
        assert_float32_close(stepped(encoder, clip, chunks), whole, roundings(encoder), scale(whole))
    encoder.eval()


@pytest.mark.parametrize("step", [1, 3, 5])
def test_a_step_never_sees_later_frames(encoder, clip, step):
    with torch.no_grad():
        before = encoder(clip)
        changed = clip.clone()
        changed[:, :, 4 * step :] = torch.randn_like(changed[:, :, 4 * step :])
        after = encoder(changed)
        assert torch.equal(after[:, :step], before[:, :step])
        assert float32_differ(after[:, step:], before[:, step:], roundings(encoder), scale(before))
        # the last frame of a step is part of it
        last = clip.clone()
        last[:, :, 4 * step + 3] += 1.0
        assert torch.equal(encoder(last)[:, :step], before[:, :step])
        assert float32_differ(encoder(last)[:, step], before[:, step], roundings(encoder), scale(before))


def test_features_depend_on_earlier_steps(encoder, clip):
    """The temporal convolutions carry information forward: the state matters."""
    with torch.no_grad():
        changed = clip.clone()
        changed[:, :, :4] = 0
        before = encoder(clip)
        assert float32_differ(encoder(changed)[:, 1], before[:, 1], roundings(encoder), scale(before))


def test_gradient_reaches_every_parameter_and_the_frames(encoder, clip):
    encoder.train()
    x = clip[:1, :, :8].clone().requires_grad_(True)
    encoder.zero_grad()
    encoder(x).pow(2).mean().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    encoder.eval()


def test_no_batch_norm_or_other_time_mixing_norms(encoder):
    kinds = {type(m).__name__ for m in encoder.modules()}
    assert not any("BatchNorm" in k or "InstanceNorm" in k for k in kinds)
    assert "FrameNorm" in kinds


@pytest.mark.parametrize(
    "shape",
    [(3, 8, 32, 32), (1, 4, 8, 32, 32), (1, 3, 6, 32, 32), (1, 3, 0, 32, 32)],
    ids=["4d", "channels", "not-multiple-of-4", "no-frames"],
)
def test_bad_shapes_raise(encoder, shape):
    with pytest.raises(E2WMError):
        encoder(torch.zeros(shape))


def test_state_that_does_not_fit_raises(encoder, clip):
    with pytest.raises(E2WMError, match="state"):
        encoder.step(clip[:, :, :4], encoder.init_state(1))
    with pytest.raises(E2WMError, match="state"):
        encoder.step(clip[:, :, :4], encoder.init_state(2, 16, 16))
    with pytest.raises(E2WMError):
        encoder.step(clip[:, :, :4].to(torch.uint8), encoder.init_state(2))


def test_frames_to_pixels_scales_resizes_and_checks():
    frames = torch.full((4, 40, 48, 3), 255, dtype=torch.uint8)
    frames[..., 0] = 0
    pixels = frames_to_pixels(frames, 32)
    assert pixels.shape == (3, 4, 32, 32) and pixels.dtype == torch.float32
    # 0 and 1 (255 / 255: 1 rounding) resized by two antialiased bilinear passes (each a sum of at most
    # 2 * 48 / 32 + 3 = 6 taps, weights normalized by their sum: 13 roundings), then (x - 0.5) / 0.5 (2)
    tol = float32_tolerance(1 + 2 * 13 + 2, 1.0)
    assert (pixels[0] + 1).abs().max() <= tol and (pixels[1:] - 1).abs().max() <= tol
    with pytest.raises(E2WMError):
        frames_to_pixels(frames.float(), 32)
    with pytest.raises(E2WMError):
        frames_to_pixels(frames[..., :2], 32)


def test_bad_config_raises():
    with pytest.raises(E2WMError, match="multiply to 4"):
        VideoEncoderConfig(stage_temporal_strides=[1, 2, 1, 1])
    with pytest.raises(E2WMError, match="same length"):
        VideoEncoderConfig(stage_depths=[1, 1])


def test_save_and_load_round_trip(encoder, clip, tmp_path):
    encoder.save_pretrained(tmp_path)
    loaded = VideoEncoder.from_pretrained(tmp_path, use_safetensors=True)
    with torch.no_grad():
        assert torch.equal(loaded(clip), encoder(clip))
