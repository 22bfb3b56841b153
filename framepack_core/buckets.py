"""FramePack's resolution buckets and fitting an image to the output size (spec section 5).

FramePack generates at one of a fixed set of (height, width) sizes of about 640 x 640 pixels, all
multiples of 16; the one whose aspect ratio is nearest the input's is chosen. For another base
resolution the 640 table is scaled by resolution / 640 and rounded to multiples of 16. Images are
resized to cover the bucket and center-cropped.
"""
from __future__ import annotations

import torch

# (height, width) buckets at base resolution 640, from portrait to landscape (FramePack's values).
BUCKETS_640: tuple[tuple[int, int], ...] = (
    (416, 960), (448, 864), (480, 832), (512, 768), (544, 704), (576, 672), (608, 640),
    (640, 608), (672, 576), (704, 544), (768, 512), (832, 480), (864, 448), (960, 416),
)

MIN_RESOLUTION = 128
MAX_RESOLUTION = 2048


def _round16(v: float) -> int:
    return max(16, int(round(v / 16.0)) * 16)


def buckets(resolution: int = 640) -> list[tuple[int, int]]:
    """The bucket table for a base resolution: the 640 table scaled by resolution / 640, rounded to 16."""
    if resolution == 640:
        return list(BUCKETS_640)
    scale = resolution / 640.0
    return [(_round16(h * scale), _round16(w * scale)) for h, w in BUCKETS_640]


def find_nearest_bucket(h: int, w: int, resolution: int = 640) -> tuple[int, int]:
    """The bucket whose aspect ratio is nearest h:w (compared as |h*bw - w*bh|, no division).

    Ties go to the later bucket of the table, as in FramePack (a square image gets 640 x 608 (h x w)).
    """
    best, best_metric = None, None
    for bh, bw in buckets(resolution):
        metric = abs(h * bw - w * bh)
        if best_metric is None or metric <= best_metric:
            best, best_metric = (bh, bw), metric
    return best


def output_size(image_h: int, image_w: int, resolution: int = 640, width: int = 0, height: int = 0,
                node: str = "FramePackEncodeImage") -> tuple[int, int]:
    """(height, width) of the output: explicit width/height when both are given, else the bucket."""
    if bool(width) != bool(height):
        given, missing = ("width", "height") if width else ("height", "width")
        raise ValueError(f"{node}: input '{given}' is set but '{missing}' is 0: give both (multiples of 16) for an "
                         f"explicit size, or leave both at 0 to use the resolution bucket")
    if width and height:
        for name, v in (("width", width), ("height", height)):
            if v % 16 or v < 16:
                raise ValueError(f"{node}: input '{name}' is {v}; it must be a multiple of 16 (FramePack works on "
                                 f"16-pixel patches), or 0 to use the resolution bucket")
        return int(height), int(width)
    if not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"{node}: input 'resolution' is {resolution}; "
                         f"allowed range {MIN_RESOLUTION}..{MAX_RESOLUTION}")
    return find_nearest_bucket(image_h, image_w, resolution)


def fit_image(image: torch.Tensor, height: int, width: int, method: str = "lanczos") -> torch.Tensor:
    """Resize a ComfyUI IMAGE (B, H, W, C) to cover (height, width) and center-crop it."""
    import comfy.utils

    if image.shape[1] == height and image.shape[2] == width:
        return image
    samples = image.movedim(-1, 1)
    out = comfy.utils.common_upscale(samples, width, height, method, "center")
    return out.movedim(1, -1).clamp(0.0, 1.0)


def fit_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize a ComfyUI MASK (B, H, W) like `fit_image` (cover + center crop), bilinear."""
    import comfy.utils

    if mask.ndim == 2:
        mask = mask[None]
    if mask.shape[1] == height and mask.shape[2] == width:
        return mask
    return comfy.utils.common_upscale(mask[:, None], width, height, "bilinear", "center")[:, 0].clamp(0.0, 1.0)
