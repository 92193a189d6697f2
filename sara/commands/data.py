"""`sara data …`: synthesise the shapes world, import data sets, MTSS captions, entity prompts, SAM 3
masks, check a manifest."""

from __future__ import annotations

import argparse
import sys

from sara.commands.world import add_world_arguments, world_from_arguments
from sara.data.importers import FORMATS
from sara.shapes.render import SynthSpec
from sara.shapes.vocabulary import PAIRS


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="data sets: synthesise, import, captions, entity prompts, masks, check")
    group = data.add_subparsers(dest="data", required=True)
    spec = SynthSpec()
    synth = group.add_parser("synth", help="write the synthetic shapes world (clips, masks, manifests)")
    synth.add_argument("--out", required=True, help="folder to write")
    synth.add_argument("--num", type=int, default=spec.num, help="number of clips")
    synth.add_argument("--seed", type=int, default=spec.seed)
    synth.add_argument("--frames", type=int, default=spec.frames, help="frames per clip")
    synth.add_argument("--size", type=int, default=spec.size, help="square frame size in pixels")
    synth.add_argument("--fps", type=int, default=spec.fps, help="frame rate of the videos")
    synth.add_argument("--fg-fraction", type=float, default=spec.fg_fraction, help="mean FG share of the token grid")
    synth.add_argument(
        "--min-visible", type=float, default=spec.min_visible, help="least share of its area an entity shows"
    )
    synth.add_argument("--heldout-fraction", type=float, default=spec.heldout_fraction, help="share in heldout.jsonl")
    synth.add_argument("--pairs", choices=PAIRS, default=spec.pairs, help="colour–shape pairs drawn")
    add_world_arguments(synth, spec)
    synth.add_argument("--min-entities", type=int, default=spec.min_entities, help="named shapes per clip, at least")
    synth.add_argument("--max-entities", type=int, default=spec.max_entities, help="named shapes per clip, at most")
    synth.add_argument("--spin", type=float, default=spec.spin, help="largest turn per frame, radians")
    synth.add_argument("--upright", action="store_true", help="every shape starts at angle 0")
    synth.add_argument("--entity-share", type=float, default=spec.entity_share, help="> 0: each shape's frame share")
    synth.add_argument("--distractors", type=int, default=spec.distractors, help="unnamed shapes in clutter colours")
    synth.add_argument("--workers", type=int, default=2, help="processes")
    synth.set_defaults(handler=_synth)

    load = group.add_parser(
        "import", help="a musubi-tuner JSONL, DiffSynth metadata.csv or captioned folder → manifest"
    )
    load.add_argument("source", help="a .jsonl (musubi-tuner), a .csv (DiffSynth-Studio) or a folder of videos + .txt")
    load.add_argument("--out", required=True, help="the manifest to write (JSONL)")
    load.add_argument("--format", choices=FORMATS, help="default: from the source (folder, .jsonl, .csv)")
    load.add_argument("--root", help="folder relative video paths start from (default: the source's folder)")
    load.set_defaults(handler=_import)

    caption = group.add_parser("caption", help="MTSS captions (setup, cast, scene, shots) from a video-language model")
    caption.add_argument("manifest")
    caption.add_argument("--endpoint", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:30000/v1")
    caption.add_argument("--model", required=True, help="model name the endpoint serves (a Qwen2.5/3-VL)")
    caption.add_argument("--frames", type=int, default=8, help="frames per request, sampled uniformly from the clip")
    caption.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    caption.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    caption.add_argument("--retries", type=int, default=2, help="extra tries per clip before it is left as it was")
    caption.add_argument("--cache", help="answer cache (default: caption_cache/ beside the manifest)")
    caption.set_defaults(handler=_caption)

    prompts = group.add_parser("prompts", help="short entity prompts for records that have none")
    prompts.add_argument("manifest")
    prompts.add_argument("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:30000/v1")
    prompts.add_argument("--model", help="model name the endpoint serves")
    prompts.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    prompts.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    prompts.add_argument("--retries", type=int, default=2, help="extra tries per caption before falling back")
    prompts.set_defaults(handler=_prompts)

    check = group.add_parser("check", help="read every clip and mask once; one line per problem")
    check.add_argument("manifest")
    check.add_argument("--frames", type=int, help="the window a run takes: name the clips with fewer frames")
    check.add_argument("--fps", type=float, help="the rate the window is counted at (default: each video's own)")
    check.set_defaults(handler=_check)

    masks = group.add_parser("masks", help="per-entity masks from SAM 3 (text-prompted video segmentation)")
    masks.add_argument("manifest")
    masks.add_argument("--weights", required=True, help="local SAM 3 folder (Hugging Face format)")
    masks.add_argument("--masks-dir", help="where mask files go (default: masks/ beside the manifest)")
    masks.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    masks.add_argument("--save-every", type=int, default=20, help="rewrite the manifest every this many clips")
    masks.set_defaults(handler=_masks)


def _synth(args: argparse.Namespace) -> None:
    from sara.shapes.render import synthesize

    spec = SynthSpec(
        num=args.num,
        seed=args.seed,
        frames=args.frames,
        size=args.size,
        fps=args.fps,
        fg_fraction=args.fg_fraction,
        min_visible=args.min_visible,
        heldout_fraction=args.heldout_fraction,
        pairs=args.pairs,
        **world_from_arguments(args),
        min_entities=args.min_entities,
        max_entities=args.max_entities,
        spin=args.spin,
        upright=args.upright,
        entity_share=args.entity_share,
        distractors=args.distractors,
    )
    summary = synthesize(spec, args.out, workers=args.workers)
    clips = ", ".join(f"{n} {split}" for split, n in summary["clips"].items())
    print(
        f"wrote {clips} clips to {summary['out']}; mean FG fraction of the token grid {summary['fg_fraction']:.3f}; "
        f"every entity shows at least {summary['least_visible']:.3f} of its area in every frame"
    )


def _import(args: argparse.Namespace) -> None:
    from sara.data.importers import import_dataset

    summary = import_dataset(args.source, args.out, args.format, args.root)
    for line in summary.skipped:
        print(f"skipped {line}", file=sys.stderr)
    empty = (
        f", {summary.without_caption} without a caption (sara data caption writes them)"
        if summary.without_caption
        else ""
    )
    print(
        f"wrote {summary.records} records to {args.out}{empty}, {len(summary.skipped)} skipped, "
        f"the facts of {summary.probed} videos beside it; "
        f"next: sara data check {args.out}"
    )


def _caption(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sara.data.caption import Captioner, caption_manifest
    from sara.data.manifest import load_manifest
    from sara.endpoint import Endpoint

    manifest = load_manifest(args.manifest)
    captioner = Captioner(Endpoint(args.endpoint, args.model, args.timeout, args.retries), args.frames)
    cache = Path(args.cache) if args.cache else manifest.path.parent / "caption_cache"
    stats = caption_manifest(manifest, captioner, cache, args.concurrency)
    print(
        f"{args.manifest}: {stats.written} MTSS captions written ({stats.cached} cached), {stats.kept} kept, "
        f"{stats.failed} failed (kept as they were); {stats.entities} records given entity prompts from the cast"
    )
    return 1 if stats.failed else 0


def _prompts(args: argparse.Namespace) -> None:
    from sara.data.manifest import load_manifest
    from sara.data.prompts import fill_prompts
    from sara.endpoint import Endpoint

    if (args.endpoint is None) != (args.model is None):
        raise ValueError("--endpoint and --model go together")
    endpoint = Endpoint(args.endpoint, args.model, args.timeout, args.retries) if args.endpoint else None
    stats = fill_prompts(load_manifest(args.manifest), endpoint, args.concurrency)
    print(
        f"{args.manifest}: {stats.asked} captions asked ({stats.fallbacks} fell back to the cast list), "
        f"{stats.from_cast} from the cast list, {stats.kept} kept, {stats.without} left without entities"
    )


def _check(args: argparse.Namespace) -> int:
    from sara.data.check import check_manifest
    from sara.data.manifest import load_manifest

    report = check_manifest(load_manifest(args.manifest), args.frames, args.fps)
    for line in report.problems:
        print(line)
    print(report.summary())
    if report.facts:
        print(f"facts of {len(report.spans)} clips written to {report.facts}: runs read them instead of every video")
    return 1 if report.problems else 0


def _masks(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from sara.data.extract_masks import extract_masks
    from sara.data.manifest import load_manifest
    from sara.device import pick_device
    from sara.models.sam3 import Sam3Segmenter

    device = pick_device(args.device)
    manifest = load_manifest(args.manifest)
    segmenter = Sam3Segmenter(
        args.weights, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    masks_dir = Path(args.masks_dir) if args.masks_dir else manifest.path.parent / "masks"
    stats = extract_masks(manifest, segmenter, masks_dir, save_every=args.save_every)
    print(
        f"{manifest.path}: segmented {stats.done} clips ({stats.frames} frames), {stats.already} already done, "
        f"{stats.no_entities} without entity prompts, {len(stats.failed)} unreadable; masks in {masks_dir}"
    )
    for line in stats.failed:
        print(f"skipped {line}", file=sys.stderr)
    return 1 if stats.failed else 0
