"""FramePack's one-frame sampler (spec section 4): noise, sigma schedule, CFG and flow-matching UniPC.

* Noise: sample j of a batch is `torch.randn((1, 16, 1, h, w), generator=Generator("cpu").manual_seed(seed + j))`
  in float32. musubi-tuner generates one image per call with a CPU generator seeded with the seed
  (and a batch of prompts gets one seed each), so sample 0 of a batch is exactly musubi's image for
  `seed`, and sample j is musubi's image for `seed + j`.
* Schedule: sigmas = linspace(1, 0, steps + 1) warped by s -> e^mu / (e^mu + 1/s - 1), mu = ln(shift)
  or, for shift 0, mu = min(0.5 + (seq - 256) * 0.65 / 3840, ln 7) with seq = T * (H/16) * (W/16) of
  the noisy latent (640 x 640 -> seq 1600 -> shift ~2.07).
* Model: the ComfyUI MODEL's `apply_model` (timestep = sigma * 1000 inside ComfyUI's model sampling)
  returns x0 = x - v * sigma, formed from the latent rounded to the compute dtype, as FramePack does
  (`FramePackModel.apply_model`).
* CFG: ComfyUI's (skipped entirely at cfg == 1; else x0_neg + cfg * (x0_pos - x0_neg), the same as on
  velocities); `rescale_cfg` is FramePack's rescale toward the positive's standard deviation.
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

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

NODE = "FramePackOneFrameSampler"
SOLVERS = ("unipc_bh1", "unipc_bh2")
LATENT_CHANNELS = 16
DEFAULT_DISTILLED_GUIDANCE = 10.0  # FramePack's default gs


# ------------------------------------------------------------------------------------------------
# Noise and schedule
# ------------------------------------------------------------------------------------------------


def initial_noise(seed: int, batch: int, latent_h: int, latent_w: int,
                  seeds: Sequence[int] | None = None) -> torch.Tensor:
    """(batch, 16, 1, h, w) float32 on the CPU; sample j drawn alone from a CPU generator seeded
    seed + j (or seeds[j] when given)."""
    return noise_like((batch, LATENT_CHANNELS, 1, latent_h, latent_w), seed, seeds)


def noise_like(shape: Sequence[int], seed: int, seeds: Sequence[int] | None = None) -> torch.Tensor:
    """float32 CPU noise of `shape` (B, ...): sample j is `randn((1, ...))` from a CPU generator seeded
    seed + j (or seeds[j]) -- musubi-tuner's draw for one image at that seed."""
    samples = []
    for j in range(int(shape[0])):
        s = int(seed) + j if seeds is None else int(seeds[j])
        g = torch.Generator("cpu").manual_seed(s % 2**64)  # the seed widget goes up to 2**64 - 1
        samples.append(torch.randn((1,) + tuple(shape[1:]), generator=g, dtype=torch.float32))
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
# CFG rescale
# ------------------------------------------------------------------------------------------------


def rescale_cfg(v_cfg: torch.Tensor, v_pos: torch.Tensor, guidance_rescale: float) -> torch.Tensor:
    """Blend the CFG prediction with itself rescaled to the positive prediction's per-sample std.

    Scale-free: the same on velocities v and on sigma * v (what ComfyUI's cfg functions see).
    """
    if guidance_rescale == 0:
        return v_cfg
    dims = list(range(1, v_cfg.ndim))
    rescaled = v_cfg * (v_pos.std(dim=dims, keepdim=True) / v_cfg.std(dim=dims, keepdim=True))
    return guidance_rescale * rescaled + (1.0 - guidance_rescale) * v_cfg
