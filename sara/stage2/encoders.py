"""The frozen models of Stage 2 and what they make of a clip: VAE latents, caption states,
V-JEPA 2 tokens and saliency. `sara stage2 precompute` stores their outputs; training can
also call them online — the same function, so both paths feed the DiT the same tensors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import WanPipeline
from torch import Tensor
from transformers import AutoTokenizer, UMT5EncoderModel, VJEPA2Config

from sara.config.stage2 import Stage2Config
from sara.data.buckets import Bucket
from sara.data.masks import pool_to_grid
from sara.models.presets import require_weights, resolve, wan_folder
from sara.models.vjepa2 import VideoEncoder
from sara.models.wan import WanLayout, load_vae, vae_memory
from sara.shapes.oracle import WIDTH as ORACLE_WIDTH
from sara.shapes.oracle import OracleTeacher
from sara.stage1.saliency import SaliencyModel
from sara.stage2.align import VJEPA_FIRST_FRAME, VfmView

log = logging.getLogger(__name__)


def frame_counts(config: Stage2Config) -> list[int]:
    """The clip lengths of a run: ``data.frame_buckets``, or ``data.frames`` alone."""
    return sorted(set(config.data.frame_buckets)) or [config.data.frames]


def buckets(config: Stage2Config, layout: WanLayout) -> list[Bucket]:
    """The clip shapes of a run: every length of :func:`frame_counts` at every ``[H, W]`` of
    ``data.buckets`` (or one square ``data.size``), as ``(frames, H, W)``.

    Raises:
        ValueError: a side that is not a whole number of DiT tokens (the folder's VAE factor × patch).
    """
    key = "data.buckets" if config.data.buckets else "data.size"
    sizes = config.data.buckets or [[config.data.size, config.data.size]]
    rows, columns = layout.pixel_multiple
    for size in sizes:
        if len(size) != 2 or size[0] % rows or size[1] % columns:
            raise ValueError(
                f"{key}: {size} must be [H, W] with H a multiple of {rows} and W of {columns} "
                f"(pixels per DiT token of {layout.folder.name}: VAE {layout.vae_spatial}× × patch {layout.patch[1:]})"
            )
    return [Bucket(frames, height, width) for frames in frame_counts(config) for height, width in sizes]


def teacher(config: Stage2Config) -> tuple[int, VfmView]:
    """``(width, view)`` of the teacher (V-JEPA 2's features, or the oracle's on its grid);
    checks that the clip lengths suit it and Wan's VAE."""
    models = config.models
    vjepa = VJEPA2Config.from_pretrained(resolve(models.vjepa2, "vjepa2", models.tiny_root))
    view = VfmView(vjepa.tubelet_size, vjepa.patch_size, models.vjepa2_stride, models.vjepa2_short_side)
    key = "data.frame_buckets" if config.data.frame_buckets else "data.frames"
    for frames in frame_counts(config):
        if (frames - 1) % 4 or (frames - VJEPA_FIRST_FRAME) % (view.tubelet * view.stride):
            raise ValueError(
                f"{key}: {frames} must be 4k + 1 frames (Wan's causal VAE) with 4k a multiple of "
                f"tubelet × stride ({view.tubelet} × {view.stride})"
            )
    view.latent_frame_of(1)  # a tubelet must not straddle latent frames
    return ORACLE_WIDTH if models.teacher == "oracle" else vjepa.hidden_size, view


def trim_text(text: Tensor) -> Tensor:
    """Drop the zero rows Wan pads a caption with: ``[L, D] -> [l, D]`` (at least one row)."""
    used = (text.abs().amax(-1) > 0).nonzero()  # (l, 1) rows holding a token
    return text[: int(used.max()) + 1] if len(used) else text[:1]


def pad_text(texts: list[Tensor], length: int) -> Tensor:
    """Stack trimmed caption states ``[l_i, D]`` zero-padded to ``[B, length, D]``, as Wan pads them."""
    out = texts[0].new_zeros(len(texts), length, texts[0].shape[-1])
    for row, text in enumerate(texts):
        out[row, : min(length, len(text))] = text[:length]
    return out


def warn_overlong(tokenizer, captions: list[str], length: int, setting: str) -> int:
    """Warn when captions run past ``length`` umT5 tokens: ``WanPipeline`` cuts them there, so
    the DiT never reads their tail — an MTSS caption's cast and shots come late, and a cut
    caption trains a DiT that ignores them. Returns how many are cut."""
    counts = [len(ids) for ids in tokenizer(captions, add_special_tokens=True).input_ids]  # with </s>, as Wan counts
    cut = sum(count > length for count in counts)
    if cut:
        log.warning(
            "%d of %d captions are longer than %s %d umT5 tokens (the longest: %d) and are cut there",
            cut,
            len(captions),
            setting,
            length,
            max(counts),
        )
    return cut


class Stage2Encoders(torch.nn.Module):
    """Wan's VAE and umT5, the V-JEPA 2 teacher and (optionally) the Stage 1 saliency model."""

    def __init__(self, config: Stage2Config, view: VfmView, dtype: torch.dtype = torch.float32):
        """``dtype``: the run's compute dtype, which umT5, V-JEPA 2 and the aligner's caption
        encoder are held in (the VAE stays as diffusers loads it). One copy of each: the
        aligner reads the teacher's V-JEPA 2 and Wan's umT5 where its folders are theirs."""
        super().__init__()
        models = config.models
        self.config = config
        folder = require_weights(wan_folder(models.wan, models.tiny_root), "models.wan")
        self.vae = vae_memory(load_vae(folder), config.precompute.vae_tile, config.precompute.vae_slicing)
        self.text = WanPipeline(
            tokenizer=AutoTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            text_encoder=UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=dtype).eval(),
            vae=None,
            scheduler=None,
        )
        self.text_encoder = self.text.text_encoder.requires_grad_(False)  # registered: moves with .to()
        teacher_folder = require_weights(resolve(models.vjepa2, "vjepa2", models.tiny_root), "models.vjepa2")
        geometry = VJEPA2Config.from_pretrained(teacher_folder)
        oracle = models.teacher == "oracle"
        self.teacher = (
            OracleTeacher(geometry.tubelet_size, geometry.patch_size) if oracle else VideoEncoder(teacher_folder, dtype)
        )
        self.view = view
        loaded: dict[Path, torch.nn.Module] = {(Path(folder) / "text_encoder").resolve(): self.text_encoder}
        if not oracle:
            loaded[Path(teacher_folder).resolve()] = self.teacher
        self.saliency = SaliencyModel.from_run(models.aligner, dtype, loaded) if models.aligner else None
        latents_mean = torch.tensor(self.vae.config.latents_mean).view(1, -1, 1, 1, 1)
        self.register_buffer("latents_mean", latents_mean, persistent=False)
        self.register_buffer(
            "latents_std", torch.tensor(self.vae.config.latents_std).view(1, -1, 1, 1, 1), persistent=False
        )

    @torch.no_grad()
    def forward(self, frames: Tensor, captions: list[str], masks: list[Tensor | None] | None = None) -> list[dict]:
        """Per clip: ``latents`` ``[C, F', h, w]``, ``text`` ``[l, D_t]``, ``vfm`` ``[N_v, D_v]``,
        ``saliency`` ``[N_v]`` (with an aligner) and ``mask_saliency`` ``[N_v]`` (with masks
        ``[T, H, W]`` of the union of the clip's entities)."""
        device = self.latents_mean.device
        frames = frames.to(device)  # (B, T, 3, H, W) uint8
        video = frames.permute(0, 2, 1, 3, 4).float() / 127.5 - 1  # (B, 3, T, H, W) in [-1, 1]
        latents = (self.vae.encode(video).latent_dist.mode() - self.latents_mean) / self.latents_std
        text = self._encode_text(captions)
        seen = self._vfm_input(frames)  # (B, 4k / stride, 3, h, w): what V-JEPA 2 reads
        vfm = self.teacher(seen)  # (B, N_v, D_v)
        out = [
            {"latents": latents[i].cpu(), "text": trim_text(text[i]).cpu(), "vfm": vfm[i].cpu()}
            for i in range(len(frames))
        ]
        if self.saliency is not None:
            tokens = vfm if self.saliency.video is self.teacher else self.saliency.tokens(seen)
            logits = self.saliency(tokens, captions).saliency_logits  # (B, N_v)
            for row, clip in zip(logits.float().sigmoid().cpu(), out):
                clip["saliency"] = row
        for mask, clip in zip(masks or [], out):
            if mask is not None:
                seen_mask = self._vfm_input(mask[None, :, None].float())[0, :, 0]  # (T_v·tubelet, h, w)
                pooled = pool_to_grid(seen_mask, self.teacher.tubelet, self.teacher.patch)
                clip["mask_saliency"] = pooled.flatten()
        return out

    def _encode_text(self, captions: list[str]) -> Tensor:
        """umT5 states ``[B, text_length, D_t]``, zero past each caption, as ``WanPipeline`` encodes them."""
        device = self.latents_mean.device
        length = self.config.models.text_length
        return self.text.encode_prompt(
            captions, do_classifier_free_guidance=False, max_sequence_length=length, device=device
        )[0]

    @torch.no_grad()
    def empty_caption(self) -> Tensor:
        """The states ``[l, D_t]`` of the empty caption: what Wan's unconditional branch reads."""
        return trim_text(self._encode_text([""])[0]).cpu()

    def _vfm_input(self, frames: Tensor) -> Tensor:
        """The frames V-JEPA 2 reads, at its input size: ``[B, T, C, H, W] -> [B, T', C, h, w]``
        (uint8 stays uint8; masks stay fractions)."""
        seen = frames[:, self.view.frame_indices(frames.shape[1])]
        size = self.view.size(*frames.shape[-2:])
        if size == tuple(frames.shape[-2:]):
            return seen
        batch, count = seen.shape[:2]
        resized = F.interpolate(seen.flatten(0, 1).float(), size=size, mode="bilinear", antialias=True)
        resized = resized.unflatten(0, (batch, count))
        return resized.round().clamp(0, 255).to(torch.uint8) if frames.dtype == torch.uint8 else resized.clamp(0, 1)
