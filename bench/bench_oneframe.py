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


def _weights(state: dict) -> dict:
    if "sd" not in state:
        t = time.time()
        state["sd"] = H.random_state_dict(seed=0)
        torch.cuda.synchronize()
        n = sum(v.numel() for v in state["sd"].values())
        log(f"random weights: {n:,} parameters, {len(state['sd'])} tensors in {time.time() - t:.1f} s")
        assert n == H.FULL_PARAMS, n
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


SECTIONS = ["env", "floor", "reference", "reference_compiled"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="results JSON path")
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma list of: " + ", ".join(SECTIONS))
    ap.add_argument("--layouts", default=",".join(H.LAYOUTS))
    ap.add_argument("--iters", type=int, default=10, help="timed forwards per measurement (median)")
    ap.add_argument("--comfy-args", default="", help="extra ComfyUI flags, e.g. '--use-sage-attention'")
    args = ap.parse_args(argv)

    H.boot_comfy(args.comfy_args.split() if args.comfy_args else [])
    torch.backends.cuda.matmul.allow_tf32 = True
    R = Results(Path(args.out))
    state: dict = {}
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
