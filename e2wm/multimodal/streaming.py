"""Narrate a live video stream: step the encoder per 4 frames and extend the LM's KV cache, never
recomputing the past; at every step the model keeps watching (``<next>``) or speaks
(``<feedback> ... </feedback>``), and between steps it answers questions about what it has watched.
"""

from __future__ import annotations

import torch

from e2wm.errors import E2WMError
from e2wm.multimodal.configuration import FRAMES_PER_STEP
from e2wm.multimodal.modeling import E2WMVideoForCausalLM
from e2wm.multimodal.processing import E2WMVideoProcessor


class StreamingNarrator:
    """Feed frames as they arrive; get back what the model says, with the time of the step it said it at.

    At each step the ``k`` projected features go into the cache and the model's next-token distribution
    decides: ``p(<next>) >= threshold`` keeps watching, anything else opens an utterance that is decoded
    greedily (without ``<video>``, ``<next>`` or ``<feedback>``) until ``</feedback>``, an EOS token or
    ``max_utterance_tokens`` tokens (then ``</feedback>`` is forced). ``ask`` puts a question into the
    stream after the last step and decodes the answer the same way. ``token_ids`` is the sequence the model
    has seen, as a whole-clip forward would see it; ``last_logits`` are the logits of the last decision.
    The model is put in eval mode.
    """

    NOTHING_WATCHED = "nothing yet: no frame has been watched"

    def __init__(
        self,
        model: E2WMVideoForCausalLM,
        processor: E2WMVideoProcessor,
        threshold: float = 0.5,
        max_utterance_tokens: int = 32,
        prompt: str = "",
    ):
        self.model = model.eval()
        self.processor = processor
        self.threshold = threshold
        self.max_utterance_tokens = max_utterance_tokens
        self.prompt = prompt
        config = model.config
        self.fps = config.video_config.fps
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self._stop = {config.feedback_end_id, *eos}
        self._banned = [config.video_token_id, config.next_token_id, config.feedback_start_id]
        self.reset()

    def reset(self) -> None:
        """Forget the stream: a fresh encoder state, an empty cache, the prompt still to be read."""
        size = self.processor.image_size
        self._state = self.model.model.video_encoder.init_state(1, size, size)
        self._cache = None
        self._frames = torch.zeros((0, 0, 0, 3), dtype=torch.uint8)
        self.steps = 0
        self._pending = self.processor.prompt_ids(self.prompt)  # decided, not yet in the cache
        self.token_ids: list[int] = list(self._pending)
        self.last_logits: torch.Tensor | None = None

    @torch.inference_mode()
    def feed(self, frames) -> list[tuple[float, str]]:
        """Take uint8 RGB frames ``[t, H, W, 3]`` (any ``t``; leftovers wait for the next call) and return the
        utterances of the steps completed, as (seconds at the step's last frame, text)."""
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise E2WMError(
                f"expected uint8 RGB frames [t, H, W, 3], got {frames.dtype} {tuple(frames.shape)}"
            )
        if len(self._frames) and frames.shape[1:] != self._frames.shape[1:]:
            raise E2WMError(
                f"frame size changed from {tuple(self._frames.shape[1:3])} to {tuple(frames.shape[1:3])}"
            )
        self._frames = torch.cat([self._frames, frames]) if len(self._frames) else frames
        said = []
        while len(self._frames) >= FRAMES_PER_STEP:
            chunk, self._frames = self._frames[:FRAMES_PER_STEP], self._frames[FRAMES_PER_STEP:]
            text = self._step(chunk)
            if text is not None:
                said.append(((self.steps * FRAMES_PER_STEP - 1) / self.fps, text))
        return said

    def _step(self, chunk: torch.Tensor) -> str | None:
        model = self.model.model
        pixels = self.processor.preprocess_frames(chunk)[None].to(self.model.device)
        features, self._state = model.video_encoder.step(pixels, self._state)
        video = model.multi_modal_projector(features)
        k = video.shape[1]
        logits = self._forward(self._pending, video)
        self._pending = []
        self.token_ids += [self.model.config.video_token_id] * k
        self.steps += 1
        self.last_logits = logits
        if torch.softmax(logits.float(), -1)[self.model.config.next_token_id] >= self.threshold:
            self._decide(self.model.config.next_token_id)
            return None
        return self._say()

    @torch.inference_mode()
    def ask(self, question: str) -> str:
        """The model's answer to ``question`` about the frames fed so far (before any step, it says so)."""
        if not question.strip():
            raise E2WMError("a question needs some text")
        if self.steps == 0:
            return self.NOTHING_WATCHED
        ids = self.processor.question_ids(question)
        self.token_ids += ids
        self._pending += ids
        return self._say()

    def _say(self) -> str:
        """Decode an utterance after ``<feedback>`` (the pending tokens first) until it ends."""
        utterance, token = [], self.model.config.feedback_start_id
        while True:
            self.token_ids.append(token)
            logits = self._forward([*self._pending, token]).clone()
            self._pending = []
            logits[self._banned] = float("-inf")
            token = int(logits.argmax())
            if token in self._stop or len(utterance) == self.max_utterance_tokens:
                break
            utterance.append(token)
        self._decide(self.model.config.feedback_end_id)
        return self.processor.decode_utterance(utterance)

    def _decide(self, token: int) -> None:
        """A token the next forward will read first."""
        self.token_ids.append(token)
        self._pending = [token]

    def _forward(self, token_ids: list[int], video: torch.Tensor | None = None) -> torch.Tensor:
        """Append tokens (then video embeddings) to the cache; the logits after the last of them."""
        ids = torch.tensor([token_ids], dtype=torch.long, device=self.model.device)
        embeds = self.model.get_input_embeddings()(ids)
        if video is not None:
            embeds = torch.cat([embeds, video.to(embeds.dtype)], dim=1)
        out = self.model(inputs_embeds=embeds, cache=self._cache, use_cache=True, logits_to_keep=1)
        self._cache = out.cache
        return out.logits[0, -1]
