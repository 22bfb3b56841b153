"""GPU fast paths against the plain bf16 path, on a reduced but full-width FramePack.

    python bench/gpu_paths.py --out result.json

Run by `tests/test_gpu_paths.py` in a subprocess (ComfyUI must boot with the GPU, the test
session's ComfyUI is booted with --cpu). The model keeps the released width (24 heads x 128,
4096-d text, 1152-d SigLIP, real RoPE axes) and every layer kind, with 2 dual + 2 single blocks;
inputs are 320x320 with the kisekaeichi and musubi-default layouts (~2k tokens).

Paths (each compared on the same random weights and inputs):
* fp32    the same weights in float32 (the accuracy yardstick for the bf16 paths)
* bf16    eager, through BaseModel.apply_model (what the sampler calls)
* compiled  each block torch.compile'd through ComfyUI's hook (comfy_api.torch_helpers)
* fp8_scaled_mm  fp8 e4m3fn weights through comfy.ops.fp8_ops (torch._scaled_mm)
* fp8_manual_cast  the same fp8 weights cast to bf16 per layer (the loader's "fp8_e4m3fn")
* fp8_fast_loader  a bf16 file through `load_framepack(..., "fp8_e4m3fn_fast")` (the user's path)
* graph   the whole forward as one CUDA graph per sampling run (off by itself on low VRAM / CPU)
* fa4     attention through FlashAttention-4 (optional package), eager, compiled and low-VRAM
* lowvram  weights in CPU RAM, ComfyUI partial loading with about half of them on the GPU
and the full sampler (6 UniPC steps) resident vs low-VRAM.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402

REDUCED = dict(H.FULL_CONFIG, num_layers=2, num_single_layers=2)
HW = 320


def _rel(a, b) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny config on the CPU, no compile (checks the code runs)")
    args = ap.parse_args(argv)
    H.boot_comfy(["--cpu"] if args.cpu_smoke else [])
    dev = "cpu" if args.cpu_smoke else "cuda"
    cfg, hw = REDUCED, HW
    if args.cpu_smoke:
        cfg, hw = dict(REDUCED, **H.TINY_WIDTH), 64
    import comfy.model_management as mm
    import comfy.ops
    from comfy_api.torch_helpers import set_torch_compile_wrapper

    import bench_oneframe as B

    res: dict = {"config": {k: cfg[k] for k in ("num_layers", "num_single_layers", "num_attention_heads",
                                                    "attention_head_dim")}, "hw": hw}
    out = Path(args.out)

    def save():
        out.write_text(json.dumps(res, indent=1))

    sd = H.random_state_dict(cfg, seed=3, device=dev)
    res["n_params"] = sum(v.numel() for v in sd.values())
    inputs = {name: H.make_inputs(H.LAYOUTS[name], height=hw, width=hw, seed=4, device=dev, config=cfg)
              for name in ("kisekaeichi", "oichi_default")}

    def velocity(patcher, inp, dtype=torch.bfloat16, graph_run=None):
        topts = B._transformer_options(patcher)
        if graph_run is not None:  # a CUDA-graph run outside the sampler (bench/cuda_graph_lever.py)
            topts[cg.RUN_KEY] = graph_run
        kw = {k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() and k != "guidance" else v)
              for k, v in B.ours_kwargs(inp).items()}
        # guidance as an integer tensor: ComfyUI's apply_model casts float extras to the compute
        # dtype, and 10000 is 9984 in bf16 (see bench/README.md); integers pass through.
        kw["guidance"] = kw["guidance"].round().long()
        sigma = inp["timestep"] / 1000
        with torch.inference_mode():
            x0 = patcher.model.apply_model(inp["x"].to(dtype), sigma, c_crossattn=inp["context"].to(dtype),
                                           transformer_options=topts, **kw)
        return ((inp["x"].float() - x0.float()) / sigma.view(-1, 1, 1, 1, 1)).cpu()

    import cuda_graph_lever as cg
    base = B.build_ours(sd)
    mm.load_models_gpu([base])
    v = {name: velocity(base, inp) for name, inp in inputs.items()}
    lat_resident = None
    try:
        cond, layout, controls = B.sampler_objects("kisekaeichi", hw=hw // 8, text_dim=cfg["text_embed_dim"],
                                                   pooled_dim=cfg["pooled_projection_dim"],
                                                   siglip=(inputs["kisekaeichi"]["image_embeds"].shape[1],
                                                           cfg["image_proj_dim"]))
        smp = B._core("comfy_sampling")
        with torch.inference_mode():
            lat_resident = smp.sample_one_frame(base, cond, cond, layout, seed=5, steps=6)["samples"].cpu()
    except Exception as e:
        res["sampler_error"] = f"{type(e).__name__}: {e}"

    sd32 = {k: t.float() for k, t in sd.items()}
    p32 = B.build_ours(sd32)
    v32 = {}
    for name, inp in inputs.items():
        v32[name] = velocity(p32, inp, torch.float32)
        res.setdefault(name, {})["bf16_vs_fp32"] = _rel(v[name], v32[name])
    del p32, sd32
    gc.collect()
    torch.cuda.empty_cache()
    save()

    # compiled blocks through ComfyUI's own hook
    pc = base.clone()
    if not args.cpu_smoke:
        set_torch_compile_wrapper(pc, backend="inductor", dynamic=False, keys=B._block_keys(pc.model.diffusion_model))
    for name, inp in inputs.items():
        vc = velocity(pc, inp)
        res[name]["compiled_vs_bf16"] = _rel(vc, v[name])
        res[name]["compiled_vs_fp32"] = _rel(vc, v32[name])
        res[name]["compiled_finite"] = bool(torch.isfinite(vc).all())
    save()
    del pc

    # the whole forward as a CUDA graph: 1st call eager, 2nd captures and replays, 3rd replays
    pg = cg.use_cuda_graph(base)
    for name, inp in inputs.items():
        run = cg.GraphRun(pg)
        outs = [velocity(pg, inp, graph_run=run) for _ in range(3)]
        res[name]["graph_vs_bf16"] = max(_rel(o, v[name]) for o in outs)
        res[name]["graph_replays"] = run.replays
        run.close()
    if lat_resident is not None:
        with torch.inference_mode():
            lat_g = smp.sample_one_frame(pg, cond, cond, layout, seed=5, steps=6)["samples"].cpu()
        res["sampler_graph_vs_resident"] = _rel(lat_g, lat_resident)
        res["sampler_graph_run"] = dict(cg.LAST_RUN)
    save()

    # FlashAttention-4 through ComfyUI's optimized_attention_override hook, eager and compiled
    # (only where the optional flash-attn-4 package imports)
    fa4 = B._core("attention_fa4")
    res["fa4_import_error"] = fa4.fa4_import_error()
    pfa = None
    if not args.cpu_smoke and res["fa4_import_error"] is None:
        pfa = fa4.use_fa4(base)
        pfc = pfa.clone()
        set_torch_compile_wrapper(pfc, backend="inductor", dynamic=False, keys=B._block_keys(pfc.model.diffusion_model))
        for name, inp in inputs.items():
            vf = velocity(pfa, inp)
            res[name]["fa4_vs_bf16"] = _rel(vf, v[name])
            res[name]["fa4_vs_fp32"] = _rel(vf, v32[name])
            res[name]["fa4_compiled_vs_bf16"] = _rel(velocity(pfc, inp), v[name])
        del pfc
        save()

    # fp8
    sd8 = B.fp8_state_dict(sd)
    for key, ops in (("fp8_scaled_mm", comfy.ops.fp8_ops), ("fp8_manual_cast", comfy.ops.manual_cast)):
        p8 = B.build_ours(sd8, operations=ops, weight_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16)
        for name, inp in inputs.items():
            res[name][f"{key}_vs_bf16"] = _rel(velocity(p8, inp), v[name])
        del p8
        gc.collect()
    del sd8
    # The same through the user's path: a bf16 file loaded by the loader with "fp8_e4m3fn_fast",
    # which must pick ComfyUI's fp8-matmul layers where the device has fp8 compute.
    from safetensors.torch import save_file

    bf16_file = Path("fp8_fast_loader_input.safetensors").resolve()
    save_file({k: t.to(torch.bfloat16).cpu().contiguous() for k, t in sd.items()}, str(bf16_file))
    pf = B._core("loader").load_framepack(str(bf16_file), "fp8_e4m3fn_fast")
    mm.load_models_gpu([pf])
    res["fp8_fast_loader_layer"] = type(pf.model.diffusion_model.transformer_blocks[0].attn.to_q).__module__ + "." + \
        type(pf.model.diffusion_model.transformer_blocks[0].attn.to_q).__qualname__
    res["fp8_compute_available"] = bool(mm.supports_fp8_compute(mm.get_torch_device()))
    for name, inp in inputs.items():
        res[name]["fp8_fast_loader_vs_bf16"] = _rel(velocity(pf, inp), v[name])
    mm.unload_all_models()
    del pf
    bf16_file.unlink()
    gc.collect()
    torch.cuda.empty_cache()
    save()

    # low VRAM: weights in CPU RAM, about half of them loaded
    if args.cpu_smoke:
        save()
        print(json.dumps(res, indent=1))
        return 0
    sd_cpu = {k: t.cpu() for k, t in sd.items()}
    weights_bytes = sum(t.numel() * t.element_size() for t in sd_cpu.values())
    mm.unload_all_models()
    del base, sd
    gc.collect()
    torch.cuda.empty_cache()
    pl = B.build_ours(sd_cpu)
    old = mm.EXTRA_RESERVED_VRAM
    free = mm.get_free_memory(mm.get_torch_device())
    mm.EXTRA_RESERVED_VRAM = int(free - weights_bytes / 2 - mm.minimum_inference_memory() + old)
    try:
        mm.load_models_gpu([pl])
        on_gpu = sum(t.numel() * t.element_size() for t in pl.model.diffusion_model.parameters() if t.is_cuda)
        res["lowvram_weights_on_gpu_fraction"] = on_gpu / weights_bytes
        for name, inp in inputs.items():
            res[name]["lowvram_vs_bf16"] = _rel(velocity(pl, inp), v[name])
            if pfa is not None:  # FlashAttention-4 on the partially loaded model
                res[name]["lowvram_fa4_vs_bf16"] = _rel(velocity(fa4.use_fa4(pl), inp), v[name])
        if lat_resident is not None:
            with torch.inference_mode():
                lat_low = smp.sample_one_frame(pl, cond, cond, layout, seed=5, steps=6)["samples"].cpu()
            res["sampler_lowvram_vs_resident"] = _rel(lat_low, lat_resident)
            with torch.inference_mode():  # CUDA graphs must turn themselves off on a partially loaded model
                lat_low_g = smp.sample_one_frame(cg.use_cuda_graph(pl), cond, cond, layout, seed=5,
                                                 steps=6)["samples"].cpu()
            res["sampler_lowvram_graph_vs_lowvram"] = _rel(lat_low_g, lat_low)
            res["sampler_lowvram_graph_run"] = dict(cg.LAST_RUN)
            res["sampler_finite"] = bool(torch.isfinite(lat_resident).all())
    finally:
        mm.EXTRA_RESERVED_VRAM = old
    save()
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
