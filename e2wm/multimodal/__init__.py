"""Video path: a causal steppable 3D-CNN encoder whose features enter a causal LM as tokens, so the LM can
watch a stream and, every 4 frames, keep watching (``<next>``) or speak (``<feedback> ... </feedback>``).

Importing this package registers the configs, models and processor with the transformers Auto classes.
"""

from e2wm.multimodal.configuration import E2WMVideoConfig, VideoEncoderConfig
from e2wm.multimodal.encoder import VideoEncoder, frames_to_pixels
from e2wm.multimodal.modeling import E2WMVideoForCausalLM, E2WMVideoModel, E2WMVideoPreTrainedModel
from e2wm.multimodal.processing import E2WMVideoProcessor
from e2wm.multimodal.streaming import StreamingNarrator

__all__ = [
    "E2WMVideoConfig",
    "E2WMVideoForCausalLM",
    "E2WMVideoModel",
    "E2WMVideoPreTrainedModel",
    "E2WMVideoProcessor",
    "StreamingNarrator",
    "VideoEncoder",
    "VideoEncoderConfig",
    "frames_to_pixels",
]
