"""Frozen encoders and the aligner: tiny presets of the real classes, shapes for several grids."""

import pytest
import torch

from sara.models.aligner import SemanticAligner, parameter_count
from sara.models.presets import TINY, resolve
from sara.models.text import CaptionEmbedder, CaptionEncoder
from sara.models.tokenizer import tiny_tokenizer
from sara.models.vjepa2 import VideoEncoder
from sara.models.weights import WeightsError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def video(root):
    return VideoEncoder(resolve("tiny", "vjepa2", root))


@pytest.mark.parametrize("frames, size, grid", [(8, 64, (4, 4, 4)), (16, 128, (8, 8, 8)), (4, 96, (2, 6, 6))])
def test_video_encoder_tokens_on_the_grid(video, frames, size, grid):
    clip = torch.randint(0, 256, (2, frames, 3, size, size), dtype=torch.uint8)
    tokens = video(clip)
    assert video.grid(frames, size) == grid
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
    torch.testing.assert_close(batch[0], alone[0], atol=1e-5, rtol=1e-5)  # left padding: last token is the caption's


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
    assert set(TINY) == {"sam3", "vjepa2", "umt5", "qwen3vl", "wan", "wan-a14b", "wan-ti2v", "wan-small"}
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
    assert out.saliency_logits.shape == (3, tokens) and out.embedding.shape == (3, 24)
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


def test_aligner_unknown_size():
    with pytest.raises(ValueError, match="choose one of tiny, base"):
        SemanticAligner("huge", 8, 8, 8)
