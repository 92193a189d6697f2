"""Pure loss functions of SARA: routed token-relation distillation and its baselines, and
the Stage 1 aligner's saliency and contrastive terms."""

from sara.losses.aligner import info_nce, saliency_losses
from sara.losses.trd import repa_loss, trd_loss, trd_loss_dense

__all__ = ["info_nce", "repa_loss", "saliency_losses", "trd_loss", "trd_loss_dense"]
