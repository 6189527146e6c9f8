"""Configurations of the causal video encoder and of the video + causal-LM model built on it."""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from e2wm.errors import E2WMError

FRAMES_PER_STEP = 4  # total temporal stride of the encoder: one feature step per 4 frames


@strict
class VideoEncoderConfig(PreTrainedConfig):
    """A small MobileNet-style causal 3D CNN over RGB clips (default 64x64 at 16 fps).

    Stage ``i`` stacks ``stage_depths[i]`` inverted-residual blocks with ``stage_channels[i]`` output
    channels and ``stage_expand_ratios[i]`` times wider depthwise convolutions; its first block strides by
    ``stage_temporal_strides[i]`` in time and ``stage_spatial_strides[i]`` in space. The temporal strides
    multiply to 4. ``image_size`` and ``fps`` describe the frames the encoder is trained on (the processor
    resizes to ``image_size``; the streaming narrator reads timestamps with ``fps``), ``render_style`` their
    look when they were rendered rollouts (``e2wm stream --rollouts`` renders them so).
    """

    model_type = "e2wm_video_encoder"

    image_size: int = 64
    fps: float = 16.0
    render_style: str = "squares"
    num_channels: int = 3
    stem_channels: int = 16
    stage_channels: list[int] | tuple[int, ...] = (16, 24, 40, 64)
    stage_depths: list[int] | tuple[int, ...] = (1, 2, 2, 1)
    stage_temporal_strides: list[int] | tuple[int, ...] = (1, 2, 2, 1)
    stage_spatial_strides: list[int] | tuple[int, ...] = (1, 2, 2, 2)
    stage_expand_ratios: list[int] | tuple[int, ...] = (1, 4, 4, 4)
    temporal_kernel: int = 3
    use_squeeze_excite: bool = True
    norm_groups: int = 8
    head_channels: int = 256
    hidden_size: int = 256
    initializer_range: float = 0.02

    def validate_e2wm_layout(self) -> None:
        stages = (
            self.stage_channels,
            self.stage_depths,
            self.stage_expand_ratios,
            self.stage_temporal_strides,
            self.stage_spatial_strides,
        )
        if len({len(s) for s in stages}) != 1:
            raise E2WMError("video encoder config: stage_* lists must have the same length")
        stride = 1
        for s in self.stage_temporal_strides:
            stride *= s
        if stride != FRAMES_PER_STEP:
            raise E2WMError(f"video encoder config: temporal strides must multiply to 4, got {stride}")
        if self.temporal_kernel < max(self.stage_temporal_strides):
            raise E2WMError(
                "video encoder config: temporal_kernel must be at least the largest temporal stride"
            )
        if min(*self.stage_depths, *self.stage_expand_ratios, self.image_size) < 1 or self.fps <= 0:
            raise E2WMError(
                "video encoder config: depths, expand ratios, image_size and fps must be positive"
            )


@strict
class E2WMVideoConfig(PreTrainedConfig):
    """A causal LM that watches a video: encoder features, projected to ``tokens_per_step`` LM tokens per
    feature step, replace the ``<video>`` placeholders of the input.

    ``decision_loss_weight`` multiplies the loss of the decision tokens (``<next>`` and ``<feedback>``); see
    ``modeling.weighted_lm_loss`` for the normalisation. TRL's SFTTrainer scores its own unweighted token mean
    through a fused LM head; to train with another weight there, override its ``compute_loss`` to return
    ``model(**inputs, num_items_in_batch=num_items_in_batch).loss``.
    """

    model_type = "e2wm_video"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
        "video_config": VideoEncoderConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    video_config: dict | PreTrainedConfig | None = None
    video_token_id: int | None = None
    next_token_id: int | None = None
    feedback_start_id: int | None = None
    feedback_end_id: int | None = None
    tokens_per_step: int = 1
    decision_loss_weight: float = 1.0
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The LM head sits on this model, so tying follows the language model's own setting.
        if self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True

    def validate_e2wm_tokens(self) -> None:
        if self.tokens_per_step < 1:
            raise E2WMError(f"tokens_per_step must be at least 1, got {self.tokens_per_step}")
        if self.decision_loss_weight < 0:
            raise E2WMError(f"decision_loss_weight must be >= 0, got {self.decision_loss_weight}")
        ids = (self.video_token_id, self.next_token_id, self.feedback_start_id, self.feedback_end_id)
        given = [i for i in ids if i is not None]
        if len(set(given)) != len(given):
            raise E2WMError("the <video>, <next>, <feedback> and </feedback> token ids must differ")


AutoConfig.register(VideoEncoderConfig.model_type, VideoEncoderConfig, exist_ok=True)
AutoConfig.register(E2WMVideoConfig.model_type, E2WMVideoConfig, exist_ok=True)
