"""`sara stage2 plan`: a Stage 2 run resolved as ``torchrun`` would start it, before any weight is read.

From the config and the configs of the folders it names (``config.json`` files; the models
are built on the meta device), for a world of ``N`` processes:

- the split of the world (``dp_replicate × dp_shard × ulysses``) and the batch: a micro-batch of
  ``optim.batch_size`` clips per data-parallel rank, ``optim.accumulate`` of them a step, the
  global batch their product with the data-parallel degree;
- every clip shape: its latents, DiT token grid (tokens per rank under Ulysses), V-JEPA 2's
  input size and token grid (the size of the relation matrices TRD compares);
- the DiT's heads over the Ulysses degree, the experts that train, the σ range each owns and
  its share of the steps under ``objective.flow``;
- the held-out loss batch per rank and how validation videos are sampled;
- memory per GPU: every parameter's bytes under FSDP2 (fp32 masters, fp32 gradients — whole
  on every rank when ``optim.accumulate`` > 1 under ``parallel.accumulate_sync: final`` — AdamW's
  two moments, an EMA; frozen weights in the compute dtype, the fp32 ones diffusers keeps;
  the norms and modulation tables left whole on every rank), and the all-gather working
  set — two Wan blocks unsharded in the compute dtype. Activations are not counted;
- the checkpoint each rank writes and the time a stop signal must allow for it.

A problem is one line naming the config key; ``sara stage2 train`` resolves the same plan
first and refuses to start on any, before the model is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sara.config.sampling import Sampling
from sara.config.stage2 import Stage2Config
from sara.losses.alignment import get_alignment
from sara.models.wan import dit_grid, latent_shape
from sara.parallel.context import check_heads, check_tokens
from sara.parallel.precision import param_dtype
from sara.parallel.world import degrees
from sara.stage2.build import Stage2Setup, build_model, resolve_setup, trained_experts
from sara.stage2.objective import Stage2Model
from sara.stage2.parallelize import uncast_parameters
from sara.stage2.step import global_batch
from sara.stage2.timesteps import draw_sigmas, inside
from sara.stage2.validate import validation_sampling

GIB = 2**30
# a stop signal is acted on at the next step boundary: time for the step in flight (a real
# step at 720p with checkpointing takes a minute or two) and for the process group's teardown
STEP_MARGIN_S = 180
# what each rank is assumed to write at when all write at once to a shared file system
WRITE_GIB_PER_S = 0.5
SLURM_LEAD_S = 300  # scripts/slurm.sbatch: --signal=USR1@300


class PlanProblems(ValueError):
    """A run that cannot start; one line per problem, each naming its config key."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ShapePlan:
    """One clip shape (a bucket) as the DiT and V-JEPA 2 see it."""

    frames: int
    height: int
    width: int
    latent: tuple[int, int, int]  # (F, h, w)
    dit: tuple[int, int, int]  # the DiT's token grid
    vfm_size: tuple[int, int]  # V-JEPA 2's input pixels
    vfm: tuple[int, int, int]  # its token grid

    @property
    def dit_tokens(self) -> int:
        return math.prod(self.dit)

    @property
    def vfm_tokens(self) -> int:
        return math.prod(self.vfm)


@dataclass
class RunPlan:
    world: int
    dp_replicate: int
    dp_shard: int
    ulysses: int
    micro_batch: int
    accumulate: int
    problems: list[str] = field(default_factory=list)
    model: str = ""  # the DiT in words
    shapes: list[ShapePlan] = field(default_factory=list)
    experts: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # σ from, to, share of steps
    heldout_per_rank: int | None = None  # held-out clips per data-parallel rank (None: no held-out loss)
    sampling: Sampling | None = None  # validation videos (None: none)
    global_batch: int = 0  # clips a step over the whole run
    memory: dict[str, float] = field(default_factory=dict)  # GiB per rank
    checkpoint_gib: float = 0.0  # written by each rank

    @property
    def dp(self) -> int:
        return self.dp_replicate * self.dp_shard

    @property
    def shutdown_timeout(self) -> int:
        """Seconds a launcher must give the trainers between its stop signal and SIGKILL."""
        seconds = STEP_MARGIN_S + self.checkpoint_gib / WRITE_GIB_PER_S
        return int(math.ceil(seconds / 30) * 30)


def plan_run(config: Stage2Config, world: int, setup: Stage2Setup | None = None) -> RunPlan:
    """The run of ``config`` on ``world`` processes (``setup``: the folders' configs, when
    already read); its ``problems`` list what refuses it."""
    problems: list[str] = []
    try:
        replicate, shard, ulysses = degrees(config.parallel, world)
    except ValueError as exc:
        problems.append(str(exc))
        replicate, ulysses = config.parallel.dp_replicate, config.parallel.ulysses
        shard = max(1, world // (replicate * ulysses))
    plan = RunPlan(world, replicate, shard, ulysses, config.optim.batch_size, config.optim.accumulate, problems)
    plan.global_batch = global_batch(config, plan.dp)
    try:
        setup = setup or resolve_setup(config)
        model = build_model(config, setup, meta=True, compute_dtype=param_dtype(config.parallel, torch.device("cuda")))
    except ValueError as exc:  # a folder, a shape or a setting the model cannot be built with
        problems.append(str(exc).splitlines()[0])
        return plan
    dit = next(iter(model.experts.values())).config
    check = _collector(problems)
    check(check_heads, dit.num_attention_heads, ulysses)
    plan.model = _describe(config, setup, model)
    plan.shapes = [_shape(setup, model, bucket) for bucket in setup.buckets]
    for shape in plan.shapes:
        where = f"data.buckets: {shape.frames} frames of {shape.height}×{shape.width}"
        check(check_tokens, shape.dit_tokens, ulysses, where)
    plan.experts = _experts(config, setup, model, problems)
    align = config.objective.align
    if get_alignment(align.mode).routed and align.saliency == "aligner" and not config.models.aligner:
        problems.append(
            "models.aligner: objective.align.saliency=aligner needs the Stage 1 run its saliency comes from "
            "(the cache is made with it); set it (SARA_ALIGNER in the shipped configs) or saliency=masks"
        )
    _validation(config, setup, plan)
    if config.optim.layerwise_fp8 and world > 1:
        problems.append("optim.layerwise_fp8: stores the frozen base of a LoRA run in one process, not sharded")
    plan.memory, plan.checkpoint_gib = _memory(config, model, world // replicate)
    return plan


def check_plan(plan: RunPlan) -> RunPlan:
    """``plan``, or :class:`PlanProblems` when it has any."""
    if plan.problems:
        raise PlanProblems(plan.problems)
    return plan


def _collector(problems: list[str]):
    def check(function, *args) -> None:
        try:
            function(*args)
        except ValueError as exc:
            problems.append(str(exc).splitlines()[0])

    return check


def _describe(config: Stage2Config, setup: Stage2Setup, model: Stage2Model) -> str:
    dit = next(iter(model.experts.values()))
    count = sum(p.numel() for n, p in dit.named_parameters() if "lora_" not in n) / 1e9  # the expert as released
    what = f"LoRA rank {config.optim.lora_rank}" if config.optim.lora_rank else "all weights"
    experts = len(setup.layout.experts)
    return (
        f"{setup.layout.folder.name}: {experts} expert{'s' * (experts > 1)} of {count:.2f} B "
        f"({dit.config.num_attention_heads} heads × {dit.config.attention_head_dim}, {dit.config.num_layers} "
        f"blocks); training {', '.join(model.experts)} ({what}), aligned by {config.objective.align.mode}"
    )


def _shape(setup: Stage2Setup, model: Stage2Model, bucket) -> ShapePlan:
    layout = setup.layout
    latent = latent_shape(bucket.frames, bucket.height, bucket.width, layout.vae_temporal, layout.vae_spatial)
    return ShapePlan(
        bucket.frames, bucket.height, bucket.width, latent, dit_grid(layout.patch, latent),
        setup.view.size(bucket.height, bucket.width), model.vfm_grid(latent),
    )  # fmt: skip


def _experts(
    config: Stage2Config, setup: Stage2Setup, model: Stage2Model, problems: list[str]
) -> dict[str, tuple[float, float, float]]:
    """Each trained expert's σ range and the share of steps it trains (one expert a step, the
    one that owns the step's first σ; an expert training alone takes every step)."""
    sigmas = draw_sigmas(config.objective.flow, 100_000, torch.Generator().manual_seed(0))
    ranges = {name: model.expert_range(name) for name in trained_experts(config, setup.layout)}
    owned = {name: inside(sigmas, *bounds).float().mean().item() for name, bounds in ranges.items()}
    for name, mass in owned.items():
        if mass < 0.01:
            problems.append(
                f"objective.flow: the {config.objective.flow.density} density (shift {config.objective.flow.shift}) "
                f"puts {mass:.2%} of σ in the {name}-noise expert's range {ranges[name]}: it would never be fed"
            )
    total = sum(owned.values()) or 1.0
    return {name: (*ranges[name], owned[name] / total) for name in ranges}


def _validation(config: Stage2Config, setup: Stage2Setup, plan: RunPlan) -> None:
    validation = config.validation
    if validation.loss_every:
        if not validation.heldout:
            plan.problems.append("validation.loss_every: needs validation.heldout, a manifest of held-out clips")
        if validation.loss_every % config.log_every:
            plan.problems.append(
                f"validation.loss_every: {validation.loss_every} must be a multiple of log_every ({config.log_every})"
            )
        if validation.loss_clips % plan.dp:
            plan.problems.append(
                f"validation.loss_clips: {validation.loss_clips} clips do not split over {plan.dp} data-parallel ranks"
            )
        plan.heldout_per_rank = validation.loss_clips // plan.dp
    if validation.every:
        plan.sampling = validation_sampling(config, setup)


def _memory(config: Stage2Config, model: Stage2Model, shards: int) -> tuple[dict[str, float], float]:
    """GiB per rank of each part (see the module docstring), and of the checkpoint it writes."""
    compute = param_dtype(config.parallel, torch.device("cuda"))
    whole = uncast_parameters(model) if compute != torch.float32 else set()
    # accumulated without reducing, a rank holds the whole of each trained gradient
    unsharded = config.optim.accumulate > 1 and config.parallel.accumulate_sync == "final"
    weights = grads = adam = 0.0
    trained = 0.0  # trained parameters per rank
    for parameter in model.parameters():
        count = parameter.numel() / (1 if parameter in whole else shards)
        if parameter.requires_grad:
            trained += count
            grads += 4 * (parameter.numel() if unsharded else count)
            weights, adam = weights + 4 * count, adam + 8 * count
        else:
            weights += parameter.element_size() * count
    ema = 4 * trained if config.optim.ema_decay else 0.0
    block = max(sum(p.numel() for p in b.parameters()) for dit in model.experts.values() for b in dit.blocks)
    gathered = 2 * block * torch.finfo(compute).bits // 8  # the block that computes and the one prefetched
    parts = {"parameters": weights, "gradients": grads, "optimizer": adam, "ema": ema, "gathered": gathered}
    return {k: v / GIB for k, v in parts.items()}, (4 * trained + adam + ema) / GIB


def format_plan(plan: RunPlan, source: str) -> str:
    """The plan as the command prints it (its problems go to stderr, one line each)."""
    lines = [
        f"{source} on {plan.world} process(es): dp {plan.dp} (replicate {plan.dp_replicate} × shard "
        f"{plan.dp_shard}) × ulysses {plan.ulysses}",
    ]
    if plan.model:
        lines.append(f"  model       {plan.model}")
    lines.append(
        f"  batch       {plan.micro_batch} clip(s) per data-parallel rank × accumulate {plan.accumulate} × dp "
        f"{plan.dp} = global batch {plan.global_batch} clips a step"
    )
    if plan.experts:
        routes = "; ".join(
            f"{name}: σ in [{low:g}, {high:g}{']' if high >= 1 else ')'} ({share:.0%} of steps)"
            for name, (low, high, share) in plan.experts.items()
        )
        lines.append(f"  experts     {routes}; one expert a step")
    for shape in plan.shapes:
        per_rank = shape.dit_tokens // plan.ulysses if shape.dit_tokens % plan.ulysses == 0 else "—"
        lines.append(
            f"  clip        {shape.frames} × {shape.height} × {shape.width}: latents {_grid(shape.latent)}, DiT tokens "
            f"{_grid(shape.dit)} = {shape.dit_tokens} ({per_rank} per rank), V-JEPA 2 at "
            f"{shape.vfm_size[0]} × {shape.vfm_size[1]}: {_grid(shape.vfm)} = {shape.vfm_tokens} tokens"
        )
    if plan.heldout_per_rank is not None:
        lines.append(f"  held-out    {plan.heldout_per_rank} clip(s) per data-parallel rank")
    if plan.sampling is not None:
        s = plan.sampling
        guidance = f"{s.guidance_scale:g}" + (f" / {s.guidance_scale_2:g}" if s.guidance_scale_2 is not None else "")
        lines.append(
            f"  validation  {s.frames} × {s.height} × {s.width} at {s.fps:g} fps, {s.steps} {s.scheduler} steps, "
            f"shift {s.shift:g}, guidance {guidance}, negative prompt {'Wan' if s.negative_prompt else 'none'}"
        )
    if plan.memory:
        m = plan.memory
        total = sum(m.values())
        lines.append(
            f"  memory      GiB per GPU: parameters {m['parameters']:.2f}, gradients {m['gradients']:.2f}, AdamW "
            f"{m['optimizer']:.2f}, EMA {m['ema']:.2f}, gathered blocks {m['gathered']:.2f} = {total:.2f} before activations"
        )
        fits = "fits" if plan.shutdown_timeout <= SLURM_LEAD_S else "does not fit"
        lines.append(
            f"  checkpoint  {plan.checkpoint_gib:.2f} GiB per rank: torchrun --shutdown-timeout {plan.shutdown_timeout} "
            f"({fits} slurm.sbatch's USR1@{SLURM_LEAD_S})"
        )
    return "\n".join(lines)


def _grid(grid: tuple[int, ...]) -> str:
    return " × ".join(str(side) for side in grid)
