"""FramePack resolution buckets and image fitting (spec section 5)."""
import pytest
import torch

from framepack_oneframe.framepack_core.buckets import (
    BUCKETS_640,
    buckets,
    find_nearest_bucket,
    fit_image,
    fit_mask,
    output_size,
)


def brute_force_nearest(h, w, table):
    """The bucket minimising |h * bw - w * bh|; on ties the later one (FramePack's `<=`)."""
    scores = [abs(h * bw - w * bh) for bh, bw in table]
    best = min(scores)
    return table[max(i for i, s in enumerate(scores) if s == best)]


def test_640_table():
    assert len(BUCKETS_640) == 14
    for bh, bw in BUCKETS_640:
        assert bh % 16 == 0 and bw % 16 == 0
        assert abs(bh * bw - 640 * 640) / (640 * 640) < 0.1  # all about 640^2 pixels (within 7%)
    assert list(BUCKETS_640) == sorted(BUCKETS_640)  # portrait to landscape
    assert [(w, h) for h, w in BUCKETS_640] == list(reversed(BUCKETS_640))  # symmetric


@pytest.mark.parametrize("h, w, expect", [
    (640, 640, (640, 608)),  # a square ties between 608x640 and 640x608: the later one wins
    (1080, 1920, (480, 832)),
    (1920, 1080, (832, 480)),
    (768, 512, (768, 512)),
    (100, 1000, (416, 960)),
])
def test_nearest_bucket_640(h, w, expect):
    assert find_nearest_bucket(h, w, 640) == expect


@pytest.mark.parametrize("res", [256, 384, 512, 640, 960, 1024])
def test_scaled_tables_and_random_images(res):
    table = buckets(res)
    scale = res / 640
    assert table == [(max(16, round(h * scale / 16) * 16), max(16, round(w * scale / 16) * 16)) for h, w in BUCKETS_640]
    g = torch.Generator().manual_seed(res)
    for _ in range(200):
        h, w = (int(v) for v in torch.randint(16, 4000, (2,), generator=g))
        assert find_nearest_bucket(h, w, res) == brute_force_nearest(h, w, table)


def test_output_size_explicit_and_errors():
    assert output_size(300, 500, 640, width=512, height=320) == (320, 512)
    assert output_size(300, 500, 640) == find_nearest_bucket(300, 500, 640)
    with pytest.raises(ValueError, match="FramePackEncodeImage: input 'width' is 500; it must be a multiple of 16"):
        output_size(300, 500, 640, width=500, height=320)
    with pytest.raises(ValueError, match="input 'width' is set but 'height' is 0"):
        output_size(300, 500, 640, width=512)
    with pytest.raises(ValueError, match="input 'resolution' is 64; allowed range 128..2048"):
        output_size(300, 500, 64)


def test_fit_image_covers_and_center_crops(comfy_nodes):
    img = torch.zeros(1, 64, 128, 3)
    img[:, :, 48:80] = 1.0  # a bright vertical band in the middle quarter
    out = fit_image(img, 64, 64)  # crop the 128-wide picture to its central 64 columns
    assert out.shape == (1, 64, 64, 3)
    assert out[:, :, 20:44].mean() > 0.95 and out[:, :, :12].mean() < 0.05 and out[:, :, -12:].mean() < 0.05
    up = fit_image(img, 128, 256)  # same aspect: plain resize
    assert up.shape == (1, 128, 256, 3)
    m = fit_mask(img[..., 0], 64, 64)
    assert m.shape == (1, 64, 64)
    torch.testing.assert_close(m, out[..., 0], atol=0.2, rtol=0)  # the mask follows the image's crop
