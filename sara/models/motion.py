"""MoAlign's motion head: a low-dimensional motion subspace of a frozen teacher's tokens.

``features`` (MoAlign's ``M_ψ``) maps the teacher's tokens ``[B, T, H, W, D]`` to ``dim``
channels (64 in the paper: the bottleneck keeps motion and drops appearance) with a
convolution over three tubelets in time, SiLU and a 1 × 1 × 1 projection; the flow decoder
(``F_ω``: a 3 × 3 × 3 convolution, ReLU, a 1 × 1 × 1 one to 2 channels) predicts each
token's optical flow ``(dy, dx)`` from them. The decoder exists only to train the subspace;
Stage 2 aligns the DiT to ``features``. The flow is predicted per teacher token — the mean of
the flow over the token's pixels and tubelet frames (:func:`sara.stage2.motion.token_flow`) — not per pixel, so
the decoder needs no upsampling.

A fitted head is a folder: ``config.json`` (its widths) and ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

MOTION_HEAD = "motion_head"  # the head's folder beside the cache it was fitted on
CONFIG = "config.json"
WEIGHTS = "model.safetensors"


class MotionHead(nn.Module):
    def __init__(self, teacher_dim: int, dim: int = 64, hidden: int = 256, decoder: int = 128):
        super().__init__()
        self.widths = {"teacher_dim": teacher_dim, "dim": dim, "hidden": hidden, "decoder": decoder}
        self.encoder = nn.Sequential(
            nn.Conv3d(teacher_dim, hidden, (3, 1, 1), padding=(1, 0, 0)), nn.SiLU(), nn.Conv3d(hidden, dim, 1)
        )
        self.decoder = nn.Sequential(nn.Conv3d(dim, decoder, 3, padding=1), nn.ReLU(), nn.Conv3d(decoder, 2, 1))

    @property
    def dim(self) -> int:
        return self.widths["dim"]

    def features(self, tokens: Tensor) -> Tensor:
        """``[B, T, H, W, D]`` teacher tokens → ``[B, T, H, W, dim]`` motion features."""
        return self.encoder(tokens.movedim(-1, 1)).movedim(1, -1)

    def forward(self, tokens: Tensor) -> Tensor:
        """``[B, T, H, W, D]`` → ``[B, T, H, W, 2]``: each token's predicted flow ``(dy, dx)``."""
        return self.decoder(self.features(tokens).movedim(-1, 1)).movedim(1, -1)


def save_motion_head(head: MotionHead, folder: str | Path, report: dict) -> Path:
    """Write ``head`` (and ``report``, how it was fitted, into its config) to ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps({**head.widths, "fitted": report}, indent=2) + "\n")
    return folder


def load_motion_head(folder: str | Path) -> MotionHead:
    """The frozen head in ``folder`` (written by ``sara moalign train``)."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(f"{folder}: no motion head (run `sara moalign train` first)")
    widths = json.loads((folder / CONFIG).read_text())
    head = MotionHead(*(widths[k] for k in ("teacher_dim", "dim", "hidden", "decoder")))
    head.load_state_dict(load_file(folder / WEIGHTS))
    return head.eval().requires_grad_(False)
