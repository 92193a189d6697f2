"""The Stage 2 step: flow matching plus ``λ ·`` an alignment term, as one module.

:class:`Stage2Model` holds what trains — the DiT expert(s) and one projector per expert —
and its ``forward(batch)`` returns ``(loss, terms)``. The step is a function of the model
and the batch alone: the noise and σ are drawn by the caller and travel in the batch, so
the same batch gives the same loss whether the model is plain, sharded or resumed, and
cache-fed and online features meet the same noise.

Batch keys: ``latents`` ``[B, C, F, H, W]`` (normalised VAE latents), ``text``
``[B, L, D_t]`` (umT5 states, zero past the caption as Wan pads them), ``noise`` like
``latents``, ``sigma`` ``[B]``, and for the alignment modes ``vfm`` ``[B, N_v, D_v]``
(V-JEPA 2 tokens of frames ``1 … 4k``, on the grid :meth:`Stage2Model.vfm_grid` gives) and for ``sara`` ``saliency`` ``[B, N_v]``.

Two-expert models (A14B): each sample goes to the expert that owns its timestep
(``t >= boundary``: high noise); an expert that does not train is not in the model, and
the caller draws σ inside the range of the experts that do.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch import Tensor, nn

from sara.config.stage2 import Stage2ObjectiveConfig
from sara.losses import repa_loss, trd_loss
from sara.losses.flow import flow_matching_loss, noisy_latents, shift_sigma, unshift_sigma
from sara.models.wan import HIGH, WanLayout
from sara.stage2.align import BlockHook, Projector, VfmView, resample_to_vjepa


class Stage2Model(nn.Module):
    def __init__(
        self,
        experts: dict[str, WanTransformer3DModel],
        layout: WanLayout,
        config: Stage2ObjectiveConfig,
        vfm_dim: int,
        view: VfmView,
    ):
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.layout, self.config = layout, config
        self.view = view
        align = config.align
        self.projectors = nn.ModuleDict()
        self.hooks: dict[str, BlockHook] = {}
        if align.mode == "sft":
            return
        for name, dit in experts.items():
            if not 0 <= align.block < len(dit.blocks):
                raise ValueError(
                    f"align.block: {align.block} is out of range for a DiT of {len(dit.blocks)} blocks "
                    f"(0 … {len(dit.blocks) - 1})"
                )
            width = dit.config.num_attention_heads * dit.config.attention_head_dim
            self.projectors[name] = Projector(width, vfm_dim, align.projector_dim)
            self.hooks[name] = BlockHook(dit.blocks[align.block])

    def vfm_grid(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """V-JEPA 2 grid of the clip whose latents are ``(F, h, w)``: ``4(F − 1) + 1`` frames of
        ``h·s × w·s`` pixels (``s`` the VAE's spatial factor), seen as :class:`VfmView` says."""
        frames, height, width = latent_shape
        spatial = self.layout.vae_spatial
        return self.view.grid((frames - 1) * self.layout.vae_temporal + 1, height * spatial, width * spatial)

    def sigma_range(self) -> tuple[float, float]:
        """The σ interval owned by the experts that train (all of [0, 1] for one expert)."""
        if self.layout.boundary is None or len(self.experts) == len(self.layout.experts):
            return 0.0, 1.0
        boundary = self.layout.boundary / 1000
        return (boundary, 1.0) if HIGH in self.experts else (0.0, boundary)

    def draw(self, latents: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(noise, sigma)`` for a batch of latents, from ``generator`` (CPU, so that every
        device and world size draws the same numbers)."""
        low, high = (unshift_sigma(torch.tensor(v), self.config.flow.shift).item() for v in self.sigma_range())
        u = low + (high - low) * torch.rand(len(latents), generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        return noise.to(latents.device, latents.dtype), shift_sigma(u, self.config.flow.shift).to(latents.device)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x0, sigma = batch["latents"], batch["sigma"]
        xt, target = noisy_latents(x0, batch["noise"], sigma)
        timesteps = sigma * 1000
        owner = self.layout.expert_of(timesteps)  # (B,) index into layout.experts
        flow = torch.zeros(len(x0), device=x0.device)
        align = x0.new_zeros((), dtype=torch.float32)
        for index, name in enumerate(self.layout.experts):
            if len(self.layout.experts) == 1:  # every sample, without the host sync of nonzero()
                rows = torch.arange(len(x0), device=x0.device)
            else:
                rows = (owner == index).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            if name not in self.experts:
                raise ValueError(
                    f"sigma: a sample at t={timesteps[rows[0]]:.0f} belongs to the {name} expert, which does not train"
                )
            pred = self._denoise(name, xt[rows], timesteps[rows], batch["text"][rows])
            flow = flow.index_put((rows,), flow_matching_loss(pred, target[rows]))
            if self.config.align.mode != "sft":
                part = self._align(name, x0.shape[2:], batch, rows)
                align = align + part * len(rows) / len(x0)
        flow = flow.mean()
        loss = flow + self.config.align.weight * align
        return loss, {"flow": flow.detach(), "align": align.detach()}

    def _denoise(self, name: str, xt: Tensor, timesteps: Tensor, text: Tensor) -> Tensor:
        dit = self.experts[name]
        if self.layout.expand_timesteps:  # TI2V-5B: one timestep per DiT token, as its pipeline feeds it
            p_t, p_h, p_w = dit.config.patch_size
            tokens = (xt.shape[2] // p_t) * (xt.shape[3] // p_h) * (xt.shape[4] // p_w)
            timesteps = timesteps[:, None].expand(-1, tokens)
        return dit(xt, timestep=timesteps, encoder_hidden_states=text, return_dict=False)[0]

    def _align(self, name: str, latent_shape: torch.Size, batch: dict[str, Tensor], rows: Tensor) -> Tensor:
        dit = self.experts[name]
        p_t, p_h, p_w = dit.config.patch_size
        grid = (latent_shape[0] // p_t, latent_shape[1] // p_h, latent_shape[2] // p_w)
        hidden = self.hooks[name].pop()  # (b, N_dit, D)
        vfm_grid = self.vfm_grid(tuple(latent_shape))
        tokens = resample_to_vjepa(
            self.projectors[name](hidden), grid, vfm_grid, self.view, self.layout.vae_temporal
        )  # (b, N_v, D_v)
        target = batch["vfm"][rows]
        mode = self.config.align
        if mode.mode == "repa":
            return repa_loss(tokens, target).float()
        if mode.mode == "trd":
            return trd_loss(tokens, target, None, "none", mode.margin).float()
        return trd_loss(tokens, target, batch["saliency"][rows], mode.routing, mode.margin).float()
