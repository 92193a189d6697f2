"""SARA: Semantically Adaptive Relational Alignment for video diffusion training."""

__version__ = "0.1.0"
