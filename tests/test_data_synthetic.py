"""The synthetic shapes world: determinism, distinct kinds, visible entities, captions,
foreground share, renderer facts, files."""

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest
import torch

from sara.cli import main
from sara.data.manifest import load_manifest
from sara.data.masks import load_mask, pool_to_grid
from sara.data.video import decode_clip, transform_masks
from sara.shapes import geometry as shapes
from sara.shapes.render import SynthSpec, render_clip, synthesize
from sara.shapes.vocabulary import MOTIONS, SHAPES, UNSEEN_PAIRS

SPEC = SynthSpec(num=6, seed=3, frames=9, size=64, heldout_fraction=0.34)


def test_render_is_a_function_of_seed_and_index():
    first, again, other = render_clip(SPEC, 2), render_clip(SPEC, 2), render_clip(SPEC, 3)
    assert np.array_equal(first.video, again.video) and first.caption == again.caption
    assert first.facts == again.facts
    assert not np.array_equal(first.video, other.video)


def test_no_two_kinds_draw_the_same_mask_at_any_rotation():
    """At equal area, the best IoU between two kinds over every pair of rotations stays well
    below 1 (a square turned by 45° used to be the diamond: IoU 1.0)."""
    size, area = 96, 0.1 * 96 * 96
    angles = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    drawn = {
        kind: np.stack([shapes.draw(kind, 48, 48, math.sqrt(area / shapes.area(kind)), a, size) for a in angles])
        for kind in SHAPES
    }
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            x, y = drawn[a][:, None], drawn[b][None, :]  # every rotation of a against every rotation of b
            best = ((x & y).sum((-1, -2)) / (x | y).sum((-1, -2))).max()
            assert best < 0.86, f"{a} and {b} overlap at IoU {best:.3f}"


def test_shape_areas_match_their_drawings():
    """Drawn pixels match the analytic area up to the boundary pixels (half a pixel along the outline)."""
    r = 30.0
    for kind in SHAPES:
        points = shapes.outline(kind) or [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 64)]
        perimeter = r * sum(math.dist(p, q) for p, q in zip(points, points[1:] + points[:1]))
        drawn = shapes.draw(kind, 40, 40, r, 0.3, 80).sum()
        assert abs(drawn - shapes.area(kind) * r * r) <= 0.5 * perimeter, kind
    with pytest.raises(ValueError, match="choose one of circle"):
        shapes.outline("hexagon")


@pytest.mark.slow
def test_every_named_entity_is_visible_in_every_frame():
    """Over 300 clips at the default FG share: each entity shows at least min_visible of its
    own area in every frame (before the rule, one clip in four hid an entity completely)."""
    spec = SynthSpec(frames=9, size=96)
    least = []
    for index in range(300):
        clip = render_clip(spec, index)
        for entity, mask in zip(clip.facts["entities"], clip.masks):
            r = entity["reach"]
            shown = mask.sum(axis=(1, 2)) / (shapes.area(entity["kind"]) * r * r)  # (T,)
            assert shown.min() >= spec.min_visible - 0.02, (index, entity["name"])
            least.append(entity["least_visible"])
    assert min(least) >= spec.min_visible


def test_masks_are_visible_parts_and_captions_name_every_entity():
    crossings = 0
    for index in range(20):
        clip = render_clip(SPEC, index)
        assert clip.video.shape == (9, 64, 64, 3) and clip.video.dtype == np.uint8
        assert 1 <= len(clip.masks) == len(clip.prompts) <= 3
        stacked = np.stack(clip.masks)
        assert stacked.sum(axis=0).max() <= 1  # occluded parts belong to the shape in front only
        assert len(set(p.split()[0] for p in clip.prompts)) == len(clip.prompts)  # distinct colours
        assert [c["name"] for c in clip.caption["cast"]] == clip.prompts
        for prompt in clip.prompts:
            assert prompt in clip.caption["shots"][0]
        crossings += "passes in front" in clip.caption["shots"][0]
    assert crossings > 0  # occlusions happen and are told


def test_renderer_facts_say_where_each_entity_is():
    clip = render_clip(SPEC, 4)
    assert clip.facts["background"] in ("noise", "stripes", "gradient", "clutter")
    for entity, mask in zip(clip.facts["entities"], clip.masks):
        assert entity["name"] == f"{entity['colour']} {entity['kind']}"
        assert tuple(entity["direction"]) == MOTIONS[entity["motion"]]
        centres = np.array(entity["centres"])  # (T, 2) as (y, x)
        assert centres.shape == (9, 2) and len(entity["angles"]) == 9
        step = np.diff(centres, axis=0)  # a straight line at constant speed along the direction
        assert np.allclose(step, step[0], atol=0.02)
        assert np.dot(step[0], entity["direction"]) > 0
        ys, xs = np.nonzero(mask[0])  # the visible part lies within the reach of the centre
        assert np.hypot(ys - centres[0, 0], xs - centres[0, 1]).max() <= entity["reach"] + 1.5


def test_foreground_share_of_the_token_grid_is_near_the_target():
    spec = SynthSpec(frames=9, size=128)
    shares = []
    for index in range(40):
        union = torch.from_numpy(np.any(np.stack(render_clip(spec, index).masks), axis=0))
        shares.append((pool_to_grid(union, 2, 16) > 0.5).float().mean().item())
    assert 0.42 < np.mean(shares) < 0.58


def test_synthesize_writes_clips_masks_and_splits(tmp_path):
    summary = synthesize(SPEC, tmp_path, workers=2, progress=False)
    assert summary["clips"] == {"train": 4, "heldout": 2}
    assert summary["least_visible"] >= SPEC.min_visible
    train, heldout = load_manifest(tmp_path / "train.jsonl"), load_manifest(tmp_path / "heldout.jsonl")
    ids = [r.model_extra["id"] for r in train.records + heldout.records]
    assert sorted(ids) == [f"clip_{i:05d}" for i in range(6)]
    record = train.records[0]
    clip = decode_clip(train.resolve(record.video), 9, (64, 64))
    assert clip.range_frames == 9
    for entity in record.entities:
        mask = load_mask(train.resolve(entity.mask))
        assert mask.shape == (9, 64, 64)
        assert transform_masks(mask, clip, (64, 64)).shape == (9, 64, 64)
    assert record.prompt().startswith(record.caption.global_setup)
    render = record.model_extra["render"]
    assert (render["size"], render["frames"], render["fps"]) == (64, 9, SPEC.fps)
    assert [e["name"] for e in render["entities"]] == [e.prompt for e in record.entities]
    again = tmp_path / "again"
    synthesize(SPEC, again, workers=1, progress=False)
    assert (again / "train.jsonl").read_text() == (tmp_path / "train.jsonl").read_text()
    assert json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])["fg_fraction"] > 0


def test_backgrounds_draws_only_the_kinds_named(tmp_path, capsys):
    """A world restricted to some backgrounds (an ablation) draws only those, through the
    spec and `sara data synth`; the default draws every textured kind; an unknown kind is an error."""
    assert len({render_clip(SPEC, i).facts["background"] for i in range(12)}) > 2
    gradient = SynthSpec(num=6, seed=3, frames=9, size=64, backgrounds=["gradient"])  # a config's list
    assert gradient.backgrounds == ("gradient",)
    assert {render_clip(gradient, i).facts["background"] for i in range(6)} == {"gradient"}
    with pytest.raises(
        ValueError,
        match=r"backgrounds \[.checkers.\]; choose distinct ones from noise, stripes, gradient, clutter, plain",
    ):
        SynthSpec(backgrounds=("checkers",))
    args = ["data", "synth", "--out", str(tmp_path), "--num", "6", "--frames", "5", "--size", "64"]
    assert main([*args, "--pairs", "seen", "--backgrounds", "noise", "stripes", "--workers", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    facts = [r.model_extra["render"] for r in load_manifest(tmp_path / "train.jsonl").records]
    assert {f["background"] for f in facts} <= {"noise", "stripes"}
    assert not {(e["colour"], e["kind"]) for f in facts for e in f["entities"]} & set(UNSEEN_PAIRS)


STUDY = SynthSpec(
    num=4, seed=2, frames=9, size=96, backgrounds=("plain",), spin=0.0, upright=True, entity_share=0.06,
    min_entities=2, max_entities=2, min_visible=0.9, distractors=2,
)  # fmt: skip


@pytest.mark.parametrize("index", range(3))
def test_the_study_world_fixes_size_angle_and_background(index):
    """``entity_share``: each named shape covers that share of the frame, whatever its kind;
    ``upright`` and ``spin=0``: angle 0 in every frame; ``plain``: one colour behind them."""
    clip = render_clip(STUDY, index)
    for fact in clip.facts["entities"]:
        assert shapes.area(fact["kind"]) * fact["reach"] ** 2 == pytest.approx(0.06 * 96 * 96, rel=0.01)
        assert set(fact["angles"]) == {0.0}
    drawn = np.any(np.stack(clip.masks), axis=0)
    distractors = [shapes.draw(d["kind"], x, y, d["reach"], 0, 96) for d in clip.facts["distractors"]
                   for (y, x) in d["centres"][:1]]  # fmt: skip
    background = ~drawn[0] & ~np.any(distractors, axis=0)
    assert len(np.unique(clip.video[0][background], axis=0)) == 1
    assert "plain dark background" in clip.caption["global_setup"]


def test_distractors_move_unnamed_behind_the_named_shapes():
    """Distractors take clutter colours (none near the palette), get no mask and no prompt, and
    never hide a named shape; the caption counts them apart."""
    from sara.shapes.palette import colour_masks

    clip = render_clip(STUDY, 1)
    assert len(clip.facts["distractors"]) == 2 and len(clip.prompts) == len(clip.masks) == 2
    assert clip.caption["global_setup"].startswith("Two moving shapes and two grey shapes over")
    for fact, mask in zip(clip.facts["entities"], clip.masks):
        shown = mask.sum(axis=(1, 2)) / (shapes.area(fact["kind"]) * fact["reach"] ** 2)
        assert shown.min() >= 0.9
    palette = colour_masks(torch.from_numpy(clip.video)).any(0).numpy()  # (T, H, W)
    named = np.any(np.stack(clip.masks), axis=0)
    assert (palette & ~named).sum() == 0  # no palette colour beyond the named shapes
    for distractor in clip.facts["distractors"]:
        first = distractor["centres"][0]
        assert first != distractor["centres"][-1]  # they move


def test_default_world_draws_no_distractor_facts():
    assert "distractors" not in render_clip(SPEC, 0).facts


NARROW = SynthSpec(
    num=4, seed=4, frames=9, size=96, backgrounds=("plain",), spin=0.0, upright=True, entity_share=0.15,
    min_entities=2, max_entities=2, min_visible=0.6, pairs="seen", kinds=("circle", "triangle", "cross"),
    colours=("red", "green", "blue", "yellow"), motions=("left to right", "top to bottom"),
)  # fmt: skip


def test_a_world_of_fewer_words_draws_and_names_only_those(tmp_path):
    """``kinds``, ``colours`` and ``motions`` narrow the named entities' words (through the
    spec and `sara data synth`); the world's unseen pairs are its own, one per colour; the
    records say the world's words."""
    assert NARROW.unseen_pairs == (("red", "circle"), ("green", "triangle"), ("blue", "cross"), ("yellow", "circle"))
    entities = [e for i in range(16) for e in render_clip(NARROW, i).facts["entities"]]
    assert {e["kind"] for e in entities} == set(NARROW.kinds) and {e["motion"] for e in entities} == set(NARROW.motions)
    assert {e["colour"] for e in entities} == set(NARROW.colours)
    assert not {(e["colour"], e["kind"]) for e in entities} & set(NARROW.unseen_pairs)
    unseen = dataclasses.replace(NARROW, pairs="unseen")
    drawn = {(e["colour"], e["kind"]) for i in range(8) for e in render_clip(unseen, i).facts["entities"]}
    assert drawn <= set(NARROW.unseen_pairs) and len(drawn) > 2
    args = ["data", "synth", "--out", str(tmp_path), "--num", "3", "--frames", "5", "--size", "64", "--workers", "1"]
    assert (
        main(
            [
                *args,
                "--kinds",
                "square",
                "star",
                "--colours",
                "red",
                "cyan",
                "--motions",
                "right to left",
                "--max-entities",
                "2",
            ]
        )
        == 0
    )
    for record in load_manifest(tmp_path / "train.jsonl").records:
        facts = record.model_extra["render"]
        assert facts["kinds"] == ["square", "star"] and facts["motions"] == ["right to left"]
        assert {(e["colour"], e["kind"], e["motion"]) for e in facts["entities"]} <= {
            (c, k, "right to left") for c in ("red", "cyan") for k in ("square", "star")
        }


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ({"kinds": ("circle", "hexagon")}, r"kinds \['circle', 'hexagon'\]; choose distinct ones from circle, square"),
        ({"colours": ("red", "red")}, r"colours \['red', 'red'\]; choose distinct ones from red, green"),
        ({"motions": ()}, r"motions \[\]; choose distinct ones from left to right"),
        ({"kinds": ("circle", "square"), "max_entities": 3}, r"max_entities <= 2 \(this world's kinds and colours\)"),
        (
            {"kinds": ("circle",), "colours": ("red", "blue"), "max_entities": 1, "pairs": "seen"},
            r"pairs seen: kinds \['circle'\]; a seen world needs two kinds or more",
        ),
    ],
)
def test_a_world_of_unknown_or_too_few_words_is_an_error(words, message):
    with pytest.raises(ValueError, match=message):
        SynthSpec(**words)


def test_the_whole_vocabulary_draws_as_before_the_words_could_be_narrowed():
    """The default world's unseen pairs, casts, paths and pixels, pinned from the renderer as it
    was before ``kinds``, ``colours`` and ``motions`` existed: the options leave it unchanged."""
    assert SynthSpec().unseen_pairs == (
        ("red", "circle"), ("green", "square"), ("blue", "triangle"), ("yellow", "star"), ("purple", "cross"),
        ("orange", "diamond"), ("cyan", "circle"), ("white", "square"),
    )  # fmt: skip
    pinned = [
        (SynthSpec(seed=5, frames=9, size=64), 0, "3ae2b901281a3509",
         [("yellow circle", "bottom right to top left", [47.92, 32.26]), ("blue star", "bottom to top", [51.37, 39.15]),
          ("white cross", "top left to bottom right", [20.58, 16.1])]),
        (SynthSpec(seed=5, frames=9, size=64, pairs="unseen", min_entities=2, distractors=1), 1, "97d4bcc196f049de",
         [("orange diamond", "bottom right to top left", [38.0, 29.45]),
          ("cyan circle", "bottom right to top left", [37.18, 45.16])]),
    ]  # fmt: skip
    for spec, index, digest, entities in pinned:
        clip = render_clip(spec, index)
        assert [(e["name"], e["motion"], e["centres"][0]) for e in clip.facts["entities"]] == entities
        assert hashlib.sha256(clip.video.tobytes()).hexdigest()[:16] == digest
