"""Pure loss functions of SARA: routed token-relation distillation and its baselines."""

from sara.losses.trd import repa_loss, trd_loss, trd_loss_dense

__all__ = ["repa_loss", "trd_loss", "trd_loss_dense"]
