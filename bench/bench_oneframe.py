"""FramePack one-frame benchmark: ours vs the diffusers reference, full size, one GPU, one run.

    python bench/bench_oneframe.py --out bench/results/$(date +%F)-$(nvidia-smi --query-gpu=name --format=csv,noheader | tr ' ' _).json

Builds the released architecture (12.87 B parameters) with seeded random bf16 weights made
directly on the GPU, 640x640, one frame, for three layouts (oichi default / kisekaeichi / 1f-mc),
and measures per section (each result is written to the JSON as soon as it exists, so a run cut
short keeps what it measured):

* env        GPU, torch, ComfyUI's choices on this GPU (attention function, fp8 support)
* floor      bf16 / fp8 matmul rate at the model's linear shapes, SDPA per backend at each N
* reference  diffusers 0.42.1 HunyuanVideoFramepackTransformer3DModel on the same weights
* ours       framepack_core's FramePackTransformer on the same weight tensors (no copy)
* ...        see SECTIONS below

See bench/README.md for the table of results and what each number means.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

    def put(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


# --------------------------------------------------------------------------------------------
def section_env(R: Results, state: dict) -> None:
    import comfy.model_management as mm
    from comfy.ldm.modules import attention as ca

    env = H.gpu_info()
    env.update(
        comfy_device=str(mm.get_torch_device()), comfy_vram_state=str(mm.vram_state),
        comfy_attention=getattr(ca.optimized_attention, "__name__", str(ca.optimized_attention)),
        comfy_fp8_compute=mm.supports_fp8_compute(mm.get_torch_device()),
        sage=getattr(ca, "SAGE_ATTENTION_IS_AVAILABLE", None), flash_attn=getattr(ca, "FLASH_ATTENTION_IS_AVAILABLE", None),
    )
    imports = {}
    for mod in ("comfy.model_base", "comfy.model_patcher", "comfy.sd", "comfy.ops", "comfy_api.latest", "diffusers"):
        try:
            __import__(mod)
            imports[mod] = "ok"
        except Exception as e:
            imports[mod] = f"{type(e).__name__}: {e}"
    env["imports"] = imports
    for name in ("model", "comfy_model", "loader", "sampler", "layout"):
        env[f"framepack_core.{name}"] = H.have_module(name)
    R.put("env", env)
    log("env", json.dumps(env))


def section_floor(R: Results, state: dict) -> None:
    import floor

    seq = {name: (L.image_tokens(80, 80), H.SIGLIP_TOKENS + H.TEXT_TOKENS) for name, L in H.LAYOUTS.items()}
    res = floor.measure_floor(seq)
    R.put("floor", res)
    for name, r in res["layouts"].items():
        log(f"floor {name}: N={r['n_tokens']} bf16 {r['bf16']['model_weighted_tflops']:.0f} TF/s "
            f"(fused {r['bf16_fused']['model_weighted_tflops']:.0f}), fp8 "
            f"{r.get('fp8', {}).get('model_weighted_tflops', float('nan')):.0f}, sdpa "
            + ", ".join(f"{k} {v.get('tflops', float('nan')):.0f}" for k, v in r["sdpa"].items())
            + f", comfy {r['comfy_attention'].get('function')} {r['comfy_attention'].get('tflops', float('nan')):.0f}")


def floor_ms(R: Results, layout: str, fp8: bool = False, batch: int = 1) -> dict | None:
    """Floor of one forward from the rates measured in this run (matmul at the model's shapes,
    best SDPA backend), and the FLOP count."""
    fl = R.data.get("floor", {}).get("layouts", {}).get(layout)
    L = H.LAYOUTS[layout]
    n = H.sequence_length(L)
    fc = H.flop_count(n, L.image_tokens(80, 80), batch=batch)
    out = dict(n_tokens=n, tflop=fc["total"] / 1e12, flop=fc)
    if fl:
        key = "fp8" if fp8 else "bf16"
        mm_rate = max(fl[key]["model_weighted_tflops"], fl[key + "_fused"]["model_weighted_tflops"]) * 1e12
        att_rate = max(v.get("tflops", 0) for v in fl["sdpa"].values()) * 1e12
        bf16_rate = max(fl["bf16"]["model_weighted_tflops"], fl["bf16_fused"]["model_weighted_tflops"]) * 1e12
        ms = 1e3 * (fc["linear_blocks"] / mm_rate + fc["attention"] / att_rate + fc["other"] / bf16_rate)
        out.update(floor_ms=ms, matmul_tflops=mm_rate / 1e12, attention_tflops=att_rate / 1e12)
    return out


# --cpu-smoke: the sections that support it run this tiny model on the CPU (checks the code runs, not speed)
SMOKE_CONFIG = dict(H.FULL_CONFIG, num_layers=1, num_single_layers=1, num_refiner_layers=1, **H.TINY_WIDTH)
SMOKE_SECTIONS = ("step_cache", "magcache")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _weights(state: dict) -> dict:
    if "sd" not in state:
        t = time.time()
        smoke = state.get("cpu_smoke")
        state["sd"] = H.random_state_dict(SMOKE_CONFIG, seed=0, device="cpu") if smoke else H.random_state_dict(seed=0)
        _sync()
        n = sum(v.numel() for v in state["sd"].values())
        log(f"random weights: {n:,} parameters, {len(state['sd'])} tensors in {time.time() - t:.1f} s")
        assert smoke or n == H.FULL_PARAMS, n
        state["n_params"] = n
    return state["sd"]


def _time_steps(call, x, steps=25) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = H.euler_loop(call, x, steps)
    torch.cuda.synchronize()
    return time.perf_counter() - t, out


@torch.inference_mode()
def section_reference(R: Results, state: dict, layouts: list[str], iters: int) -> None:
    sd = _weights(state)
    ref = H.build_reference(sd)
    H.allow_missing_groups(ref)
    res = {}
    state.setdefault("velocity", {})
    for name in layouts:
        inp = H.make_inputs(H.LAYOUTS[name], seed=1)
        kw = H.reference_kwargs(ref, inp)
        r = dict(floor_ms(R, name))
        r["forward"] = H.cuda_time_ms(lambda: ref(**kw), iters=iters)
        r["vram"] = H.peak_vram_during(lambda: ref(**kw))
        v = ref(**kw)[0]
        state["velocity"][("reference", name)] = v.float().cpu()
        r["velocity_finite"] = bool(torch.isfinite(v).all())
        r["velocity_rms"] = float(v.float().pow(2).mean().sqrt())

        def call(x, sigma):
            return ref(**{**kw, "hidden_states": x, "timestep": torch.full_like(inp["timestep"], sigma * 1000)})[0]

        r["sampler_25_s"], _ = _time_steps(call, inp["x"])
        r["sampler_kind"] = "25 reference calls + flow Euler update (bench/_harness.euler_loop)"
        if "floor_ms" in r:
            r["achieved_tflops"] = r["tflop"] / r["forward"]["median_ms"] * 1e3
            r["x_floor"] = r["forward"]["median_ms"] / r["floor_ms"]
        res[name] = r
        R.put("reference", res)
        log(f"reference {name}: {r['forward']['median_ms']:.1f} ms/forward, 25 steps {r['sampler_25_s']:.2f} s, "
            f"peak {r['vram']['peak_gib']:.1f} GiB, floor {r.get('floor_ms', float('nan')):.1f} ms")
    state["reference_model"] = ref


@torch.inference_mode()
def section_reference_compiled(R: Results, state: dict, layouts: list[str], iters: int) -> None:
    """The reference with each transformer block torch.compile'd (default mode), for comparison."""
    ref = state.get("reference_model") or H.build_reference(_weights(state))
    H.allow_missing_groups(ref)
    for blk in list(ref.transformer_blocks) + list(ref.single_transformer_blocks):
        blk.compile()
    res = {}
    for name in layouts:
        inp = H.make_inputs(H.LAYOUTS[name], seed=1)
        kw = H.reference_kwargs(ref, inp)
        t = time.time()
        ref(**kw)
        torch.cuda.synchronize()
        r = dict(compile_s=time.time() - t, forward=H.cuda_time_ms(lambda: ref(**kw), iters=iters))
        res[name] = r
        R.put("reference_compiled", res)
        log(f"reference compiled {name}: {r['forward']['median_ms']:.1f} ms (first call {r['compile_s']:.0f} s)")
    for blk in list(ref.transformer_blocks) + list(ref.single_transformer_blocks):
        blk._compiled_call_impl = None
    torch._dynamo.reset()


# --------------------------------------------------------------------------------------------
# Ours
# --------------------------------------------------------------------------------------------
def _core(name):
    return importlib.import_module(f"{H.PACK_NAME}.framepack_core.{name}")


def build_ours(sd: dict, operations=None, weight_dtype=None, compute_dtype=None):
    """Our ComfyUI MODEL (ModelPatcher around FramePackModel) sharing the tensors of `sd`.

    Built the way `loader.load_framepack` builds it (FramePackModelConfig, meta device, weights
    assigned), only from tensors already on the GPU instead of a file.
    """
    import comfy.model_management as mm
    import comfy.model_patcher

    cm, model_mod = _core("comfy_model"), _core("model")
    config = model_mod.infer_config({k: v.shape for k, v in sd.items()})
    mc = cm.FramePackModelConfig.from_config(config)
    mc.set_inference_dtype(weight_dtype or sd["proj_out.weight"].dtype, compute_dtype)
    if operations is not None:
        mc.custom_operations = operations
    model = mc.get_model({}, "", device=torch.device("meta"))
    model.diffusion_model.load_state_dict(sd, strict=True, assign=True)
    if hasattr(mm, "archive_model_dtypes"):  # as the loader: newer ComfyUI keeps each weight's stored dtype
        mm.archive_model_dtypes(model.diffusion_model)
    model.device = next(iter(sd.values())).device
    patcher = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)  # as the loader
    return patcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def ours_kwargs(inp: dict) -> dict:
    """Our forward's keywords (design.md contract); text without mask, as CLIPTextEncode gives it."""
    kw = {k: v for k, v in inp.items() if k not in ("x", "timestep", "context", "context_mask")}
    return kw


def sampler_objects(layout_name: str, seed: int = 1, batch_controls: int = 1, hw: int = 80, text_dim: int = 4096,
                    pooled_dim: int = 768, siglip: tuple[int, int] = (H.SIGLIP_TOKENS, H.SIGLIP_DIM)):
    """The real sampler's inputs (conditioning, layout, controls) for a bench layout, random contents."""
    lay_mod = _core("layout")
    preset, n_controls = {"oichi_default": ("oichi", 1), "kisekaeichi": ("kisekaeichi", 2),
                          "1f_mc": ("1f-mc", 2)}[layout_name]
    g = torch.Generator().manual_seed(seed)
    controls = [lay_mod.Control(latent=torch.randn(batch_controls, 16, 1, hw, hw, generator=g),
                                image_embeds=torch.randn(batch_controls, *siglip, generator=g))
                for _ in range(n_controls)]
    cond = [[torch.randn(1, H.TEXT_TOKENS, text_dim, generator=g),
             {"pooled_output": torch.randn(1, pooled_dim, generator=g)}]]
    framepack_layout = lay_mod.build_layout(controls, preset=preset)
    layout = framepack_layout.layouts[0]
    L = H.LAYOUTS[layout_name]
    assert layout.target_index == L.target_index and list(layout.clean_indices) == L.clean_indices, \
        (layout_name, layout.target_index, layout.clean_indices)
    assert layout.clean_2x.present == bool(L.idx_2x) and layout.clean_4x.present == bool(L.idx_4x)
    return cond, framepack_layout, controls


def run_sampler(patcher, layout_name: str, steps: int = 25, seed: int = 7, batch_size: int = 1,
                smoke: bool = False) -> tuple[float, torch.Tensor]:
    """(seconds, latent) of the pack's sampler; `smoke`: the inputs of SMOKE_CONFIG's model, 64x64."""
    smp = _core("comfy_sampling")
    sizes = dict(hw=8, text_dim=SMOKE_CONFIG["text_embed_dim"], pooled_dim=SMOKE_CONFIG["pooled_projection_dim"],
                 siglip=(5, SMOKE_CONFIG["image_proj_dim"])) if smoke else {}
    cond, layout, controls = sampler_objects(layout_name, **sizes)
    _sync()
    t = time.perf_counter()
    out = smp.sample_one_frame(patcher, cond, cond, layout, seed=seed, steps=steps, batch_size=batch_size)["samples"]
    _sync()
    return time.perf_counter() - t, out


def _block_split(dm, call) -> dict:
    """CUDA time inside the 60 blocks vs the whole forward (what per-run constants could save)."""
    ev = {}

    def pre(_m, _a):
        ev["a"] = torch.cuda.Event(enable_timing=True)
        ev["a"].record()

    def post(_m, _a, _o):
        ev["b"] = torch.cuda.Event(enable_timing=True)
        ev["b"].record()

    h1 = dm.transformer_blocks[0].register_forward_pre_hook(pre)
    h2 = dm.single_transformer_blocks[-1].register_forward_hook(post)
    try:
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        vals = []
        for _ in range(5):
            s.record()
            call()
            e.record()
            e.synchronize()
            vals.append((s.elapsed_time(e), ev["a"].elapsed_time(ev["b"])))
        vals.sort()
        total, blocks = vals[len(vals) // 2]
        return dict(total_ms=total, blocks_ms=blocks, outside_blocks_ms=total - blocks)
    finally:
        h1.remove()
        h2.remove()


def _host_time(call, n=5) -> float:
    """Host ms to issue one forward (no sync): far below the GPU time means launches are hidden."""
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        call()
    host = (time.perf_counter() - t) / n * 1e3
    torch.cuda.synchronize()
    return host


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


@torch.inference_mode()
def _measure_ours(R, state, key, patcher, layouts, iters, sampler=True, through_apply_model=False, graph_lever=None):
    dm = patcher.model.diffusion_model
    base = patcher.model
    topts = _transformer_options(patcher)
    res = R.data.get(key, {})
    for name in layouts:
        inp = H.make_inputs(H.LAYOUTS[name], seed=1)
        kw = ours_kwargs(inp)
        sigma = inp["timestep"] / 1000
        if graph_lever is not None:  # forwards outside a sampling run: give them a run of their own
            topts[graph_lever.RUN_KEY] = graph_lever.GraphRun(patcher)

        if through_apply_model:
            def fwd():
                return base.apply_model(inp["x"], sigma, c_crossattn=inp["context"], transformer_options=topts, **kw)
        else:
            def fwd():
                return dm(inp["x"], inp["timestep"], inp["context"], transformer_options=topts, **kw)
        r = dict(floor_ms(R, name))
        t = time.time()
        out0 = fwd()
        torch.cuda.synchronize()
        r["first_call_s"] = time.time() - t
        r["forward"] = H.cuda_time_ms(fwd, iters=iters)
        r["vram"] = H.peak_vram_during(fwd)
        r["host_issue_ms"] = _host_time(fwd)
        if not through_apply_model:
            r["split"] = _block_split(dm, fwd)
            v = out0
        else:
            v = (inp["x"].float() - out0) / sigma.view(-1, 1, 1, 1, 1)
        state.setdefault("velocity", {})[(key, name)] = v.float().cpu()
        vref = state.get("velocity", {}).get(("reference", name))
        if vref is not None:
            r["velocity_rel_err_vs_reference"] = _rel(v, vref)
        vb = state.get("velocity", {}).get(("ours_apply_model" if through_apply_model else "ours", name))
        if vb is not None and key not in ("ours", "ours_apply_model"):
            r["velocity_rel_err_vs_ours_bf16"] = _rel(v, vb)
        if key.endswith("_graph"):  # a CUDA graph replays the same kernels: compare with the same path ungraphed
            vg = state.get("velocity", {}).get((key[:-len("_graph")], name))
            if vg is not None:
                r["velocity_rel_err_vs_ungraphed"] = _rel(v, vg)
        r["velocity_finite"] = bool(torch.isfinite(v).all())
        r["achieved_tflops"] = r["tflop"] / r["forward"]["median_ms"] * 1e3
        if "floor_ms" in r:
            r["x_floor"] = r["forward"]["median_ms"] / r["floor_ms"]
        ref = R.data.get("reference", {}).get(name)
        if ref:
            r["speedup_vs_reference"] = ref["forward"]["median_ms"] / r["forward"]["median_ms"]
        if sampler:
            if H.have_module("sampler") and H.have_module("layout"):
                run_sampler(patcher, name, steps=2)  # warm-up (loads the model, compiles)
                r["sampler_25_s"], lat = run_sampler(patcher, name)
                r["sampler_kind"] = "framepack_core.comfy_sampling.sample_one_frame (UniPC bh1, cfg 1), through ComfyUI's sampling"
                state.setdefault("latent", {})[(key, name)] = lat.float().cpu()
                lb = state.get("latent", {}).get(("ours", name))
                if lb is not None and key != "ours":
                    r["final_latent_rel_err_vs_ours_bf16"] = _rel(lat, lb)
                lg = state.get("latent", {}).get((key[:-len("_graph")], name)) if key.endswith("_graph") else None
                if lg is not None:
                    r["final_latent_rel_err_vs_ungraphed"] = _rel(lat, lg)
            else:
                def call(x, s):
                    return dm(x, torch.full_like(inp["timestep"], s * 1000), inp["context"], **kw)
                r["sampler_25_s"], _ = _time_steps(call, inp["x"])
                r["sampler_kind"] = "25 model calls + flow Euler update (sampler module missing)"
        if graph_lever is not None:
            run = topts.pop(graph_lever.RUN_KEY)
            r["graph_forward"] = dict(usable=run.usable, captures=run.captures, replays=run.replays)
            run.close()
            if sampler:
                r["graph_sampler_run"] = dict(graph_lever.LAST_RUN)
        res[name] = r
        R.put(key, res)
        log(f"{key} {name}: {r['forward']['median_ms']:.1f} ms/forward ({r.get('x_floor', 0):.2f}x floor, "
            f"{r['achieved_tflops']:.0f} TF/s), 25 steps {r.get('sampler_25_s', float('nan')):.2f} s, "
            f"peak {r['vram']['peak_gib']:.1f} GiB, host {r['host_issue_ms']:.0f} ms, "
            f"err vs ref {r.get('velocity_rel_err_vs_reference', float('nan')):.2e}, "
            f"vs ours {r.get('velocity_rel_err_vs_ours_bf16', float('nan')):.2e}, split {r.get('split')}")


def section_ours(R, state, layouts, iters):
    sd = _weights(state)
    state.pop("reference_model", None)
    patcher = build_ours(sd)
    state["ours"] = patcher
    _measure_ours(R, state, "ours", patcher, layouts, iters)


def _block_keys(dm):
    return ([f"diffusion_model.transformer_blocks.{i}" for i in range(len(dm.transformer_blocks))]
            + [f"diffusion_model.single_transformer_blocks.{i}" for i in range(len(dm.single_transformer_blocks))])


def _transformer_options(patcher) -> dict:
    """transformer_options with the patcher's wrappers and callbacks merged in, as ComfyUI's
    sampler_helpers.prepare_model_patcher (and framepack_core.sampler) build them before sampling,
    so a direct apply_model call sees e.g. the torch.compile wrapper."""
    import comfy.patcher_extension as pe

    topts = dict(patcher.model_options.get("transformer_options", {}))
    for key in ("wrappers", "callbacks"):
        merged = pe.merge_nested_dicts({}, topts.get(key, {}))
        topts[key] = pe.merge_nested_dicts(merged, getattr(patcher, key, {}) or {})
    return topts


def section_ours_compiled(R, state, layouts, iters):
    """torch.compile of each block through ComfyUI's own hook (comfy_api.torch_helpers, what the
    native TorchCompileModel node uses), applied inside apply_model; static shapes per layout."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), 256))
    patcher = state.get("ours") or build_ours(_weights(state))
    p2 = patcher.clone()
    set_torch_compile_wrapper(p2, backend="inductor", dynamic=False, keys=_block_keys(p2.model.diffusion_model))
    state["ours_compiled"] = p2
    _measure_ours(R, state, "ours_compiled", p2, layouts, iters, through_apply_model=True)
    # the compiled blocks ran (a warm inductor cache makes the first call fast, so time says nothing)
    state["compile_ok"] = bool(R.data["ours_compiled"][layouts[0]]["velocity_finite"])
    _profile(R, state, "profile_ours_compiled", p2, layouts[0])


def section_ours_cudagraphs(R, state, layouts, iters):
    """Lever: the compiled blocks with CUDA graphs (torch.compile mode 'reduce-overhead'), to remove
    launch gaps and per-block Python/guard overhead. Forward time only, kisekaeichi."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    patcher = state.get("ours") or build_ours(_weights(state))
    p3 = patcher.clone()
    set_torch_compile_wrapper(p3, backend="inductor", mode="reduce-overhead", dynamic=False,
                              keys=_block_keys(p3.model.diffusion_model))
    _measure_ours(R, state, "ours_compiled_cudagraphs", p3, [l for l in layouts if l == "kisekaeichi"], iters,
                  sampler=False, through_apply_model=True)
    del p3
    torch._dynamo.reset()


def section_fa4(R, state, layouts, iters):
    """Lever: attention through FlashAttention-4 (framepack_core.attention_fa4, ComfyUI's
    optimized_attention_override hook), eager and with the blocks compiled; skipped with the
    reason when the flash-attn-4 package is not importable."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    fa4 = importlib.import_module(f"{H.PACK_NAME}.framepack_core.attention_fa4")
    err = fa4.fa4_import_error()
    if err is not None:
        R.put("fa4_unavailable", err)
        log("fa4: not importable:", err)
        return
    patcher = state.get("ours") or build_ours(_weights(state))
    pf = fa4.use_fa4(patcher)
    _measure_ours(R, state, "ours_fa4", pf, layouts, iters, sampler=False, through_apply_model=True)
    _profile(R, state, "profile_ours_fa4", pf, layouts[0])
    pc = pf.clone()
    set_torch_compile_wrapper(pc, backend="inductor", dynamic=False, keys=_block_keys(pc.model.diffusion_model))
    _measure_ours(R, state, "ours_fa4_compiled", pc, layouts, iters, through_apply_model=True)
    _profile(R, state, "profile_ours_fa4_compiled", pc, layouts[0])
    del pf, pc


def section_cuda_graph(R, state, layouts, iters):
    """Lever: the whole forward as one CUDA graph per sampling run (bench/cuda_graph_lever.py), on
    the compiled blocks, bf16 and (kisekaeichi) fp8 matmuls; the 25-step time includes the eager
    first call and the capture. With FlashAttention-4 too where it imports."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    import cuda_graph_lever as cg
    fa4 = importlib.import_module(f"{H.PACK_NAME}.framepack_core.attention_fa4")
    patcher = state.get("ours") or build_ours(_weights(state))
    variants = [("ours_compiled_graph", patcher, layouts)]
    if fa4.fa4_import_error() is None:
        variants.append(("ours_fa4_compiled_graph", fa4.use_fa4(patcher), layouts))
    for key, p, lays in variants:
        pc = cg.use_cuda_graph(p)
        set_torch_compile_wrapper(pc, backend="inductor", dynamic=False, keys=_block_keys(pc.model.diffusion_model))
        _measure_ours(R, state, key, pc, lays, iters, through_apply_model=True, graph_lever=cg)
        del pc
    import comfy.ops

    if "sd8" not in state:
        state["sd8"] = fp8_state_dict(_weights(state))
    p8 = build_ours(state["sd8"], operations=comfy.ops.fp8_ops, weight_dtype=torch.float8_e4m3fn,
                    compute_dtype=torch.bfloat16)
    pc = cg.use_cuda_graph(p8)
    set_torch_compile_wrapper(pc, backend="inductor", dynamic=False, keys=_block_keys(pc.model.diffusion_model))
    _measure_ours(R, state, "fp8_scaled_mm_compiled_graph", pc, [l for l in layouts if l == "kisekaeichi"], iters,
                  through_apply_model=True, graph_lever=cg)
    del pc, p8


def section_ours_apply_model(R, state, layouts, iters):
    """Eager through BaseModel.apply_model (ComfyUI's casts and wrappers), as the sampler calls it."""
    patcher = state.get("ours") or build_ours(_weights(state))
    _measure_ours(R, state, "ours_apply_model", patcher, layouts, iters, sampler=False, through_apply_model=True)


@torch.inference_mode()
def _profile(R, state, key, patcher, name):
    """Kernel time of one forward by category (torch.profiler), to see where the gap to the floor is."""
    from torch.profiler import ProfilerActivity, profile

    base, inp = patcher.model, H.make_inputs(H.LAYOUTS[name], seed=1)
    kw = ours_kwargs(inp)
    topts = _transformer_options(patcher)
    fwd = lambda: base.apply_model(inp["x"], inp["timestep"] / 1000, c_crossattn=inp["context"],  # noqa: E731
                                   transformer_options=topts, **kw)
    fwd()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fwd()
        torch.cuda.synchronize()
    cats = {}
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if not t or e.key.startswith("ProfilerStep"):
            continue
        k = e.key.lower()
        # triton first: inductor names fused kernels after the ops around them ("..._cudnn_attention_...");
        # then attention: FlashAttention-4's CuTe DSL kernels carry "cutlass" in their names too
        if "triton" in k:
            c = "triton_fused"
        elif any(s in k for s in ("flash", "fmha", "attention", "cudnn", "sdpa")):
            c = "attention"
        elif any(s in k for s in ("gemm", "sm90_xmma", "cutlass", "nvjet", "matmul", "_mm_")):
            c = "matmul"
        else:
            c = "other"
        cats[c] = cats.get(c, 0) + t / 1e3
        rows.append((t / 1e3, e.count, e.key[:90], c))
    rows.sort(reverse=True)
    R.put(key, dict(layout=name, ms_by_category=cats, top=[dict(ms=r[0], count=r[1], kernel=r[2], cat=r[3])
                                                           for r in rows[:25]]))
    log(f"{key} {name}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(cats.items())))
    for r in rows[:12]:
        log(f"   {r[0]:8.2f} ms {r[1]:5d}x [{r[3]}] {r[2]}")


def section_profile_eager(R, state, layouts, iters):
    patcher = state.get("ours") or build_ours(_weights(state))
    _profile(R, state, "profile_ours_eager", patcher, layouts[0])


# --------------------------------------------------------------------------------------------
# fp8, batch, low VRAM
# --------------------------------------------------------------------------------------------
def fp8_state_dict(sd: dict) -> dict:
    """The released fp8 file's recipe (and loader.target_dtype's): weights of 2+ dims without
    'norm' in their name cast to float8_e4m3fn, unscaled; norms and biases stay bf16."""
    return {k: (v.to(torch.float8_e4m3fn) if v.ndim >= 2 and "norm" not in k else v) for k, v in sd.items()}


def scaled_fp8_model(sd: dict):
    """Per-tensor scaled fp8 (ComfyUI's scaled-fp8 format): each Linear weight divided by
    amax/448 before the e4m3fn cast, the scale kept as `<layer>.scale_weight`; run through
    comfy.ops.scaled_fp8_ops(fp8_matrix_mult=True) (torch._scaled_mm with the weight scale).
    Norm-named Linears stay bf16 (scale 1), convs are a plain cast, as in the unscaled recipe."""
    import comfy.ops

    ops = comfy.ops.scaled_fp8_ops(fp8_matrix_mult=True, scale_input=False)
    cm, model_mod = _core("comfy_model"), _core("model")
    mc = cm.FramePackModelConfig.from_config(model_mod.infer_config({k: v.shape for k, v in sd.items()}))
    mc.set_inference_dtype(torch.float8_e4m3fn, torch.bfloat16)
    mc.custom_operations = ops
    with torch.device("meta"):
        probe = mc.get_model({}, "", device=torch.device("meta"))
    linears = {n for n, m in probe.diffusion_model.named_modules() if isinstance(m, torch.nn.Linear)}
    del probe
    out = {}
    for k, v in sd.items():
        mod, leaf = k.rsplit(".", 1)
        if k == "proj_out.weight":
            out[k] = v  # the float32 output head: fp8_linear refuses fp32 out with a bias; keep bf16
        elif v.ndim >= 2 and "norm" not in k:
            if mod in linears and leaf == "weight":
                scale = (v.abs().amax().float() / 448.0).clamp(min=1e-12)
                out[k] = (v.float() / scale).to(torch.float8_e4m3fn)
                out[mod + ".scale_weight"] = scale
            else:
                out[k] = v.to(torch.float8_e4m3fn)
        else:
            out[k] = v
    dev = next(iter(sd.values())).device
    for mod in linears:
        out.setdefault(mod + ".scale_weight", torch.ones((), device=dev, dtype=torch.float32))
    return build_ours(out, operations=ops, weight_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)


def section_fp8(R, state, layouts, iters):
    """fp8 weights two ways: the loader's default (comfy.ops.manual_cast: fp8 storage, each weight
    cast to bf16 when its layer runs) and ComfyUI's fp8 matmul ops (comfy.ops.fp8_ops, what
    pick_operations(..., fp8_optimizations=True) / --fast fp8_matrix_mult gives on Hopper:
    torch._scaled_mm with unit scales, activations clamped to +-448 and cast to fp8)."""
    import comfy.ops

    sd = _weights(state)
    if "sd8" not in state:
        state["sd8"] = fp8_state_dict(sd)
    sd8 = state["sd8"]
    for key, ops in (("fp8_scaled_mm", comfy.ops.fp8_ops), ("fp8_manual_cast", comfy.ops.manual_cast)):
        p = build_ours(sd8, operations=ops, weight_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        lays = [l for l in layouts if l in ("kisekaeichi", "oichi_default")] if key == "fp8_manual_cast" else layouts
        _measure_ours(R, state, key, p, lays, iters)
        if key == "fp8_scaled_mm" and state.get("compile_ok"):
            from comfy_api.torch_helpers import set_torch_compile_wrapper

            p2 = p.clone()
            set_torch_compile_wrapper(p2, backend="inductor", dynamic=False, keys=_block_keys(p2.model.diffusion_model))
            try:
                _measure_ours(R, state, "fp8_scaled_mm_compiled", p2, [l for l in layouts if l == "kisekaeichi"],
                              iters, through_apply_model=True)
            except Exception:
                R.put("error_fp8_compiled", traceback.format_exc()[-2000:])
            del p2
            fa4 = importlib.import_module(f"{H.PACK_NAME}.framepack_core.attention_fa4")
            if fa4.fa4_import_error() is None:  # fp8 matmuls + FlashAttention-4, compiled
                p3 = fa4.use_fa4(p)
                set_torch_compile_wrapper(p3, backend="inductor", dynamic=False,
                                          keys=_block_keys(p3.model.diffusion_model))
                _measure_ours(R, state, "fp8_scaled_mm_fa4_compiled", p3, [l for l in layouts if l == "kisekaeichi"],
                              iters, through_apply_model=True)
                del p3
        del p
        gc.collect()
        torch.cuda.empty_cache()
    p = scaled_fp8_model(sd)
    _measure_ours(R, state, "fp8_scaled_per_tensor", p, [l for l in layouts if l == "kisekaeichi"], iters)
    del p
    gc.collect()
    torch.cuda.empty_cache()


def section_batch(R, state, layouts, iters):
    """Images per second at batch 1 / 2 / 4 (several seeds in one batched pass), kisekaeichi,
    through the real sampler; compiled when the compiled section ran in this process."""
    patcher = state.get("ours_compiled") or state.get("ours") or build_ours(_weights(state))
    res = {}
    for b in (1, 2, 4):
        run_sampler(patcher, "kisekaeichi", steps=2, batch_size=b)
        with torch.inference_mode():
            torch.cuda.reset_peak_memory_stats()
            sec, _ = run_sampler(patcher, "kisekaeichi", batch_size=b)
        res[f"batch_{b}"] = dict(seconds=sec, images_per_s=b / sec, peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                                 compiled=patcher is state.get("ours_compiled"))
        R.put("batch", res)
        log(f"batch {b}: {sec:.2f} s per 25-step batch, {b / sec:.3f} images/s")


# (key, weights, budget GiB, comfy.ops class name or None for the loader's pick, blocks compiled,
#  ComfyUI's async weight offload on): the two budgets, each with what could make it faster
LOWVRAM_RUNS = (
    ("bf16_8gb", "bf16", 8.0, None, False, True),
    ("bf16_8gb_no_async_offload", "bf16", 8.0, None, False, False),
    ("fp8_6gb", "fp8", 6.0, None, False, True),  # the loader's fp8_e4m3fn: manual cast to bf16 per layer
    ("fp8_fast_6gb", "fp8", 6.0, "fp8_ops", False, True),  # fp8_e4m3fn_fast: torch._scaled_mm
    ("fp8_fast_6gb_compiled", "fp8", 6.0, "fp8_ops", True, True),
)
# the resident run (same call) each low-VRAM run is compared with: (same compute, eager) and (best resident)
LOWVRAM_RESIDENT = {"bf16": ("ours", "ours_compiled"), "fp8": ("fp8_manual_cast", "fp8_scaled_mm_compiled"),
                    "fp8_fast": ("fp8_scaled_mm", "fp8_scaled_mm_compiled")}


def _lowvram_run(R, key, sd_cpu, budget_gib, h2d, operations=None, weight_dtype=None, compute_dtype=None,
                 compiled=False, async_offload=True, ref_latent=None):
    """One 25-step kisekaeichi image with the weights in CPU RAM and a GPU that has `budget_gib` free
    (the rest held by another process): ComfyUI decides what stays resident and streams the rest."""
    import comfy.model_management as mm

    patcher = build_ours(sd_cpu, operations=operations, weight_dtype=weight_dtype, compute_dtype=compute_dtype)
    if compiled:
        from comfy_api.torch_helpers import set_torch_compile_wrapper

        set_torch_compile_wrapper(patcher, backend="inductor", dynamic=False,
                                  keys=_block_keys(patcher.model.diffusion_model))
    streams = mm.NUM_STREAMS
    r = dict(budget_gib=budget_gib, patcher=type(patcher).__name__, compiled=compiled,
             alloc_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), offload_streams=0 if not async_offload else streams,
             max_pinned_gib=mm.MAX_PINNED_MEMORY / 2**30, model_gib=patcher.model_size() / 2**30,
             sampler_memory_request_gib=patcher.model.memory_required((1, 16, 1, 80, 80)) / 2**30)
    try:
        if not async_offload:
            mm.NUM_STREAMS = 0  # what --disable-async-offload sets
        with H.GpuOccupier(budget_gib) as occ, torch.inference_mode():
            r["free_gib_at_start"] = occ.free_gib
            first, _ = run_sampler(patcher, "kisekaeichi", steps=1)  # partial load, pinning, compile happen here
            r["first_1_step_run_s"] = first
            torch.cuda.reset_peak_memory_stats()
            sec, lat = run_sampler(patcher, "kisekaeichi")
            r.update(seconds_per_image=sec, peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                     loaded_gib=patcher.loaded_size() / 2**30, pinned_gib=getattr(mm, "TOTAL_PINNED_MEMORY", 0) / 2**30)
        streamed = (r["model_gib"] - r["loaded_gib"]) * 2**30
        r["streamed_gib_per_step"] = streamed / 2**30
        # 25 model calls (cfg 1), each moving every non-resident weight once at the pinned copy rate
        r["transfer_bound_s"] = 25 * streamed / (h2d["pinned_gbs"] * 1e9)
        if ref_latent is not None:
            r["final_latent_rel_err_vs_resident"] = _rel(lat, ref_latent)
    except Exception as e:
        r["error"] = f"{type(e).__name__}: {str(e)[:500]}"
    finally:
        mm.NUM_STREAMS = streams
        mm.unload_all_models()
        del patcher
        gc.collect()
        torch.cuda.empty_cache()
    res = R.data.get("lowvram", {})
    res[key] = r
    R.put("lowvram", res)
    log(f"lowvram {key}: {r}")
    return r


def section_lowvram(R, state, layouts, iters):
    """kisekaeichi 25 steps with the weights in CPU RAM on a GPU with 8 GB (bf16) / 6 GB (fp8) free:
    ComfyUI's partial loading, its pinned memory and async offload streams (comfy.ops casts each
    non-resident weight to the GPU when its layer runs); under Dynamic VRAM (--dynamic-vram, 0.28.0) its
    ModelPatcherDynamic instead. Each run is set against the resident run of the same call and against the
    PCIe bound (weights streamed per step over the measured pinned copy rate)."""
    import comfy.model_management as mm
    import comfy.ops

    sd = _weights(state)
    sd8 = state.get("sd8") or fp8_state_dict(sd)
    latents = state.get("latent", {})
    t = time.time()
    cpu = {"bf16": {k: v.cpu() for k, v in sd.items()}, "fp8": {k: v.cpu() for k, v in sd8.items()}}
    log(f"weights to CPU RAM in {time.time() - t:.0f} s")
    for k in [k for k in state if k in ("sd", "sd8", "ours", "ours_compiled", "reference_model")]:
        state.pop(k)
    del sd, sd8
    mm.unload_all_models()
    gc.collect()
    torch.cuda.empty_cache()
    h2d = H.h2d_bandwidth_gbs()
    R.put("h2d_bandwidth", h2d)
    log(f"GPU memory allocated after freeing: {torch.cuda.memory_allocated() / 2**30:.2f} GiB; host->GPU {h2d}")
    for key, weights, budget, ops_name, compiled, async_offload in LOWVRAM_RUNS:
        if state.get("dynamic_vram") and not async_offload:
            continue  # Dynamic VRAM streams its own way
        kind = "fp8_fast" if ops_name == "fp8_ops" else weights
        eager_key, best_key = LOWVRAM_RESIDENT[kind]
        fp8 = dict(weight_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16) if weights == "fp8" else {}
        r = _lowvram_run(R, key, cpu[weights], budget, h2d, operations=getattr(comfy.ops, ops_name) if ops_name else None,
                         compiled=compiled, async_offload=async_offload,
                         ref_latent=latents.get((best_key if compiled else eager_key, "kisekaeichi")), **fp8)
        for label, rkey in (("resident_eager", eager_key), ("resident_best", best_key)):
            resident = R.data.get(rkey, {}).get("kisekaeichi", {}).get("sampler_25_s")
            if resident and "seconds_per_image" in r:
                r[f"{label}_s"] = resident
                r[f"x_{label}"] = r["seconds_per_image"] / resident
        R.put("lowvram", {**R.data["lowvram"], key: r})


def _calm(sd: dict) -> dict:
    """`sd` with the blocks' modulation scaled down 100x (gates near 0: each block close to the identity),
    so the velocity changes smoothly along the trajectory as a trained model's does and step caches
    can work. Random weights proper change erratically from step to step. Shares the other tensors."""
    return {k: (v * 0.01 if ".norm1" in k or ".norm.linear" in k or k.startswith("x_embedder.") else v)
            for k, v in sd.items()}


class _Counts:
    """Model calls (the transformer's `_forward`) and block-stack runs (a forward hook on the first block) of
    one patcher while in a `with`; `reset()` between measured runs."""

    def __init__(self, patcher):
        self.dm = patcher.model.diffusion_model
        self.model_calls = self.block_stack_runs = 0

    def reset(self):
        self.model_calls = self.block_stack_runs = 0

    def __enter__(self):
        cls, forward = type(self.dm), type(self.dm)._forward

        def counted(model, *a, **k):
            self.model_calls += 1
            return forward(model, *a, **k)

        self._restore = (cls, forward)
        cls._forward = counted
        self._hook = self.dm.transformer_blocks[0].register_forward_hook(
            lambda *_: setattr(self, "block_stack_runs", self.block_stack_runs + 1))
        return self

    def __exit__(self, *exc):
        cls, forward = self._restore
        cls._forward = forward
        self._hook.remove()


def _cache_rows(R, key, weights, name, patcher, variants, smoke):
    """Sample each (label, MODEL or a function making it) of `variants` with 25 steps, seed 7; the first is the
    uncached run the others' final latent error is measured against. Returns {label: row}."""
    rows, base = {}, None
    with _Counts(patcher) as counts:
        run_sampler(patcher, name, steps=2, smoke=smoke)  # warm-up: loads the model
        for label, model in variants:
            model = model() if callable(model) else model
            counts.reset()
            sec, lat = run_sampler(model, name, smoke=smoke)
            row = dict(weights=weights, cache=label, model_calls=counts.model_calls,
                       block_stack_runs=counts.block_stack_runs, seconds=sec)
            if base is None:
                base = lat.float()
            else:
                row["final_latent_rel_err"] = _rel(lat, base)
            rows[label] = row
            res = R.data.get(key, {})
            res[f"{weights} / {label}"] = row
            R.put(key, res)
            log(f"{key} {weights} {label}: {row['model_calls']} model calls, {row['block_stack_runs']} block stacks, "
                f"{sec:.2f} s, err {row.get('final_latent_rel_err', 0):.3f}")
    return rows


@torch.inference_mode()
def section_step_cache(R, state, layouts, iters):
    """ComfyUI's own step caches (EasyCache, LazyCache) on our MODEL through ComfyUI's sampling: model
    calls, seconds and the final latent's relative error per 25-step image, same seed, against the
    uncached run, on the bench's random weights and on their 'calm' variant (see _calm). Neither
    shows the quality a trained model gives; see bench/README.md for the path on real weights."""
    from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

    sd = _weights(state)
    name = "kisekaeichi" if "kisekaeichi" in layouts else layouts[0]
    for weights in ("random", "calm"):
        patcher = build_ours(sd if weights == "random" else _calm(sd))
        variants = [("none", patcher)]
        for thr in (0.1, 0.2, 0.3):
            variants.append((f"EasyCache {thr}", EasyCacheNode.execute(patcher, thr, 0.15, 0.95, False)[0]))
        variants.append(("LazyCache 0.2", LazyCacheNode.execute(patcher, 0.2, 0.15, 0.95, False)[0]))
        _cache_rows(R, "step_cache", weights, name, patcher, variants, state.get("cpu_smoke"))
        del patcher
        torch.cuda.empty_cache()


# (threshold, K) of the MagCache sweep: musubi-tuner's default (0.24, 6) and its documented gentler (0.12, 3)
MAGCACHE_SWEEP = ((0.12, 3), (0.24, 6), (0.5, 6))


@torch.inference_mode()
def section_magcache(R, state, layouts, iters):
    """The pack's MagCache (framepack_core/magcache.py, node FramePackMagCache) as step_cache measures
    ComfyUI's caches: per 25-step image, model calls, block-stack runs, seconds, final latent error vs
    uncached, on random and calm weights; with musubi-tuner's default ratios at the MAGCACHE_SWEEP
    settings, and with ratios calibrated on the same model (a calibration run first, then its ratios at
    the two gentler settings). Random weights do not show a trained model's quality or ratios."""
    mc = _core("magcache")
    sd = _weights(state)
    smoke = state.get("cpu_smoke")
    name = "kisekaeichi" if "kisekaeichi" in layouts else layouts[0]
    for weights in ("random", "calm"):
        patcher = build_ours(sd if weights == "random" else _calm(sd))
        calibrated = {}

        def with_cache(threshold=0.24, k=6, use_calibrated=False, calibration=False):
            def make():  # called when its run starts, so that the calibration run has filled `calibrated`
                if use_calibrated and calibrated.get("ratios") is None:
                    raise RuntimeError("the calibration run measured no ratios")
                settings = mc.MagCacheSettings(threshold=threshold, k=k, calibration=calibration,
                                               ratios=tuple(calibrated["ratios"]) if use_calibrated else None)
                return mc.apply_magcache(patcher, settings, report=calibrated.update)
            return make

        variants = [("none", patcher), ("calibration", with_cache(calibration=True))]
        variants += [(f"default ratios {t} K{k}", with_cache(t, k)) for t, k in MAGCACHE_SWEEP]
        variants += [(f"calibrated ratios {t} K{k}", with_cache(t, k, use_calibrated=True))
                     for t, k in MAGCACHE_SWEEP[:2]]
        _cache_rows(R, "magcache", weights, name, patcher, variants, smoke)
        res = R.data["magcache"]
        res[f"{weights} / calibration"].update(ratios=mc.format_ratios(calibrated["ratios"]),
                                               norm_std=calibrated["norm_std"], cos_dis=calibrated["cos_dis"])
        R.put("magcache", res)
        log(f"magcache {weights}: calibrated ratios {res[f'{weights} / calibration']['ratios']}")
        if weights == "random" and not smoke:
            _magcache_compiled(R, mc, patcher, name, calibrated)
        del patcher
        torch.cuda.empty_cache()


def _magcache_compiled(R, mc, patcher, name, calibrated):
    """MagCache with the blocks compiled through ComfyUI's compile hook (what the per-image target needs):
    the compile warm-up untimed, then 25-step images uncached and with the calibrated ratios, errors against
    the eager uncached latent."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    _, base = run_sampler(patcher, name)
    compiled = patcher.clone()
    set_torch_compile_wrapper(compiled, backend="inductor", dynamic=False, keys=_block_keys(compiled.model.diffusion_model))
    t0 = time.perf_counter()
    run_sampler(compiled, name, steps=3)  # compiles
    res = R.data.get("magcache", {})
    res["random / compiled warm-up s"] = time.perf_counter() - t0
    variants = [("compiled, none", compiled)] + [
        (f"compiled, calibrated ratios {t} K{k}",
         mc.apply_magcache(compiled, mc.MagCacheSettings(threshold=t, k=k, ratios=tuple(calibrated["ratios"]))))
        for t, k in MAGCACHE_SWEEP]
    for label, model in variants:
        # not counted here (a hook on a compiled block would make it recompile): the skips are the eager
        # rows' for the same ratios and settings, the rule depending only on them and the schedule
        sec, lat = run_sampler(model, name)
        res[f"random / {label}"] = dict(weights="random", cache=label, seconds=sec,
                                        final_latent_rel_err=_rel(lat, base.float()))
        R.put("magcache", res)
        log(f"magcache random {label}: {sec:.2f} s, err {_rel(lat, base.float()):.3f}")


SECTIONS = ["env", "floor", "reference", "reference_compiled", "ours", "ours_apply_model", "profile_eager", "ours_compiled", "fa4", "cuda_graph", "fp8", "batch", "lowvram", "step_cache", "magcache"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results JSON path")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma list of: " + ", ".join(SECTIONS))
    ap.add_argument("--layouts", default=",".join(H.LAYOUTS))
    ap.add_argument("--iters", type=int, default=10, help="timed forwards per measurement (median)")
    ap.add_argument("--comfy-args", default="", help="extra ComfyUI flags, e.g. '--use-sage-attention'")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help=f"a tiny model on the CPU (checks the code runs); sections {', '.join(SMOKE_SECTIONS)} only")
    ap.add_argument("--dynamic-vram", action="store_true",
                    help="switch on ComfyUI's Dynamic VRAM as a current main.py does (ModelPatcherDynamic for every "
                         "model built here); needs ComfyUI 0.28+ with comfy-aimdo")
    args = ap.parse_args(argv)
    if args.cpu_smoke and not set(args.sections.split(",")) <= set(SMOKE_SECTIONS):
        ap.error(f"--cpu-smoke runs the sections {', '.join(SMOKE_SECTIONS)} only; pass --sections")

    H.boot_comfy((args.comfy_args.split() if args.comfy_args else []) + (["--cpu"] if args.cpu_smoke else []),
                 dynamic_vram=args.dynamic_vram)
    torch.backends.cuda.matmul.allow_tf32 = True
    R = Results(Path(args.out))
    R.put("dynamic_vram", args.dynamic_vram)
    state: dict = {"cpu_smoke": args.cpu_smoke, "dynamic_vram": args.dynamic_vram}
    layouts = args.layouts.split(",")
    failed = []
    for sec in args.sections.split(","):
        log(f"--- {sec}")
        try:
            fn = globals()[f"section_{sec}"]
            if sec in ("env", "floor"):
                fn(R, state)
            else:
                fn(R, state, layouts, args.iters)
        except Exception as e:
            failed.append(sec)
            tb = traceback.format_exc()
            log(f"section {sec} FAILED:\n{tb}")
            R.put(f"error_{sec}", tb[-3000:])
        gc.collect()
        torch.cuda.empty_cache()
    R.put("n_params", state.get("n_params"))
    log("done; failed sections:", failed or "none")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
