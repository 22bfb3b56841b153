"""Markdown tables from bench_oneframe.py result files (one or several runs of the same machine).

    python bench/make_table.py bench/results/2026-11-25-h100-final_a.json bench/results/2026-11-25-h100-final_b.json

Later files fill in sections the earlier ones lack; a section present in several files is taken
from the first that has it.
"""
from __future__ import annotations

import json
import sys

LAYOUT_NAMES = {"kisekaeichi": "kisekaeichi (2 clean 1x)", "oichi_default": "oichi default (start+post, 2x, 4x)",
                "1f_mc": "1f-mc (3 clean 1x)"}
ROWS = [
    ("reference", "diffusers 0.42.1 reference, eager"),
    ("reference_compiled", "reference, blocks torch.compile'd"),
    ("ours", "ours bf16, eager"),
    ("ours_compiled", "ours bf16, blocks compiled (ComfyUI hook)"),
    ("ours_fa4", "ours bf16, FlashAttention-4, eager"),
    ("ours_fa4_compiled", "ours bf16, FlashAttention-4, compiled"),
    ("ours_compiled_graph", "ours bf16, compiled, CUDA graph per run (bench lever)"),
    ("fp8_manual_cast", "ours fp8 weights, manual cast (loader default)"),
    ("fp8_scaled_mm", "ours fp8, comfy fp8_ops (_scaled_mm), eager"),
    ("fp8_scaled_mm_compiled", "ours fp8 _scaled_mm, compiled"),
    ("fp8_scaled_mm_fa4_compiled", "ours fp8 _scaled_mm, FlashAttention-4, compiled"),
    ("fp8_scaled_mm_compiled_graph", "ours fp8 _scaled_mm, compiled, CUDA graph per run (bench lever)"),
    ("fp8_scaled_per_tensor", "ours fp8 per-tensor scaled, eager"),
]


def load(paths):
    merged: dict = {}
    for p in paths:
        d = json.load(open(p))
        for k, v in d.items():
            merged.setdefault(k, v)
    return merged


def fmt(x, spec=".1f"):
    return "–" if x is None else format(x, spec)


def main(paths):
    d = load(paths)
    env = d.get("env", {})
    print(f"Machine: {env.get('gpu')} ({env.get('sm_count')} SMs), torch {env.get('torch')}, CUDA {env.get('cuda')}, "
          f"cuDNN {env.get('cudnn')}, Python {env.get('python')}; ComfyUI attention: {env.get('comfy_attention')}; "
          f"date {d.get('date')}\n")
    fl = d.get("floor", {}).get("layouts", {})
    print("| layout | N tokens | TFLOP / forward | bf16 matmul TF/s (model shapes) | best SDPA TF/s | bf16 floor ms | "
          "fp8 matmul TF/s | fp8 floor ms (attention bf16) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label in LAYOUT_NAMES.items():
        ref = next((d[k][name] for k in ("ours", "reference") if name in d.get(k, {})), None)
        f = fl.get(name)
        if not f or not ref:
            continue
        mm = max(f["bf16"]["model_weighted_tflops"], f["bf16_fused"]["model_weighted_tflops"])
        att = max(v.get("tflops", 0) for v in f["sdpa"].values())
        fp8 = max(f.get("fp8", {}).get("model_weighted_tflops", 0), f.get("fp8_fused", {}).get("model_weighted_tflops", 0))
        fc = ref["flop"]
        fp8_floor = 1e3 * (fc["linear_blocks"] / (fp8 * 1e12) + fc["attention"] / (att * 1e12) + fc["other"] / (mm * 1e12))
        print(f"| {label} | {f['n_tokens']} | {ref['tflop']:.1f} | {mm:.0f} | {att:.0f} | {ref.get('floor_ms', 0):.1f} | "
              f"{fp8:.0f} | {fp8_floor:.1f} |")
    print()
    print("| path | layout | forward ms (median, min–max) | × floor | TF/s | 25-step s | peak GiB | vs reference | rel. err velocity | rel. err final latent |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key, label in ROWS:
        for name in LAYOUT_NAMES:
            r = d.get(key, {}).get(name)
            if not r:
                continue
            f = r["forward"]
            ref = d.get("reference", {}).get(name)
            ratio = f"{ref['forward']['median_ms'] / f['median_ms']:.2f}× faster" if ref and key != "reference" else ""
            floor = r.get("floor_ms") or d.get("ours", {}).get(name, {}).get("floor_ms")
            tflop = r.get("tflop") or d.get("ours", {}).get(name, {}).get("tflop")
            xf = f"{f['median_ms'] / floor:.2f}" if floor else "–"
            tf = f"{tflop / f['median_ms'] * 1e3:.0f}" if tflop else "–"
            err = r.get("velocity_rel_err_vs_ours_bf16")
            if key == "ours":
                err = r.get("velocity_rel_err_vs_reference")
            err_s = fmt(err, ".2e") + (" (vs ref.)" if key == "ours" and err is not None else "")
            print(f"| {label} | {name} | {f['median_ms']:.1f} ({f['min_ms']:.0f}–{f['max_ms']:.0f}) | {xf} | {tf} | "
                  f"{fmt(r.get('sampler_25_s'), '.2f')} | {fmt(r.get('vram', {}).get('peak_gib'), '.1f')} | {ratio} | "
                  f"{err_s} | {fmt(r.get('final_latent_rel_err_vs_ours_bf16'), '.2e')} |")
    if "batch" in d:
        print("\n| batch (kisekaeichi, 25 steps, real sampler) | seconds | images / s | peak GiB | compiled |")
        print("|---|---|---|---|---|")
        for k, v in d["batch"].items():
            print(f"| {k.split('_')[1]} | {v['seconds']:.2f} | {v['images_per_s']:.3f} | {v['peak_gib']:.1f} | {v['compiled']} |")
    if "lowvram" in d:
        bw = d.get("h2d_bandwidth", {})
        mode = "Dynamic VRAM (ModelPatcherDynamic)" if d.get("dynamic_vram") else "legacy partial loading"
        print(f"\nLow VRAM, {mode}; host->GPU copy {fmt(bw.get('pinned_gbs'), '.1f')} GB/s pinned, "
              f"{fmt(bw.get('pageable_gbs'), '.1f')} GB/s pageable.\n")
        print("| low VRAM (kisekaeichi, 25 steps) | free GiB | s / image | × resident (same compute) | × best resident | "
              "PCIe bound s | weights on GPU / streamed GiB | pinned GiB | peak GiB | final latent vs resident | error |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for k, v in d["lowvram"].items():
            print(f"| {k} | {fmt(v.get('free_gib_at_start', v['budget_gib']), '.1f')} | {fmt(v.get('seconds_per_image'), '.2f')} | "
                  f"{fmt(v.get('x_resident_eager'), '.2f')} | {fmt(v.get('x_resident_best'), '.2f')} | "
                  f"{fmt(v.get('transfer_bound_s'), '.2f')} | {fmt(v.get('loaded_gib'), '.1f')} / "
                  f"{fmt(v.get('streamed_gib_per_step'), '.1f')} | {fmt(v.get('pinned_gib'), '.1f')} | "
                  f"{fmt(v.get('peak_gib'), '.2f')} | {fmt(v.get('final_latent_rel_err_vs_resident'), '.1e')} | "
                  f"{v.get('error', '')[:80]} |")

if __name__ == "__main__":
    main(sys.argv[1:])
