"""One-frame inference through ComfyUI's real execution engine.

Models: the tiny random FramePack (real input/output sizes: text 4096, pooled 768, SigLIP 1152) and
ComfyUI's own HunyuanVideo VAE and SigLIP CLIP-vision classes at their real sizes with random
weights (ComfyUI's loaders detect those configurations from the weight shapes, so they cannot be
made smaller), all written by scripts/random_models.py and loaded by the native loader nodes.
Text comes from the test node FPTestConditioning (CLIPTextEncode's exact structure).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO_ROOT, GraphError

RES = 128  # bucket base: a square image gets 128 x 128 -> latent 16 x 16
STEPS = 3


@pytest.fixture(scope="session")
def fp_models(models_dir):
    spec = importlib.util.spec_from_file_location("_fp1f_random_models", REPO_ROOT / "scripts" / "random_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.install(models_dir, log=lambda *a: None)
    return module.FILES


def _png(path, seed, size=(96, 96), alpha=None):
    rng = np.random.default_rng(seed)
    # smooth random picture (a VAE-friendly image, not white noise)
    small = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    img = Image.fromarray(small).resize(size, Image.BICUBIC)
    if alpha is not None:
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(alpha))
    img.save(path)


@pytest.fixture(scope="session")
def images(comfy_base_dir):
    inp = comfy_base_dir / "input"
    _png(inp / "fp_start.png", 0)
    _png(inp / "fp_ref.png", 1)
    _png(inp / "fp_ref2.png", 2)
    _png(inp / "fp_wide.png", 3, size=(160, 96))
    alpha = np.zeros((96, 96), np.uint8)
    alpha[:, :48] = 255  # left half opaque
    _png(inp / "fp_ref_rgba.png", 1, alpha=alpha)
    return inp


def graph(fp_models, *, preset="oichi", ref=None, ref2=None, seed=0, batch_size=1, steps=STEPS, start="fp_start.png",
          ref_mask=None, clip_vision=False, layout=None, sampler=None, ref_resolution=RES, cfg=1.0):
    """An API-format prompt: loaders -> encode(s) -> layout -> sampler."""
    p = {
        "model": {"class_type": "FramePackModelLoader",
                  "inputs": {"model_name": fp_models["diffusion_models"], "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": fp_models["vae"]}},
        "img0": {"class_type": "LoadImage", "inputs": {"image": start}},
        "enc0": {"class_type": "FramePackEncodeImage",
                 "inputs": {"image": ["img0", 0], "vae": ["vae", 0], "resolution": RES, "width": 0, "height": 0,
                            "mask_mode": "keep where mask is 0 (LoadImage alpha)"}},
        "layout": {"class_type": "FramePackOneFrameLayout",
                   "inputs": {"start": ["enc0", 0], "preset": preset, "latent_window_size": -1, "target_index": -1,
                              "control_index": "", "latent_index": -1, "history_index": -1,
                              "use_clean_latents_post": "preset", "use_clean_latents_2x": "preset",
                              "use_clean_latents_4x": "preset", "siglip_source": "preset", "siglip_mix": "0.7,0.3"}},
        "pos": {"class_type": "FPTestConditioning",
                "inputs": {"seed": 1, "tokens": 7, "padding": 0, "dim": 4096, "pooled_dim": 768}},
        "neg": {"class_type": "FPTestConditioning",
                "inputs": {"seed": 2, "tokens": 5, "padding": 2, "dim": 4096, "pooled_dim": 768}},
        "sampler": {"class_type": "FramePackOneFrameSampler",
                    "inputs": {"model": ["model", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                               "layout": ["layout", 0], "seed": seed, "steps": steps, "distilled_guidance": 10.0,
                               "cfg": cfg, "guidance_rescale": 0.0, "shift": 0.0, "solver": "unipc_bh1",
                               "batch_size": batch_size}},
        "out": {"class_type": "FPTestCapture", "inputs": {"value": ["sampler", 0]}},
    }
    if clip_vision:
        p["clipv"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": fp_models["clip_vision"]}}
        p["enc0"]["inputs"]["clip_vision"] = ["clipv", 0]
    previous = None
    for i, name in enumerate([r for r in (ref, ref2) if r], 1):
        p[f"img{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        p[f"enc{i}"] = {"class_type": "FramePackEncodeImage",
                        "inputs": {"image": [f"img{i}", 0], "vae": ["vae", 0], "resolution": ref_resolution,
                                   "width": 0, "height": 0, "mask_mode": "keep where mask is 0 (LoadImage alpha)"}}
        p[f"list{i}"] = {"class_type": "FramePackControlList", "inputs": {"control": [f"enc{i}", 0]}}
        if previous:
            p[f"list{i}"]["inputs"]["previous"] = [previous, 0]
        previous = f"list{i}"
    if previous:
        p["layout"]["inputs"]["controls"] = [previous, 0]
    if ref_mask is not None:
        p["mask1"] = {"class_type": "SolidMask", "inputs": {"value": ref_mask, "width": 64, "height": 48}}
        p["enc1"]["inputs"]["mask"] = ["mask1", 0]
    p["layout"]["inputs"].update(layout or {})
    p["sampler"]["inputs"].update(sampler or {})
    return p


def latent(run_graph, prompt):
    return run_graph(prompt, outputs_of=["sampler"])["sampler"][0]["samples"]


def test_latent_shape_seed_and_batch(run_graph, fp_models, images):
    a = latent(run_graph, graph(fp_models, seed=5, batch_size=2))
    assert a.shape == (2, 16, 1, RES // 8, RES // 8) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    again = latent(run_graph, graph(fp_models, seed=5, batch_size=2))
    assert torch.equal(a, again)
    other = latent(run_graph, graph(fp_models, seed=6, batch_size=1))
    assert not torch.allclose(a[:1], other, atol=1e-3)
    # sample j of a batch is the single image for seed + j
    torch.testing.assert_close(a[1:2], other, rtol=1e-4, atol=1e-4)


def test_target_index_control_image_and_mask_change_the_result(run_graph, fp_models, images):
    base = latent(run_graph, graph(fp_models, preset="kisekaeichi", ref="fp_ref.png"))
    moved = latent(run_graph, graph(fp_models, preset="kisekaeichi", ref="fp_ref.png", layout={"target_index": 5}))
    other_ref = latent(run_graph, graph(fp_models, preset="kisekaeichi", ref="fp_ref2.png"))
    masked = latent(run_graph, graph(fp_models, preset="kisekaeichi", ref="fp_ref.png", ref_mask=0.0))  # keep all
    assert not torch.allclose(base, moved, atol=1e-3)
    assert not torch.allclose(base, other_ref, atol=1e-3)
    # SolidMask 0 with mask_mode "keep where mask is 0" keeps everything: same as no mask
    torch.testing.assert_close(base, masked)
    half = latent(run_graph, graph(fp_models, preset="kisekaeichi", ref="fp_ref.png", ref_mask=0.5))
    assert not torch.allclose(base, half, atol=1e-3)


def test_fully_hidden_reference_equals_zero_latent(run_graph, fp_models, images):
    """A mask hiding everything gives exactly the result of a zero latent in that slot."""
    from framepack_oneframe.framepack_core.comfy_sampling import sample_one_frame
    import dataclasses

    from framepack_oneframe.framepack_core.layout import Control

    prompt = graph(fp_models, preset="kisekaeichi", ref="fp_ref.png", ref_mask=1.0)  # SolidMask 1 -> keep nothing
    out = run_graph(prompt, outputs_of=["sampler", "layout", "model", "pos", "neg"])
    hidden = out["sampler"][0]["samples"]
    lay, model, pos, neg = out["layout"][0], out["model"][0], out["pos"][0], out["neg"][0]
    ref = lay.controls[1]
    assert ref.mask is not None and ref.mask.abs().max() == 0
    zero_ref = Control(latent=torch.zeros_like(ref.latent))
    zeroed = dataclasses.replace(lay, controls=(lay.controls[0], zero_ref))
    x0 = sample_one_frame(model, pos, neg, zeroed, 0, STEPS)["samples"]
    torch.testing.assert_close(hidden, x0, rtol=1e-5, atol=1e-6)
    shown = latent(run_graph, graph(fp_models, preset="kisekaeichi", ref="fp_ref.png"))
    assert not torch.allclose(hidden, shown, atol=1e-3)


@pytest.mark.parametrize("route", ["LoadImage MASK", "RGBA IMAGE"])
def test_rgba_alpha_is_the_mask(run_graph, fp_models, images, route):
    prompt = graph(fp_models, preset="kisekaeichi", ref="fp_ref_rgba.png")
    if route == "LoadImage MASK":  # Load Image's MASK is 1 - alpha; the default mask_mode reads it back as alpha
        prompt["enc1"]["inputs"]["mask"] = ["img1", 1]
    else:  # a 4-channel IMAGE (JoinImageWithAlpha puts 1 - MASK = alpha back): its alpha is the mask
        prompt["rgba"] = {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["img1", 0], "alpha": ["img1", 1]}}
        prompt["enc1"]["inputs"]["image"] = ["rgba", 0]
    out = run_graph(prompt, outputs_of=["layout"])
    mask = out["layout"][0].controls[1].mask[0, 0, 0]
    assert mask.shape == (RES // 8, RES // 8)
    assert mask[:, :6].min() > 0.95 and mask[:, -6:].max() < 0.05  # opaque left half kept, transparent right hidden


def test_kisekaeichi_and_1f_mc_graphs(run_graph, fp_models, images):
    out = run_graph(graph(fp_models, preset="kisekaeichi", ref="fp_ref.png"), outputs_of=["layout", "sampler"])
    summary = out["layout"][1]
    assert "target index: 1" in summary and "clean 1x indices: [0, 10]" in summary
    assert out["sampler"][0]["samples"].shape == (1, 16, 1, 16, 16)
    assert run_graph.ui_outputs["layout"]["text"] == [summary]
    out = run_graph(graph(fp_models, preset="1f-mc", ref="fp_ref.png"), outputs_of=["layout", "sampler"])
    assert "clean 1x indices: [0, 1, 10]" in out["layout"][1] and "target index: 9" in out["layout"][1]
    assert out["sampler"][0]["samples"].shape == (1, 16, 1, 16, 16)


@pytest.mark.parametrize("preset, line", [
    ("kijai", "clean 1x indices: [0, 13]"),
    ("plusone", "clean 1x indices: [0, 10, 10]"),
    ("eichi", "clean 1x indices: [0, 13, 10]"),
])
def test_compatibility_presets_run(run_graph, fp_models, images, preset, line):
    out = run_graph(graph(fp_models, preset=preset, ref="fp_ref.png"), outputs_of=["layout", "sampler"])
    assert line in out["layout"][1]
    assert out["sampler"][0]["samples"].shape == (1, 16, 1, 16, 16)


def test_kijai_ignores_the_reference_mask_as_kijai_does(run_graph, fp_models, images):
    plain = latent(run_graph, graph(fp_models, preset="kijai", ref="fp_ref.png"))
    out = run_graph(graph(fp_models, preset="kijai", ref="fp_ref.png", ref_mask=0.5), outputs_of=["layout", "sampler"])
    assert "control 1's mask is not applied" in out["layout"][1]
    torch.testing.assert_close(out["sampler"][0]["samples"], plain)


def test_sweep_runs_layouts_in_one_batch(run_graph, fp_models, images):
    prompt = graph(fp_models)
    prompt["sweep"] = {"class_type": "FramePackLayoutSweep",
                       "inputs": {"layout": ["layout", 0], "vary": "target_index", "values": "3,9"}}
    prompt["sampler"]["inputs"]["layout"] = ["sweep", 0]
    out = run_graph(prompt, outputs_of=["sweep", "sampler"])
    swept = out["sampler"][0]["samples"]
    assert swept.shape[0] == 2
    # The sweep is a FRAMEPACK_LAYOUT of two values made by ComfyUI's copy of the pack (its own module
    # name, so its own classes): this copy's core still takes it, recognised by its `kind` value.
    from framepack_oneframe.framepack_core import layout as core

    sweep = out["sweep"][0]
    assert type(sweep) is not core.FramePackLayout and core.is_layout(sweep)
    assert sweep.vary == "target_index" and sweep.values == (3, 9) and len(sweep.controls) == 1
    inputs, seeds = core.layout_model_inputs(sweep, 1)
    assert inputs["latent_indices"].tolist() == [[3], [9]] and seeds == [0, 0]
    nine = latent(run_graph, graph(fp_models, layout={"target_index": 9}))
    three = latent(run_graph, graph(fp_models, layout={"target_index": 3}))
    torch.testing.assert_close(swept[1:], nine, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(swept[:1], three, rtol=1e-4, atol=1e-4)


def test_cfg_uses_negative(run_graph, fp_models, images):
    one = latent(run_graph, graph(fp_models))
    two = latent(run_graph, graph(fp_models, cfg=3.0))
    assert not torch.allclose(one, two, atol=1e-3)


def test_real_vae_decode_and_siglip(run_graph, fp_models, images):
    prompt = graph(fp_models, clip_vision=True, steps=2)
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sampler", 0], "vae": ["vae", 0]}}
    prompt["out2"] = {"class_type": "FPTestCapture", "inputs": {"value": ["decode", 0]}}
    out = run_graph(prompt, outputs_of=["decode", "layout", "sampler"])
    image = out["decode"][0]
    assert image.shape == (1, RES, RES, 3)
    start = out["layout"][0].controls[0]
    assert start.image_embeds.shape == (1, 729, 1152) and start.image_embeds.std() > 0
    assert start.pixels.shape == (1, RES, RES, 3)  # the 96 x 96 picture fitted to its 128 x 128 bucket
    # the control's latent is the VAE's own encoding of the fitted image times the HunyuanVideo scale
    import comfy.sd
    import comfy.utils
    import folder_paths

    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(folder_paths.get_full_path("vae", fp_models["vae"])))
    torch.testing.assert_close(start.latent, vae.encode(start.pixels).float() * 0.476986, rtol=1e-4, atol=1e-4)
    no_siglip = latent(run_graph, graph(fp_models, steps=2, layout={"siglip_source": "none"}))
    assert not torch.allclose(out["sampler"][0]["samples"], no_siglip, atol=1e-3)


# ------------------------------------------------------------------------------------------------
# Bad input: clear errors before any sampling
# ------------------------------------------------------------------------------------------------


def test_malformed_control_index_is_a_clear_error(run_graph, fp_models, images):
    with pytest.raises(GraphError, match="FramePackOneFrameLayout: input 'control_index' is malformed"):
        run_graph(graph(fp_models, preset="kisekaeichi", ref="fp_ref.png", layout={"control_index": "0;x"}))


def _execution_error(run_graph, prompt) -> dict:
    """ComfyUI's own `execution_error` message (what the frontend's "Show Report" shows) for a failing prompt."""
    with pytest.raises(GraphError) as info:
        run_graph(prompt)
    errors = info.value.details
    assert len(errors) == 1 and errors[0][0] == "execution_error", errors
    return errors[0][1]


def test_error_report_names_the_bare_exception_class(run_graph, fp_models, images, models_dir):
    """ComfyUI loads the pack under a path-shaped module name; its errors still report their bare class name."""
    bad_index = graph(fp_models, preset="kisekaeichi", ref="fp_ref.png", layout={"control_index": "0;x"})
    err = _execution_error(run_graph, bad_index)
    assert err["exception_type"] == "LayoutError", err["exception_type"]
    assert err["node_type"] == "FramePackOneFrameLayout" and "input 'control_index'" in err["exception_message"]

    from safetensors.torch import save_file

    name = "fp-not-framepack-report.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}, str(models_dir / "diffusion_models" / name))
    err = _execution_error(run_graph, {
        "1": {"class_type": "FramePackModelLoader", "inputs": {"model_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "FPTestCapture", "inputs": {"value": ["1", 0]}}})
    assert err["exception_type"] == "FramePackLoadError", err["exception_type"]
    assert name in err["exception_message"]

    # No stock node makes a non-FramePack MODEL without a real checkpoint, so this one is checked on the
    # class ComfyUI's copy of the pack defines, with ComfyUI's own formatter.
    import sys

    import execution

    core = [m for n, m in sys.modules.items() if n.endswith(".framepack_core.comfy_model") and "custom_nodes" in n]
    assert core, "ComfyUI's copy of the pack is not loaded"
    assert execution.full_type_name(core[0].NotFramePackModelError) == "NotFramePackModelError"


def test_control_of_another_size_is_refitted_and_said(run_graph, fp_models, images):
    out = run_graph(graph(fp_models, preset="kisekaeichi", ref="fp_wide.png", ref_resolution=192),
                    outputs_of=["layout", "sampler"])
    assert "re-fitted to the start's 128x128 px" in out["layout"][1]
    assert [w for w in run_graph.ui_outputs["layout"]["framepack_warnings"] if "re-fitted" in w]  # for the drawing
    assert out["layout"][0].controls[1].latent.shape == (1, 16, 1, 16, 16)


def test_mask_of_another_size_is_said(run_graph, fp_models, images):
    """A mask of another size than its image is fitted on its own: the summary and the drawing's feed say so."""
    _png(images / "fp_square512.png", 4, size=(512, 512))

    def masked_start(width, height):
        prompt = graph(fp_models, start="fp_square512.png")
        prompt["mask0"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": width, "height": height}}
        prompt["enc0"]["inputs"]["mask"] = ["mask0", 0]
        return run_graph(prompt, outputs_of=["layout"])["layout"], run_graph.ui_outputs["layout"]

    (_, summary), shown = masked_start(200, 300)
    said = ("start's mask is 200x300 px but its image 512x512 px; each was fitted to 128x128 px on its own "
            "(resize to cover, centre crop), so the mask may not line up with the picture")
    assert said in summary
    assert shown["framepack_warnings"] == [said] and shown["text"] == [summary]  # what js/ draws after a run
    (_, summary), shown = masked_start(512, 512)
    assert "mask is" not in summary and shown["framepack_warnings"] == []


def test_mismatched_batches_are_an_error(run_graph, fp_models, images):
    prompt = graph(fp_models, preset="kisekaeichi", ref="fp_ref.png")
    prompt["rep0"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img0", 0], "amount": 2}}
    prompt["rep1"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["img1", 0], "amount": 3}}
    prompt["enc0"]["inputs"]["image"] = ["rep0", 0]
    prompt["enc1"]["inputs"]["image"] = ["rep1", 0]
    for enc in ("enc0", "enc1"):  # small explicit size: the error comes at the layout node, after encoding
        prompt[enc]["inputs"].update(width=64, height=64)
    with pytest.raises(GraphError, match="control 1 has a batch of 3 images but the start has 2"):
        run_graph(prompt)


def test_not_a_framepack_model_and_empty_conditioning():
    from framepack_oneframe.framepack_core.comfy_model import require_framepack_model
    from framepack_oneframe.framepack_core.comfy_sampling import check_text_conditioning

    with pytest.raises(ValueError, match="FramePackOneFrameSampler: input 'model' is not a FramePack model"):
        require_framepack_model(object(), "FramePackOneFrameSampler")
    node = "FramePackOneFrameConditioning"
    with pytest.raises(ValueError, match=f"{node}: input 'positive' is empty"):
        check_text_conditioning([], "positive", node)
    with pytest.raises(ValueError, match=f"{node}: input 'negative' has no pooled_output"):
        check_text_conditioning([[torch.zeros(1, 3, 8), {}]], "negative", node)


# ------------------------------------------------------------------------------------------------
# Progress, previews, interrupt
# ------------------------------------------------------------------------------------------------


def test_progress_bar_and_previews(run_graph, fp_models, images):
    import comfy.utils
    from comfy.cli_args import LatentPreviewMethod, args

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append(
        (value, total, preview)))
    old_method = args.preview_method
    # What --preview-method latent2rgb sets; a current ComfyUI (0.28) also takes the method per prompt
    # from the frontend's extra_data and resets it to the command line's otherwise.
    args.preview_method = LatentPreviewMethod.Latent2RGB
    try:
        run_graph(graph(fp_models, steps=4, seed=11), outputs_of=["sampler"], extra_data={"preview_method": "latent2rgb"})
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        args.preview_method = old_method
    steps = [(v, t) for v, t, _ in calls if t == 4]
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    previews = [p for _, t, p in calls if t == 4]
    assert all(p is not None for p in previews)
    fmt, img, _ = previews[-1]
    assert fmt == "JPEG" and img.size == (RES // 8, RES // 8)  # latent2rgb: one pixel per latent pixel


def test_interrupt_stops_sampling_and_next_run_works(run_graph, fp_models, images):
    import comfy.model_management
    import comfy.utils

    seen = []

    # Interrupt at the first step reported from 2 on (a current ComfyUI reports progress at most every
    # 100 ms, so step 2 itself may not be reported); no step may be reported after that.
    def hook(value, total, preview, node_id=None):
        seen.append(value)
        if value >= 2 and not [v for v in seen[:-1] if v >= 2]:
            comfy.model_management.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(GraphError):
            run_graph(graph(fp_models, steps=20, seed=12))
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert [v for v in seen if v >= 2] == [max(seen)] and max(seen) < 20  # stopped at the next step
    assert any(m[0] == "execution_interrupted" for m in run_graph.executor.status_messages)
    assert latent(run_graph, graph(fp_models, steps=2, seed=12)).shape == (1, 16, 1, 16, 16)
