"""`sara eval …`: score videos against their prompts (the exact shapes metric), write the
held-out prompt set of unseen colour–shape pairs."""

from __future__ import annotations

import argparse

from sara.data.synthetic import SynthSpec


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("eval", help="evaluation: the exact shapes metric, the held-out prompt set")
    group = evaluate.add_subparsers(dest="eval", required=True)
    shapes = group.add_parser("shapes", help="score shapes-world videos against their prompts (no model, exact)")
    shapes.add_argument("videos", nargs="?", help="folder of videos (ID.mp4 or NN-*.mp4); default: the manifest's own")
    shapes.add_argument("--manifest", required=True, help="records with render facts (data synth, eval shapes-set)")
    shapes.add_argument("--out", help="write scores.jsonl (per video) and summary.json here")
    shapes.add_argument("--shuffle", action="store_true", help="pair each video with the next record's prompt")
    shapes.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    shapes.set_defaults(handler=_shapes)

    spec = SynthSpec()
    prompts = group.add_parser("shapes-set", help="held-out prompts: 2–3 entities of unseen colour–shape pairs")
    prompts.add_argument("--out", required=True, help="folder: heldout.jsonl, its videos (the ceiling) and masks")
    prompts.add_argument("--num", type=int, default=32, help="prompts")
    prompts.add_argument("--seed", type=int, default=1000, help="of the renderer (other than the training world's)")
    prompts.add_argument("--frames", type=int, default=spec.frames, help="frames per clip")
    prompts.add_argument("--size", type=int, default=spec.size, help="square frame size in pixels")
    prompts.add_argument("--workers", type=int, default=2, help="processes")
    prompts.set_defaults(handler=_shapes_set)


def _shapes(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from sara.data.manifest import load_manifest
    from sara.eval.report import format_summaries
    from sara.eval.shapes import METRICS, score_manifest
    from sara.eval.stats import summarise
    from sara.files import write_text_atomic

    manifest = load_manifest(args.manifest)
    results = score_manifest(manifest, args.videos, rotate=1 if args.shuffle else 0)
    summary = summarise(results, METRICS, args.seed)
    name = ("shuffled " if args.shuffle else "") + (args.videos or "ground truth")
    print(f"{len(results)} videos of {args.manifest}; mean [95 % bootstrap interval]")
    print(format_summaries({name: summary}, METRICS))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "scores.jsonl", "".join(json.dumps(r) + "\n" for r in results))
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def _shapes_set(args: argparse.Namespace) -> None:
    from sara.eval.prompt_set import write_prompt_set

    path = write_prompt_set(args.out, args.num, args.seed, args.frames, args.size, args.workers)
    print(f"wrote {args.num} held-out prompts of unseen colour–shape pairs to {path}")
