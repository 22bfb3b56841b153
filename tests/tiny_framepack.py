"""Tiny FramePack checkpoints for tests: the real architecture, random weights, real files.

Weights are made by diffusers' own `HunyuanVideoFramepackTransformer3DModel` (test-only
dependency) at a tiny configuration, so the files are exactly the diffusers-format safetensors
users have (`FramePackI2V_HY_bf16.safetensors` style: diffusers key names, no prefix), and the
same module serves as the numerical reference in the parity tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# Small enough for ~10 ms CPU forwards, large enough that every code path is exercised:
# 2 heads x 16 dims, 1 dual + 1 single + 1 refiner block, RoPE axes (4, 6, 6) summing to 16.
TINY_CONFIG = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=2,
    attention_head_dim=16,
    num_layers=1,
    num_single_layers=1,
    num_refiner_layers=1,
    mlp_ratio=4.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=32,
    pooled_projection_dim=16,
    rope_theta=256.0,
    rope_axes_dim=(4, 6, 6),
    image_condition_type=None,
    has_image_proj=True,
    image_proj_dim=24,
    has_clean_x_embedder=True,
)


def make_reference(seed: int = 0, config: dict | None = None):
    """The diffusers reference module with seeded random weights (float32, eval mode).

    diffusers initialises some projections to zero; every parameter is re-drawn so that no
    branch of the network is silently a no-op in the tests.
    """
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    torch.manual_seed(seed)
    model = HunyuanVideoFramepackTransformer3DModel(**(config or TINY_CONFIG)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") and p.ndim == 1:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1.0, p[0].numel() ** 0.5))
    return model


def reference_state_dict(seed: int = 0, config: dict | None = None) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in make_reference(seed, config).state_dict().items()}


def save_single_file(path: Path, seed: int = 0, dtype: torch.dtype = torch.float32, prefix: str = "",
                     config: dict | None = None) -> Path:
    """A single-file checkpoint, optionally cast and with a key prefix (e.g. 'diffusion_model.')."""
    sd = reference_state_dict(seed, config)
    sd = {prefix + k: v.to(dtype) for k, v in sd.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def save_diffusers_folder(folder: Path, seed: int = 0, dtype: torch.dtype = torch.float32, shards: int = 2,
                          config: dict | None = None) -> Path:
    """A diffusers folder: config.json, sharded safetensors and the index json, like lllyasviel/FramePackI2V_HY."""
    sd = reference_state_dict(seed, config)
    keys = sorted(sd)
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    per = (len(keys) + shards - 1) // shards
    for i in range(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].to(dtype) for k in keys[i * per:(i + 1) * per]}
        save_file(part, str(folder / name))
        weight_map.update({k: name for k in part})
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}, indent=1))
    cfg = dict(config or TINY_CONFIG, _class_name="HunyuanVideoFramepackTransformer3DModel")
    cfg["rope_axes_dim"] = list(cfg["rope_axes_dim"])
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    return folder
