"""The whole one-frame sampler against a reference pipeline built independently in this test.

Reference: diffusers' HunyuanVideoFramepackTransformer3DModel on the same weights (tiny config),
inputs laid out by the test's own re-statement of spec section 1 (`spec_section_1`), noise from
`torch.randn` with a CPU generator, sigmas from the spec's formula in float64, CFG + rescale on
velocities, and the float64 UniPC of tests/test_sampler_math.py. Ours: the file loaded by
`load_framepack` as a ComfyUI MODEL, the layout from `build_layout`, `sample_one_frame` (ComfyUI's
sampling with the pack's conditioning, noise, schedule and UniPC).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tiny_framepack
from test_layout import spec_section_1
from test_sampler_math import reference_unipc

H = W = 8  # latent size (64 x 64 pixels)


@pytest.fixture(scope="module")
def setup(models_dir, comfy_nodes):
    from framepack_oneframe.framepack_core.loader import load_framepack

    path = tiny_framepack.save_single_file(models_dir / "diffusion_models" / "fp_parity.safetensors", seed=0)
    return load_framepack(str(path)), tiny_framepack.make_reference(seed=0)


def _conditioning(seed, tokens, padding=0):
    cfg = tiny_framepack.TINY_CONFIG
    g = torch.Generator().manual_seed(seed)
    cond = torch.randn(1, tokens + padding, cfg["text_embed_dim"], generator=g)
    extra = {"pooled_output": torch.randn(1, cfg["pooled_projection_dim"], generator=g)}
    if padding:
        mask = torch.zeros(1, tokens + padding, dtype=torch.long)
        mask[:, :tokens] = 1
        extra["attention_mask"] = mask
    return [[cond, extra]]


def _reference_run(reference, controls, target, sources, indices, two, four, pos, neg, seed, steps, gs, cfg, rescale,
                   variant):
    slots = []
    for s in sources:
        if s.startswith("c"):
            c = controls[int(s[1:])]
            slots.append(c.latent * c.mask if c.mask is not None else c.latent)
        else:
            slots.append(torch.zeros(1, 16, 1, H, W))
    common = dict(
        image_embeds=controls[0].image_embeds, indices_latents=torch.tensor([target]),
        guidance=torch.tensor([gs * 1000.0]), latents_clean=torch.cat(slots, dim=2),
        indices_latents_clean=torch.tensor(indices),
        latents_history_2x=torch.zeros(1, 16, len(two), H, W), indices_latents_history_2x=torch.tensor(two),
        latents_history_4x=torch.zeros(1, 16, len(four), H, W), indices_latents_history_4x=torch.tensor(four),
        return_dict=False,
    )

    def velocity(x, sigma, cond):
        c, extra = cond[0]
        mask = extra.get("attention_mask", torch.ones(c.shape[:2], dtype=torch.long))
        with torch.no_grad():
            return reference(hidden_states=torch.from_numpy(x).float(), timestep=torch.tensor([sigma * 1000.0]),
                             encoder_hidden_states=c, encoder_attention_mask=mask,
                             pooled_projections=extra["pooled_output"], **common)[0].double().numpy()

    def x0(x, sigma):
        v_pos = velocity(x, sigma, pos)
        v = v_pos
        if cfg != 1.0:
            v_neg = velocity(x, sigma, neg)
            v = v_neg + cfg * (v_pos - v_neg)
            if rescale:
                v = rescale * v * (v_pos.std(ddof=1) / v.std(ddof=1)) + (1 - rescale) * v
        return x - v * sigma

    noise = torch.randn((1, 16, 1, H, W), generator=torch.Generator("cpu").manual_seed(seed))
    mu = min(0.5 + (1 * (H // 2) * (W // 2) - 256) * 0.65 / 3840, math.log(7))
    t = np.linspace(1, 0, steps + 1)
    with np.errstate(divide="ignore"):
        sigmas = np.exp(mu) / (np.exp(mu) + (1 / t - 1))
    sigmas = sigmas.astype(np.float32).astype(np.float64)  # FramePack's schedule is a float32 tensor
    return reference_unipc(x0, noise.double().numpy(), sigmas, variant)


@pytest.mark.parametrize("cfg, rescale, solver", [(1.0, 0.0, "unipc_bh1"), (2.5, 0.5, "unipc_bh2")])
def test_sampler_equals_reference_pipeline(setup, cfg, rescale, solver):
    from framepack_oneframe.framepack_core.comfy_sampling import sample_one_frame
    from framepack_oneframe.framepack_core.layout import Control, build_layout

    patcher, reference = setup
    g = torch.Generator().manual_seed(42)
    controls = (Control(latent=torch.randn(1, 16, 1, H, W, generator=g), mask=torch.rand(1, 1, 1, H, W, generator=g),
                        image_embeds=torch.randn(1, 729, tiny_framepack.TINY_CONFIG["image_proj_dim"], generator=g)),)
    layout = build_layout(controls, preset="oichi", target_index=5, control_index=[0, 12])  # groups on (diffusers)
    target, sources, indices, two, four = spec_section_1(1, 9, 5, [0, 12])
    pos, neg = _conditioning(1, 7), _conditioning(2, 5, padding=3)
    seed, steps, gs = 1234, 6, 10.0
    out = sample_one_frame(patcher, pos, neg, layout, seed, steps, gs, cfg, rescale, 0.0, solver, 1)
    ours = patcher.model.process_latent_in(out["samples"])  # back to model space, where the reference works
    ref = _reference_run(reference, controls, target, sources, indices, two, four, pos, neg, seed, steps, gs, cfg,
                         rescale, solver.split("_")[1])
    err = np.linalg.norm(ours.double().numpy() - ref) / np.linalg.norm(ref)
    print(f"relative error vs reference pipeline: {err:.2e}")
    assert err < 1e-4, err
