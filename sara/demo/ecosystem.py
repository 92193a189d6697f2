"""The demo's section on the conventions of other Wan trainers: data sets imported from
their formats, a LoRA run whose adapter files load in diffusers (and in ComfyUI's keys),
the figures its tracker holds, the timestep densities, and a single-file checkpoint
turned back into a Diffusers folder."""

from __future__ import annotations

import copy
import csv
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sara.config.schema import DemoConfig
from sara.config.stage2 import FlowConfig, Stage2Config
from sara.data.check import check_manifest
from sara.data.importers import import_dataset
from sara.data.manifest import load_manifest
from sara.demo.html import Section, image, paragraph, table
from sara.models.presets import wan_folder
from sara.models.single_file import wan_from_single_file
from sara.models.wan import load_transformers, read_layout
from sara.models.wan_keys import COMFYUI_DIT_PREFIX, original_state
from sara.plots import pyplot
from sara.run_dir import RunDir
from sara.stage2.adapters import adapter_deviation
from sara.stage2.build import cache_dir
from sara.stage2.timesteps import draw_sigmas
from sara.stage2.train import train

log = logging.getLogger(__name__)

IMPORTED_CLIPS = 4  # clips of the demo's world written in each foreign format
LORA_RANK = 8
DENSITY_DRAWS = 100_000
# Wan2.2's boundary_ratio: σ at or above it is the high-noise expert's
BOUNDARIES = {"T2V A14B": 0.875, "I2V A14B": 0.9}


def _foreign_sources(config: DemoConfig, folder: Path) -> dict[str, Path]:
    """The first clips of the demo's Stage 2 world as musubi-tuner JSONL, DiffSynth-Studio
    ``metadata.csv`` and a folder of videos with ``.txt`` captions."""
    world = load_manifest(config.stage2.data.train)
    records = world.records[:IMPORTED_CLIPS]
    videos = {r.id: world.resolve(r.video).resolve() for r in records}
    captioned = folder / "captioned"
    captioned.mkdir(parents=True)
    for record in records:
        copied = shutil.copy(videos[record.id], captioned / f"{record.id}{videos[record.id].suffix}")
        Path(copied).with_suffix(".txt").write_text(record.prompt() + "\n")
    musubi = folder / "musubi.jsonl"
    rows = [{"video_path": str(videos[r.id]), "caption": r.prompt()} for r in records]
    musubi.write_text("".join(json.dumps(row) + "\n" for row in rows))
    diffsynth = folder / "metadata.csv"
    with diffsynth.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video", "prompt"])
        writer.writerows([f"captioned/{r.id}{videos[r.id].suffix}", r.prompt()] for r in records)
    return {"musubi-tuner JSONL": musubi, "DiffSynth metadata.csv": diffsynth, "captioned folder": captioned}


def import_part(config: DemoConfig, out: Path) -> str:
    """`sara data import` of each foreign format, then `sara data check` on its manifest."""
    folder = out / "imports"
    rows = []
    for name, source in _foreign_sources(config, folder).items():
        manifest = folder / f"{source.stem}_manifest.jsonl"
        summary = import_dataset(source, manifest, progress=False)
        report = check_manifest(load_manifest(manifest), progress=False)
        rows.append([name, f"sara data import {source.relative_to(out)} {manifest.relative_to(out)}",
                     summary.records, summary.probed, report.summary()])  # fmt: skip
    log.info("\n".join(" | ".join(str(c) for c in row) for row in rows))
    return paragraph(
        f"The first {IMPORTED_CLIPS} clips of the Stage 2 world written in the formats other Wan trainers read, "
        "imported into manifests and checked (the captions are plain; `sara data caption MANIFEST --endpoint URL "
        "--model NAME` writes MTSS captions with a video-language model behind an OpenAI-compatible endpoint, "
        "which the demo has none of: its tests answer from a local server):"
    ) + table(
        ["format", "command", "records", "facts written (a run reads them, not the videos)", "sara data check"], rows
    )


def lora_config(config: DemoConfig, out: Path) -> Stage2Config:
    """The demo's Stage 2 run as a LoRA run with the other trainers' habits: rank-8 adapters
    on attention and feed-forward, two micro-batches a step, logit-normal σ, ComfyUI-keyed
    adapter files too; the same cache, the held-out loss (where the demo's run has held-out
    clips) and a validation video at the end."""
    lora = copy.deepcopy(config.stage2)
    lora.out_dir = str(out / "stage2_lora")
    lora.precompute.cache_dir = str(cache_dir(config.stage2))  # the demo's Stage 2 cache
    steps = lora.optim.steps = lora.save_every = config.lora_steps
    # two micro-batches of half the demo's clips: the demo's global batch, at half the activations
    lora.optim.lora_rank, lora.optim.accumulate, lora.optim.batch_size = LORA_RANK, 2, lora.optim.batch_size // 2
    lora.objective.flow.density = "logit_normal"
    lora.export_comfyui = True
    lora.log_every = max(1, steps // 4)
    lora.validation.loss_every = lora.log_every if lora.validation.heldout else 0
    lora.validation.every, lora.validation.steps = steps, config.generate_steps
    lora.validation.prompts = [load_manifest(lora.data.train).records[0].prompt()]
    return lora


def _adapter_rows(run: Path) -> list[list[object]]:
    rows = []
    for path in sorted(RunDir(run).lora.glob("*.safetensors")):
        with safe_open(str(path), "pt") as handle:
            keys, header = list(handle.keys()), handle.metadata() or {}
        trained = json.loads(header.get("sara_config", "{}")).get("optim", {})
        rows.append([path.name, len(keys), f"{path.stat().st_size / 1024:.0f}", keys[0], trained.get("lora_rank", "—")])
    return rows


def lora_part(config: DemoConfig, out: Path) -> tuple[str, Path]:
    """A short LoRA run on the demo's cache; its adapter files loaded into a fresh pipeline
    of the base folder against its merged export. Returns the HTML and the run folder."""
    lora = lora_config(config, out)
    run = train(lora, progress=False)
    base = wan_folder(lora.models.wan, lora.models.tiny_root)
    deviation = adapter_deviation(run, base)
    for name, value in deviation.items():
        log.info(f"adapter {name} into a fresh WanPipeline: max |output − merged output| {value:.2e}")
    html = paragraph(
        f"`sara stage2 train optim.lora_rank={LORA_RANK} optim.batch_size={lora.optim.batch_size} optim.accumulate=2 "
        "objective.flow.density=logit_normal "
        f"export_comfyui=true`: {lora.optim.steps} steps of rank-{LORA_RANK} adapters on "
        f"{', '.join(lora.optim.lora_targets)} (the targets other Wan trainers adapt), two micro-batches of "
        f"{lora.optim.batch_size} clips per step, σ logit-normal before the shift, on the Stage 2 cache. Besides "
        "the merged pipeline, each trained expert's adapter is written alone: the file "
        "`WanPipeline.load_lora_weights` reads (a two-expert model's low-noise file with "
        "`load_into_transformer_2=True`; names `high_noise` / `low_noise`) and its twin in ComfyUI's keys, "
        "the run's config in each header:"
    )
    html += table(["file", "tensors", "KiB", "first key", "lora_rank in header"], _adapter_rows(run))
    html += paragraph(
        "Each file loaded into a fresh `WanPipeline` of the base folder, against the merged export, on one fixed "
        "input (max |difference| of the DiT outputs; rounding only):"
    ) + table(["adapter file", "max |Δ output|"], [[name, f"{value:.1e}"] for name, value in deviation.items()])
    return html, run


def tracker_part(run: Path) -> str:
    """What the run's TensorBoard files hold: every scalar tag, its points and last value,
    and the validation videos (frame strips)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(RunDir(run).tensorboard), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    series = {tag: events.Scalars(tag) for tag in sorted(tags["scalars"])}
    rows = [[tag, len(points), f"{points[-1].value:.4g}"] for tag, points in series.items()]
    videos = ", ".join(sorted(tags["images"])) or "none"
    return paragraph(
        f"`logging.tracker: tensorboard` (the default; `wandb` logs the same, mp4 videos included, and a resumed "
        f"run continues its W&B run). The LoRA run's `{(run / 'tensorboard').name}/` holds, besides the "
        f"validation videos ({videos}):"
    ) + table(["tag", "points", "last"], rows)


def density_part(config: DemoConfig, out: Path) -> str:
    """σ under each density at the run's shift, with the share each A14B boundary gives the
    high-noise expert."""
    plt = pyplot()
    shift = config.stage2.objective.flow.shift
    fig, ax = plt.subplots(figsize=(6, 3))
    rows = []
    for density in ("uniform", "logit_normal", "mode"):
        flow = FlowConfig(shift=shift, density=density)
        sigma = draw_sigmas(flow, DENSITY_DRAWS, torch.Generator().manual_seed(config.seed))
        ax.hist(sigma.numpy(), bins=50, range=(0, 1), histtype="step", density=True, label=density)
        shares = [f"{(sigma >= b).float().mean().item():.3f}" for b in BOUNDARIES.values()]
        rows.append([density, f"{sigma.mean().item():.3f}", *shares])
    for boundary in BOUNDARIES.values():
        ax.axvline(boundary, color="grey", linestyle=":")
    ax.set_xlabel(f"σ (shift {shift:g})")
    ax.legend()
    fig.tight_layout()
    path = out / "timestep_densities.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    header = ["objective.flow.density", "mean σ", *(f"σ ≥ {b} ({name} high-noise)" for name, b in BOUNDARIES.items())]
    return (
        paragraph(
            f"`objective.flow.density`: σ of {DENSITY_DRAWS:,} draws per density (diffusers' "
            f"`compute_density_for_timestep_sampling`, then the shift {shift:g}). A two-expert run feeds each "
            "expert the share of steps its σ range holds; dotted lines: the boundaries of Wan2.2's A14B models."
        )
        + image(path, "timestep densities")
        + table(header, rows)
    )


def single_file_part(config: DemoConfig, run: Path, out: Path) -> str:
    """The LoRA run's merged DiT saved as ComfyUI's single file, then `sara models
    from-single-file` back into a Diffusers folder: the same tensors."""
    base = wan_folder(config.stage2.models.wan, config.stage2.models.tiny_root)
    exported = load_transformers(read_layout(RunDir(run).pipeline))
    folder = out / "single_file"
    folder.mkdir()
    files = []
    for name, dit in exported.items():
        files.append(folder / f"{name}_comfyui.safetensors")
        save_file(original_state(dit.state_dict(), COMFYUI_DIT_PREFIX), files[-1])
    wan = wan_from_single_file(base, folder / "wan", files, dtype=torch.float32)
    loaded = {name: dit.state_dict() for name, dit in load_transformers(read_layout(wan)).items()}
    pairs = [(v, loaded[n][k]) for n, dit in exported.items() for k, v in dit.state_dict().items()]
    same, total = sum(torch.equal(a, b) for a, b in pairs), len(pairs)
    command = f"sara models from-single-file {' '.join(str(f.relative_to(out)) for f in files)} --base {base.name}"
    line = f"`{command} --out {wan.relative_to(out)} --dtype float32`: {same} of {total} tensors equal"
    log.info(line)
    return paragraph(
        f"The merged DiT written as a ComfyUI single file (keys `{COMFYUI_DIT_PREFIX}blocks.0.self_attn.q.weight`, "
        f"…), the way such checkpoints are shared, and read back with diffusers' `from_single_file` into a Diffusers "
        f"folder beside the base's other components: {line}."
    )


def ecosystem_part(config: DemoConfig, out: Path) -> Section:
    """The section; needs the Stage 2 part's cache (the LoRA run reads it)."""
    lora, run = lora_part(config, out)
    body = "".join(
        [
            import_part(config, out),
            lora,
            tracker_part(run),
            density_part(config, out),
            single_file_part(config, run, out),
            paragraph(
                "The memory switches (gradient accumulation, checkpointing, LoRA, fp8 storage of the frozen base, "
                "VAE tiles) are timed in the Stage 2 section's `sara bench step --memory`."
            ),
        ]
    )
    return Section("Working with other Wan trainers", body)
