"""The video model: causal video encoder -> 2-layer MLP projector -> causal LM, in LLaVA's conventions.

Each encoder feature step becomes ``tokens_per_step`` LM embeddings that replace, in order, the ``<video>``
placeholder tokens of ``input_ids`` (every row must hold exactly ``steps * tokens_per_step`` of them).
"""

from __future__ import annotations

import copy
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    GenerationMixin,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils.generic import can_return_tuple

from e2wm.errors import E2WMError
from e2wm.multimodal.configuration import E2WMVideoConfig, VideoEncoderConfig
from e2wm.multimodal.encoder import VideoEncoder

VIDEO_TOKEN, NEXT_TOKEN, FEEDBACK_START, FEEDBACK_END = "<video>", "<next>", "<feedback>", "</feedback>"
SPECIAL_TOKENS = (VIDEO_TOKEN, NEXT_TOKEN, FEEDBACK_START, FEEDBACK_END)


def weighted_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    decision_ids: list[int],
    decision_weight: float,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal LM loss in which the decision tokens count ``decision_weight`` times.

    ``loss = sum_t w_t * CE_t / N`` over the shifted targets ``t`` whose label is not -100, with
    ``w_t = decision_weight`` where the target is a decision token and 1 elsewhere, and ``N`` the number of
    those targets (or ``num_items_in_batch``, the Trainer's count over gradient-accumulation steps). Weight 1
    gives the usual mean token loss; the weight scales the decisions' share without renormalising the others.
    """
    targets = labels[:, 1:].to(logits.device)
    ce = F.cross_entropy(
        logits[:, :-1].float().flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none"
    )
    is_target = targets.flatten() != -100
    decision = torch.isin(targets.flatten(), torch.tensor(decision_ids, device=targets.device))
    weights = torch.where(decision, decision_weight, 1.0) * is_target
    count = is_target.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return (ce * weights).sum() / count


def _decision_ids(config: E2WMVideoConfig) -> list[int]:
    return [i for i in (config.next_token_id, config.feedback_start_id) if i is not None]


class E2WMVideoProjector(nn.Module):
    """Encoder features ``[B, S, D]`` -> LM embeddings ``[B, S * k, H]``: LayerNorm, Linear, activation,
    Linear. The LayerNorm (per feature step, so causal) makes the projection blind to the scale of the
    encoder's features, so a fresh projector starts near the scale of the LM's own embeddings."""

    def __init__(self, config: E2WMVideoConfig):
        super().__init__()
        hidden, bias = config.text_config.hidden_size, config.multimodal_projector_bias
        self.tokens_per_step = config.tokens_per_step
        self.norm = nn.LayerNorm(config.video_config.hidden_size)
        self.linear_1 = nn.Linear(config.video_config.hidden_size, hidden, bias=bias)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(hidden, hidden * config.tokens_per_step, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, s, _ = features.shape
        h = self.linear_2(self.act(self.linear_1(self.norm(features))))
        return h.reshape(b, s * self.tokens_per_step, -1)


class E2WMVideoPreTrainedModel(PreTrainedModel):
    config_class = E2WMVideoConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


class E2WMVideoModel(E2WMVideoPreTrainedModel):
    """Video encoder, projector and the language model's backbone (no LM head)."""

    def __init__(self, config: E2WMVideoConfig):
        super().__init__(config)
        self.video_encoder = VideoEncoder(config.video_config)
        self.multi_modal_projector = E2WMVideoProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """Clips ``[B, C, T, H, W]`` -> projected LM embeddings ``[B, (T // 4) * k, H]``."""
        return self.multi_modal_projector(self.video_encoder(pixel_values_videos))

    def merge_video(
        self, input_ids: torch.LongTensor, inputs_embeds: torch.Tensor, video_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Write ``video_embeds`` ``[B, N, H]`` into the ``<video>`` positions of each row, in order."""
        mask = input_ids == self.config.video_token_id
        counts = mask.sum(dim=1).tolist()
        if video_embeds.shape[0] != len(counts) or any(c != video_embeds.shape[1] for c in counts):
            raise E2WMError(
                f"<video> placeholders per row {counts} do not match the video: "
                f"{video_embeds.shape[0]} clip(s) of {video_embeds.shape[1]} embeddings "
                f"({self.config.tokens_per_step} per 4-frame step)"
            )
        mask = mask.unsqueeze(-1).expand_as(inputs_embeds)
        return inputs_embeds.masked_scatter(mask, video_embeds.to(inputs_embeds.device, inputs_embeds.dtype))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """``video_features``: encoder outputs ``[B, S, D]`` computed outside (e.g. by ``VideoEncoder.step``),
        in place of ``pixel_values_videos``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise E2WMError("pass exactly one of input_ids and inputs_embeds")
        if pixel_values_videos is not None and video_features is not None:
            raise E2WMError("pass pixel_values_videos or video_features, not both")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values_videos is not None or video_features is not None:
            if input_ids is None:
                raise E2WMError("video inputs need input_ids, to find the <video> placeholders")
            if video_features is None:
                video_features = self.video_encoder(pixel_values_videos)
            video_embeds = self.multi_modal_projector(
                video_features.to(self.multi_modal_projector.linear_1.weight)
            )
            inputs_embeds = self.merge_video(input_ids, inputs_embeds, video_embeds)
        elif cache is None and input_ids is not None and (input_ids == self.config.video_token_id).any():
            raise E2WMError(
                "input_ids hold <video> placeholders but no pixel_values_videos or video_features"
            )
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )


class E2WMVideoForCausalLM(E2WMVideoPreTrainedModel, GenerationMixin):
    """The video model with the LM head: ``forward`` takes text with ``<video>`` placeholders and the clip."""

    def __init__(self, config: E2WMVideoConfig):
        super().__init__(config)
        self.model = E2WMVideoModel(config)
        text = config.text_config
        self.lm_head = nn.Linear(text.hidden_size, text.vocab_size, bias=False)
        embeddings = self.model.language_model.get_input_embeddings()
        name = next(n for n, m in self.model.language_model.named_modules() if m is embeddings)
        self._tied_weights_keys = {"lm_head.weight": f"model.language_model.{name}.weight"}
        self.post_init()

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_video_features(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        return self.model.get_video_features(pixel_values_videos)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """``E2WMVideoModel.forward``'s arguments (those ``generate`` is given by name in the signature, the
        positions, cache and embeddings passed on) and ``labels``: -100 where nothing is predicted (prompt,
        padding); ``<video>`` positions are never targets, whatever their label. The loss:
        ``weighted_lm_loss`` with ``config.decision_loss_weight``."""
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            video_features=video_features,
            attention_mask=attention_mask,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            if logits.shape[:2] != labels.shape:
                raise E2WMError("labels need the logits of every position: leave logits_to_keep at 0")
            video = self.config.video_token_id
            labels = labels.masked_fill(labels == video, -100)
            if input_ids is not None:
                labels = labels.masked_fill(input_ids == video, -100)
            loss = weighted_lm_loss(
                logits,
                labels,
                _decision_ids(self.config),
                self.config.decision_loss_weight,
                num_items_in_batch,
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, *args, video_features=None, is_first_iteration=False, **kwargs):
        """As for any LM; the video (pixels or precomputed features) goes in at the prefill only."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs["video_features"] = video_features
        return inputs

    @classmethod
    def from_language_model(
        cls,
        language_model: str | os.PathLike | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        encoder_config: VideoEncoderConfig | None = None,
        tokens_per_step: int = 1,
        **config_kwargs,
    ) -> E2WMVideoForCausalLM:
        """A video model around an existing causal LM (a safetensors path or a loaded model) with a fresh
        encoder and projector. Adds ``<video>``, ``<next>``, ``<feedback>``, ``</feedback>`` to ``tokenizer``
        (in place) as special tokens and resizes the embeddings to the tokenizer."""
        if isinstance(language_model, (str, os.PathLike)):
            language_model = AutoModelForCausalLM.from_pretrained(
                language_model, use_safetensors=True, dtype=torch.float32
            )
        head = language_model.get_output_embeddings()
        if head is None:
            raise E2WMError(f"{type(language_model).__name__} is not a causal LM with an output head")
        tokenizer.add_tokens(
            [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()], special_tokens=True
        )
        ids = dict(
            zip(
                ("video_token_id", "next_token_id", "feedback_start_id", "feedback_end_id"),
                tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)),
                strict=True,
            )
        )
        config = E2WMVideoConfig(
            text_config=copy.deepcopy(language_model.config),
            video_config=encoder_config or VideoEncoderConfig(),
            tokens_per_step=tokens_per_step,
            **ids,
            **config_kwargs,
        )
        model = cls(config).to(language_model.dtype)
        model.model.language_model.load_state_dict(language_model.base_model.state_dict())
        model.lm_head.load_state_dict(head.state_dict())
        model.resize_token_embeddings(len(tokenizer))
        return model


AutoModel.register(VideoEncoderConfig, VideoEncoder, exist_ok=True)
AutoModel.register(E2WMVideoConfig, E2WMVideoModel, exist_ok=True)
AutoModelForCausalLM.register(E2WMVideoConfig, E2WMVideoForCausalLM, exist_ok=True)
AutoModelForImageTextToText.register(E2WMVideoConfig, E2WMVideoForCausalLM, exist_ok=True)
