"""Typed config of Stage 2 (`sara stage2 precompute|train`). Each field's comment says what it controls."""

from __future__ import annotations

from dataclasses import dataclass, field

from sara.config.clips import ClipTiming
from sara.config.loader import option
from sara.config.parallel import ParallelConfig
from sara.config.tracking import LoggingConfig
from sara.losses.alignment import ALIGN_MODES, ROUTINGS

SALIENCY_SOURCES = ("aligner", "masks")
EXPERTS = ("high", "low")
TEACHERS = ("vjepa2", "oracle")
DENSITIES = ("uniform", "logit_normal", "mode")
LR_DECAYS = ("constant", "cosine")  # after warm-up (sara.trainer.batches.lr_factor)
EXPORT_DTYPES = ("released", "float32", "bfloat16")
# the Linear layers LoRA adapts by default in every Wan block, as other Wan trainers do:
# self- and cross-attention projections and the feed-forward
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")


@dataclass
class Stage2DataConfig(ClipTiming):
    train: str = "outputs/shapes/train.jsonl"  # manifest: videos and captions (entity masks for saliency=masks)
    frames: int = option(17, ge=5)  # video frames per clip, 4k + 1 (Wan's causal VAE)
    size: int = option(128, ge=32)  # square frame size in pixels (a multiple of 32)
    buckets: list[list[int]] = field(default_factory=list)  # [H, W] shapes binned by aspect ratio; []: [size, size]
    # several 4k + 1 lengths: each clip takes the longest its time range holds at its rate
    # (a bucket per length and size); []: data.frames for every clip
    frame_buckets: list[int] = field(default_factory=list)
    max_bad_fraction: float = option(0.05, ge=0, le=1)  # abort past this share of unreadable clips
    # processes that read clips: precompute's decoding; in training, each step's batch (from the
    # cache, or decoded online) read ahead while the DiT computes (0: read in the step, waiting)
    num_workers: int = option(0, ge=0)
    prefetch: int = option(2, ge=1)  # steps each training worker reads ahead
    # share of samples trained with the empty caption, as Wan's unconditional (classifier-free
    # guidance) branch sees it; drawn per sample from the step's generator
    caption_dropout: float = option(0.0, ge=0, le=1)


@dataclass
class Stage2ModelsConfig:
    # Diffusers-format Wan folder, or a tiny preset: tiny | tiny-a14b | tiny-ti2v | medium | small,
    # or shapes (medium with a VAE trained on the shapes world: what it generates decodes to shapes),
    # or shapes-wide (the same with a 5.3 M-parameter DiT: more learnt per step), or shapes-fine
    # (the shapes DiT on a token per latent pixel: four times the tokens)
    wan: str = "tiny"
    vjepa2: str = "tiny"  # the TRD teacher: V-JEPA 2 folder, or tiny
    # vjepa2: its features; oracle (shapes world only): each token's share of every entity
    # colour and of the background, on V-JEPA 2's grid — the toy study's upper-bound teacher
    teacher: str = option("vjepa2", choices=TEACHERS)
    vjepa2_stride: int = option(1, choices=(1, 2))  # V-JEPA 2 reads every n-th frame from frame 1
    vjepa2_short_side: int | None = option(None, ge=16)  # V-JEPA 2's input short side; null: the clip's size
    text_length: int = option(512, ge=1)  # caption tokens the DiT reads, zero-padded (Wan: 512)
    aligner: str | None = None  # Stage 1 run folder (or checkpoint): the saliency of mode sara, saliency=aligner
    tiny_root: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/models"  # where tiny presets are written once


@dataclass
class FlowConfig:
    shift: float = option(3.0, gt=0)  # σ = shift·u / (1 + (shift − 1)·u), u from the density; 1 = no shift
    # the law of u (diffusers' compute_density_for_timestep_sampling): uniform (Wan's own),
    # logit_normal (u = sigmoid(N(logit_mean, logit_std))), mode (mass bent by mode_scale)
    density: str = option("uniform", choices=DENSITIES)
    logit_mean: float = 0.0  # logit_normal: the mean of logit(u)
    logit_std: float = option(1.0, gt=0)  # logit_normal: the spread of logit(u)
    mode_scale: float = option(1.29, ge=0, le=1.75)  # mode: 0 is uniform; above 1.75 the map folds back


@dataclass
class MotionConfig:
    """MoAlign's motion head (``align.mode=moalign``), fitted by ``sara moalign train`` on the
    cache's teacher tokens and optical flow (``precompute.flow``)."""

    head: str | None = None  # folder of the fitted head; null: <cache>/motion_head
    dim: int = option(64, ge=1)  # width of the motion subspace (MoAlign: 64)
    hidden: int = option(256, ge=1)  # the head's hidden width
    tau: float = option(10.0, gt=0)  # decay of cross-frame pair weights exp(−Δ/τ), Δ in teacher frames
    steps: int = option(2000, ge=0)  # head training: AdamW steps
    batch_size: int = option(8, ge=1)  # clips per head step
    lr: float = option(1e-3, gt=0)


@dataclass
class AlignConfig:
    # sft: none; repa: cosine; trd: every pair; sara: routed pairs; moalign: motion relations
    mode: str = option("sara", choices=ALIGN_MODES)
    routing: str = option("or", choices=ROUTINGS)  # pair weights of sara: or (SARA), and, xor
    saliency: str = option("aligner", choices=SALIENCY_SOURCES)  # frozen aligner (full caption) or GT masks
    weight: float = option(0.5, ge=0)  # λ: loss = flow + λ · align
    margin: float = option(0.1, ge=0)  # TRD margin on |S_p − S_y|
    block: int = option(1, ge=0)  # DiT block whose output is aligned (0-based)
    projector_dim: int | None = None  # hidden width of the projector; null: max(DiT, VFM width)
    motion: MotionConfig = field(default_factory=MotionConfig)  # moalign: the teacher's motion subspace


@dataclass
class Stage2ObjectiveConfig:
    flow: FlowConfig = field(default_factory=FlowConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    experts: list[str] = option(["high", "low"], choices=EXPERTS)  # two-expert models: which ones train


@dataclass
class PrecomputeConfig:
    cache_dir: str | None = None  # latents, text, V-JEPA tokens, saliency; null: <out_dir>/cache
    shard_size: int = option(64, ge=1)  # clips per safetensors shard
    batch_size: int = option(4, ge=1)  # clips per encoder pass
    dtype: str = option("float32", choices=("float32", "bfloat16"))  # stored precision; bfloat16 halves the cache
    vae_tile: int = option(0, ge=0)  # encode in overlapping tiles of this many pixels (less memory); 0: whole frames
    vae_slicing: bool = False  # encode the clips of a batch one at a time (less memory, the same latents to rounding)
    flow: bool = False  # also store each clip's optical flow on the teacher's grid (what `sara moalign train` fits)


@dataclass
class Stage2OptimConfig:
    steps: int = option(200, ge=0)  # optimizer steps in all; 0: export the starting weights unchanged
    batch_size: int = option(4, ge=1)  # clips per step
    lr: float = option(1e-4, gt=0)  # AdamW learning rate after warm-up
    # after warm-up: constant (continual training that may be extended), or cosine to zero at
    # `steps` (a run of known length: its last steps average out the noise of a large lr)
    lr_decay: str = option("constant", choices=LR_DECAYS)
    weight_decay: float = option(0.0, ge=0)
    warmup_steps: int = option(10, ge=0)  # linear warm-up
    grad_clip: float = option(1.0, gt=0)  # max global gradient norm
    gradient_checkpointing: bool = False  # recompute DiT blocks in backward: less memory, more time
    accumulate: int = option(1, ge=1)  # micro-batches per step on each rank: the same gradient, less activation memory
    lora_rank: int = option(0, ge=0)  # > 0: train LoRA adapters of this rank on the DiT (peft); 0: all weights
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))  # module names (suffixes) adapted
    lora_alpha: float | None = None  # LoRA scale numerator; null: the rank
    # LoRA in one process: store the frozen base's Linear weights in fp8 (diffusers'
    # enable_layerwise_casting), each cast up only while its layer runs: about half the bf16 memory
    layerwise_fp8: bool = False
    ema_decay: float | None = option(None, gt=0, lt=1)  # EMA of the trained weights (e.g. 0.999); exported if set


@dataclass
class ValidationConfig:
    every: int = option(0, ge=0)  # steps between validation videos (RUN_DIR/samples/step-N); 0: none
    heldout: str | None = None  # manifest of held-out clips for the validation loss (precomputed beside the cache)
    loss_every: int = option(0, ge=0)  # steps between held-out loss figures (a multiple of log_every); 0: none
    loss_clips: int = option(8, ge=1)  # the fixed held-out batch: its first clips of one shape
    prompts: list[str] = field(default_factory=list)  # empty: the first two captions of data.train
    steps: int = option(20, ge=1)  # denoising steps (UniPC), fewer than a release's own (A14B 40, TI2V 50)
    # guidance of the (high-noise) expert and of the low-noise one; null: the release's official
    # values (A14B 4.0 and 3.0, TI2V 5.0), else 5.0. Shift, negative prompt: as `sara stage2 generate`
    guidance_scale: float | None = option(None, ge=1)
    guidance_scale_2: float | None = option(None, ge=1)
    offload_frozen: bool = False  # keep an expert that does not train in CPU memory, its blocks onloaded as they run


@dataclass
class Stage2Config:
    """``sara stage2``: continual training of a Wan2.2 DiT with flow matching + routed TRD."""

    out_dir: str = "${oc.env:SARA_OUTPUT_ROOT,outputs}/stage2/tiny"  # run folder
    seed: int = 0  # projector init, noise, data order
    device: str = "auto"  # auto: cuda when available, else cpu
    data: Stage2DataConfig = field(default_factory=Stage2DataConfig)
    models: Stage2ModelsConfig = field(default_factory=Stage2ModelsConfig)
    objective: Stage2ObjectiveConfig = field(default_factory=Stage2ObjectiveConfig)
    precompute: PrecomputeConfig = field(default_factory=PrecomputeConfig)
    optim: Stage2OptimConfig = field(default_factory=Stage2OptimConfig)
    online: bool = False  # run the frozen encoders every step instead of reading the cache
    log_every: int = option(10, ge=1)  # steps between log points (history.json, tracker, bar)
    logging: LoggingConfig = field(default_factory=LoggingConfig)  # tracker: tensorboard | wandb | none
    save_every: int = option(100, ge=1)  # steps between checkpoints (and one at the end)
    # write checkpoint shards from a CPU copy in a background thread while training goes on;
    # each is published (made `latest`) when the next one begins, or at the end
    async_save: bool = False
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # LoRA runs: also write each expert's adapter in ComfyUI's native keys (lora/*_comfyui.safetensors)
    export_comfyui: bool = False
    # the dtype of the exported expert(s): released (each tensor as the base folder stores it —
    # Wan2.2: bf16, the fp32 modules aside — so a full fine-tune is the release's size, not
    # twice it), or float32 / bfloat16 for every tensor
    export_dtype: str = option("released", choices=EXPORT_DTYPES)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # FSDP2 and Ulysses degrees under torchrun
