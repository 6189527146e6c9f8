"""Embodied QA corpora: rollout shards become Hugging Face datasets (``e2wm build``)."""
