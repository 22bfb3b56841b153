"""The hardware floor: bf16 (and fp8) matmul rate at the model's own linear shapes, SDPA rate at
the model's sequence lengths, each backend separately. Run alone: `python bench/floor.py`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import FULL_CONFIG, TEXT_TOKENS, SIGLIP_TOKENS, gpu_info  # noqa: E402


def _time_loop(fn, reps: int = 20, warmup: int = 3) -> float:
    """Mean ms of fn() over `reps` back-to-back calls (CUDA events around the loop)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / reps


def linear_shapes(n_image: int, n_text: int, d: int = 3072, mlp: int = 12288, fused: bool = False):
    """(M, K, N, count per forward) of every block matmul, diffusers' (unfused) layer split.

    With fused=True, q/k/v (and in single blocks also proj_mlp) are one wider matmul, as a model
    that concatenates those weights would run them.
    """
    n_all = n_image + n_text
    dual, single = FULL_CONFIG["num_layers"], FULL_CONFIG["num_single_layers"]
    shapes = []
    for m in (n_image, n_text):  # the two streams of a dual block
        if fused:
            shapes.append((m, d, 3 * d, dual))
        else:
            shapes.append((m, d, d, 3 * dual))
        shapes += [(m, d, d, dual), (m, d, mlp, dual), (m, mlp, d, dual)]
    if fused:
        shapes.append((n_all, d, 3 * d + mlp, single))
    else:
        shapes += [(n_all, d, d, 3 * single), (n_all, d, mlp, single)]
    shapes.append((n_all, d + mlp, d, single))
    return shapes


def matmul_rate(shapes, dtype=torch.bfloat16, fp8: bool = False) -> dict:
    """Time each distinct shape with random operands; return per-shape and model-weighted TFLOP/s."""
    rows, total_flop, total_ms = [], 0.0, 0.0
    for m, k, n, count in shapes:
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k ** 0.5
        if fp8:
            xs = (x.abs().amax() / 448).float()
            ws = (w.abs().amax() / 448).float()
            x8 = (x / xs).to(torch.float8_e4m3fn)
            w8 = (w / ws).to(torch.float8_e4m3fn)

            def fn():
                return torch._scaled_mm(x8, w8.t(), scale_a=xs, scale_b=ws, out_dtype=torch.bfloat16)
        else:
            def fn():
                return torch.nn.functional.linear(x, w)
        ms = _time_loop(fn)
        flop = 2 * m * k * n
        rows.append(dict(m=m, k=k, n=n, count=count, ms=ms, tflops=flop / ms / 1e9))
        total_flop += flop * count
        total_ms += ms * count
        del x, w
    return dict(shapes=rows, model_weighted_tflops=total_flop / total_ms / 1e9, model_linear_ms=total_ms)


def sdpa_rate(n_tokens: int, heads: int = 24, head_dim: int = 128, batch: int = 1) -> dict:
    """TFLOP/s of scaled_dot_product_attention at (B, 24, N, 128), per backend (4 N^2 d per head-dim sum)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(batch, heads, n_tokens, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flop = 4 * batch * heads * n_tokens ** 2 * head_dim
    out = {}
    for name, backend in [("default", None), ("flash", SDPBackend.FLASH_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)]:
        try:
            if backend is None:
                ms = _time_loop(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
            else:
                with sdpa_kernel([backend]):
                    ms = _time_loop(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
            out[name] = dict(ms=ms, tflops=flop / ms / 1e9)
        except Exception as e:  # a backend that cannot run this shape here
            out[name] = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
    return out


def comfy_attention_rate(n_tokens: int, heads: int = 24, head_dim: int = 128) -> dict:
    """ComfyUI's optimized_attention (the function the model calls) at the same shape."""
    from comfy.ldm.modules import attention as ca

    q, k, v = (torch.randn(1, heads, n_tokens, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    fn = ca.optimized_attention
    ms = _time_loop(lambda: fn(q, k, v, heads, skip_reshape=True))
    return dict(function=getattr(fn, "__name__", str(fn)), ms=ms,
                tflops=4 * heads * n_tokens ** 2 * head_dim / ms / 1e9)


def copy_bandwidth() -> float:
    x = torch.empty(2 * 2**30 // 2, device="cuda", dtype=torch.bfloat16).normal_()
    y = torch.empty_like(x)
    ms = _time_loop(lambda: y.copy_(x), reps=10)
    return 2 * x.numel() * 2 / ms / 1e9  # GB/s, read + write


def measure_floor(seq: dict[str, tuple[int, int]]) -> dict:
    """seq: layout name -> (image tokens, text-side tokens incl. SigLIP)."""
    res = dict(copy_gbps=copy_bandwidth(), layouts={})
    for name, (n_img, n_txt) in seq.items():
        n = n_img + n_txt
        r = dict(n_tokens=n, n_image=n_img, n_text=n_txt)
        r["bf16"] = matmul_rate(linear_shapes(n_img, n_txt))
        r["bf16_fused"] = matmul_rate(linear_shapes(n_img, n_txt, fused=True))
        try:
            r["fp8"] = matmul_rate(linear_shapes(n_img, n_txt), fp8=True)
            r["fp8_fused"] = matmul_rate(linear_shapes(n_img, n_txt, fused=True), fp8=True)
        except Exception as e:
            r["fp8"] = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
        r["sdpa"] = sdpa_rate(n)
        try:
            r["comfy_attention"] = comfy_attention_rate(n)
        except Exception as e:
            r["comfy_attention"] = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
        res["layouts"][name] = r
    return res


if __name__ == "__main__":
    seq = {"kisekaeichi": (4800, SIGLIP_TOKENS + TEXT_TOKENS), "oichi_default": (5600, SIGLIP_TOKENS + TEXT_TOKENS)}
    print(json.dumps(dict(gpu_info(), floor=measure_floor(seq)), indent=1))
