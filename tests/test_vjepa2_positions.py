"""V-JEPA 2 reads each token at its true (frame, row, column), whatever the clip's shape.

`transformers` derives rotary ids from the checkpoint's square crop; the encoder replaces
that with the clip's own grid. The reference here builds the ids independently (a
meshgrid of the grid) and feeds them to the *stock* attention, so the override is checked
against the library's own rotary code, not against itself.
"""

import pytest
import torch
from transformers import VJEPA2Model
from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2RopeAttention

from sara.models.vjepa2 import GridRopeAttention, VideoEncoder, tiny_config, token_grid, use_true_grid
from sara.models.weights import WeightsError, write_normalisation

SHARPEN = 6.0  # q and k scaled: attention then depends strongly on the rotary positions


def _folder(root, crop: int):
    config = tiny_config()
    config.crop_size = crop
    torch.manual_seed(0)
    VJEPA2Model(config).save_pretrained(root)
    write_normalisation(root, [0.5] * 3, [0.25] * 3)
    return root


def _sharpen(model: VJEPA2Model) -> None:
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.query.weight.mul_(SHARPEN)
            layer.attention.key.weight.mul_(SHARPEN)


def _reference_ids(grid):
    frame, row, column = torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij")
    return frame.flatten(), row.flatten(), column.flatten()


@pytest.fixture(scope="module", params=[128, 384], ids=["crop128", "crop384"])
def checkpoint(request, tmp_path_factory):
    crop = request.param
    folder = _folder(tmp_path_factory.mktemp(f"vjepa-{crop}"), crop)
    encoder = VideoEncoder(folder)
    _sharpen(encoder.model)
    stock = VJEPA2Model.from_pretrained(folder).eval()
    _sharpen(stock)
    return crop, encoder, stock


def _cases(crop: int):
    if crop == 384:  # a real checkpoint's crop and a real Stage 2 input: 256 × 448, 8 tubelets
        return [(16, 256, 448)]
    return [(16, crop, 2 * crop), (16, 2 * crop, crop), (16, 3 * crop // 2, 3 * crop // 2), (32, crop, crop)]


def test_tokens_match_a_true_grid_reference_and_differ_from_crop_grid_ids(checkpoint, monkeypatch):
    crop, encoder, stock = checkpoint
    for frames, height, width in _cases(crop):
        generator = torch.Generator().manual_seed(frames + height + width)
        clip = torch.randint(0, 256, (1, frames, 3, height, width), dtype=torch.uint8, generator=generator)
        ours = encoder(clip)
        grid = encoder.grid(frames, height, width)
        x = (clip.float() / 255 - encoder.mean) / encoder.std
        with torch.no_grad():
            today = stock(pixel_values_videos=x, skip_predictor=True).last_hidden_state
            with monkeypatch.context() as patch:
                patch.setattr(
                    VJEPA2RopeAttention, "get_position_ids", lambda self, h, masks=None, grid=grid: _reference_ids(grid)
                )
                reference = stock(pixel_values_videos=x, skip_predictor=True).last_hidden_state
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
        if (height, width) == (crop, crop):
            # the library's ids only go wrong off the square crop: more frames split the same way
            torch.testing.assert_close(today, reference, atol=1e-5, rtol=1e-5)
        else:
            assert (ours - today).abs().amax() > 0.05, (frames, height, width)
        assert all(attention.grid is None for attention in encoder.attentions)  # nothing outlives the forward


def test_the_override_refuses_what_it_cannot_place(checkpoint):
    _, encoder, stock = checkpoint
    attention = encoder.attentions[0]
    with pytest.raises(RuntimeError, match="no token grid set"):
        attention.get_position_ids(torch.zeros(1, 8, 4))
    with token_grid([attention], (2, 2, 2)), pytest.raises(RuntimeError, match="do not fill the grid"):
        attention.get_position_ids(torch.zeros(1, 9, 4))
    stock.encoder.layer[0].attention.__class__ = GridRopeAttention  # already swapped: not the class it replaces
    with pytest.raises(WeightsError, match="transformers changed"):
        use_true_grid(stock)
    stock.encoder.layer[0].attention.__class__ = VJEPA2RopeAttention
