"""FramePack's one-frame sampler (spec section 4): noise, sigma schedule, CFG and flow-matching UniPC.

* Noise: sample j of a batch is `torch.randn((1, 16, 1, h, w), generator=Generator("cpu").manual_seed(seed + j))`
  in float32. musubi-tuner generates one image per call with a CPU generator seeded with the seed
  (and a batch of prompts gets one seed each), so sample 0 of a batch is exactly musubi's image for
  `seed`, and sample j is musubi's image for `seed + j`.
* Schedule: sigmas = linspace(1, 0, steps + 1) warped by s -> e^mu / (e^mu + 1/s - 1), mu = ln(shift)
  or, for shift 0, mu = min(0.5 + (seq - 256) * 0.65 / 3840, ln 7) with seq = T * (H/16) * (W/16) of
  the noisy latent (640 x 640 -> seq 1600 -> shift ~2.07).
* Model: the ComfyUI MODEL's `apply_model` (timestep = sigma * 1000 inside ComfyUI's model sampling)
  returns x0 = x - v * sigma. The latent is cast to the compute dtype before the call, so x0 is formed
  in float32 from that cast latent, as FramePack does.
* CFG: skipped entirely at cfg == 1; else v = v_neg + cfg * (v_pos - v_neg), then rescaled toward the
  positive's standard deviation by `guidance_rescale`.
* Solver: UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling
  of Diffusion Models", Algorithm 2 / multistep UniP-p + UniC-p, data prediction) for the flow
  x_sigma = (1 - sigma) x0 + sigma * noise, written with alpha = 1 and lambda = -log(sigma): the
  first-order step is x_t = (sigma_t / sigma_s) x_s + (1 - sigma_t / sigma_s) x0_s, which is exact for
  this flow. B(h) = h ("bh1") or e^h - 1 ("bh2"); order min(3, steps - 1). The model is evaluated at
  sigmas[0 .. steps-1] (never at sigma = 0) and the last x0 prediction is returned.
  All step coefficients depend only on the schedule, so they are computed once on the CPU in float64
  and every step is pure tensor arithmetic on the device (no host-device syncs inside a step).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

NODE = "FramePackOneFrameSampler"
SOLVERS = ("unipc_bh1", "unipc_bh2")
LATENT_CHANNELS = 16


# ------------------------------------------------------------------------------------------------
# Noise and schedule
# ------------------------------------------------------------------------------------------------


def initial_noise(seed: int, batch: int, latent_h: int, latent_w: int,
                  seeds: Sequence[int] | None = None) -> torch.Tensor:
    """(batch, 16, 1, h, w) float32 on the CPU; sample j drawn alone from a CPU generator seeded
    seed + j (or seeds[j] when given)."""
    samples = []
    for j in range(batch):
        s = int(seed) + j if seeds is None else int(seeds[j])
        g = torch.Generator("cpu").manual_seed(s % 2**64)  # the seed widget goes up to 2**64 - 1
        samples.append(torch.randn((1, LATENT_CHANNELS, 1, latent_h, latent_w), generator=g, dtype=torch.float32))
    return torch.cat(samples, dim=0)


def auto_mu(latent_frames: int, latent_h: int, latent_w: int) -> float:
    """mu from the noisy latent's sequence length (2x2 patches): linear 256 -> 0.5, 4096 -> 1.15, capped at ln 7."""
    seq = latent_frames * (latent_h // 2) * (latent_w // 2)
    return min(0.5 + (seq - 256) * (0.65 / 3840.0), math.log(7.0))


def sigma_schedule(steps: int, shift: float = 0.0, latent_h: int = 80, latent_w: int = 80,
                   latent_frames: int = 1) -> torch.Tensor:
    """steps + 1 float32 sigmas from 1 down to 0 (shift 0 = automatic from the resolution)."""
    mu = math.log(shift) if shift and shift > 0 else auto_mu(latent_frames, latent_h, latent_w)
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)
    e = math.exp(mu)
    return e / (e + (1.0 / s - 1.0))


def effective_shift(shift: float, latent_h: int, latent_w: int) -> float:
    return shift if shift and shift > 0 else math.exp(auto_mu(1, latent_h, latent_w))


# ------------------------------------------------------------------------------------------------
# UniPC for flow matching
# ------------------------------------------------------------------------------------------------


@dataclass
class UniPCStep:
    """Coefficients of one UniPC update from sigma_prev to sigma (k = number of past x0 used)."""

    ratio: float  # sigma / sigma_prev
    phi1: float  # e^{-h} - 1, h = lambda - lambda_prev
    bh: float  # B(h)
    r: list[float]  # r_m = (lambda_m - lambda_prev) / h for the older points m = 1 .. k-1
    rho_p: list[float]  # predictor weights of D_1 .. D_{k-1}
    rho_c: list[float]  # corrector weights of D_1 .. D_{k-1} and, last, of D_t


def unipc_plan(sigmas: Sequence[float], variant: str = "bh1") -> tuple[int, list[UniPCStep | None]]:
    """Float64 coefficients for every step; plan[i] updates from sigmas[i-1] to sigmas[i] (plan[0] is None)."""
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unknown UniPC variant {variant!r}; allowed bh1, bh2")
    sig = [float(s) for s in sigmas]
    n = len(sig) - 1  # model evaluations: at sig[0] .. sig[n-1]
    order = min(3, n - 1)
    lam = [-math.log(s) for s in sig[:n]]
    plan: list[UniPCStep | None] = [None]
    for i in range(1, n):
        k = min(i, order)
        h = lam[i] - lam[i - 1]
        hh = -h  # data prediction: the exponential integrator works with e^{-h}
        phi1 = math.expm1(hh)
        bh = hh if variant == "bh1" else math.expm1(hh)
        r = [(lam[i - 1 - m] - lam[i - 1]) / h for m in range(1, k)]
        rs = np.array(r + [1.0], dtype=np.float64)
        # b_j = j! * phi_{j+1}(hh) * hh / B(h) through the recursion phi_{j+1} = (phi_j - 1/j!) / hh
        b, g, fact = [], phi1 / hh - 1.0, 1.0
        for j in range(1, k + 1):
            b.append(g * fact / bh)
            fact *= j + 1
            g = g / hh - 1.0 / fact
        b = np.array(b, dtype=np.float64)
        R = np.stack([rs ** (j - 1) for j in range(1, k + 1)])
        if k == 1:
            rho_p = []
            rho_c = [0.5]
        else:
            rho_p = [0.5] if k == 2 else list(np.linalg.solve(R[:-1, :-1], b[:-1]))
            rho_c = list(np.linalg.solve(R, b))
        plan.append(UniPCStep(ratio=sig[i] / sig[i - 1], phi1=phi1, bh=bh, r=r,
                              rho_p=[float(v) for v in rho_p], rho_c=[float(v) for v in rho_c]))
    return order, plan


def unipc_sample(denoise: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, sigmas: Sequence[float],
                 variant: str = "bh1", callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                 check_interrupt: Callable[[], None] | None = None) -> torch.Tensor:
    """Flow-matching UniPC. `denoise(x, i)` returns x0 predicted at sigmas[i]; returns the last x0.

    `callback(i, x0, x)` is called after each model evaluation; `check_interrupt()` before each.
    """
    order, plan = unipc_plan(sigmas, variant)
    n = len(plan)
    history: list[torch.Tensor] = []  # past x0 predictions, most recent last
    for i in range(n):
        if check_interrupt is not None:
            check_interrupt()
        if i == 0:
            x0 = denoise(x, 0)
        else:
            st = plan[i]
            m0 = history[-1]
            k = len(st.rho_c) if len(st.rho_c) > 1 else 1
            # D_m = (x0_m - x0_prev) / r_m for the older points
            ds = [(history[-1 - m] - m0) / st.r[m - 1] for m in range(1, k)]
            x_lin = st.ratio * x - st.phi1 * m0
            x_pred = x_lin
            for rho, d in zip(st.rho_p, ds):
                x_pred = x_pred - (st.bh * rho) * d
            x0 = denoise(x_pred, i)
            if i < n - 1:  # the corrector's x would only feed a next step
                corr = st.rho_c[-1] * (x0 - m0)
                for rho, d in zip(st.rho_c[:-1], ds):
                    corr = corr + rho * d
                x = x_lin - st.bh * corr
            else:
                x = x_pred
        history.append(x0)
        history = history[-max(order, 1):]
        if callback is not None:
            callback(i, x0, x)
    return history[-1]


# ------------------------------------------------------------------------------------------------
# CFG
# ------------------------------------------------------------------------------------------------


def rescale_cfg(v_cfg: torch.Tensor, v_pos: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Blend the CFG prediction with itself rescaled to the positive prediction's per-sample std."""
    if guidance_rescale == 0:
        return v_cfg
    dims = list(range(1, v_cfg.ndim))
    rescaled = v_cfg * (v_pos.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * v_cfg


def cfg_x0(x: torch.Tensor, sigma: float, x0_pos: torch.Tensor, x0_neg: torch.Tensor | None, cfg: float,
           guidance_rescale: float) -> torch.Tensor:
    """x0 after real CFG (on velocities v = (x - x0) / sigma) with rescale; x0_pos when cfg == 1."""
    if cfg == 1.0 or x0_neg is None:
        return x0_pos
    v_pos = (x - x0_pos) / sigma
    v_neg = (x - x0_neg) / sigma
    v = rescale_cfg(v_neg + cfg * (v_pos - v_neg), v_pos, guidance_rescale)
    return x - v * sigma


# ------------------------------------------------------------------------------------------------
# Conditioning
# ------------------------------------------------------------------------------------------------


def text_inputs(conditioning, name: str, batch: int, node: str = NODE) -> dict:
    """CONDITIONING from CLIPTextEncode (hunyuan_video) -> context, context_mask, pooled_output for a batch."""
    if not conditioning or not isinstance(conditioning, (list, tuple)) or not conditioning[0]:
        raise ValueError(f"{node}: input '{name}' is empty: connect a CLIPTextEncode output (DualCLIPLoader type "
                         f"hunyuan_video)")
    if len(conditioning) > 1:
        logging.warning("%s: '%s' has %d conditioning entries; FramePack uses the first only", node, name,
                        len(conditioning))
    cond, extra = conditioning[0][0], conditioning[0][1]
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[1] == 0:
        raise ValueError(f"{node}: input '{name}' has no text tokens (expected a (1, n, 4096) tensor)")
    pooled = extra.get("pooled_output")
    if pooled is None:
        raise ValueError(f"{node}: input '{name}' has no pooled_output: FramePack needs the CLIP-L pooled vector; "
                         f"encode the prompt with a hunyuan_video DualCLIPLoader + CLIPTextEncode")
    mask = extra.get("attention_mask")

    def rep(t):
        if t is None:
            return None
        if t.shape[0] == batch:
            return t
        return t[:1].expand(batch, *t.shape[1:])

    return {"context": rep(cond), "context_mask": rep(mask), "pooled_output": rep(pooled)}


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------


def sample_one_frame(model_patcher, positive, negative, layout, controls, seed: int, steps: int = 25,
                     distilled_guidance: float = 10.0, cfg: float = 1.0, guidance_rescale: float = 0.0,
                     shift: float = 0.0, solver: str = "unipc_bh1", batch_size: int = 1,
                     callback: Callable[[int, torch.Tensor, torch.Tensor, int], None] | None = None) -> torch.Tensor:
    """Denoise one frame per sample; returns x0 (B, 16, 1, h, w) float32 in model space (scaled).

    `layout` is a OneFrameLayout (every sample shares it) or a LayoutSweep (one layout per value;
    each value gets `batch_size` samples per start image). Samples are ordered value-major, then
    start image, then seed: within one value, sample j uses seed + j, and every value repeats the
    same seeds (so a sweep compares the values on the same noise).
    `callback(step, x0, x, total_steps)` is ComfyUI's preview callback.
    Every input is checked before the model is loaded.
    """
    import comfy.model_management as mm
    import comfy.patcher_extension

    from .comfy_model import require_framepack_model
    from .layout import as_layout_list, check_controls, layout_model_inputs

    if solver not in SOLVERS:
        raise ValueError(f"{NODE}: input 'solver' is {solver!r}; allowed: {', '.join(SOLVERS)}")
    if steps < 1:
        raise ValueError(f"{NODE}: input 'steps' is {steps}; allowed: 1 or more")
    require_framepack_model(model_patcher, NODE)
    start_batch = check_controls(controls, NODE)
    layouts = as_layout_list(layout)
    per = start_batch * batch_size
    total = len(layouts) * per
    per_sample_layouts = [layouts[j // per] for j in range(total)]
    rows = [(j % per) // batch_size for j in range(total)]
    h, w = controls[0].latent_hw
    pos = text_inputs(positive, "positive", total)
    neg = text_inputs(negative, "negative", total) if cfg != 1.0 else None

    sigmas = sigma_schedule(steps, shift, h, w)
    # every sweep value sees the same noise: seeds seed .. seed + per - 1 repeat per value
    noise = initial_noise(seed, total, h, w, seeds=[seed + (j % per) for j in range(total)])

    base = model_patcher.model
    device = model_patcher.load_device
    dtype = base.compute_dtype()

    # Everything the model sees besides x and sigma is built once, on the device, in the compute dtype
    # (index tensors stay int64): no per-step host-to-device traffic. Built before the model is
    # loaded, so a layout the model cannot take fails before any weight moves.
    extra = layout_model_inputs(per_sample_layouts if len(layouts) > 1 else layouts[0], controls, total, rows=rows,
                                device=device, dtype=torch.float32)
    extra["guidance"] = torch.full((total,), float(distilled_guidance) * 1000.0, device=device)
    extra = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in extra.items()}
    texts = [{k: (None if v is None else v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype))
              for k, v in t.items()} for t in (pos, neg) if t is not None]
    # The patcher's wrappers and callbacks reach apply_model as they do in ComfyUI's samplers.
    transformer_options = dict(model_patcher.model_options.get("transformer_options", {}))
    for key in ("wrappers", "callbacks"):
        merged = comfy.patcher_extension.merge_nested_dicts({}, transformer_options.get(key, {}))
        transformer_options[key] = comfy.patcher_extension.merge_nested_dicts(
            merged, getattr(model_patcher, key, {}) or {})

    # Same budget ComfyUI's own samplers ask for: room for the cond+uncond batch, at least the cond one.
    passes = 1 if neg is None else 2
    mm.load_models_gpu([model_patcher],
                       memory_required=base.memory_required([total * passes, LATENT_CHANNELS, 1, h, w]),
                       minimum_memory_required=base.memory_required([total, LATENT_CHANNELS, 1, h, w]))

    def call(xq, sigma_vec, text):
        return base.apply_model(xq, sigma_vec, c_crossattn=text["context"], transformer_options=transformer_options,
                                context_mask=text["context_mask"], pooled_output=text["pooled_output"], **extra)

    sig_list = sigmas.tolist()
    sig_dev = sigmas.to(device)

    def denoise(x, i):
        # The latent enters the model in the compute dtype and x0 = x - v * sigma is formed in float32
        # from that cast latent (ComfyUI's calculate_denoised), as FramePack does.
        xq = x.to(dtype)
        sigma_vec = sig_dev[i].expand(total)
        x0 = call(xq, sigma_vec, texts[0])
        if len(texts) > 1:
            x0 = cfg_x0(xq.float(), sig_list[i], x0, call(xq, sigma_vec, texts[1]), cfg, guidance_rescale)
        return x0

    def on_step(i, x0, x):
        if callback is not None:
            callback(i, x0, x, steps)

    x = noise.to(device)
    with torch.no_grad():
        out = unipc_sample(denoise, x, sig_list, variant=solver.split("_")[-1], callback=on_step,
                           check_interrupt=mm.throw_exception_if_processing_interrupted)
    return out.float()
