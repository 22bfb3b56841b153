"""Attention alone at the model's sequence lengths: which kernel, fed in which memory layout, is
fastest for FramePack's joint attention (batch 1, 24 heads x 128, bf16, no mask).

The model's q/k/v come out of the projections as (B, N, H, D) rows; ComfyUI's attention_pytorch
hands SDPA the transposed view (B, H, N, D) with strides of (B, N, H, D) and transposes the output
back, a copy. This script times, per layout's N, every kernel on both memory layouts:
  * torch SDPA backends (cuDNN, flash, memory-efficient) on the model's view and on contiguous
    (B, H, N, D) tensors, plus the output transpose the model pays on the SDPA path;
  * FlashAttention-4 (`flash_attn.cute.flash_attn_func`, CuTe DSL, Hopper path), which takes and
    returns (B, N, H, D) directly, so the model's rows need no transpose either way;
and checks each output against float32 attention on the same inputs.

Needs only torch (and FlashAttention-4 where installed): `python bench/bench_attention.py --out x.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import cuda_time_ms  # noqa: E402  (torch only; no ComfyUI needed)

HEADS, HEAD_DIM = 24, 128
# N per layout at 640x640 (bench/_harness.LAYOUTS: image tokens + 729 SigLIP + 120 text tokens)
LAYOUT_TOKENS = {"kisekaeichi": 5649, "oichi_default": 6449, "1f_mc": 7249}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


def load_fa4():
    """FlashAttention-4's function, or the reason it is not usable here."""
    try:
        from flash_attn.cute import flash_attn_func
        return flash_attn_func, None
    except Exception as e:  # not installed, or its CUDA libraries missing
        return None, f"{type(e).__name__}: {str(e)[:300]}"


def measure(n: int, fa4) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    g = torch.Generator(device="cuda").manual_seed(n)
    # like the model's q/k after per-head RMSNorm: unit RMS rows
    rows = [torch.randn(1, n, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3)]
    q_rows, k_rows, v_rows = rows
    view = [t.transpose(1, 2) for t in rows]                    # what ComfyUI's attention_pytorch passes SDPA
    contiguous = [t.transpose(1, 2).contiguous() for t in rows]  # (B, H, N, D) dense
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(*(t.float() for t in contiguous))  # fp32 reference, (B, H, N, D)
    flop = 4 * HEADS * n * n * HEAD_DIM
    out = dict(n_tokens=n, flop=flop, kernels={})

    def record(name, fn, to_bhnd):
        try:
            o = fn()
            r = cuda_time_ms(fn, iters=20)
            r["tflops"] = flop / r["median_ms"] / 1e9
            r["rel_err_vs_fp32"] = rel_err(to_bhnd(o), ref)
        except Exception as e:
            r = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
        out["kernels"][name] = r
        print(f"N={n} {name}: " + (f"{r['median_ms']:.3f} ms, {r['tflops']:.0f} TF/s, err {r['rel_err_vs_fp32']:.1e}"
                                   if "median_ms" in r else r["error"]), flush=True)

    for bname, backend in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION),
                           ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        for lname, qkv in [("model_view", view), ("contiguous_bhnd", contiguous)]:
            def fn(qkv=qkv, backend=backend):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(*qkv)
            record(f"sdpa_{bname}_{lname}", fn, lambda o: o)
    o = F.scaled_dot_product_attention(*view)
    out["output_transpose_copy"] = cuda_time_ms(lambda: o.transpose(1, 2).reshape(1, n, HEADS * HEAD_DIM))
    if fa4 is not None:
        def fa4_rows():
            o = fa4(q_rows, k_rows, v_rows)
            return o[0] if isinstance(o, tuple) else o
        record("fa4_rows", fa4_rows, lambda o: o.transpose(1, 2))
        # and fed the model's output layout straight back: (B, N, H*D) rows, a view
        out["fa4_output_is_rows"] = bool(fa4_rows().is_contiguous())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layouts", default=",".join(LAYOUT_TOKENS))
    args = ap.parse_args()
    fa4, fa4_error = load_fa4()
    res = dict(date=time.strftime("%Y-%m-%d"), torch=torch.__version__, cuda=torch.version.cuda,
               cudnn=torch.backends.cudnn.version(), gpu=torch.cuda.get_device_name(),
               fa4_available=fa4 is not None, fa4_error=fa4_error, layouts={})
    if fa4 is not None:
        import importlib.metadata as md
        res["fa4_version"] = md.version("flash-attn-4")
    print({k: v for k, v in res.items() if k != "layouts"}, flush=True)
    status = 0
    for name in args.layouts.split(","):
        try:
            res["layouts"][name] = measure(LAYOUT_TOKENS[name], fa4)
        except Exception:
            traceback.print_exc()
            status = 1
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
