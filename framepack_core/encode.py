"""Encoding an image into a `Control`: fit to the output size, VAE latent, latent-size mask, SigLIP.

Follows spec sections 1.5 and 5: every image is fitted (resize to cover + center crop) to the output
size, VAE-encoded alone as a one-frame video and multiplied by the VAE scale 0.476986 (ComfyUI's
`latent_formats.HunyuanVideo`); its mask becomes a latent-size 0..1 multiplier the way musubi-tuner
makes it (grey 8-bit, PIL LANCZOS, / 255); SigLIP sees the fitted image squashed to 384 x 384 (what
FramePack's Siglip image processor does; ComfyUI's `encode_image(crop=False)`).

One deliberate difference from musubi-tuner: musubi resizes a mask (or the alpha channel) from the
ORIGINAL image straight to the latent size, while the image itself is cropped to the bucket, so
the two drift apart when the image's aspect ratio differs from the bucket's. Here the mask is first
fitted exactly like the image (cover + center crop), then taken to the latent size musubi's way.
For an image already at the output size both give the same mask.
"""
from __future__ import annotations

import torch

from .buckets import fit_image, fit_mask, output_size
from .layout import Control, LayoutError, check_control_batches, mask_to_latent

NODE = "FramePackEncodeImage"
MASK_MODES = ("keep where mask is 0 (LoadImage alpha)", "keep where mask is 1")


def _latent_format():
    import comfy.latent_formats

    return comfy.latent_formats.HunyuanVideo()


def vae_encode_frames(vae, pixels: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) -> (B, 16, 1, h, w) model-space latents, each image encoded alone as a one-frame video.

    (ComfyUI's video VAEs read a batch of images as the frames of one video, so images go one by one.)
    """
    out = []
    for b in range(pixels.shape[0]):
        lat = vae.encode(pixels[b:b + 1, :, :, :3])
        if lat.ndim == 4:  # an image VAE: (1, C, h, w)
            lat = lat.unsqueeze(2)
        out.append(lat[:, :, :1])
    latent = torch.cat(out, dim=0).float()
    if latent.shape[1] != 16:  # a VAE object that does not say its channel count up front
        raise ValueError(f"{NODE}: input 'vae' produced {latent.shape[1]}-channel latents; FramePack needs the "
                         f"HunyuanVideo VAE (16 channels, hunyuan_video_vae_bf16.safetensors)")
    return _latent_format().process_in(latent)


def encode_control(image: torch.Tensor, vae, clip_vision=None, mask: torch.Tensor | None = None,
                   resolution: int = 640, width: int = 0, height: int = 0,
                   mask_mode: str = MASK_MODES[0], node: str = NODE) -> Control:
    if image is None or not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise ValueError(f"{node}: input 'image' must be a ComfyUI IMAGE (B, H, W, 3 or 4)")
    if mask_mode not in MASK_MODES:
        raise ValueError(f"{node}: input 'mask_mode' is {mask_mode!r}; allowed: {', '.join(MASK_MODES)}")
    if vae is None:
        raise ValueError(f"{node}: input 'vae' is missing: connect the HunyuanVideo VAE (VAELoader)")
    channels = getattr(vae, "latent_channels", None)  # ComfyUI's VAE says it before encoding anything
    if channels is not None and channels != 16:
        raise ValueError(f"{node}: input 'vae' makes {channels}-channel latents; FramePack needs the HunyuanVideo "
                         f"VAE (16 channels, hunyuan_video_vae_bf16.safetensors)")
    keep = None  # (B, H, W) 1 = the model sees this area
    mismatch = None
    if mask is not None:
        m = mask if mask.ndim == 3 else mask[None]
        if m.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"{node}: input 'mask' has a batch of {m.shape[0]} but 'image' has {image.shape[0]}")
        keep = 1.0 - m if mask_mode == MASK_MODES[0] else m
        if tuple(m.shape[1:]) != tuple(image.shape[1:3]):
            # Legal (both are fitted to the output size below), but each on its own: the mask may then
            # hide another area than the one painted, so the layout node warns.
            mismatch = (tuple(m.shape[1:]), tuple(image.shape[1:3]))
    elif image.shape[-1] == 4:
        keep = image[..., 3]  # an RGBA image's alpha is its mask (opaque = keep)
    rgb = image[..., :3]
    H, W = output_size(rgb.shape[1], rgb.shape[2], resolution, width, height, node)
    pixels = fit_image(rgb, H, W)
    latent = vae_encode_frames(vae, pixels)
    latent_mask = source_mask = None
    if keep is not None:
        source_mask = fit_mask(keep.float(), H, W)
        if source_mask.shape[0] == 1 and pixels.shape[0] > 1:
            source_mask = source_mask.expand(pixels.shape[0], -1, -1)
        latent_mask = mask_to_latent(source_mask, latent.shape[-2], latent.shape[-1])
    embeds = None
    if clip_vision is not None:
        embeds = clip_vision.encode_image(pixels, crop=False)["last_hidden_state"].float()
    return Control(latent=latent, mask=latent_mask, image_embeds=embeds, pixels=pixels, vae=vae,
                   source_mask=source_mask, mask_size_mismatch=mismatch)


def refit_control(control: Control, height: int, width: int) -> Control:
    """Re-fit a control to another output size (pixels re-fitted and re-encoded with its own VAE)."""
    pixels = fit_image(control.pixels, height, width)
    latent = vae_encode_frames(control.vae, pixels)
    mask = source = None
    if control.source_mask is not None:
        source = fit_mask(control.source_mask, height, width)
        mask = mask_to_latent(source, latent.shape[-2], latent.shape[-1])
    return Control(latent=latent, mask=mask, image_embeds=control.image_embeds, pixels=pixels, vae=control.vae,
                   source_mask=source, mask_size_mismatch=control.mask_size_mismatch)


def fit_controls(controls: list[Control], node: str) -> tuple[tuple[Control, ...], list[str]]:
    """Check batches and re-fit controls of another size to the start's size; returns (controls, warnings):
    the re-fits and the masks that had another size than their image.

    Every check runs before the first re-encoding, so a bad control never follows VAE work."""
    try:
        check_control_batches(controls)
    except LayoutError as e:
        raise e.at(node) from None
    start = controls[0]
    if start.pixels is not None:
        H, W = start.pixels.shape[1], start.pixels.shape[2]
    else:
        H, W = start.latent_hw[0] * 8, start.latent_hw[1] * 8
    refit = [i for i, c in enumerate(controls[1:], 1) if c.latent_hw != start.latent_hw]
    for i in refit:
        c = controls[i]
        if c.pixels is None or c.vae is None:
            raise ValueError(f"{node}: input 'controls': control {i} has latent size {c.latent_hw} but the start has "
                             f"{start.latent_hw} and it carries no image to re-fit; encode it with "
                             f"FramePackEncodeImage")
    out, warnings = list(controls), []
    for i, c in enumerate(controls):
        if c.mask_size_mismatch:
            (mh, mw), (ih, iw) = c.mask_size_mismatch
            pw, ph = (c.pixels.shape[2], c.pixels.shape[1]) if c.pixels is not None else (iw, ih)
            warnings.append(f"{'start' if i == 0 else f'control {i}'}'s mask is {mw}x{mh} px but its image "
                            f"{iw}x{ih} px; each was fitted to {pw}x{ph} px on its own (resize to cover, centre "
                            f"crop), so the mask may not line up with the picture")
    for i in refit:
        old_h, old_w = out[i].pixels.shape[1], out[i].pixels.shape[2]
        out[i] = refit_control(out[i], H, W)
        warnings.append(f"control {i} was {old_w}x{old_h} px; re-fitted to the start's {W}x{H} px")
    return tuple(out), warnings
