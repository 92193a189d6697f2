"""Frozen encoders and the aligner: tiny presets of the real classes, shapes for several grids."""

import json
import shutil

import pytest
import torch

from sara.models.aligner import SemanticAligner, parameter_count
from sara.models.presets import PRESET_FORMAT, TINY, WAN_VARIANTS, resolve, write_tiny
from sara.models.text import CaptionEmbedder, CaptionEncoder, last_attended
from sara.models.tokenizer import tiny_tokenizer
from sara.models.vjepa2 import VideoEncoder
from sara.models.wan import TINY_WAN, tiny_transformer
from sara.models.weights import WeightsError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def video(root):
    return VideoEncoder(resolve("tiny", "vjepa2", root))


@pytest.mark.parametrize(
    "frames, height, width, grid",
    [(8, 64, 64, (4, 4, 4)), (16, 128, 128, (8, 8, 8)), (4, 96, 160, (2, 6, 10)), (6, 160, 64, (3, 10, 4))],
)
def test_video_encoder_tokens_on_the_grid(video, frames, height, width, grid):
    clip = torch.randint(0, 256, (2, frames, 3, height, width), dtype=torch.uint8)
    tokens = video(clip)
    assert video.grid(frames, height, width) == grid
    assert tokens.shape == (2, grid[0] * grid[1] * grid[2], video.width) and tokens.dtype == torch.float32
    assert torch.equal(tokens[1], video(clip[1:])[0]), "each clip is encoded on its own"


def test_video_encoder_rejects_a_clip_that_does_not_tile(video):
    with pytest.raises(ValueError, match="do not tile"):
        video(torch.zeros(1, 7, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("kind", ["umt5", "qwen3vl"])
def test_caption_encoder_tokens_and_mask(root, kind):
    encoder = CaptionEncoder(resolve("tiny", kind, root), kind)
    hidden, mask = encoder(["red square", "a blue circle moves from left to right"])
    assert hidden.shape[:2] == mask.shape and hidden.shape[-1] == encoder.width
    assert mask[0].sum() < mask[1].sum() and mask[1].all()


def test_caption_embedder_is_normalised_and_blind_to_padding(root):
    embedder = CaptionEmbedder(resolve("tiny", "qwen3vl", root))
    alone = embedder(["red square"])
    batch = embedder(["red square", "a blue circle moves from left to right while the red square waits"])
    assert torch.allclose(batch.norm(dim=-1), torch.ones(2), atol=1e-5)
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)  # its own last token, not a pad's


def test_caption_embedder_reads_the_documented_chat_and_pools_its_last_token(root):
    """Qwen3-VL-Embedding's reference usage: a system turn with the instruction, a user turn
    with the caption, the generation prompt; right padding; the last attended token pooled."""
    embedder = CaptionEmbedder(resolve("tiny", "qwen3vl", root), instruction="Represent the caption")
    expected = (
        "<|im_start|>system\nRepresent the caption.<|im_end|>\n"  # a full stop added, as the reference does
        "<|im_start|>user\nred square<|im_end|>\n<|im_start|>assistant\n"
    )
    assert embedder.chats(["red square"]) == [expected]
    assert "<|im_start|>user\nNULL<|im_end|>" in embedder.chats([""])[0]
    tokens = embedder.tokenize(["red square", "a blue circle moves from left to right"])
    own = embedder.tokenizer(expected, return_tensors="pt").input_ids[0]
    length = len(own)
    assert torch.equal(tokens.input_ids[0, :length], own)  # the formatted ids, then padding on the right
    assert tokens.attention_mask[0, :length].all() and not tokens.attention_mask[0, length:].any()
    assert tokens.input_ids.shape[1] > length
    turn_end = embedder.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert own[-1] != turn_end and turn_end in own[-4:]  # the pooled token ends "<|im_start|>assistant\n"
    assert last_attended(tokens.attention_mask).tolist() == [length - 1, tokens.input_ids.shape[1] - 1]
    with torch.no_grad():
        hidden = embedder.model(**tokens).last_hidden_state
    pooled = torch.nn.functional.normalize(hidden[0, length - 1], dim=-1)
    torch.testing.assert_close(embedder(["red square", "a blue circle moves from left to right"])[0], pooled)
    assert not torch.allclose(pooled, torch.nn.functional.normalize(hidden[0, -1], dim=-1), atol=1e-3)


def test_caption_embedder_finds_the_processor_chat_template(root, tmp_path):
    folder = tmp_path / "embedder"
    shutil.copytree(resolve("tiny", "qwen3vl", root), folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()  # as a folder whose template only the processor carries
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    assert CaptionEmbedder(folder).chats(["x"]) == CaptionEmbedder(resolve("tiny", "qwen3vl", root)).chats(["x"])
    (folder / "chat_template.json").unlink()
    with pytest.raises(WeightsError, match="no chat template"):
        CaptionEmbedder(folder)


def test_tokenizers_are_deterministic_and_keep_world_words_whole():
    first, second = tiny_tokenizer("t5"), tiny_tokenizer("t5")
    assert first.get_vocab() == second.get_vocab()
    assert len(first.tokenize("the red square")) == 3
    with pytest.raises(ValueError, match="choose one of"):
        tiny_tokenizer("bert")


def test_presets_are_written_once_and_unknown_ones_refused(root):
    folder = resolve("tiny", "vjepa2", root)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve("tiny", "vjepa2", root) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert set(TINY) == {
        "sam3",
        "vjepa2",
        "umt5",
        "qwen3vl",
        "wan",
        "wan-a14b",
        "wan-ti2v",
        "wan-small",
        "wan-medium",
        "wan-shapes",
        "wan-shapes-wide",
        "wan-shapes-fine",
    }
    assert folder.name == f"tiny-vjepa2-v{PRESET_FORMAT}-seed0"  # a new preset format never reuses an old folder
    with pytest.raises(ValueError, match="no tiny preset"):
        resolve("tiny", "dinov2", root)
    with pytest.raises(WeightsError, match="not a V-JEPA 2 weights folder"):
        VideoEncoder(root / "missing")


@pytest.mark.parametrize("tokens", [64, 512])
def test_aligner_shapes_range_and_text_conditioning(tokens):
    aligner = SemanticAligner("tiny", visual_dim=48, text_dim=32, embed_dim=24)
    assert parameter_count(aligner) > 0
    visual, text = torch.randn(3, tokens, 48), torch.randn(3, 5, 32)
    mask = torch.ones(3, 5, dtype=torch.bool)
    out = aligner(visual, text, mask)
    assert out.saliency_logits.shape == (3, tokens) and aligner.embed(visual).shape == (3, 24)
    assert out.features.shape == (3, tokens, 128)
    saliency = aligner.saliency(visual, text, mask)
    assert ((saliency >= 0) & (saliency <= 1)).all()
    assert not torch.allclose(saliency, aligner.saliency(visual, torch.randn(3, 5, 32), mask))


def test_aligner_ignores_padding_tokens():
    aligner = SemanticAligner("tiny", visual_dim=16, text_dim=8, embed_dim=8).eval()
    visual, text = torch.randn(1, 20, 16), torch.randn(1, 3, 8)
    padded = torch.cat([text, torch.randn(1, 4, 8)], dim=1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    torch.testing.assert_close(
        aligner.saliency(visual, text, torch.ones(1, 3, dtype=torch.bool)), aligner.saliency(visual, padded, mask)
    )


def test_global_embedding_reads_the_video_alone():
    """The global head runs the fusion blocks against a learned null caption: a different
    video changes the embedding, and no caption can reach it (its only input is the video)."""
    aligner = SemanticAligner("tiny", visual_dim=16, text_dim=8, embed_dim=8).eval()
    visual = torch.randn(2, 20, 16)
    first = aligner.embed(visual)
    assert not torch.allclose(first[0], first[1])
    torch.testing.assert_close(aligner.embed(visual[:1])[0], first[0])
    (grad,) = torch.autograd.grad(aligner.embed(visual).sum(), aligner.null_text)
    assert grad.abs().sum() > 0  # the null caption is trained with it
    text = [p for n, p in aligner.named_parameters() if n.startswith(("text_in", "saliency_text"))]
    assert all(g is None for g in torch.autograd.grad(aligner.embed(visual).sum(), text, allow_unused=True))


def test_aligner_unknown_size():
    with pytest.raises(ValueError, match="choose one of tiny, base"):
        SemanticAligner("huge", 8, 8, 8)


@pytest.mark.parametrize("name", ["vjepa2", "qwen3vl", "wan"])
def test_writing_a_preset_leaves_the_callers_random_stream_alone(name, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = write_tiny(name, tmp_path / "a", seed=5)
    assert torch.equal(torch.rand(4), expected)  # as if no preset had been built
    write_tiny(name, tmp_path / "b", seed=5)
    weights = sorted(first.rglob("*.safetensors"))
    assert weights and all(
        (path.read_bytes() == (tmp_path / "b" / path.relative_to(first)).read_bytes()) for path in weights
    )


def rope_similarity(heads: int, head_dim: int, axis: int, grid: int = 8) -> torch.Tensor:
    """Mean cos of the rotary angle between position 0 and position d < ``grid`` on one spatial
    axis (1: height, 2: width) of the medium DiT built with these heads: what a constant query
    sees of a constant key d tokens away."""
    spec = TINY_WAN["medium"]
    rope = tiny_transformer(spec.z_dim, 64, spec.layers, heads, head_dim).rope
    sizes = [rope.t_dim, rope.h_dim, rope.w_dim]
    cos, sin = rope.freqs_cos.split(sizes, dim=1)[axis][:grid], rope.freqs_sin.split(sizes, dim=1)[axis][:grid]
    return (cos * cos[0] + sin * sin[0]).mean(dim=1)  # [grid]


@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("variant", ["medium", "wide"])  # the DiTs of the shapes and shapes-wide presets
def test_the_shapes_dit_tells_every_position_of_its_grid_from_a_neighbour(axis, variant):
    # 128² clips: 16² latents in 2×2 patches, 8 tokens per axis. With 16-channel heads Wan's RoPE
    # has two frequencies per axis and a token 6 away looks nearer than the next one
    spec = TINY_WAN[variant]
    similarity = rope_similarity(spec.heads, spec.head_dim, axis)
    assert (similarity[2:] < similarity[1]).all(), similarity
    narrow = rope_similarity(spec.heads * 4, spec.head_dim // 4, axis)
    assert not (narrow[2:] < narrow[1]).all(), "the check tells the narrow heads apart"


def test_the_wide_shapes_dit_is_the_medium_one_deeper_and_wider():
    medium, wide = (TINY_WAN[v] for v in ("medium", "wide"))
    assert (wide.head_dim, wide.z_dim) == (medium.head_dim, medium.z_dim)  # same rotary table, same VAE
    counts = [parameter_count(tiny_transformer(s.z_dim, 64, s.layers, s.heads, s.head_dim)) for s in (medium, wide)]
    assert 0.9e6 < counts[0] < 1.0e6 and 5.0e6 < counts[1] < 5.6e6, counts
    assert WAN_VARIANTS["shapes-wide"] == "wan-shapes-wide" and TINY["wan-shapes-wide"][2] == {"variant": "wide"}


def test_the_fine_shapes_dit_is_the_medium_one_on_a_token_per_latent_pixel():
    medium, fine = (TINY_WAN[v] for v in ("medium", "fine"))
    dits = [tiny_transformer(s.z_dim, 64, s.layers, s.heads, s.head_dim, s.patch) for s in (medium, fine)]
    assert [d.config.patch_size for d in dits] == [(1, 2, 2), (1, 1, 1)]
    latents = torch.randn(1, 16, 3, 12, 12)  # a 9-frame 96² clip
    text = torch.randn(1, 8, 64)
    for dit in dits:  # the same output shape from 108 and 432 tokens
        out = dit(latents, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)[0]
        assert out.shape == latents.shape
    assert parameter_count(dits[1]) < parameter_count(dits[0])  # smaller patch embedding and output
    assert WAN_VARIANTS["shapes-fine"] == "wan-shapes-fine" and TINY["wan-shapes-fine"][2] == {"variant": "fine"}
