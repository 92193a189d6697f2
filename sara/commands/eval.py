"""`sara eval …`: score videos against their prompts (the exact shapes metric, a VLM
rubric, VBench), write the held-out prompt set of unseen colour–shape pairs."""

from __future__ import annotations

import argparse

from sara.commands.world import add_world_arguments, world_from_arguments
from sara.config.arguments import add_sampling_arguments
from sara.shapes.render import SynthSpec


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval", help="evaluation: the exact shapes metric, the held-out prompt set, a VLM rubric, VBench"
    )
    group = evaluate.add_subparsers(dest="eval", required=True)
    shapes = group.add_parser("shapes", help="score shapes-world videos against their prompts (no model, exact)")
    shapes.add_argument("videos", nargs="?", help="folder of videos (ID.mp4 or NN-*.mp4); default: the manifest's own")
    shapes.add_argument("--manifest", required=True, help="records with render facts (data synth, eval shapes-set)")
    shapes.add_argument("--out", help="write scores.jsonl (per video) and summary.json here")
    shapes.add_argument("--shuffle", action="store_true", help="pair each video with the next record's prompt")
    shapes.add_argument("--seed", type=int, default=0, help="of the bootstrap")
    shapes.set_defaults(handler=_shapes)

    rubric = group.add_parser("rubric", help="a VLM behind an OpenAI-compatible endpoint scores videos on a rubric")
    rubric.add_argument("videos", nargs="?", help="folder of videos (ID.mp4 or NN-*.mp4); default: the manifest's own")
    rubric.add_argument("--manifest", required=True, help="the prompts: one record per video")
    rubric.add_argument("--endpoint", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    rubric.add_argument("--model", required=True, help="model name the endpoint serves")
    rubric.add_argument("--rubric", default="configs/eval/rubric.yaml", help="the dimensions and instruction (YAML)")
    rubric.add_argument("--frames", type=int, default=8, help="frames sampled uniformly per request (8–16)")
    rubric.add_argument("--repeats", type=int, default=1, help="requests per video with shifted frames: judge noise")
    rubric.add_argument("--out", required=True, help="rubric.jsonl, summary.json and the answer cache go here")
    rubric.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    rubric.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    rubric.add_argument("--retries", type=int, default=2, help="extra tries per request")
    rubric.set_defaults(handler=_rubric)

    sample = group.add_parser("vbench-sample", help="videos of VBench prompt suites by its protocol ({prompt}-{i}.mp4)")
    sample.add_argument("--pipeline", required=True, help="Diffusers-format Wan folder, e.g. RUN_DIR/pipeline")
    sample.add_argument("--dimension", nargs="+", required=True, help="VBench dimensions whose prompts to sample")
    sample.add_argument("--suite", help="folder with VBench_full_info.json or prompts_per_dimension/ (default: the "
                        "vbench package of .venv-vbench)")  # fmt: skip
    sample.add_argument("--out", required=True, help="folder for the videos and seeds.json")
    sample.add_argument("--per-prompt", type=int, default=5, help="videos per prompt (VBench: 5)")
    sample.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    add_sampling_arguments(sample)
    sample.set_defaults(handler=_vbench_sample)

    vbench = group.add_parser("vbench", help="run VBench (its own environment, CUDA) on sampled videos; collect scores")
    vbench.add_argument("videos", help="folder of {prompt}-{i}.mp4 (sara eval vbench-sample)")
    vbench.add_argument("--dimension", nargs="+", required=True, help="VBench dimensions to evaluate")
    vbench.add_argument("--out", required=True, help="VBench's results and our vbench.json")
    vbench.add_argument("--suite", help="folder with VBench_full_info.json (default: the vbench package)")
    vbench.add_argument("--env", default=".venv-vbench", help="VBench's virtual environment (make vbench-env)")
    vbench.add_argument("--cache", help="weights folder (default: $VBENCH_CACHE_DIR, else ~/.cache/vbench)")
    vbench.add_argument("--collect", action="store_true", help="only read the results already in --out")
    vbench.set_defaults(handler=_vbench)

    spec = SynthSpec()
    prompts = group.add_parser("shapes-set", help="held-out prompts: 2–3 entities of unseen colour–shape pairs")
    prompts.add_argument("--out", required=True, help="folder: heldout.jsonl, its videos (the ceiling) and masks")
    prompts.add_argument("--num", type=int, default=32, help="prompts")
    prompts.add_argument("--seed", type=int, default=1000, help="of the renderer (other than the training world's)")
    prompts.add_argument("--frames", type=int, default=spec.frames, help="frames per clip")
    prompts.add_argument("--size", type=int, default=spec.size, help="square frame size in pixels")
    add_world_arguments(prompts, spec)  # a narrowed world's prompts: its own words and unseen pairs
    prompts.add_argument("--workers", type=int, default=2, help="processes")
    prompts.set_defaults(handler=_shapes_set)


def _shapes(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from sara.data.manifest import load_manifest
    from sara.eval.tables import format_summaries
    from sara.files import write_text_atomic
    from sara.shapes.metric import METRICS, score_manifest
    from sara.stats import summarise

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


def _rubric(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from sara.data.manifest import find_videos, load_manifest
    from sara.endpoint import Endpoint
    from sara.eval.rubric import Judge, judge_videos, load_rubric, summarise_rubric
    from sara.eval.tables import format_summaries
    from sara.files import write_text_atomic

    if not 1 <= args.frames <= 32 or args.repeats < 1:
        raise ValueError("--frames: 1 to 32 and --repeats: at least 1")
    manifest = load_manifest(args.manifest)
    rubric = load_rubric(args.rubric)
    judge = Judge(Endpoint(args.endpoint, args.model, args.timeout, args.retries), rubric, args.frames, args.repeats)
    items = list(zip(find_videos(manifest, args.videos), (r.prompt() for r in manifest.records)))
    out = Path(args.out)
    rows = judge_videos(items, judge, out / "cache", args.concurrency)
    summary = summarise_rubric(rows, rubric)
    write_text_atomic(out / "rubric.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write_text_atomic(out / "summary.json", json.dumps({"rubric": rubric.version, **summary}, indent=2) + "\n")
    failed = sum(r["scores"] is None for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} requests answered ({sum(r.get('cached', False) for r in rows)} cached)")
    if summary:
        table = format_summaries({name: {"score": s} for name, s in summary.items()}, ("score",))
        noise = "\n".join(f"{name}: judge noise {s['noise']:.2f}" for name, s in summary.items())
        print(table + ("\n" + noise if args.repeats > 1 else ""))
    return 1 if failed else 0


def _shapes_set(args: argparse.Namespace) -> None:
    from sara.shapes.prompt_set import write_prompt_set

    world = world_from_arguments(args)
    path = write_prompt_set(args.out, args.num, args.seed, args.frames, args.size, args.workers, **world)
    print(f"wrote {args.num} held-out prompts of unseen colour–shape pairs to {path}")


def _suite(given: str | None, env: str = ".venv-vbench"):
    from pathlib import Path

    from sara.eval.vbench import installed_suite

    suite = Path(given) if given else installed_suite(Path(env))
    if suite is None:
        raise ValueError(f"--suite: not given and no vbench package in {env} (make vbench-env)")
    return suite


def _vbench_sample(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from sara.config.arguments import sampling_from_arguments
    from sara.eval.vbench import read_prompts, sample_plan, seeds_record
    from sara.files import write_text_atomic
    from sara.stage2.generate import generate

    sampling = sampling_from_arguments(args)
    prompts = read_prompts(_suite(args.suite), args.dimension)
    jobs = sample_plan(prompts, args.out, sampling.seed, args.per_prompt)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(args.out) / "seeds.json", json.dumps(seeds_record(jobs), indent=1) + "\n")
    written = generate(args.pipeline, [], args.out, sampling, args.device, jobs=jobs, gif=False)
    print(f"wrote {len(written)} videos of {len(prompts)} prompts to {args.out} (seeds in seeds.json)")


def _vbench(args: argparse.Namespace) -> int:
    import json
    import os
    import subprocess
    from pathlib import Path

    from sara.eval.vbench import FULL_INFO, read_results, vbench_command, vbench_environment
    from sara.files import write_text_atomic

    out = Path(args.out)
    if not args.collect:
        env = Path(args.env)
        if not (env / "bin" / "vbench").is_file():
            raise ValueError(f"{env}: no VBench environment (make vbench-env)")
        full_info = _suite(args.suite, args.env) / FULL_INFO
        if not full_info.is_file():
            raise ValueError(f"{full_info}: missing (VBench's standard mode reads the prompts of each video there)")
        cache = args.cache or os.environ.get("VBENCH_CACHE_DIR") or Path.home() / ".cache" / "vbench"
        command = vbench_command(args.videos, args.dimension, out, full_info, env)
        print(" ".join(command))
        if subprocess.run(command, env=vbench_environment(cache)).returncode:
            print("VBench failed; see its output above", flush=True)
            return 1
    table = read_results(out)
    write_text_atomic(out / "vbench.json", json.dumps(table, indent=2) + "\n")
    for dimension, row in table.items():
        print(f"{dimension:24s} {row['score']:.4f}  ({row['videos']} videos)")
    return 0
