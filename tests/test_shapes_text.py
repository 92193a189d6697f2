"""The shapes preset's text encoder: the captions it learns from follow the renderer's
grammar, the binding gap reads 0 for an encoder that cannot bind, and masked-token
pretraining makes a random umT5's token states carry their entity's words."""

import pytest
from transformers import UMT5EncoderModel

from sara.data.manifest import MTSSCaption
from sara.models.text import tiny_umt5_config
from sara.models.tokenizer import tiny_tokenizer
from sara.models.weights import seeded
from sara.shapes.render import SynthSpec, render_clip
from sara.shapes.text import Scene, TextRecipe, binding_gap, draw_scenes, pretrain_text_encoder

TOKENIZER = tiny_tokenizer("t5")


def _encoder(layers: int = 2) -> UMT5EncoderModel:
    config = tiny_umt5_config(TOKENIZER)
    config.num_layers = layers
    with seeded(0):
        return UMT5EncoderModel(config)


def test_corpus_captions_are_the_renderers_sentences():
    # a rendered clip's caption, rebuilt from its facts through the corpus's own Scene
    clip = render_clip(SynthSpec(num=4, seed=2, frames=9, size=64, min_entities=2, distractors=1), 1)
    named = [tuple(e["name"].split()) + (e["motion"],) for e in clip.facts["entities"]]
    shot = clip.caption["shots"][0]
    overlaps = [
        (i, j)
        for i in range(len(named))
        for j in range(i + 1, len(named))
        if f"The {clip.prompts[j]} passes in front of the {clip.prompts[i]}." in shot
    ]
    scene = Scene(named, overlaps, clip.caption["scene"], 1)
    assert scene.text() == MTSSCaption(**clip.caption).flatten()


def test_scenes_are_seeded_and_name_distinct_entities():
    scenes = draw_scenes(50, seed=4, least=2)
    assert [s.text() for s in scenes] == [s.text() for s in draw_scenes(50, seed=4, least=2)]
    assert {len(s.named) for s in scenes} == {2, 3}
    for s in scenes:
        assert len({c for c, _, _ in s.named}) == len({k for _, k, _ in s.named}) == len(s.named)


def test_binding_gap_is_zero_for_an_encoder_without_context():
    # no layers: each token's state is its own embedding, so swapping two entities' colours
    # leaves the set of states unchanged, while changing a colour does not
    gap = binding_gap(_encoder(layers=0), TOKENIZER, draw_scenes(4, seed=1, least=2))
    assert gap == {"colour swap / change": 0.0, "motion swap / change": 0.0}


@pytest.mark.slow
def test_masked_token_pretraining_binds_words_to_their_entity():
    encoder, probes = _encoder(), draw_scenes(8, seed=9, least=2)
    before = binding_gap(encoder, TOKENIZER, probes)
    recipe = TextRecipe(captions=400, steps=700, batch=16)  # the loss leaves its unigram plateau after ~500
    losses = pretrain_text_encoder(encoder, TOKENIZER, recipe, seed=0, progress=False)
    after = binding_gap(encoder, TOKENIZER, probes)
    assert len(losses) == recipe.steps and sum(losses[-10:]) < 0.6 * sum(losses[:10])
    for word in before:
        assert before[word] < 0.15 and after[word] > 3 * before[word], (word, before, after)
