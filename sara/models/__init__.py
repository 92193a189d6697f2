"""Models: tiny presets and local-weights loaders of the frozen encoders, SAM 3, the aligner."""
