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

import comfy.conds
import comfy.latent_formats
import comfy.model_base
import comfy.model_management
import comfy.supported_models_base

from .model import FramePackConfig, FramePackTransformer
from .sampler import DEFAULT_DISTILLED_GUIDANCE, effective_shift

# Tokens the transformer sees besides the noisy latent's own, for the memory estimate:
# up to ~3.5 clean-context tokens per noisy token (1x + 2x + 4x history, musubi's default
# context), 729 SigLIP tokens and up to 512 text tokens.
_CLEAN_TOKENS_PER_NOISY_TOKEN = 3.5
_IMAGE_TOKENS = 729
_TEXT_TOKENS = 512


class NotFramePackModelError(ValueError):
    """A MODEL input that is not a FramePack model (raised by `require_framepack_model`)."""

    # bare class name in ComfyUI's error report: see LayoutError in layout.py
    __module__ = "builtins"


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
    # FLOW (rectified flow): sigma in [0, 1], timestep = sigma * multiplier. FramePack's sigma warp
    # e^mu / (e^mu + 1/s - 1) is ComfyUI's flow time shift with shift = e^mu, so the model sampling
    # object carries FramePack's automatic shift at its standard 640x640 bucket (~2.07); ComfyUI's
    # schedulers (and the pack's "framepack" scheduler) read it. Other sizes: the FramePack Shift
    # node or ComfyUI's ModelSamplingSD3 set it, as ModelSamplingFlux does for Flux.
    sampling_settings = {"shift": effective_shift(0.0, 80, 80), "multiplier": 1000}
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

    # ---- ComfyUI sampling -------------------------------------------------------------------

    def extra_conds(self, **kwargs):
        """CONDITIONING values -> the transformer's keyword inputs (ComfyUI calls this once per cond).

        Reads the text (`cross_attn`, its `attention_mask`, `pooled_output`, as CLIPTextEncode with a
        hunyuan_video CLIP makes them), ComfyUI's standard `guidance` (FluxGuidance's key; FramePack's
        distilled guidance, default 10) and the layout's inputs that FramePackOneFrameConditioning
        attaches under the transformer's own argument names (see `LAYOUT_KEYS`).
        """
        out = super().extra_conds(**kwargs)
        context = kwargs.get("cross_attn")
        pooled = kwargs.get("pooled_output")
        if context is None or pooled is None:
            raise ValueError("FramePack: the conditioning has no text tokens or no pooled_output; encode the prompt "
                             "with CLIPTextEncode and a DualCLIPLoader of type hunyuan_video")
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones(context.shape[:2], dtype=torch.long)
        mask = mask.reshape(mask.shape[0], -1)
        if mask.shape[1] < context.shape[1]:
            # tokens appended after the encoder's mask was made (ConditioningConcat) are real tokens
            mask = torch.cat((mask, mask.new_ones(mask.shape[0], context.shape[1] - mask.shape[1])), 1)
        mask = mask[:, :context.shape[1]].expand(context.shape[0], -1)
        # Prompts of different lengths (e.g. cond and uncond) batch by zero-padding the tokens and
        # marking the padding invalid in the mask; the transformer then masks it out of attention.
        out["c_crossattn"] = CONDPaddedTokens(context)
        out["context_mask"] = CONDPaddedTokens(mask)
        out["pooled_output"] = comfy.conds.CONDRegular(pooled)
        guidance = kwargs.get("guidance", DEFAULT_DISTILLED_GUIDANCE)
        out["guidance"] = comfy.conds.CONDRegular(torch.FloatTensor([float(guidance) * 1000.0]))
        if kwargs.get("latent_indices") is None:
            raise ValueError("FramePack: the conditioning carries no one-frame layout; pass positive and negative "
                             "through FramePackOneFrameConditioning before the sampler")
        for key in LAYOUT_KEYS:
            value = kwargs.get(key)
            if value is None:
                continue
            out[key] = CONDIndices(value) if key.endswith("indices") else comfy.conds.CONDRegular(value)
        return out

    def apply_model(self, x, t, *args, **kwargs):
        # FramePack forms x0 = x - v * sigma from the latent as the transformer sees it (cast to the
        # compute dtype), not from the float32 latent: round x to the compute dtype first, so every
        # ComfyUI sampler reproduces FramePack's bf16 results. A no-op in float32.
        return super().apply_model(self.as_model_input(x), t, *args, **kwargs)

    def as_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` rounded to the compute dtype, kept in its own dtype."""
        dtype = self.compute_dtype()
        return x if x.dtype == dtype else x.to(dtype).to(x.dtype)

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


# The layout's inputs that FramePackOneFrameConditioning puts into CONDITIONING, under the
# transformer's keyword names (`FramePackTransformer.forward`).
LAYOUT_KEYS = ("latent_indices", "clean_latents", "clean_latent_indices", "clean_latents_2x",
               "clean_latent_2x_indices", "clean_latents_4x", "clean_latent_4x_indices", "image_embeds")


class CONDPaddedTokens(comfy.conds.CONDRegular):
    """Token-axis conditioning (text tokens (B, n, D) or their mask (B, n)) that batches across
    lengths by zero-padding dim 1 to the longest; a zero mask entry marks the padding invalid.

    (ComfyUI's CONDCrossAttn pads by repeating tokens, which is exact only for unmasked attention
    over the whole text; FramePack's refiner pools the text with its mask.)
    """

    def can_concat(self, other):
        a, b = self.cond, other.cond
        return a.ndim == b.ndim and a.shape[0] == b.shape[0] and a.shape[2:] == b.shape[2:] and a.device == b.device

    def concat(self, others):
        conds = [self.cond] + [o.cond for o in others]
        length = max(c.shape[1] for c in conds)
        padded = []
        for c in conds:
            if c.shape[1] < length:
                pad = c.new_zeros((c.shape[0], length - c.shape[1]) + tuple(c.shape[2:]))
                c = torch.cat((c, pad), 1)
            padded.append(c)
        return torch.cat(padded)


class CONDIndices(comfy.conds.CONDRegular):
    """Frame indices: 1-D (k,) shared by the batch, or (B, k) per sample (a sweep).

    A shared row stays 1-D through batching (one RoPE table for the whole batch); rows that differ
    are expanded to (B, k) and concatenated.
    """

    def process_cond(self, batch_size, **kwargs):
        if self.cond.ndim == 1:
            shared = self._copy_with(self.cond)
            shared.batch_size = batch_size
            return shared
        return super().process_cond(batch_size, **kwargs)

    def can_concat(self, other):
        return self.cond.shape[-1] == other.cond.shape[-1] and self.cond.device == other.cond.device

    def concat(self, others):
        items = [self] + list(others)
        if all(o.cond.ndim == 1 for o in items) and all(torch.equal(o.cond, self.cond) for o in items[1:]):
            return self.cond
        return torch.cat([o.cond.expand(o.batch_size, -1) if o.cond.ndim == 1 else o.cond for o in items])

    def size(self):
        return list(self.cond.reshape(-1, self.cond.shape[-1]).size())


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
