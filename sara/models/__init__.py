"""Models: tiny presets and local-weights loaders of the frozen encoders, SAM 3, the aligner."""

CAPTION_ENCODER_KINDS = ("umt5", "qwen3vl")  # here, not in text.py, so configs need not import transformers
