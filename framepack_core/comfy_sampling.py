"""FramePack's sampler as parts of ComfyUI's own sampling (spec section 4), and the one-frame conditioning.

ComfyUI samples any model with four parts; FramePack supplies the ones ComfyUI lacks and plugs them
into ComfyUI's mechanism, so `KSampler`, `SamplerCustomAdvanced`, CFG tools, step caches and
wrappers all apply to a FramePack MODEL:

* CONDITIONING: `one_frame_conditioning` attaches the layout's model inputs to positive and negative
  (as ComfyUI's `HunyuanImageToVideo` attaches its latents) and makes the empty target LATENT;
  `FramePackModel.extra_conds` turns them into the transformer's keyword inputs.
* SAMPLER: FramePack's flow-matching UniPC (bh1 / bh2) as a `KSAMPLER` (`unipc_ksampler`).
  `register_with_ksampler()` also lists it in the stock KSampler's sampler list, as
  `framepack_unipc_bh1` / `framepack_unipc_bh2`, and FramePack's schedule as the `framepack`
  scheduler: ComfyUI looks samplers up by name in `comfy.k_diffusion.sampling` and schedulers in
  `comfy.samplers.SCHEDULER_HANDLERS`, and builds its sampler / scheduler combos from the name
  lists in `comfy.samplers`; the pack adds its entries there when it is imported (no ComfyUI file
  is edited).
* SIGMAS: `sampler.sigma_schedule` (automatic shift from the latent size), or the `framepack`
  scheduler, which warps the same linear schedule by the MODEL's own shift.
* NOISE: `FramePackNoise`, musubi-tuner's draw: sample j from a CPU generator seeded seed + j
  (seed + batch_index[j] when the LATENT carries ComfyUI's `batch_index`). ComfyUI's own noise at
  batch 1 is the same draw; at batch > 1 it draws the whole batch from ONE generator seeded `seed`,
  so its sample j > 0 differs from musubi's image for seed + j.

`sample_one_frame` composes them the way ComfyUI's `KSampler` node composes `common_ksampler`; it
is what `FramePackOneFrameSampler` runs.
"""
from __future__ import annotations

import functools

import torch

import comfy.k_diffusion.sampling
import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.samplers
import comfy.utils
import node_helpers

from . import sampler as fp
from .comfy_model import LAYOUT_KEYS, require_framepack_model
from .layout import LayoutError, is_layout, layout_model_inputs

SCHEDULER_NAME = "framepack"
KSAMPLER_PREFIX = "framepack_"  # framepack_unipc_bh1, framepack_unipc_bh2 in KSampler's list


# ------------------------------------------------------------------------------------------------
# SAMPLER
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_flow_unipc(model, x, sigmas, extra_args=None, callback=None, disable=None, variant="bh1"):
    """A k-diffusion style sampler function (what `KSAMPLER` calls): FramePack's flow UniPC.

    `model(x, sigma)` is ComfyUI's denoiser (CFG, wrappers and caches inside it) returning x0.
    Returns the last x0 prediction, as FramePack does; the schedule must end at sigma 0.
    """
    extra_args = {} if extra_args is None else extra_args
    sig = sigmas.tolist()  # the UniPC coefficients are computed once, on the CPU, in float64
    if len(sig) < 2:
        return x
    if sig[-1] != 0.0:
        raise ValueError(f"FramePack UniPC: the sigmas must end at 0 (got {sig[-1]:.4g}); it returns the final "
                         f"x0 prediction and cannot stop half-way")
    s_in = x.new_ones([x.shape[0]])

    def denoise(xi, i):
        return model(xi, sigmas[i] * s_in, **extra_args)

    def on_step(i, x0, xi):
        if callback is not None:
            callback({"x": xi, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": x0})

    return fp.unipc_sample(denoise, x, sig, variant=variant, callback=on_step,
                           check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)


def unipc_ksampler(solver: str = "unipc_bh1") -> comfy.samplers.KSAMPLER:
    """FramePack's UniPC as ComfyUI's SAMPLER type (solver 'unipc_bh1' or 'unipc_bh2')."""
    if solver not in fp.SOLVERS:
        raise ValueError(f"input 'solver' is {solver!r}; allowed: {', '.join(fp.SOLVERS)}")
    return comfy.samplers.KSAMPLER(sample_flow_unipc, extra_options={"variant": solver.split("_")[-1]})


# ------------------------------------------------------------------------------------------------
# SIGMAS
# ------------------------------------------------------------------------------------------------


def framepack_scheduler(model_sampling, steps: int) -> torch.Tensor:
    """ComfyUI scheduler `framepack`: FramePack's linear schedule warped by the model's own shift
    (`model_sampling.shift`: ~2.07 as loaded, or what FramePackShift / ModelSamplingSD3 set)."""
    return fp.sigma_schedule(steps, float(getattr(model_sampling, "shift", 1.0)))


class FramePackModelSampling(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
    """ComfyUI's flow model sampling (as for SD3 / Flux / HunyuanVideo), with a chosen shift."""


def with_shift(model_patcher, shift: float):
    """A clone of the MODEL whose model sampling uses `shift` (the `framepack` scheduler reads it)."""
    ms = FramePackModelSampling(model_patcher.model.model_config)
    ms.set_parameters(shift=float(shift), multiplier=1000)
    m = model_patcher.clone()
    m.add_object_patch("model_sampling", ms)
    return m


def latent_hw(latent: dict, node: str) -> tuple[int, int]:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim not in (4, 5):
        raise ValueError(f"{node}: input 'latent' is not a LATENT (expected a dict with 'samples')")
    return int(samples.shape[-2]), int(samples.shape[-1])


# ------------------------------------------------------------------------------------------------
# NOISE
# ------------------------------------------------------------------------------------------------


class FramePackNoise:
    """ComfyUI's NOISE protocol (`seed`, `generate_noise(latent)`) with musubi-tuner's per-sample draw."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        offsets = input_latent.get("batch_index")
        if offsets is None:
            offsets = range(samples.shape[0])
        seeds = [self.seed + int(o) for o in offsets]
        return fp.noise_like(tuple(samples.shape), self.seed, seeds).to(samples.dtype)


# ------------------------------------------------------------------------------------------------
# CFG rescale as ComfyUI's sampler_cfg_function
# ------------------------------------------------------------------------------------------------


def rescale_cfg_function(guidance_rescale: float):
    """FramePack's guidance_rescale for `ModelPatcher.set_model_sampler_cfg_function`.

    ComfyUI passes x - x0 (sigma * velocity) as cond / uncond and expects the same back; FramePack
    forms them from the latent as the model saw it (rounded to the compute dtype).
    """

    def cfg(args):
        x = args["input"]
        model = args["model"]
        xr = model.as_model_input(x) if hasattr(model, "as_model_input") else x
        pos = xr - args["cond_denoised"]
        neg = xr - args["uncond_denoised"]
        guided = fp.rescale_cfg(neg + args["cond_scale"] * (pos - neg), pos, guidance_rescale)
        return x - (xr - guided)

    return cfg


def with_cfg_rescale(model_patcher, guidance_rescale: float):
    """A clone of the MODEL whose CFG applies FramePack's rescale (the MODEL itself when it is 0)."""
    if guidance_rescale == 0.0:
        return model_patcher
    m = model_patcher.clone()
    m.set_model_sampler_cfg_function(rescale_cfg_function(guidance_rescale))
    return m


# ------------------------------------------------------------------------------------------------
# CONDITIONING
# ------------------------------------------------------------------------------------------------


def check_text_conditioning(conditioning, name: str, node: str) -> None:
    """Clear errors, before any model work, for conditioning FramePack cannot read."""
    if not conditioning or not isinstance(conditioning, (list, tuple)) or not conditioning[0]:
        raise ValueError(f"{node}: input '{name}' is empty: connect a CLIPTextEncode output (DualCLIPLoader type "
                         f"hunyuan_video)")
    for cond, extra in conditioning:
        if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[1] == 0:
            raise ValueError(f"{node}: input '{name}' has no text tokens (expected a (1, n, 4096) tensor)")
        if extra.get("pooled_output") is None:
            raise ValueError(f"{node}: input '{name}' has no pooled_output: FramePack needs the CLIP-L pooled vector; "
                             f"encode the prompt with a hunyuan_video DualCLIPLoader + CLIPTextEncode")


def one_frame_conditioning(positive, negative, layout, batch_size: int = 1, node: str = "FramePackOneFrameConditioning"):
    """(positive, negative, latent): the layout's model inputs attached to both conditionings, and the
    empty LATENT of the target frame (B, 16, 1, h, w).

    B = layout values x start images x batch_size, ordered value-major, then start image, then seed;
    when values repeat the seeds, the LATENT's `batch_index` says which seed offset each sample uses.
    """
    if not is_layout(layout):
        raise ValueError(f"{node}: input 'layout' must come from FramePackOneFrameLayout or FramePackLayoutSweep")
    if not layout.controls:
        raise ValueError(f"{node}: input 'layout' has no start image (a layout of settings only, for training): "
                         f"connect a FramePackEncodeImage to the layout node's 'start'")
    if batch_size < 1:
        raise ValueError(f"{node}: input 'batch_size' is {batch_size}; allowed: 1 or more")
    check_text_conditioning(positive, "positive", node)
    check_text_conditioning(negative, "negative", node)
    try:
        inputs, offsets = layout_model_inputs(layout, batch_size, device=torch.device("cpu"))
    except LayoutError as e:
        raise e.at(node) from None
    values = {k: inputs[k] for k in LAYOUT_KEYS if inputs.get(k) is not None}
    h, w = layout.controls[0].latent_hw
    latent = {"samples": torch.zeros(len(offsets), fp.LATENT_CHANNELS, 1, h, w)}
    if offsets != list(range(len(offsets))):
        latent["batch_index"] = offsets
    return (node_helpers.conditioning_set_values(positive, values),
            node_helpers.conditioning_set_values(negative, values), latent)


# ------------------------------------------------------------------------------------------------
# The pack's sampler node, composed of the parts above
# ------------------------------------------------------------------------------------------------


def sample_one_frame(model, positive, negative, layout, seed: int, steps: int = 25,
                     distilled_guidance: float = fp.DEFAULT_DISTILLED_GUIDANCE, cfg: float = 1.0,
                     guidance_rescale: float = 0.0, shift: float = 0.0, solver: str = "unipc_bh1",
                     batch_size: int = 1, callback=None, node: str = fp.NODE) -> dict:
    """FramePack's one-frame sampling through ComfyUI's: returns the output LATENT (unscaled, as VAE Decode takes it).

    Every input is checked before the model is loaded. `callback(step, x0, x, total_steps)` is
    ComfyUI's preview callback.
    """
    if solver not in fp.SOLVERS:
        raise ValueError(f"{node}: input 'solver' is {solver!r}; allowed: {', '.join(fp.SOLVERS)}")
    if steps < 1:
        raise ValueError(f"{node}: input 'steps' is {steps}; allowed: 1 or more")
    require_framepack_model(model, node)
    positive, negative, latent = one_frame_conditioning(positive, negative, layout, batch_size, node)
    guidance = {"guidance": float(distilled_guidance)}  # both passes see the same distilled guidance
    positive = node_helpers.conditioning_set_values(positive, guidance)
    negative = node_helpers.conditioning_set_values(negative, guidance)
    h, w = latent_hw(latent, node)
    sigmas = fp.sigma_schedule(steps, shift, h, w)
    noise = FramePackNoise(seed).generate_noise(latent)
    if cfg != 1.0:
        model = with_cfg_rescale(model, guidance_rescale)
    samples = comfy.sample.sample_custom(model, noise, cfg, unipc_ksampler(solver), sigmas, positive, negative,
                                         latent["samples"], callback=callback,
                                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    out = dict(latent)
    out["samples"] = samples
    return out


# ------------------------------------------------------------------------------------------------
# Listing the sampler and scheduler in ComfyUI's own combos
# ------------------------------------------------------------------------------------------------


def _append_once(names: list, name: str) -> None:
    if name not in names:
        names.append(name)


def register_with_ksampler() -> None:
    """Adds framepack_unipc_bh1 / _bh2 and the framepack scheduler to ComfyUI's sampler and scheduler
    lists (KSampler, KSamplerSelect, BasicScheduler...). Safe to call twice."""
    for solver in fp.SOLVERS:
        name = KSAMPLER_PREFIX + solver
        setattr(comfy.k_diffusion.sampling, "sample_" + name,
                functools.partial(sample_flow_unipc, variant=solver.split("_")[-1]))
        _append_once(comfy.samplers.KSAMPLER_NAMES, name)
        _append_once(comfy.samplers.SAMPLER_NAMES, name)
        _append_once(comfy.samplers.KSampler.SAMPLERS, name)
    comfy.samplers.SCHEDULER_HANDLERS[SCHEDULER_NAME] = comfy.samplers.SchedulerHandler(framepack_scheduler)
    _append_once(comfy.samplers.SCHEDULER_NAMES, SCHEDULER_NAME)
    _append_once(comfy.samplers.KSampler.SCHEDULERS, SCHEDULER_NAME)

