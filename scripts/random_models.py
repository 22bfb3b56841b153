"""Random-weight model files under the standard FramePack file names, for the demo and the tests.

ComfyUI fixes the configurations of the HunyuanVideo VAE, SigLIP and CLIP-L (it detects them
from the weight keys and shapes), so those three are made at their REAL size with random
weights: the state dicts come from ComfyUI's own model classes (built on the meta device, so
nothing is allocated until the random tensors are drawn) and are saved in half precision. The
FramePack transformer is the users' diffusers format at a tiny width with the REAL input and
output sizes (text 4096, pooled 768, SigLIP 1152, 16 latent channels), made by
`tests/tiny_framepack.py` with diffusers' own class.

The LLaVA-Llama-3 text encoder (8 B parameters) is not made: the runs swap DualCLIPLoader +
CLIPTextEncode for the test node `FPTestConditioning` (see `swap_text_encoder`).

Files are generated once into a cache folder (seeded, so every run gets the same bytes) and
linked into a ComfyUI models folder. Needs ComfyUI's `comfy` package importable.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
VERSION = 1  # bump when the files' contents change, so stale caches are not reused

# folder (ComfyUI model type) -> file name, the names the example workflows use
FILES = {
    "diffusion_models": "FramePackI2V_HY_bf16.safetensors",
    "vae": "hunyuan_video_vae_bf16.safetensors",
    "clip_vision": "sigclip_vision_patch14_384.safetensors",
    "text_encoders": "clip_l.safetensors",
    "loras": "kisekaeichi_lora.safetensors",
}

# What the random LoRA's header says, in musubi-tuner's --one_frame_inference spelling: the
# kisekaeichi recipe, so the LoRA example's "from LoRA" preset resolves to it.
LORA_COMMENT = "kisekaeichi one-frame LoRA: target_index=1,control_index=0;10,no_post,no_2x,no_4x"
LORA_TARGETS = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "proj_mlp", "proj_out")

# The tiny FramePack of the tests (tests/tiny_framepack.py, 2 heads x 16, one block of each kind)
# with the real input/output dims, so the real SigLIP and the hunyuan_video conditioning fit it.
REAL_IO_DIMS = dict(text_embed_dim=4096, pooled_projection_dim=768, image_proj_dim=1152)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "framepack_oneframe" / f"random-models-v{VERSION}"


def _shapes(module_factory) -> dict[str, tuple[torch.Size, torch.dtype]]:
    with torch.device("meta"):
        module = module_factory()
    return {k: (v.shape, v.dtype) for k, v in module.state_dict().items()}


def _random_state_dict(shapes, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Weights ~ N(0, 1/fan_in) (activations stay of order 1), norm scales 1, biases 0."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(shapes):
        shape, _ = shapes[key]
        if key.endswith("bias"):
            t = torch.zeros(shape)
        elif len(shape) == 1:  # norm scales and other per-channel vectors
            t = torch.ones(shape)
        else:
            fan_in = max(1, torch.Size(shape[1:]).numel())
            t = torch.randn(shape, generator=g) / fan_in ** 0.5
        sd[key] = t.to(dtype).contiguous()
    return sd


def _vae_shapes():
    from comfy.ldm.models.autoencoder import AutoencoderKL

    # The HunyuanVideo VAE as comfy/sd.py builds it for "decoder.conv_in.conv.weight" files.
    ddconfig = {'double_z': True, 'z_channels': 16, 'resolution': 256, 'in_channels': 3, 'out_ch': 3, 'ch': 128,
                'ch_mult': [1, 2, 4, 4], 'num_res_blocks': 2, 'attn_resolutions': [], 'dropout': 0.0,
                'conv3d': True, 'time_compress': 4}
    return _shapes(lambda: AutoencoderKL(ddconfig=ddconfig, embed_dim=16))


def _siglip_shapes():
    import comfy.clip_model
    import comfy.clip_vision
    import comfy.ops

    config = json.loads((Path(comfy.clip_vision.__file__).parent / "clip_vision_siglip_384.json").read_text())
    return _shapes(lambda: comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, None, comfy.ops.manual_cast))


def _clip_l_shapes():
    import comfy.clip_model
    import comfy.ops
    import comfy.sd1_clip

    config = json.loads((Path(comfy.sd1_clip.__file__).parent / "sd1_clip_config.json").read_text())
    return _shapes(lambda: comfy.clip_model.CLIPTextModel(config, torch.float32, None, comfy.ops.manual_cast))


def _load_tiny_framepack():
    spec = importlib.util.spec_from_file_location("_fp1f_tiny_framepack", REPO_ROOT / "tests" / "tiny_framepack.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_framepack_state_dict() -> dict[str, torch.Tensor]:
    tiny = _load_tiny_framepack()
    return tiny.reference_state_dict(4, dict(tiny.TINY_CONFIG, **REAL_IO_DIMS))


def _random_lora(framepack_sd: dict[str, torch.Tensor], seed: int, rank: int = 4) -> dict[str, torch.Tensor]:
    """A musubi-tuner-format LoRA (lora_unet_<module>.lora_down/lora_up/alpha) for the tiny FramePack."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key in sorted(framepack_sd):
        module = key[: -len(".weight")]
        if not key.endswith(".weight") or framepack_sd[key].ndim != 2 or "blocks." not in module:
            continue
        if not module.endswith(LORA_TARGETS):
            continue
        rows, cols = framepack_sd[key].shape
        name = "lora_unet_" + module.replace(".", "_")
        sd[name + ".lora_down.weight"] = (torch.randn(rank, cols, generator=g) / cols ** 0.5).to(torch.bfloat16)
        sd[name + ".lora_up.weight"] = (torch.randn(rows, rank, generator=g) * 0.1).to(torch.bfloat16)
        sd[name + ".alpha"] = torch.tensor(float(rank))
    return sd


def _save(sd: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata=metadata)
    tmp.replace(path)  # atomic: a half-written file is never taken for a finished one


def build_cache(cache_dir: Path | None = None, log=print) -> Path:
    """Make every random model file in `cache_dir` (skipping those already there); return it."""
    cache_dir = Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    makers = {
        "vae": lambda: _random_state_dict(_vae_shapes(), seed=1, dtype=torch.bfloat16),
        "clip_vision": lambda: _random_state_dict(_siglip_shapes(), seed=2, dtype=torch.float16),
        "text_encoders": lambda: _random_state_dict(_clip_l_shapes(), seed=3, dtype=torch.float16),
        "diffusion_models": lambda: {
            k: v.to(torch.bfloat16) for k, v in _tiny_framepack_state_dict().items()
        },
        "loras": lambda: _random_lora(_tiny_framepack_state_dict(), seed=5),
    }
    metadata = {"loras": {"ss_base_model_version": "framepack", "ss_training_comment": LORA_COMMENT}}
    # The sizes the files had when made: a file changed since (e.g. something wrote through a link
    # into the cache) is made again rather than silently reused.
    manifest_path = cache_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for folder, name in FILES.items():
        path = cache_dir / folder / name
        key = f"{folder}/{name}"
        if path.exists() and manifest.get(key) == path.stat().st_size:
            continue
        log(f"making random-weight {folder}/{name} ...")
        path.parent.mkdir(parents=True, exist_ok=True)
        _save(makers[folder](), path, metadata.get(folder))
        manifest[key] = path.stat().st_size
        manifest_path.write_text(json.dumps(manifest, indent=1))
    return cache_dir


def install(models_dir: Path, cache_dir: Path | None = None, log=print) -> dict[str, Path]:
    """Link the random model files into a ComfyUI models folder under the standard names."""
    cache_dir = build_cache(cache_dir, log)
    placed = {}
    for folder, name in FILES.items():
        link = Path(models_dir) / folder / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(cache_dir / folder / name)
        placed[folder] = link
    return placed


if __name__ == "__main__":
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--models-dir", type=Path, default=None, help="also link the files into this models folder")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from comfy_env import add_comfy_to_path

    add_comfy_to_path()
    cache = build_cache(args.cache_dir)
    if args.models_dir:
        install(args.models_dir, cache)
    print(cache)
