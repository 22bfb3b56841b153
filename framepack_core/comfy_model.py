"""FramePack as a ComfyUI model: the model config, the `BaseModel` subclass, and MODEL checks.

ComfyUI manages a diffusion model through three objects, and FramePack uses all three unchanged:

* a model config (`comfy.supported_models_base.BASE` subclass): latent format, sampling type,
  supported compute dtypes, memory factor. `FramePackModelConfig` below.
* a `comfy.model_base.BaseModel` subclass holding the network as `.diffusion_model`. Its
  `apply_model(x, sigma, c_crossattn=..., **extra)` turns sigma into the timestep (sigma·1000),
  casts the inputs to the compute dtype, runs ComfyUI's APPLY_MODEL wrappers and returns the
  denoised latent (x − v·sigma, ComfyUI's FLOW/CONST convention). `FramePackModel` below.
* a `comfy.model_patcher.ModelPatcher` around it, which `comfy.model_management.load_models_gpu`
  loads, partially loads (low VRAM) and offloads, and on which LoRA patches are registered.
  `framepack_core.loader.load_framepack` builds one.

The network is built with the `comfy.ops` layer family ComfyUI picks for the weight and compute
dtypes (`comfy.ops.pick_operations`, called by `BaseModel.__init__`): with fp8 weights (or bf16
weights on a device without bf16) that is `manual_cast`, whose layers cast each weight to the
compute dtype when they run, which is also what ComfyUI's low-VRAM partial loading relies on.
"""
from __future__ import annotations

import dataclasses
import math

import torch

import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.supported_models_base

from .model import FramePackConfig, FramePackTransformer

# Tokens the transformer sees besides the noisy latent's own, for the memory estimate:
# up to ~3.5 clean-context tokens per noisy token (1x + 2x + 4x history, musubi's default
# context), 729 SigLIP tokens and up to 512 text tokens.
_CLEAN_TOKENS_PER_NOISY_TOKEN = 3.5
_IMAGE_TOKENS = 729
_TEXT_TOKENS = 512


class NotFramePackModelError(ValueError):
    """A MODEL input that is not a FramePack model (raised by `require_framepack_model`)."""


def _build_transformer(*, dtype=None, device=None, operations=None, image_model=None, **config_fields):
    """`BaseModel.__init__` calls this as `unet_model(**unet_config, device=..., operations=...)`."""
    return FramePackTransformer(FramePackConfig(**config_fields), dtype=dtype, device=device, operations=operations)


class FramePackModelConfig(comfy.supported_models_base.BASE):
    """ComfyUI's description of a FramePack checkpoint (the counterpart of `supported_models.HunyuanVideo`).

    Built from a `FramePackConfig` (`FramePackModelConfig.from_config(cfg)`); `unet_config` then
    holds the config's fields (plain values, as ComfyUI's other model configs do) and the weight
    dtype that `set_inference_dtype` adds.
    """

    unet_config = {"image_model": "framepack_hunyuan_video"}
    unet_extra_config = {}
    latent_format = comfy.latent_formats.HunyuanVideo
    # FLOW (rectified flow): sigma in [0, 1], timestep = sigma * multiplier. FramePack's own
    # shift is applied by the pack's sampler schedule, so the model sampling object keeps shift 1.
    sampling_settings = {"shift": 1.0, "multiplier": 1000}
    # Activation bytes per token, in units of (hidden size x compute dtype size); see
    # `FramePackModel.memory_required`. Measured on an H100 at the released width (hidden 3072,
    # bf16, 256 text tokens, one forward): 640x640 with 1x/2x/4x context peaked at 559 MiB (bf16
    # weights) / 649 MiB (fp8 weights, manual cast), 960x960 at 1150 / 1239 MiB; 16 gives
    # 791 / 1635 MiB, ~1.25-1.4x above the measurements.
    memory_usage_factor = 16.0
    # FramePack runs in bf16 (the released weights) or fp32; fp16 activations overflow in
    # HunyuanVideo, so fp16 or fp8 weights are computed in bf16 (fp32 where bf16 is unsupported).
    supported_inference_dtypes = [torch.bfloat16, torch.float32]
    vae_key_prefix = ["vae."]
    text_encoder_key_prefix = ["text_encoders."]

    @classmethod
    def from_config(cls, config: FramePackConfig) -> "FramePackModelConfig":
        return cls(dict(cls.unet_config, **dataclasses.asdict(config)))

    @property
    def framepack_config(self) -> FramePackConfig:
        names = {f.name for f in dataclasses.fields(FramePackConfig)}
        return FramePackConfig(**{k: v for k, v in self.unet_config.items() if k in names})

    def model_type(self, state_dict=None, prefix=""):
        return comfy.model_base.ModelType.FLOW

    def get_model(self, state_dict=None, prefix="", device=None):
        return FramePackModel(self, device=device)

    def process_unet_state_dict_for_saving(self, state_dict):
        # Saved FramePack checkpoints use diffusers key names and no prefix, like the released files.
        return state_dict


class FramePackModel(comfy.model_base.BaseModel):
    """`BaseModel` whose `diffusion_model` is a `FramePackTransformer`.

    `device="meta"` builds the network without allocating its weights; the loader then assigns
    the checkpoint's tensors one by one (see `framepack_core.loader`).
    """

    def __init__(self, model_config: FramePackModelConfig, model_type=comfy.model_base.ModelType.FLOW, device=None):
        super().__init__(model_config, model_type, device=device, unet_model=_build_transformer)
        self.diffusion_model.requires_grad_(False)
        self.framepack_config = model_config.framepack_config
        if self.device is not None and torch.device(self.device).type == "meta":
            # The weights are not there yet; ModelPatcher sets the real device once they are.
            self.device = None

    def compute_dtype(self) -> torch.dtype:
        """The dtype the layers compute in: the manual-cast dtype when weights are cast, else the weights'."""
        return self.manual_cast_dtype if self.manual_cast_dtype is not None else self.get_dtype()

    def memory_required(self, input_shape, cond_shapes={}):
        """Bytes of activations one forward needs for a noisy latent of `input_shape` (B, C, T, H, W).

        Sequence length = noisy tokens + up to 3.5x as many clean-context tokens + SigLIP + text
        tokens; each token costs `memory_usage_factor` hidden-size vectors at the peak.
        640x640, batch 1, bf16: ≈ 8.4k tokens → ≈ 0.8 GiB (measured peak: 0.55-0.65 GiB).
        """
        cfg = self.framepack_config
        batch = input_shape[0]
        t, h, w = (tuple(input_shape[2:]) if len(input_shape) == 5 else (1,) + tuple(input_shape[2:]))
        noisy = math.ceil(t / cfg.patch_size_t) * math.ceil(h / cfg.patch_size) * math.ceil(w / cfg.patch_size)
        tokens = noisy * (1.0 + _CLEAN_TOKENS_PER_NOISY_TOKEN) + _IMAGE_TOKENS + _TEXT_TOKENS
        hidden = cfg.num_attention_heads * cfg.attention_head_dim
        dtype_size = comfy.model_management.dtype_size(self.compute_dtype())
        return batch * tokens * hidden * self.memory_usage_factor * dtype_size


def is_framepack_model(model_patcher) -> bool:
    """True if `model_patcher` is a MODEL made by the FramePack loader (compared by value, not class)."""
    model = getattr(model_patcher, "model", None)
    return (
        isinstance(model, comfy.model_base.BaseModel)
        and getattr(model, "framepack_config", None) is not None
        and hasattr(model, "diffusion_model")
    )


def require_framepack_model(model_patcher, node: str, input_name: str = "model"):
    """Return `model_patcher` if it is a FramePack MODEL, else raise a clear `NotFramePackModelError`."""
    if is_framepack_model(model_patcher):
        return model_patcher
    model = getattr(model_patcher, "model", None)
    if model is None:
        found = f"a {type(model_patcher).__name__}, not a ComfyUI MODEL"
    else:
        found = f"a {type(model).__name__} model"
    raise NotFramePackModelError(
        f"{node}: input '{input_name}' is not a FramePack model (got {found}); expected a FramePack MODEL from "
        "the FramePackModelLoader node (FramePackI2V_HY / FramePack-F1 weights), not one from Load Diffusion "
        "Model / Load Checkpoint"
    )
