"""FlashAttention-4 (the `flash-attn-4` package, CuTe DSL kernels, Hopper and Blackwell) as an
attention backend for the FramePack model, plugged in through ComfyUI's own hook.

ComfyUI's attention functions are wrapped by `comfy.ldm.modules.attention.wrap_attn`, which hands
the call to `transformer_options["optimized_attention_override"](func, *args, **kwargs)` when a
model option sets it. `use_fa4(model_patcher)` sets that option on a clone, so every path that
reads transformer_options (ComfyUI's samplers, torch.compile of the blocks, LoRA-patched or
low-VRAM models) picks it up; nothing in the model changes.

Why it can be faster here: the model's q/k/v leave the projections as (B, L, H*D) rows, i.e.
(B, L, H, D). torch's SDPA wants (B, H, L, D), so ComfyUI passes it a transposed view and copies
the (B, H, L, D) output back into rows. FlashAttention-4 takes and returns (B, L, H, D): the rows
go in as a free view and the output comes back in the model's layout.

Calls it cannot serve (a key mask, float32, a CPU tensor, a head size it lacks) go to the function
ComfyUI would have used, unchanged. The package is optional: it is not in requirements.txt.
"""
from __future__ import annotations

import functools

import torch

__all__ = ["fa4_import_error", "fa4_attention_override", "fa4_serves", "use_fa4"]

OP_NAME = "framepack_oneframe::fa4_attention"
SUPPORTED_HEAD_DIMS = (64, 96, 128)


@functools.lru_cache(maxsize=1)
def fa4_import_error() -> str | None:
    """None when FlashAttention-4 imports, else why not (for the node's error and the bench)."""
    try:
        from flash_attn.cute import flash_attn_func  # noqa: F401
    except Exception as e:  # not installed, or its CUDA libraries do not load
        return f"{type(e).__name__}: {e}"
    return None


_fa4_kernel = None  # the registered custom op, set by load_fa4_kernel()


def load_fa4_kernel():
    """FlashAttention-4 as a torch custom op, so torch.compile keeps it as one opaque call with a
    known output shape instead of tracing into the CuTe DSL launcher (which it cannot). Registered
    once per process; use_fa4 calls it before any forward, so never while dynamo traces."""
    global _fa4_kernel
    if _fa4_kernel is not None:
        return _fa4_kernel
    from flash_attn.cute import flash_attn_func

    @torch.library.custom_op(OP_NAME, mutates_args=())
    def fa4_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = flash_attn_func(q, k, v)
        return out[0] if isinstance(out, tuple) else out

    @fa4_attention.register_fake
    def _(q, k, v):
        return torch.empty_like(q)

    _fa4_kernel = fa4_attention
    return fa4_attention


def fa4_serves(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, head_dim: int, mask) -> bool:
    """Whether FlashAttention-4 can take this call: no mask, half precision on a CUDA device, a
    head size it has kernels for, self-attention shapes (FramePack's joint attention always is)."""
    return (mask is None and q.device.type == "cuda" and q.dtype in (torch.float16, torch.bfloat16)
            and head_dim in SUPPORTED_HEAD_DIMS and k.shape == q.shape and v.shape == q.shape)


def fa4_attention_override(func, q, k, v, heads, mask=None, attn_precision=None, skip_reshape=False,
                           skip_output_reshape=False, **kwargs):
    """The `optimized_attention_override` hook: q, k, v as ComfyUI passes them (B, L, H*D), or
    (B, H, L, D) with skip_reshape; the result in the layout `func` would return."""
    head_dim = q.shape[-1] if skip_reshape else q.shape[-1] // heads
    if not fa4_serves(q, k, v, head_dim, mask):
        return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                    skip_output_reshape=skip_output_reshape, **kwargs)
    if skip_reshape:  # (B, H, L, D) -> (B, L, H, D)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    else:  # (B, L, H*D) -> (B, L, H, D), a view
        b, length, _ = q.shape
        q, k, v = (t.view(b, length, heads, head_dim) for t in (q, k, v))
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = (_fa4_kernel or load_fa4_kernel())(q, k, v)  # (B, L, H, D)
    if skip_output_reshape:
        return out.transpose(1, 2)
    return out.reshape(out.shape[0], out.shape[1], -1)


def use_fa4(model_patcher):
    """A clone of `model_patcher` whose attention runs through FlashAttention-4.
    Raises RuntimeError (with the import error) when the package is not usable."""
    err = fa4_import_error()
    if err is not None:
        raise RuntimeError(f"FlashAttention-4 (pip package flash-attn-4) is not usable here: {err}")
    load_fa4_kernel()
    m = model_patcher.clone()  # clone() copies the nested model_options: the original keeps its attention
    m.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = fa4_attention_override
    return m
