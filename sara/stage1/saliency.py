"""The trained aligner, frozen, with the encoders it reads: frames and captions in, saliency out.

This is what `sara stage1 infer` draws and what Stage 2 routes its loss by. The aligner's
input and embedding widths are read from the checkpoint's weights, so loading it needs
neither the data nor the caption embedder it was trained against.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import torch
from safetensors import safe_open
from torch import Tensor, nn

from sara.config import load_config
from sara.config.stage1 import Stage1Config
from sara.models.aligner import AlignerOutput, SemanticAligner
from sara.models.presets import resolve
from sara.models.text import CaptionEncoder
from sara.models.vjepa2 import VideoEncoder
from sara.run_dir import CheckpointDir
from sara.trainer.checkpoint import latest_checkpoint, load_weights


def locate(path: str | Path) -> tuple[Path, Path]:
    """``(run folder, checkpoint folder)`` from either of them."""
    path = Path(path)
    if CheckpointDir(path).weights.is_file():
        return path.parent.parent, path
    checkpoint = latest_checkpoint(path)
    if checkpoint is None:
        raise ValueError(f"{path}: no checkpoint (neither a run folder with checkpoints/latest nor a checkpoint)")
    return path, checkpoint


def load_aligner(checkpoint: str | Path, size: str) -> SemanticAligner:
    """The aligner of a checkpoint folder, frozen, in eval mode."""
    with safe_open(CheckpointDir(Path(checkpoint)).weights, "pt") as weights:
        visual_dim = weights.get_slice("visual_in.1.weight").get_shape()[1]  # Linear(Dv -> d): (d, Dv)
        text_dim = weights.get_slice("text_in.1.weight").get_shape()[1]
        embed_dim = weights.get_slice("global_head.weight").get_shape()[0]
    aligner = SemanticAligner(size, visual_dim, text_dim, embed_dim)
    load_weights(checkpoint, aligner)
    return aligner.eval().requires_grad_(False)


class SaliencyModel(torch.nn.Module):
    """Frozen V-JEPA 2 + caption encoder + aligner of a Stage 1 run."""

    def __init__(
        self,
        config: Stage1Config,
        checkpoint: str | Path,
        dtype: torch.dtype = torch.float32,
        loaded: Mapping[Path, nn.Module] = MappingProxyType({}),
    ):
        """``loaded``: frozen models already in memory, by resolved weights folder (a
        :class:`VideoEncoder`; a caption encoder's transformers model): the aligner's encoders
        are those where their folders match, not second copies."""
        super().__init__()
        models = config.models
        self.config = config
        video_folder = Path(resolve(models.vjepa2, "vjepa2", models.tiny_root)).resolve()
        self.video = loaded[video_folder] if video_folder in loaded else VideoEncoder(video_folder, dtype)
        kind = models.caption_encoder_kind
        caption_folder = Path(resolve(models.caption_encoder, kind, models.tiny_root)).resolve()
        self.captions = CaptionEncoder(caption_folder, kind, dtype, model=loaded.get(caption_folder))
        self.aligner = load_aligner(checkpoint, models.aligner)

    @classmethod
    def from_run(
        cls,
        path: str | Path,
        dtype: torch.dtype = torch.float32,
        loaded: Mapping[Path, nn.Module] = MappingProxyType({}),
    ) -> SaliencyModel:
        """From a run folder (its latest checkpoint) or a checkpoint folder."""
        _, checkpoint = locate(path)
        return cls(load_config(Stage1Config, CheckpointDir(Path(checkpoint)).config), checkpoint, dtype, loaded)

    @torch.no_grad()
    def tokens(self, frames: Tensor) -> Tensor:
        """V-JEPA 2 tokens ``[B, N, Dv]`` of clips ``uint8 [B, T, 3, H, W]``."""
        return self.video(frames)

    @torch.no_grad()
    def forward(self, tokens: Tensor, captions: list[str]) -> AlignerOutput:
        """The aligner on ``tokens`` ``[B, N, Dv]`` (``B`` = 1 is shared by every caption)."""
        text, mask = self.captions(captions)  # (P, L, Dt), (P, L)
        return self.aligner(tokens.expand(len(captions), -1, -1) if len(tokens) == 1 else tokens, text, mask)
