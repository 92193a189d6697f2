"""The entity colours of the shapes world, found in pixels.

No background or clutter colour of the renderer lies near an entity colour, so the pixels of
each palette colour are an entity's visible part (up to compression at its edges): what the
exact metric scores and the oracle teacher encodes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sara.shapes.vocabulary import COLOURS

PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)  # (K, 3)
TOLERANCE = 35.0  # RGB distance to a palette colour; the closest pair (yellow, orange) is 71 apart


def colour_masks(video: torch.Tensor) -> torch.Tensor:
    """Pixels of each palette colour, opened: ``uint8 [T, H, W, 3] -> bool [K, T, H, W]``."""
    x = video.float()
    distance = torch.cdist(x.reshape(-1, 3), torch.from_numpy(PALETTE).to(x.device))  # (T·H·W, K)
    nearest, index = distance.min(dim=1)
    near = F.one_hot(index, len(PALETTE)).bool() & (nearest < TOLERANCE)[:, None]
    masks = near.T.reshape(len(PALETTE), *video.shape[:3]).float()  # (K, T, H, W)
    eroded = -F.max_pool2d(-masks, 3, stride=1, padding=1)  # opening: erosion then dilation
    return F.max_pool2d(eroded, 3, stride=1, padding=1).bool()
