"""The Stage 2 step: flow matching plus ``λ ·`` an alignment term, as one module.

:class:`Stage2Model` holds what trains — the DiT expert(s) and one projector per expert —
and its ``forward(batch)`` returns ``(loss, terms)``. The step is a function of the model
and the batch alone: the noise and σ are drawn by the caller and travel in the batch, so
the same batch gives the same loss whether the model is plain, sharded or resumed, and
cache-fed and online features meet the same noise.

Batch keys: ``latents`` ``[B, C, F, H, W]`` (normalised VAE latents), ``text``
``[B, L, D_t]`` (umT5 states, zero past the caption as Wan pads them), ``noise`` like
``latents``, ``sigma`` ``[B]``, ``expert`` ``[B]`` (from :meth:`Stage2Model.draw`), and for the alignment modes ``vfm`` ``[B, N_v, D_v]``
(V-JEPA 2 tokens of frames ``1 … 4k``, on the grid :meth:`Stage2Model.vfm_grid` gives) and for ``sara`` ``saliency`` ``[B, N_v]``.

Two-expert models (A14B): each sample goes to the expert the batch names, the one that
owns its timestep (``t >= boundary``: high noise); an expert that does not train is not
in the model, and :meth:`Stage2Model.draw` draws σ only inside the range of the experts
that do, one expert per step.
"""

from __future__ import annotations

import math

import torch
from diffusers import WanTransformer3DModel
from torch import Tensor, nn

from sara.config.stage2 import Stage2ObjectiveConfig
from sara.losses.alignment import TermSettings, get_alignment
from sara.losses.flow import flow_matching_loss, noisy_latents
from sara.models.motion import MotionHead
from sara.models.wan import HIGH, WanLayout, dit_grid
from sara.stage2.align import Projector, VfmView, capture_output, resample_to_vjepa
from sara.stage2.timesteps import draw_in_range, draw_sigmas, inside


class Stage2Model(nn.Module):
    def __init__(
        self,
        experts: dict[str, WanTransformer3DModel],
        layout: WanLayout,
        config: Stage2ObjectiveConfig,
        vfm_dim: int,
        view: VfmView,
        motion: MotionHead | None = None,
    ):
        super().__init__()
        self.experts = nn.ModuleDict(experts)
        self.layout, self.config = layout, config
        self.view = view
        align = config.align
        self.projectors = nn.ModuleDict()
        objective = get_alignment(align.mode)
        if not objective.teacher:
            return
        if objective.motion:
            if motion is None:
                raise ValueError(f"align.mode: {align.mode} needs the teacher's motion head (align.motion.head)")
            self.motion = motion.requires_grad_(False)  # frozen: its features are the target
            vfm_dim = motion.dim
        for name, dit in experts.items():
            if not 0 <= align.block < len(dit.blocks):
                raise ValueError(
                    f"align.block: {align.block} is out of range for a DiT of {len(dit.blocks)} blocks "
                    f"(0 … {len(dit.blocks) - 1})"
                )
            width = dit.config.num_attention_heads * dit.config.attention_head_dim
            self.projectors[name] = Projector(width, vfm_dim, align.projector_dim)

    def vfm_grid(self, latent_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """V-JEPA 2 grid of the clip whose latents are ``(F, h, w)``: ``4(F − 1) + 1`` frames of
        ``h·s × w·s`` pixels (``s`` the VAE's spatial factor), seen as :class:`VfmView` says."""
        frames, height, width = latent_shape
        spatial = self.layout.vae_spatial
        return self.view.grid((frames - 1) * self.layout.vae_temporal + 1, height * spatial, width * spatial)

    def expert_range(self, name: str) -> tuple[float, float]:
        """The σ interval expert ``name`` owns (all of [0, 1] for a one-expert model)."""
        if self.layout.boundary is None:
            return 0.0, 1.0
        boundary = self.layout.boundary / 1000
        return (boundary, 1.0) if name == HIGH else (0.0, boundary)

    def draw(self, shape: torch.Size, generator: torch.Generator, expert: str | None = None) -> dict[str, Tensor]:
        """``noise`` ``shape``, ``sigma`` ``[B]`` and ``expert`` ``[B]`` (index into
        ``layout.experts``) for a batch of latents of ``shape``, on the CPU from ``generator``,
        so that every device and world size draws the same numbers.

        One expert trains per step (:mod:`sara.stage2.timesteps`): a first σ of the
        configured density picks the expert among those that train (or ``expert`` names
        it), then every σ of the batch is drawn inside its range. The expert travels in the
        batch, so the sample goes to the expert that drew it whatever its timestep rounds to."""
        flow = self.config.flow
        names = list(self.experts)
        if expert is not None:
            name = expert
        elif len(names) == 1:
            name = names[0]
        else:
            first = draw_sigmas(flow, 1, generator)  # both experts train: they cover [0, 1]
            name = next(n for n in names if inside(first, *self.expert_range(n)).item())
        return {
            "sigma": draw_in_range(flow, shape[0], generator, *self.expert_range(name)),
            "noise": torch.randn(shape, generator=generator),
            "expert": torch.full((shape[0],), self.layout.experts.index(name), dtype=torch.long),
        }

    def forward(
        self, batch: dict[str, Tensor], align_share: tuple[int, int] = (0, 1)
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, terms)`` of ``batch``. ``align_share``: the share ``(i, n)`` of the alignment
        pairs this process computes — under sequence parallelism each rank of a group takes
        one, on the same gathered tokens, and the shares sum to the term."""
        x0, sigma = batch["latents"], batch["sigma"]
        xt, target = noisy_latents(x0, batch["noise"], sigma)
        timesteps = sigma * 1000
        owner = batch["expert"]  # (B,) index into layout.experts
        flow = torch.zeros(len(x0), device=x0.device)
        align = x0.new_zeros((), dtype=torch.float32)
        for index, name in enumerate(self.layout.experts):
            if name not in self.experts:
                continue
            if len(self.experts) == 1:  # draw() gave every sample to it: no host sync of nonzero()
                rows = torch.arange(len(x0), device=x0.device)
            else:
                rows = (owner == index).nonzero().squeeze(1)
                if len(rows) == 0:
                    continue
            pred, hidden = self._denoise(name, xt[rows], timesteps[rows], batch["text"][rows])
            flow = flow.index_put((rows,), flow_matching_loss(pred, target[rows]))
            if hidden is not None:
                part = self._align(name, x0.shape[2:], batch, rows, hidden, align_share)
                align = align + part * len(rows) / len(x0)
        flow = flow.mean()
        loss = flow + self.config.align.weight * align
        return loss, {"flow": flow.detach(), "align": align.detach()}

    def _denoise(self, name: str, xt: Tensor, timesteps: Tensor, text: Tensor) -> tuple[Tensor, Tensor | None]:
        """The expert's prediction and, when a term aligns it, block ``align.block``'s output ``(b, N_dit, D)``."""
        dit = self.experts[name]
        if self.layout.expand_timesteps:  # TI2V-5B: one timestep per DiT token, as its pipeline feeds it
            tokens = math.prod(dit_grid(dit.config.patch_size, xt.shape[2:]))
            timesteps = timesteps[:, None].expand(-1, tokens)
        if not get_alignment(self.config.align.mode).teacher:
            return dit(xt, timestep=timesteps, encoder_hidden_states=text, return_dict=False)[0], None
        with capture_output(dit.blocks[self.config.align.block]) as outputs:
            pred = dit(xt, timestep=timesteps, encoder_hidden_states=text, return_dict=False)[0]
        if len(outputs) != 1:
            raise RuntimeError(f"align.block: the block ran {len(outputs)} times in one forward, expected once")
        return pred, outputs[0]

    def _align(
        self,
        name: str,
        latent_shape: torch.Size,
        batch: dict[str, Tensor],
        rows: Tensor,
        hidden: Tensor,
        share: tuple[int, int],
    ) -> Tensor:
        """The alignment term (its ``share``) of the samples ``rows`` from their block states
        ``hidden`` ``(b, N_dit, D)``."""
        grid = dit_grid(self.experts[name].config.patch_size, latent_shape)
        vfm_grid = self.vfm_grid(tuple(latent_shape))
        tokens = resample_to_vjepa(
            self.projectors[name](hidden), grid, vfm_grid, self.view, self.layout.vae_temporal
        )  # (b, N_v, D_v)
        target = batch["vfm"][rows]
        align = self.config.align
        objective = get_alignment(align.mode)
        if objective.term is None:
            raise ValueError(f"align.mode: {align.mode!r} has no alignment term")
        if objective.motion:  # the teacher's tokens on their grid, through the frozen head
            target = self.motion.features(target.unflatten(1, vfm_grid)).flatten(1, 3)  # (b, N_v, D_m)
        saliency = batch["saliency"][rows] if objective.routed else None
        settings = TermSettings(align.routing, align.margin, align.motion.tau)
        return objective.term(tokens, target, saliency, settings, share, vfm_grid[0])
