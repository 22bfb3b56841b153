"""The FramePack MODEL sampled by ComfyUI's own sampling, through ComfyUI's real execution engine.

FramePackOneFrameSampler (the pack's node) is checked against graphs a ComfyUI user builds from
stock nodes: FramePackOneFrameConditioning + KSampler (sampler framepack_unipc_bh1, scheduler
framepack), and SamplerCustomAdvanced with the pack's NOISE / SAMPLER / SIGMAS nodes and
ComfyUI's CFGGuider; then ComfyUI's own tools (EasyCache, TorchCompileModel, RescaleCFG) on the
pack's MODEL. Models, pictures and the graph builder are the ones of test_oneframe_graph.
"""
from __future__ import annotations

import pytest
import torch

from conftest import GraphError
from test_oneframe_graph import STEPS, fp_models, graph, images, latent  # noqa: F401  (fixtures)

# (preset, further pictures) for every preset; kisekaeichi / 1f-mc / eichi / kijai / plusone with a reference
PRESETS = [("oichi", None), ("kisekaeichi", "fp_ref.png"), ("1f-mc", "fp_ref.png"), ("eichi", "fp_ref.png"),
           ("kijai", "fp_ref.png"), ("plusone", "fp_ref.png")]
GUIDANCE = [(1.0, 0.0), (2.5, 0.5)]  # (cfg, guidance_rescale)
DISTILLED = 7.0  # not FramePack's default 10, so the guidance really travels through the conditioning


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def _graph(fp_models, **kw):
    """test_oneframe_graph's graph with a negative prompt shorter than the positive (5 vs 7 tokens, one of
    them padding), so ComfyUI's batched cond + uncond needs the padded, masked text."""
    p = graph(fp_models, **kw)
    p["neg"]["inputs"].update(tokens=4, padding=1)
    return p


def pack_graph(fp_models, preset, ref, cfg=1.0, rescale=0.0, batch_size=1, seed=3, **kw):
    p = _graph(fp_models, preset=preset, ref=ref, seed=seed, batch_size=batch_size, cfg=cfg, **kw)
    p["sampler"]["inputs"].update(guidance_rescale=rescale, distilled_guidance=DISTILLED)
    return p


def _conditioned(p, batch_size, layout_node="layout"):
    """Replace the pack's sampler by the conditioning node + FluxGuidance on both prompts."""
    del p["sampler"]
    p["cond"] = {"class_type": "FramePackOneFrameConditioning",
                 "inputs": {"positive": ["pos", 0], "negative": ["neg", 0], "layout": [layout_node, 0],
                            "batch_size": batch_size}}
    for i, name in enumerate(("gpos", "gneg")):
        p[name] = {"class_type": "FluxGuidance", "inputs": {"conditioning": ["cond", i], "guidance": DISTILLED}}
    return p


def ksampler_graph(fp_models, preset, ref, cfg=1.0, rescale=0.0, batch_size=1, seed=3):
    p = _conditioned(_graph(fp_models, preset=preset, ref=ref), batch_size)
    p["shift"] = {"class_type": "FramePackShift", "inputs": {"model": ["model", 0], "latent": ["cond", 2], "shift": 0.0}}
    p["rescale"] = {"class_type": "FramePackCFGRescale", "inputs": {"model": ["shift", 0], "guidance_rescale": rescale}}
    p["sampler"] = {"class_type": "KSampler",
                    "inputs": {"model": ["rescale", 0], "seed": seed, "steps": STEPS, "cfg": cfg,
                               "sampler_name": "framepack_unipc_bh1", "scheduler": "framepack",
                               "positive": ["gpos", 0], "negative": ["gneg", 0], "latent_image": ["cond", 2],
                               "denoise": 1.0}}
    return p


def custom_advanced_graph(fp_models, preset, ref, cfg=1.0, rescale=0.0, batch_size=1, seed=3, layout_node="layout",
                          extra=None):
    p = _conditioned(_graph(fp_models, preset=preset, ref=ref), batch_size, layout_node)
    p.update(extra or {})
    p["rescale"] = {"class_type": "FramePackCFGRescale", "inputs": {"model": ["model", 0], "guidance_rescale": rescale}}
    p["guider"] = {"class_type": "CFGGuider", "inputs": {"model": ["rescale", 0], "positive": ["gpos", 0],
                                                         "negative": ["gneg", 0], "cfg": cfg}}
    p["noise"] = {"class_type": "FramePackNoise", "inputs": {"noise_seed": seed}}
    p["ksampler"] = {"class_type": "FramePackUniPCSampler", "inputs": {"solver": "unipc_bh1"}}
    p["sigmas"] = {"class_type": "FramePackScheduler", "inputs": {"latent": ["cond", 2], "steps": STEPS, "shift": 0.0}}
    p["sampler"] = {"class_type": "SamplerCustomAdvanced",
                    "inputs": {"noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["ksampler", 0],
                               "sigmas": ["sigmas", 0], "latent_image": ["cond", 2]}}
    return p


@pytest.mark.parametrize("cfg, rescale", GUIDANCE)
@pytest.mark.parametrize("preset, ref", PRESETS)
def test_stock_ksampler_equals_pack_sampler(run_graph, fp_models, images, preset, ref, cfg, rescale):
    ours = latent(run_graph, pack_graph(fp_models, preset, ref, cfg, rescale))
    stock = latent(run_graph, ksampler_graph(fp_models, preset, ref, cfg, rescale))
    assert ours.shape == stock.shape == (1, 16, 1, 16, 16)
    assert rel_err(stock, ours) <= 1e-5, rel_err(stock, ours)
    # the distilled guidance really reaches the model through FluxGuidance's conditioning value
    p = ksampler_graph(fp_models, preset, ref, cfg, rescale)
    p["gpos"]["inputs"]["guidance"] = p["gneg"]["inputs"]["guidance"] = 10.0
    assert rel_err(latent(run_graph, p), ours) > 1e-3


@pytest.mark.parametrize("cfg, rescale", GUIDANCE)
@pytest.mark.parametrize("preset, ref", PRESETS)
def test_sampler_custom_advanced_equals_pack_sampler(run_graph, fp_models, images, preset, ref, cfg, rescale):
    # batch 2: FramePackNoise gives sample j the seed + j draw, as the pack's sampler does
    ours = latent(run_graph, pack_graph(fp_models, preset, ref, cfg, rescale, batch_size=2))
    custom = latent(run_graph, custom_advanced_graph(fp_models, preset, ref, cfg, rescale, batch_size=2))
    assert ours.shape == custom.shape == (2, 16, 1, 16, 16)
    assert rel_err(custom, ours) <= 1e-5, rel_err(custom, ours)


def test_ksampler_default_noise_matches_only_sample_zero(run_graph, fp_models, images):
    """ComfyUI's own noise draws a batch from one generator: sample 0 is musubi's draw, sample 1 is not."""
    ours = latent(run_graph, pack_graph(fp_models, "kisekaeichi", "fp_ref.png", batch_size=2))
    stock = latent(run_graph, ksampler_graph(fp_models, "kisekaeichi", "fp_ref.png", batch_size=2))
    assert rel_err(stock[:1], ours[:1]) <= 1e-5
    assert rel_err(stock[1:], ours[1:]) > 1e-2


def test_layout_sweep_runs_as_one_batch_through_sampler_custom_advanced(run_graph, fp_models, images):
    sweep = {"sweep": {"class_type": "FramePackLayoutSweep",
                       "inputs": {"layout": ["layout", 0], "vary": "target_index", "values": "1,5"}}}
    p = pack_graph(fp_models, "kisekaeichi", "fp_ref.png", batch_size=2)
    p.update(sweep)
    p["sampler"]["inputs"]["layout"] = ["sweep", 0]
    ours = latent(run_graph, p)
    custom = latent(run_graph, custom_advanced_graph(fp_models, "kisekaeichi", "fp_ref.png", batch_size=2,
                                                     layout_node="sweep", extra=sweep))
    assert ours.shape == custom.shape == (4, 16, 1, 16, 16)
    assert rel_err(custom, ours) <= 1e-5
    # value-major order, every value on the same seeds: sample 0 of value 1 is the plain target-1 image
    plain = latent(run_graph, pack_graph(fp_models, "kisekaeichi", "fp_ref.png", batch_size=2,
                                         layout={"target_index": 1}))
    assert rel_err(ours[:2], plain) <= 1e-5
    assert rel_err(ours[2:], plain) > 1e-3


def _combo_options(spec) -> list:
    """A combo input's choices from /object_info: V1 nodes list them first, V3 nodes as ("COMBO", {"options"})."""
    return spec[0] if isinstance(spec[0], list) else spec[1]["options"]


def test_ksampler_lists_framepack_sampler_and_scheduler(comfy_server, fp_models):
    info = comfy_server.get("/object_info/KSampler")["KSampler"]["input"]["required"]
    assert {"framepack_unipc_bh1", "framepack_unipc_bh2"} <= set(_combo_options(info["sampler_name"]))
    assert "framepack" in _combo_options(info["scheduler"])
    select = comfy_server.get("/object_info/KSamplerSelect")["KSamplerSelect"]["input"]["required"]
    assert "framepack_unipc_bh1" in _combo_options(select["sampler_name"])
    basic = comfy_server.get("/object_info/BasicScheduler")["BasicScheduler"]["input"]["required"]
    assert "framepack" in _combo_options(basic["scheduler"])


def _transformer_class(run_graph, fp_models, images):
    """The FramePackTransformer class ComfyUI loaded (the pack may be imported under a second module name)."""
    model = run_graph(graph(fp_models), outputs_of=["model"])["model"][0]
    return type(model.model.diffusion_model)


@pytest.fixture(scope="module")
def calm_model(models_dir, fp_models):
    """The graph's FramePack file with its blocks' modulation scaled down 100x (gates near 0, so every
    block is close to the identity): a velocity that changes smoothly along the trajectory, as a trained
    model's does and as step caches assume. Random weights proper change erratically from step to step,
    so no cache can approximate them (measured: EasyCache's error there is > 100 % at any skip)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(models_dir / "diffusion_models" / fp_models["diffusion_models"]))
    calm = {k: (v * 0.01 if ".norm1" in k or ".norm.linear" in k or k.startswith("x_embedder.") else v) for k, v in sd.items()}
    name = "fp_calm.safetensors"
    save_file(calm, str(models_dir / "diffusion_models" / name))
    return name


def test_easycache_cuts_model_calls(run_graph, fp_models, images, calm_model, monkeypatch):
    cls = _transformer_class(run_graph, fp_models, images)
    calls = []
    forward = cls._forward

    def counted(self, *args, **kwargs):
        calls.append(1)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "_forward", counted)
    steps = 20
    p = pack_graph(fp_models, "kisekaeichi", "fp_ref.png", steps=steps, seed=11)
    p["model"]["inputs"]["model_name"] = calm_model
    base = latent(run_graph, p)
    uncached_calls = len(calls)
    calls.clear()
    p["cache"] = {"class_type": "EasyCache", "inputs": {"model": ["model", 0], "reuse_threshold": 0.2,
                                                      "start_percent": 0.15, "end_percent": 0.95, "verbose": False}}
    p["sampler"]["inputs"]["model"] = ["cache", 0]
    cached = latent(run_graph, p)
    cached_calls = len(calls)
    err = rel_err(cached, base)
    print(f"EasyCache: {uncached_calls} -> {cached_calls} model calls, relative latent error {err:.3f}")
    assert uncached_calls == steps
    assert cached_calls <= steps - 4
    assert torch.isfinite(cached).all() and err > 0  # the skipped steps really reused the cache
    # With a threshold it never reaches, EasyCache's wrappers around the pack's model change nothing.
    calls.clear()
    p["cache"]["inputs"]["reuse_threshold"] = 0.0
    assert torch.equal(latent(run_graph, p), base) and len(calls) == steps
    # No quality bound is asserted: random weights give a velocity that jumps from step to step, and
    # EasyCache's extrapolation (output - input changing slowly) then errs by ~50 % on this model, more
    # than another seed's image differs. Quality needs trained weights (see README, step caches).


def test_torch_compile_model_compiles_the_transformer(run_graph, fp_models, images):
    import torch._dynamo

    torch._dynamo.reset()
    base = latent(run_graph, pack_graph(fp_models, "kisekaeichi", "fp_ref.png", seed=21))
    p = pack_graph(fp_models, "kisekaeichi", "fp_ref.png", seed=21)
    p["compile"] = {"class_type": "TorchCompileModel", "inputs": {"model": ["model", 0], "backend": "inductor"}}
    p["sampler"]["inputs"]["model"] = ["compile", 0]
    compiled = latent(run_graph, p)
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    assert frames > 0, "TorchCompileModel compiled nothing"
    assert rel_err(compiled, base) < 1e-4


def test_rescale_cfg_acts_on_the_pack_model(run_graph, fp_models, images):
    def run(cfg, multiplier):
        p = ksampler_graph(fp_models, "kisekaeichi", "fp_ref.png", cfg=cfg)
        if multiplier is not None:
            p["rcfg"] = {"class_type": "RescaleCFG", "inputs": {"model": ["rescale", 0], "multiplier": multiplier}}
            p["sampler"]["inputs"]["model"] = ["rcfg", 0]
        return latent(run_graph, p)

    plain = run(3.0, None)
    rescaled = run(3.0, 0.7)
    assert torch.isfinite(rescaled).all()
    assert rel_err(rescaled, plain) > 1e-3
    # at multiplier 0 RescaleCFG is plain CFG; at cfg 1 there is no guidance to rescale
    assert rel_err(run(3.0, 0.0), plain) <= 1e-5
    assert rel_err(run(1.0, 0.7), run(1.0, None)) <= 1e-6


def test_stock_sampler_without_the_layout_gets_a_clear_error(run_graph, fp_models, images):
    p = ksampler_graph(fp_models, "kisekaeichi", "fp_ref.png")
    p["sampler"]["inputs"]["positive"] = ["neg", 0]  # a prompt that did not pass the conditioning node
    with pytest.raises(GraphError, match="carries no one-frame layout.*FramePackOneFrameConditioning"):
        run_graph(p, outputs_of=["sampler"])


def test_unipc_needs_a_schedule_ending_at_zero(run_graph, fp_models, images):
    p = custom_advanced_graph(fp_models, "kisekaeichi", "fp_ref.png")
    p["split"] = {"class_type": "SplitSigmas", "inputs": {"sigmas": ["sigmas", 0], "step": 2}}
    p["sampler"]["inputs"]["sigmas"] = ["split", 0]
    with pytest.raises(GraphError, match="sigmas must end at 0"):
        run_graph(p, outputs_of=["sampler"])


def test_prompts_of_different_lengths_batch_with_masked_padding(run_graph, fp_models, images, monkeypatch):
    """At cfg > 1 ComfyUI runs cond and uncond as one batch: the 7-token prompt and the 5-token negative
    reach the transformer zero-padded to one length, the padding marked invalid in context_mask (whose
    correctness against diffusers is test_oneframe_parity's cfg 2.5 case)."""
    cls = _transformer_class(run_graph, fp_models, images)
    seen = []
    forward = cls._forward

    def spy(self, x, timestep, context, *args, context_mask=None, **kwargs):
        seen.append((x.shape[0], tuple(context.shape), None if context_mask is None else context_mask.clone()))
        return forward(self, x, timestep, context, *args, context_mask=context_mask, **kwargs)

    monkeypatch.setattr(cls, "_forward", spy)
    latent(run_graph, ksampler_graph(fp_models, "kisekaeichi", "fp_ref.png", cfg=2.5))
    batch, shape, mask = seen[0]
    assert batch == 2 and shape[:2] == (2, 7)
    # the positive's 7 tokens are valid; the negative's 4 valid tokens, its 1 padding token and the
    # 2 tokens added to reach 7 are not
    assert sorted(mask.int().tolist()) == sorted([[1] * 7, [1] * 4 + [0] * 3])  # ComfyUI picks the order
