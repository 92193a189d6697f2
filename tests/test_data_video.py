"""Video IO: frame choice, geometry, masks, and every way a file can be bad."""

import numpy as np
import pytest
import torch

from sara.data.masks import MaskError, load_mask, pool_to_grid, save_mask
from sara.data.video import (
    VideoError,
    decode_clip,
    resize_crop,
    select_frames,
    transform_masks,
    window,
    write_gif,
    write_video,
)


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    """40 frames at 20 fps, 96×128; the red channel encodes the frame index."""
    frames = torch.zeros(40, 3, 96, 128, dtype=torch.uint8)
    for t in range(40):
        frames[t, 0] = t * 6
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    write_video(path, frames, fps=20)
    return path


def test_select_frames_range_fps_and_uniform():
    times = [i / 20 for i in range(40)]
    in_range, chosen = select_frames(times, 4, start=None, end=None, fps=None, where="uniform")
    assert len(in_range) == 40 and chosen == [0, 13, 26, 39]
    in_range, chosen = select_frames(times, 5, start=0.5, end=1.5, fps=10, where="uniform")
    assert in_range == list(range(10, 30))
    assert chosen == [0, 4, 8, 14, 18]  # every other frame (10 fps), then 5 of those 10
    with pytest.raises(VideoError, match="fewer than the 41 asked for"):
        select_frames(times, 41, None, None, None)
    with pytest.raises(VideoError, match="has 20 frames at 10 fps in range, fewer than the 21 asked for"):
        select_frames(times, 21, None, None, 10)
    with pytest.raises(VideoError, match="no frames in the requested time range"):
        select_frames(times, 1, 5.0, 6.0, None)


def test_windows_keep_the_target_rate_whatever_the_clip_length():
    """A window of consecutive frames at the target rate: motion runs at the same speed in a
    short clip and a long one; spreading frames uniformly does not."""
    for seconds in (2, 5, 30):  # clips of 20 fps
        times = [i / 20 for i in range(20 * seconds)]
        for where in ("start", "centre", "random"):
            _, chosen = select_frames(times, 8, None, None, 10, where, key=(seconds, 0, 3))
            gaps = np.diff([times[i] for i in chosen])
            assert np.allclose(gaps, 0.1), (seconds, where)  # 10 fps, consecutive
        _, spread = select_frames(times, 8, None, None, 10, "uniform")
        assert np.diff([times[i] for i in spread]).mean() == pytest.approx((seconds - 0.1) / 7, rel=0.05)
    times = [i / 20 for i in range(200)]  # 10 s: 100 frames at 10 fps
    assert select_frames(times, 4, None, None, 10, "start")[1] == [0, 2, 4, 6]
    assert select_frames(times, 4, None, None, 10, "centre")[1] == [96, 98, 100, 102]  # positions 48 … 51
    draws = {tuple(select_frames(times, 4, None, None, 10, "random", key=(0, epoch, 7))[1]) for epoch in range(6)}
    assert len(draws) > 1  # another epoch, another window
    assert select_frames(times, 4, None, None, 10, "random", key=(0, 2, 7)) == select_frames(
        times, 4, None, None, 10, "random", key=(0, 2, 7)
    )
    with pytest.raises(ValueError, match="choose one of centre, start, random, uniform"):
        window(10, 4, "middle")


def test_decode_returns_uint8_tchw_of_the_bucket_size(ramp_video):
    clip = decode_clip(ramp_video, 8, (64, 64))
    assert clip.frames.shape == (8, 3, 64, 64) and clip.frames.dtype == torch.uint8
    assert clip.range_frames == 40 and clip.source_size == (96, 128)
    red = clip.frames[:, 0].float().mean(dim=(1, 2))
    expected = torch.tensor(clip.indices, dtype=torch.float32) * 6
    assert (red - expected).abs().max() < 6  # the right frames, up to compression
    part = decode_clip(ramp_video, 4, (48, 32), start=1.0, end=2.0)
    assert part.frames.shape == (4, 3, 48, 32) and part.range_frames == 20
    assert part.indices == [8, 9, 10, 11]  # the centre window of the range's 20 frames
    assert abs(part.frames[0, 0].float().mean().item() - 168) < 6  # frame 28


def test_resize_crop_keeps_the_centre():
    x = torch.zeros(1, 1, 40, 80)
    x[..., :, 10:70] = 1  # wider than the middle half that the crop keeps
    out = resize_crop(x, (20, 20))
    assert out.shape == (1, 1, 20, 20)
    assert out.mean() == pytest.approx(1.0)


def test_masks_follow_the_same_frames_and_geometry(ramp_video, tmp_path):
    clip = decode_clip(ramp_video, 8, (64, 64))
    masks = torch.zeros(40, 96, 128, dtype=torch.bool)
    masks[:, :, 64:] = True  # right half of every frame
    masks[clip.indices[0], :, :] = True  # the first chosen frame is all set
    moved = transform_masks(masks, clip, (64, 64))
    assert moved.shape == (8, 64, 64)
    assert moved[0].mean() == 1.0
    assert moved[1:, :, :30].max() == 0 and moved[1:, :, 34:].min() > 0.999
    with pytest.raises(VideoError, match=r"mask shape \(39, 96, 128\) does not match .* \(40, 96, 128\)"):
        transform_masks(masks[:39], clip, (64, 64))


def test_mask_files_round_trip_compactly(tmp_path):
    mask = torch.rand(33, 128, 128) > 0.5
    path = save_mask(tmp_path / "m.npz", mask)
    assert torch.equal(load_mask(path), mask)
    assert path.stat().st_size < mask.numel() / 8 * 1.1  # about one bit per pixel, even for noise
    with pytest.raises(MaskError, match="mask file not found"):
        load_mask(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(MaskError, match="cannot be read"):
        load_mask(tmp_path / "bad.npz")


def test_pool_to_grid_is_the_covered_fraction():
    mask = torch.zeros(3, 32, 32)
    mask[:, :16, :8] = 1  # half of the top-left 16×16 patch
    grid = pool_to_grid(mask, tubelet=2, patch=16)
    assert grid.shape == (2, 2, 2)  # 3 frames padded to 4
    assert grid[:, 0, 0].tolist() == [0.5, 0.5] and grid[:, 1:, :].sum() == 0
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        pool_to_grid(torch.zeros(2, 30, 32), 2, 16)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "video file not found"),
        (b"", "video file is empty"),
        (b"not a video at all" * 50, "cannot be decoded"),
    ],
)
def test_bad_video_files(tmp_path, content, message):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError, match=message):
        decode_clip(path, 4, (32, 32))


def test_truncated_video(ramp_video, tmp_path):
    data = ramp_video.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError):
        decode_clip(path, 8, (32, 32))


def test_gif_and_odd_sizes(tmp_path):
    frames = torch.randint(0, 255, (5, 3, 31, 33), dtype=torch.uint8)
    write_video(tmp_path / "odd.mp4", frames, fps=8)
    assert decode_clip(tmp_path / "odd.mp4", 5, (32, 34)).source_size == (32, 34)
    gif = write_gif(tmp_path / "a.gif", frames, fps=8)
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 5 and image.size == (33, 31)
    assert isinstance(np.asarray(frames), np.ndarray)
