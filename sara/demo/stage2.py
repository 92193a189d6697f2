"""The demo's Stage 2 section: precompute the 17-frame world, train the tiny DiT with SARA
(OR routing, saliency of the full caption from the demo's aligner), generate two held-out
captions, and time one step per mode with `sara bench step`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from sara.bench.step import bench_step, format_tables
from sara.config.sampling import Sampling
from sara.config.schema import DemoConfig
from sara.data.manifest import load_manifest
from sara.data.video import decode_clip
from sara.data.visualize import save_png, strip
from sara.demo.html import Section, image, paragraph, preformatted, table
from sara.eval.tables import summary_rows
from sara.models.presets import wan_folder
from sara.models.wan import dit_parameters
from sara.plots import loss_curves
from sara.run_dir import RunDir
from sara.shapes.metric import METRICS
from sara.shapes.render import SynthSpec, synthesize
from sara.stage2.cache import FeatureCache, precompute
from sara.stage2.generate import generate
from sara.stage2.train import train

log = logging.getLogger(__name__)


def vae_part(folder: Path) -> str:
    """What the ``shapes`` preset's VAE learnt: its recipe and gate (empty for other folders)."""
    path = folder / "vae" / "gate.json"
    if not path.is_file():
        return ""
    report = json.loads(path.read_text())
    recipe = report["recipe"]
    clips = (
        f", then {recipe['clip_steps']} on {recipe['frames']}-frame clips"
        if recipe["clip_steps"]
        else "; frame-wise: each latent frame decodes to one frame of its 4-frame step"
    )
    return paragraph(
        f"The Wan folder is the `shapes` preset: the `medium` DiT, a VAE trained on the shapes world "
        f"({recipe['image_steps']} steps on single frames{clips}, {recipe['crop']}² crops; {report['seconds']:.0f} s, "
        f"final L1 {report['final_l1']:.3f}), so that generated latents decode to shapes, and the tiny umT5 "
        f"pretrained on the world's captions{_text_part(folder)}. The VAE's gate: `sara eval shapes` on "
        f"{recipe['gate_clips']} held-out clips of unseen colour–shape pairs and on their reconstructions, "
        "mean [95 % interval] over clips:"
    ) + table(["", *METRICS], summary_rows(report["gate"], METRICS))


def _text_part(folder: Path) -> str:
    """The umT5's pretraining in a clause: steps, time and binding gap before → after."""
    report = json.loads((folder / "text_encoder" / "gate.json").read_text())
    gaps = report["binding gap"]
    moved = ", ".join(f"{word} {gaps['random'][word]:.2f} → {gaps['pretrained'][word]:.2f}" for word in gaps["random"])
    return (
        f" ({report['recipe']['steps']} steps of masked-token prediction, {report['seconds']:.0f} s), so that its "
        f"token states say which colour and motion go with which shape — how far they move when two entities swap "
        f"words, as a share of how far when one word changes: {moved}"
    )


@dataclass
class _Runs:
    """What the section's commands made, and how long each took."""

    wan: Path
    cache: Path
    run: Path
    prompts: list[str]
    videos: list[Path]
    seconds: dict[str, float] = field(default_factory=dict)


def stage2_part(config: DemoConfig, out: Path) -> Section:
    runs = _run_commands(config, out)
    bench_text, switch_text = _bench(config, out)
    return Section("Stage 2: the DiT with SARA", _body(config, out, runs, bench_text, switch_text))


def _run_commands(config: DemoConfig, out: Path) -> _Runs:
    """Synthesise, precompute, train and generate, as the CLI's commands do, each timed."""
    stage2, world = config.stage2, config.stage2_world
    seconds = {}

    def timed(name: str, command, *args, **kwargs):
        start = time.perf_counter()
        result = command(*args, **kwargs)
        seconds[name] = time.perf_counter() - start
        return result

    # the shapes preset trains its VAE here, once
    wan = timed("Wan preset (written once)", wan_folder, stage2.models.wan, stage2.models.tiny_root)
    spec = SynthSpec(**asdict(world), seed=config.seed)
    timed("sara data synth", synthesize, spec, Path(stage2.data.train).parent, progress=False)
    cache = timed("sara stage2 precompute", precompute, stage2, progress=False)
    run = timed("sara stage2 train", train, stage2, progress=False)
    heldout = load_manifest(Path(stage2.data.train).with_name("heldout.jsonl"))
    prompts = [r.prompt() for r in heldout.records[:2]]
    size = stage2.data.size
    sampling = Sampling(
        steps=config.generate_steps,
        seed=config.seed,
        frames=stage2.data.frames,
        height=size,
        width=size,
        text_length=stage2.models.text_length,
    )
    videos = timed(
        "sara stage2 generate", generate, RunDir(run).pipeline, prompts, out / "stage2_videos", sampling, progress=False
    )
    return _Runs(wan, cache, run, prompts, videos, seconds)


def _bench(config: DemoConfig, out: Path) -> tuple[str, str]:
    """`sara bench step --memory` per mode and per memory switch: the two tables as text."""
    timing = bench_step(
        ["sft", "trd", "sara"],
        batch=2,
        frames=config.stage2.data.frames,
        size=config.stage2.data.size,
        device="cpu",
        warmup=3,
        steps=config.bench_steps,
        workdir=out / "bench_step",
        progress=False,
        memory=True,
    )
    bench_text, switch_text = format_tables(timing)
    log.info("%s\n\n%s", bench_text, switch_text)
    return bench_text, switch_text


def _body(config: DemoConfig, out: Path, runs: _Runs, bench_text: str, switch_text: str) -> str:
    stage2, world = config.stage2, config.stage2_world
    history = json.loads(RunDir(runs.run).history.read_text())
    curve = loss_curves(history, ("loss", "flow", "align", "val_loss", "val_align"), out / "stage2_loss.png")
    rows = [strip(decode_clip(v, None, None).frames.permute(0, 2, 3, 1).numpy(), count=8) for v in runs.videos]
    frames = save_png(out / "stage2_samples.png", np.concatenate(rows))
    clips = len(FeatureCache(runs.cache))
    steps_done = history[-1]
    return "".join(
        [
            paragraph(
                f"{world.num} synthetic clips of {world.frames} frames at {world.size}²; the frozen encoders "
                f"(Wan VAE and umT5, tiny V-JEPA 2, the Stage 1 aligner on the full caption) ran once over "
                f"the {clips} training clips into `{runs.cache}`. Then {stage2.optim.steps} steps of "
                f"{stage2.optim.batch_size} clips of the Wan DiT ({dit_parameters(runs.wan) / 1e6:.2f} M parameters, lr "
                f"{stage2.optim.lr:g}) with flow matching + "
                f"{stage2.objective.align.weight} · TRD routed by `{stage2.objective.align.routing}` "
                f"(last loss {steps_done['loss']:.3f}: flow {steps_done['flow']:.3f}, align {steps_done['align']:.3f}); "
                f"the trained transformer was exported as a Diffusers pipeline (`{RunDir(runs.run).pipeline}`) and "
                f"`WanPipeline` generated two held-out captions ({config.generate_steps} UniPC steps, CFG 5)."
            ),
            vae_part(runs.wan),
            table(["command", "seconds"], [[name, f"{s:.1f}"] for name, s in runs.seconds.items()]),
            image(curve, "stage 2 loss terms"),
            paragraph(
                "Generated frames (8 of each video), one row per held-out caption — a DiT trained for minutes "
                "on CPU. Captions: " + " | ".join(runs.prompts)
            ),
            image(frames, "generated frames"),
            image(runs.videos[0].with_suffix(".gif"), "first generated video"),
            paragraph(
                "`sara bench step --memory`: one optimizer step of the tiny DiT per mode (median of "
                f"{config.bench_steps} steps, batch 2, cached features; `sara_online` runs the frozen "
                "encoders every step instead of reading the cache), time and peak extra memory (RSS on CPU) "
                "as ratios to sft:"
            ),
            preformatted(bench_text),
            paragraph(
                "The memory switches, each below the case it changes: `optim.accumulate=2`, "
                "`optim.gradient_checkpointing`, `optim.lora_rank=8`, that with `optim.layerwise_fp8` (the "
                "frozen base stored in fp8) against the `sara` step; `precompute.vae_tile` and "
                "`precompute.vae_slicing` against the online step, whose VAE they change; "
                "`validation.offload_frozen` against a round of validation videos of a tiny A14B that trains "
                "its low-noise expert (`validate`: pipeline loaded, two videos sampled). The tiny DiT's "
                "activations and weights are small beside the process's own, so these ratios understate "
                "what each saves on a real model (`docs/PERFORMANCE.md` has the 12 M-parameter DiT's); "
                "on CPU the offloaded expert waits in the same memory it runs from, so only a GPU shows "
                "what offloading saves."
            ),
            preformatted(switch_text),
        ]
    )
