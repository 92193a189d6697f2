"""One Stage 2 step on gloo ranks against one process, on the same weights and batch.

:func:`one_step` runs in a process of its own (one thread, as each rank), :func:`sharded_step`
on every rank of a spawned world; :func:`compare` checks the reduced loss terms and every
parameter gradient of the sharded step against the one of one process. Both record the
timesteps the DiT's condition embedder receives, and run in ``compute`` (a dtype name) as
training does: bf16 under autocast with fp32 masters, or fp32.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
from diffusers import WanTransformer3DModel
from peft import LoraConfig
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy

from sara.bench.accumulate import count_calls
from sara.config.parallel import ParallelConfig
from sara.config.stage2 import LORA_TARGETS, Stage2Config, Stage2ObjectiveConfig
from sara.models.motion import MotionHead
from sara.models.presets import RELEASED_ROOT
from sara.models.wan import load_transformers, read_layout
from sara.parallel.gradients import backward, sync_replicated
from sara.parallel.precision import autocast
from sara.parallel.world import World, init_world
from sara.stage2.align import VfmView
from sara.stage2.build import set_dtypes
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import parallelize, reduce_terms
from sara.stage2.step import noise_generator, train_step

VFM_DIM, VIEW = 24, VfmView(tubelet=2, patch=16)
BATCH = 2  # clips: one per data-parallel rank of the largest split (2), a few seconds a step


def build(folder, mode: str = "sara", checkpointing: bool = False, lora: bool = False, compute=torch.float32):
    """The Stage 2 model of a Wan folder with seeded projectors (and adapters), in the dtypes
    a run of ``compute`` keeps."""
    config = Stage2ObjectiveConfig()
    config.align.mode = mode
    torch.manual_seed(0)
    layout = read_layout(folder)
    experts = load_transformers(layout)
    if lora:
        for dit in experts.values():
            dit.requires_grad_(False)
            dit.add_adapter(
                LoraConfig(r=4, lora_alpha=4, target_modules=list(LORA_TARGETS), init_lora_weights="gaussian")
            )
    motion = MotionHead(VFM_DIM, dim=8, hidden=16) if mode == "moalign" else None  # a seeded frozen head
    model = set_dtypes(Stage2Model(experts, layout, config, VFM_DIM, VIEW, motion), compute)
    if checkpointing:
        for dit in model.experts.values():
            dit.enable_gradient_checkpointing()
    return model


def clips(model: Stage2Model, latent: tuple[int, int, int], count: int = BATCH, seed: int = 0) -> dict:
    """``count`` seeded clips of latents ``(F, h, w)``: what a data loader gives a step."""
    dit = next(iter(model.experts.values())).config
    g = torch.Generator().manual_seed(seed)
    tokens = math.prod(model.vfm_grid(latent))
    return {
        "latents": torch.randn(count, dit.in_channels, *latent, generator=g),
        "text": torch.randn(count, 12, dit.text_dim, generator=g),
        "vfm": torch.randn(count, tokens, VFM_DIM, generator=g),
        "saliency": (torch.rand(count, tokens, generator=g) > 0.5).float(),
    }


def make_batch(model: Stage2Model, latent: tuple[int, int, int], seed: int = 0) -> dict:
    """A seeded batch of :data:`BATCH` clips of latents ``(F, h, w)`` with noise, σ and expert."""
    batch = clips(model, latent, seed=seed)
    return batch | model.draw(batch["latents"].shape, torch.Generator().manual_seed(seed + 1))


def _forward(model: Stage2Model, batch: dict, compute: torch.dtype, world: World) -> tuple[dict, list]:
    """Loss terms after backward, and the timesteps the condition embedder saw."""
    seen = []
    dit = next(iter(model.experts.values()))
    hook = dit.condition_embedder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with autocast(compute, torch.device("cpu")):
        loss, terms = model(batch, align_share=world.cp_share)
    backward(loss, world)
    hook.remove()
    return terms, seen


def one_step(folder, mode: str, latent, compute: str = "float32", checkpointing=False, lora=False) -> dict:
    dtype = getattr(torch, compute)
    world = World(rank=0, size=1, device=torch.device("cpu"))
    model = build(folder, mode, checkpointing, lora, dtype)
    batch = make_batch(model, latent)
    terms, seen = _forward(model, batch, dtype, world)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return {"terms": {k: v.item() for k, v in terms.items()}, "grads": grads, "timesteps": seen}


def sharded_step(
    folder, mode: str, parallel: dict, latent, compute: str = "float32", checkpointing=False, lora=False,
    cast_inputs=False,
) -> dict:  # fmt: skip
    """This rank's share of the step; rank 0 returns the full gradients. ``cast_inputs``: FSDP
    casts every forward input to the compute dtype (its default, the policy this code refuses)."""
    dtype = getattr(torch, compute)
    config = ParallelConfig(**parallel, param_dtype=compute)
    world = init_world(config, "cpu")
    policy = MixedPrecisionPolicy if not cast_inputs else _casting_policy
    with mock.patch("sara.stage2.parallelize.MixedPrecisionPolicy", policy):
        model = parallelize(build(folder, mode, checkpointing, lora, dtype), world, config)
    batch = make_batch(model, latent)
    rows = torch.arange(BATCH).chunk(world.dp_size)[world.dp_rank]
    terms, seen = _forward(model, {k: v[rows] for k, v in batch.items()}, dtype, world)
    sync_replicated([p for p in model.parameters() if p.requires_grad], world)
    grads = {
        n: p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    reduced = {k: v.item() for k, v in reduce_terms(terms, world).items()}
    return {"terms": reduced, "grads": grads if world.rank == 0 else None, "timesteps": seen, "rows": rows}


def counted_step(folder, parallel: dict, latent, accumulate: int, sync: str) -> dict:
    """One optimizer step of training (:func:`~sara.stage2.step.train_step`) on this rank's 4
    clips in ``accumulate`` micro-batches, counting FSDP's collectives: the reduce-scatters and
    HSDP's all-reduces, against the FSDP units that hold trained parameters. Rank 0 also
    returns the full gradients."""
    config = Stage2Config(parallel=ParallelConfig(**parallel, accumulate_sync=sync))
    config.optim.accumulate = accumulate
    world = init_world(config.parallel, "cpu")
    model = parallelize(build(folder), world, config.parallel)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = clips(model, latent, 4 * world.dp_size)
    rows = torch.arange(len(batch["latents"])).chunk(world.dp_size)[world.dp_rank]
    with count_calls(dist, "reduce_scatter_single") as scatters, count_calls(dist, "all_reduce") as reduces:
        train_step(model, optimizer, {k: v[rows] for k, v in batch.items()}, noise_generator(0, 0), config, world)
    counts = {"reduce_scatter_single": scatters.count, "all_reduce": reduces.count}
    grads = {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}
    return {"counts": counts, "units": _trained_units(model), "grads": grads if world.rank == 0 else None}


def _trained_units(model: torch.nn.Module) -> int:
    """FSDP units that own a trained parameter (a unit owns what no unit below it does)."""
    owned: set = set()
    units = 0
    for unit in reversed([m for m in model.modules() if isinstance(m, FSDPModule)]):  # innermost first
        mine = {p for p in unit.parameters() if p.requires_grad} - owned
        owned |= mine
        units += bool(mine)
    return units


def _casting_policy(**kwargs) -> MixedPrecisionPolicy:
    return MixedPrecisionPolicy(**(kwargs | {"cast_forward_inputs": True}))


def compare(reference: dict, results: list[dict]) -> dict:
    """Relative differences of the sharded step from one process: each loss term, the worst
    gradient (largest |Δ| over largest |g| of each parameter) and its name."""
    terms = {
        k: max(abs(r["terms"][k] - v) / max(abs(v), 1e-12) for r in results) for k, v in reference["terms"].items()
    }
    got = results[0]["grads"]
    assert got.keys() == reference["grads"].keys()
    errors = {
        n: ((got[n].float() - g.float()).abs().max() / g.float().abs().max().clamp(min=1e-12)).item()
        for n, g in reference["grads"].items()
    }
    worst = max(errors, key=errors.get)
    return {"terms": terms, "worst": worst, "grad": errors[worst], "errors": errors}


def real_heads_folder(out: Path, release: str, heads: int, layers: int = 2, head_dim: int = 8) -> Path:
    """A one-expert Wan folder with a release's head count, channels, VAE and per-token
    timesteps, at a width a CPU steps in seconds (``heads × head_dim``), seeded weights."""
    source = RELEASED_ROOT / release
    config = json.loads((source / "transformer" / "config.json").read_text())
    index = json.loads((source / "model_index.json").read_text())
    torch.manual_seed(0)
    dit = WanTransformer3DModel(
        patch_size=tuple(config["patch_size"]), num_attention_heads=heads, attention_head_dim=head_dim,
        in_channels=config["in_channels"], out_channels=config["out_channels"], text_dim=32, freq_dim=32,
        ffn_dim=4 * heads * head_dim, num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )  # fmt: skip
    dit.save_pretrained(out / "transformer")
    (out / "vae").mkdir()
    shutil.copy(source / "vae" / "config.json", out / "vae" / "config.json")  # the VAE's factors
    one = index | {"transformer_2": [None, None], "boundary_ratio": None}
    (out / "model_index.json").write_text(json.dumps(one))
    return out
