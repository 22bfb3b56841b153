"""The FramePack packed transformer (HunyuanVideo architecture + FramePack's history embedders).

One module, diffusers-style: `FramePackConfig` holds the architecture (field names as in diffusers'
`HunyuanVideoFramepackTransformer3DModel.__init__`), `infer_config` reads it back from a state
dict's shapes, and `FramePackTransformer` is the network, built only from ComfyUI `operations`
layers so ComfyUI's casting / low-VRAM streaming / LoRA patching work on every weight. Module
names equal the diffusers weight keys, so the released checkpoints load with a plain
`load_state_dict` (no key conversion) and LoRA keys map one to one.

Shape glossary used in comments: B batch, C latent channels (16), D hidden size (heads*head_dim),
T/H/W latent frames/height/width, t/h/w the same after patching (patch (1, 2, 2)), L tokens.

Sequence layout of one forward (see spec/model.md):

    image side: [ 4x clean | 2x clean | 1x clean | noisy ]   (each clean group optional)
    text side:  [ 729 SigLIP tokens | llama tokens ]
    attention runs on [ image side | text side ]; RoPE rotates image tokens only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

import comfy.ops
import comfy.patcher_extension
from comfy.ldm.modules.diffusionmodules.util import timestep_embedding
from comfy.ldm.modules import attention as comfy_attention

from .magcache import RUN_KEY as MAGCACHE_RUN_KEY

__all__ = ["FramePackConfig", "FramePackTransformer", "infer_config"]


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePackConfig:
    """Architecture of a FramePack transformer; defaults are the released 13B models.

    Field names are diffusers' `HunyuanVideoFramepackTransformer3DModel.__init__` arguments
    (qk_norm is always "rms_norm" and image_condition_type always None in FramePack, so they are
    not fields). `fp32_output` is ours: like the official demo's
    `high_quality_fp32_output_for_inference`, the final AdaLayerNorm and `proj_out` run in
    float32 whatever the compute dtype (the weights are cast on the fly, the stored weights keep
    their dtype).
    """

    in_channels: int = 16
    out_channels: int = 16
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    num_layers: int = 20
    num_single_layers: int = 40
    num_refiner_layers: int = 2
    mlp_ratio: float = 4.0
    patch_size: int = 2
    patch_size_t: int = 1
    text_embed_dim: int = 4096
    pooled_projection_dim: int = 768
    rope_theta: float = 256.0
    rope_axes_dim: tuple[int, int, int] = (16, 56, 56)
    image_proj_dim: int = 1152
    has_image_proj: bool = True
    has_clean_x_embedder: bool = True
    guidance_embeds: bool = True
    fp32_output: bool = True

    def __post_init__(self):
        object.__setattr__(self, "rope_axes_dim", tuple(int(d) for d in self.rope_axes_dim))
        if len(self.rope_axes_dim) != 3 or sum(self.rope_axes_dim) != self.attention_head_dim:
            raise ValueError(f"FramePackConfig: rope_axes_dim {self.rope_axes_dim} must be 3 numbers summing to "
                             f"attention_head_dim {self.attention_head_dim}")
        if any(d % 2 for d in self.rope_axes_dim):
            raise ValueError(f"FramePackConfig: every rope_axes_dim entry must be even, got {self.rope_axes_dim}")

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def mlp_dim(self) -> int:
        return int(self.inner_dim * self.mlp_ratio)


def default_rope_axes_dim(head_dim: int) -> tuple[int, int, int]:
    """RoPE split (t, y, x) of a head when the checkpoint has no config.json saying otherwise.

    Rule: t = max(4, head_dim // 8) rounded down to even, y = x = the rest halved (rounded down to
    even), any remainder added to t. It gives the released models' (16, 56, 56) for head_dim 128
    and the tiny test model's (4, 6, 6) for head_dim 16.
    """
    if head_dim < 8 or head_dim % 2:
        raise ValueError(f"attention head dim {head_dim} is too small or odd for 3-axis RoPE")
    t = max(4, head_dim // 8) // 2 * 2
    y = (head_dim - t) // 2 // 2 * 2
    return (head_dim - 2 * y, y, y)


def _block_count(shapes: Mapping[str, Sequence[int]], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in shapes if (m := pattern.match(k))}
    if found and found != set(range(max(found) + 1)):
        raise ValueError(f"FramePack weights: blocks {prefix}N are not numbered 0..{max(found)} (have {sorted(found)})")
    return len(found)


def infer_config(shapes: Mapping[str, Sequence[int]], config_json: Mapping | None = None) -> FramePackConfig:
    """Read the architecture from a state dict's {diffusers key: shape}.

    Works on shapes only (no tensors needed), so the full 13B model and the tiny test model go
    through the same code. `config_json` (a diffusers folder's config.json, optional) supplies what
    shapes cannot tell (rope_theta, rope_axes_dim); its other fields must agree with the shapes.
    """
    shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}

    def need(key: str) -> tuple[int, ...]:
        if key not in shapes:
            raise ValueError(f"not a FramePack transformer state dict: missing '{key}' "
                             f"(keys must be diffusers names without prefix; {len(shapes)} keys given)")
        return shapes[key]

    inner, in_channels, p_t, p, p2 = need("x_embedder.proj.weight")
    if p != p2:
        raise ValueError(f"FramePack weights: non-square patch {p}x{p2} is not supported")
    head_dim = need("transformer_blocks.0.attn.norm_q.weight")[0]
    if inner % head_dim:
        raise ValueError(f"FramePack weights: hidden size {inner} is not a multiple of the head dim {head_dim}")
    num_layers = _block_count(shapes, "transformer_blocks.")
    mlp_dim = need("transformer_blocks.0.ff.net.0.proj.weight")[0]
    out_features = need("proj_out.weight")[0]
    cfg = dict(
        in_channels=in_channels,
        out_channels=out_features // (p_t * p * p),
        num_attention_heads=inner // head_dim,
        attention_head_dim=head_dim,
        num_layers=num_layers,
        num_single_layers=_block_count(shapes, "single_transformer_blocks."),
        num_refiner_layers=_block_count(shapes, "context_embedder.token_refiner.refiner_blocks."),
        mlp_ratio=mlp_dim / inner,
        patch_size=p,
        patch_size_t=p_t,
        text_embed_dim=need("context_embedder.proj_in.weight")[1],
        pooled_projection_dim=need("time_text_embed.text_embedder.linear_1.weight")[1],
        has_image_proj="image_projection.up.weight" in shapes,
        has_clean_x_embedder="clean_x_embedder.proj.weight" in shapes,
        guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in shapes,
    )
    if cfg["has_image_proj"]:
        cfg["image_proj_dim"] = shapes["image_projection.up.weight"][1]
    cfg["rope_axes_dim"] = default_rope_axes_dim(head_dim)
    if config_json:
        for key in ("rope_theta", "rope_axes_dim"):
            if config_json.get(key) is not None:
                cfg[key] = config_json[key]
        for key in cfg:
            if key in ("rope_theta", "rope_axes_dim") or config_json.get(key) is None:
                continue
            given, found = config_json[key], cfg[key]
            if (float(given) if key == "mlp_ratio" else given) != found:
                raise ValueError(f"FramePack config.json says {key}={given!r} but the weights' shapes say {found!r}")
    return FramePackConfig(**cfg)


# --------------------------------------------------------------------------------------------
# RoPE: one rotation table for the whole joint sequence, built once per forward
# --------------------------------------------------------------------------------------------


def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """(..., n) positions -> (..., n, dim/2) angles, float32 (diffusers/official frequencies)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim))
    return positions.to(torch.float32)[..., None] * inv_freq


def _pad_and_pool(table: torch.Tensor, dim: int, kernel: int) -> torch.Tensor:
    """Replicate-pad `table` at the end of `dim` to a multiple of `kernel`, then average-pool it."""
    n = table.shape[dim]
    if kernel == 1:
        return table
    padded = -(-n // kernel) * kernel
    if padded != n:
        index = torch.arange(padded, device=table.device).clamp_(max=n - 1)
        table = table.index_select(dim, index)
    return table.unflatten(dim, (padded // kernel, kernel)).mean(dim + 1)


def _group_rope(frames: torch.Tensor, h: int, w: int, axes: tuple[int, int, int], theta: float,
                pool: int) -> torch.Tensor:
    """cos/sin tables of one image group on the noisy latent's patch grid (h, w).

    frames: (b, k) frame indices (b is 1 or B). Returns (b, k'*h'*w', head_dim/2, 2) with [..., 0]
    cos and [..., 1] sin, where pooled groups (pool 2 or 4) average the full-resolution tables over
    pool^3 boxes after replicate padding. The table of a token is the concatenation of its three
    axes' tables, each a function of one coordinate only, so pooling the 3-D box equals pooling
    each axis on its own: that is what is done here (cheaper, same numbers up to float rounding).
    """
    dt, dy, dx = axes
    device = frames.device
    per_axis = []
    for positions, dim, axis in ((frames, dt, 1), (torch.arange(h, device=device), dy, 0),
                                 (torch.arange(w, device=device), dx, 0)):
        ang = _axis_angles(positions, dim, theta)
        per_axis.append(_pad_and_pool(torch.stack((ang.cos(), ang.sin()), -1), axis, pool))
    t_tab, y_tab, x_tab = per_axis  # (b, k', dt/2, 2), (h', dy/2, 2), (w', dx/2, 2)
    b, k = t_tab.shape[:2]
    hh, ww = y_tab.shape[0], x_tab.shape[0]
    grid = torch.cat([
        t_tab[:, :, None, None].expand(b, k, hh, ww, -1, 2),
        y_tab[None, None, :, None].expand(b, k, hh, ww, -1, 2),
        x_tab[None, None, None, :].expand(b, k, hh, ww, -1, 2),
    ], dim=-2)
    return grid.reshape(b, k * hh * ww, -1, 2)


def _is_compiling() -> bool:
    return torch.compiler.is_compiling()


def apply_rope(x: torch.Tensor, cos_sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x (B, L, heads, head_dim) by the angles whose
    cos/sin are cos_sin (1 or B, L, 1, head_dim/2, 2), in float32; returns x's dtype.

    Eager mode multiplies by a complex view of the table (one fused pass; measured 1.7x faster
    than ComfyUI's rotation-matrix `apply_rope1` on an H100 at N = 6449). Under torch.compile the
    same product is written with real tensors, which inductor fuses into one kernel.
    """
    if _is_compiling():
        a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = cos_sin.unbind(-1)
        return torch.stack((a * cos - b * sin, b * cos + a * sin), -1).flatten(-2).to(x.dtype)
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * torch.view_as_complex(cos_sin)).flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Attention with an optional key mask
# --------------------------------------------------------------------------------------------


class KeyMask:
    """Padding of a batch whose samples have different numbers of valid tokens.

    Valid tokens are always a prefix of each sample's sequence (the text is compacted so its valid
    tokens come first), so per-sample lengths (host ints, read once per forward) describe it all.
    By default each sample then runs attention alone on its valid prefix: no mask reaches
    optimized_attention, so the fast unmasked kernels (flash / cuDNN / sage) serve every backend,
    including those that ignore masks (sage, flash). `SPLIT_MASKED_BATCH = False` passes an
    additive (B, 1, 1, L) key bias instead, one call for the whole batch, to backends that honour
    masks; measured on an H100 (full model, batch 2, text 120 / 60 tokens) the split runs at the
    unmasked speed (412 ms vs 410 ms, kisekaeichi) and the bias 27% slower (522 ms), because SDPA
    leaves its flash / cuDNN kernels for the memory-efficient one when given a mask.
    """

    def __init__(self, lengths: list[int], total: int, device, dtype: torch.dtype):
        self.lengths, self.total, self.device, self.dtype = lengths, total, device, dtype
        self._bias = None

    def bias(self) -> torch.Tensor:
        if self._bias is None:
            lengths = torch.tensor(self.lengths, device=self.device)
            padding = torch.arange(self.total, device=self.device)[None] >= lengths[:, None]
            self._bias = torch.zeros(padding.shape, dtype=self.dtype, device=self.device).masked_fill_(
                padding, torch.finfo(self.dtype).min)[:, None, None, :]
        return self._bias

    def shifted(self, offset: int) -> "KeyMask":
        """The same padding after `offset` always-valid tokens are put in front."""
        return KeyMask([n + offset for n in self.lengths], self.total + offset, self.device, self.dtype)


SPLIT_MASKED_BATCH = True


def _backend_ignores_masks() -> bool:
    return getattr(comfy_attention.optimized_attention, "__name__", "") in ("attention_sage", "attention_flash")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: KeyMask | None,
              transformer_options: dict) -> torch.Tensor:
    """q, k, v (B, L, heads*head_dim) -> (B, L, heads*head_dim) through ComfyUI's optimized_attention."""
    attn = comfy_attention.optimized_attention
    if mask is None:
        return attn(q, k, v, heads, transformer_options=transformer_options)
    if not SPLIT_MASKED_BATCH and not _backend_ignores_masks():
        return attn(q, k, v, heads, mask=mask.bias(), transformer_options=transformer_options)
    out = torch.zeros_like(q)  # padded query rows stay 0; they never reach a valid token
    for i, n in enumerate(mask.lengths):
        out[i:i + 1, :n] = attn(q[i:i + 1, :n], k[i:i + 1, :n], v[i:i + 1, :n], heads,
                                transformer_options=transformer_options)
    return out


# --------------------------------------------------------------------------------------------
# Building blocks (names = diffusers weight keys)
# --------------------------------------------------------------------------------------------


class TimestepEmbedding(nn.Module):
    """256-channel sinusoid (cos first, i.e. flip_sin_to_cos) -> linear_1 -> SiLU -> linear_2."""

    def __init__(self, dim, in_channels=256, dtype=None, device=None, operations=None):
        super().__init__()
        self.in_channels = in_channels
        self.linear_1 = operations.Linear(in_channels, dim, dtype=dtype, device=device)
        self.linear_2 = operations.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        emb = timestep_embedding(t.float(), self.in_channels).to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class TextProjection(nn.Module):
    """Pooled text vector -> linear_1 -> SiLU -> linear_2 (diffusers PixArtAlphaTextProjection)."""

    def __init__(self, in_features, dim, dtype=None, device=None, operations=None):
        super().__init__()
        self.linear_1 = operations.Linear(in_features, dim, dtype=dtype, device=device)
        self.linear_2 = operations.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class ConditionEmbedding(nn.Module):
    """`time_text_embed`: timestep + distilled guidance + pooled CLIP-L text -> the block conditioning."""

    def __init__(self, dim, pooled_projection_dim, guidance_embeds, dtype=None, device=None, operations=None):
        super().__init__()
        kw = dict(dtype=dtype, device=device, operations=operations)
        self.timestep_embedder = TimestepEmbedding(dim, **kw)
        self.text_embedder = TextProjection(pooled_projection_dim, dim, **kw)
        self.guidance_embedder = TimestepEmbedding(dim, **kw) if guidance_embeds else None

    def forward(self, timestep, pooled, guidance):
        emb = self.timestep_embedder(timestep, pooled.dtype)
        if self.guidance_embedder is not None:
            if guidance is None:
                raise ValueError("FramePackTransformer: this model embeds distilled guidance; pass `guidance` "
                                 "(distilled guidance x 1000, shape (B,))")
            emb = emb + self.guidance_embedder(guidance, pooled.dtype)
        return emb + self.text_embedder(pooled)


class FeedForward(nn.Module):
    """net.0.proj -> activation -> net.2 (net.1 is diffusers' dropout slot, an identity here)."""

    def __init__(self, dim, hidden, activation, dtype=None, device=None, operations=None):
        super().__init__()
        proj_in = nn.Module()
        proj_in.proj = operations.Linear(dim, hidden, dtype=dtype, device=device)
        self.net = nn.ModuleList([proj_in, nn.Identity(), operations.Linear(hidden, dim, dtype=dtype, device=device)])
        self.activation = activation

    def forward(self, x):
        return self.net[2](self.activation(self.net[0].proj(x)))


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


class AdaNormZero(nn.Module):
    """`norm1` / `norm1_context` / single `norm`: LayerNorm modulated by linear(SiLU(temb)).

    Chunks are (shift, scale, gate[, shift_mlp, scale_mlp, gate_mlp])."""

    def __init__(self, dim, chunks, dtype=None, device=None, operations=None):
        super().__init__()
        self.chunks = chunks
        self.linear = operations.Linear(dim, chunks * dim, dtype=dtype, device=device)
        self.norm = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)

    def forward(self, x, temb):
        mods = self.linear(F.silu(temb)).unsqueeze(1).chunk(self.chunks, dim=-1)
        shift, scale = mods[0], mods[1]
        return torch.addcmul(shift, self.norm(x), 1 + scale), mods[2:]


class Attention(nn.Module):
    """Joint attention of the dual / single blocks: per-head RMSNorm on q/k, RoPE on image tokens.

    Dual blocks (`context_pre_only=False`) have separate text projections add_{q,k,v}_proj and
    output projections to_out.0 / to_add_out; single blocks project the joint sequence with
    to_{q,k,v} and have no output projection here (their proj_out follows the MLP concat).
    """

    def __init__(self, heads, head_dim, dual, dtype=None, device=None, operations=None):
        super().__init__()
        dim = heads * head_dim
        self.heads = heads
        lin = lambda: operations.Linear(dim, dim, dtype=dtype, device=device)  # noqa: E731
        rms = lambda: operations.RMSNorm(head_dim, eps=1e-6, elementwise_affine=True, dtype=dtype, device=device)  # noqa: E731
        self.to_q, self.to_k, self.to_v = lin(), lin(), lin()
        self.norm_q, self.norm_k = rms(), rms()
        if dual:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = lin(), lin(), lin()
            self.norm_added_q, self.norm_added_k = rms(), rms()
            self.to_out = nn.ModuleList([lin()])
            self.to_add_out = lin()

    def _qkv(self, x, to_q, to_k, to_v, norm_q, norm_k):
        q = norm_q(to_q(x).unflatten(-1, (self.heads, -1)))
        k = norm_k(to_k(x).unflatten(-1, (self.heads, -1)))
        return q, k, to_v(x)

    def forward(self, x, context, rope, mask, transformer_options):
        """x: image tokens (dual) or the joint sequence (single, context None)."""
        q, k, v = self._qkv(x, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        if context is not None:
            cq, ck, cv = self._qkv(context, self.add_q_proj, self.add_k_proj, self.add_v_proj,
                                   self.norm_added_q, self.norm_added_k)
            q, k, v = torch.cat((q, cq), 1), torch.cat((k, ck), 1), torch.cat((v, cv), 1)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        out = attention(q.flatten(2), k.flatten(2), v, self.heads, mask, transformer_options)
        if context is None:
            return out
        n = x.shape[1]
        return self.to_out[0](out[:, :n]), self.to_add_out(out[:, n:])


class TransformerBlock(nn.Module):
    """Dual-stream block: image and text keep their own weights, attend jointly."""

    def __init__(self, config: FramePackConfig, dtype=None, device=None, operations=None):
        super().__init__()
        dim, kw = config.inner_dim, dict(dtype=dtype, device=device, operations=operations)
        self.norm1 = AdaNormZero(dim, 6, **kw)
        self.norm1_context = AdaNormZero(dim, 6, **kw)
        self.attn = Attention(config.num_attention_heads, config.attention_head_dim, dual=True, **kw)
        self.norm2 = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
        self.ff = FeedForward(dim, config.mlp_dim, _gelu_tanh, **kw)
        self.norm2_context = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)
        self.ff_context = FeedForward(dim, config.mlp_dim, _gelu_tanh, **kw)

    def forward(self, img, txt, temb, rope, mask, transformer_options):
        img_in, (img_gate, img_shift2, img_scale2, img_gate2) = self.norm1(img, temb)
        txt_in, (txt_gate, txt_shift2, txt_scale2, txt_gate2) = self.norm1_context(txt, temb)
        img_attn, txt_attn = self.attn(img_in, txt_in, rope, mask, transformer_options)
        img = torch.addcmul(img, img_attn, img_gate)
        txt = torch.addcmul(txt, txt_attn, txt_gate)
        img = torch.addcmul(img, self.ff(torch.addcmul(img_shift2, self.norm2(img), 1 + img_scale2)), img_gate2)
        txt = torch.addcmul(txt, self.ff_context(torch.addcmul(txt_shift2, self.norm2_context(txt), 1 + txt_scale2)),
                            txt_gate2)
        return img, txt


class SingleTransformerBlock(nn.Module):
    """Single-stream block on the joint sequence: attention and MLP in parallel, one proj_out."""

    def __init__(self, config: FramePackConfig, dtype=None, device=None, operations=None):
        super().__init__()
        dim, kw = config.inner_dim, dict(dtype=dtype, device=device, operations=operations)
        self.norm = AdaNormZero(dim, 3, **kw)
        self.attn = Attention(config.num_attention_heads, config.attention_head_dim, dual=False, **kw)
        self.proj_mlp = operations.Linear(dim, config.mlp_dim, dtype=dtype, device=device)
        self.proj_out = operations.Linear(dim + config.mlp_dim, dim, dtype=dtype, device=device)

    def forward(self, x, temb, rope, mask, transformer_options):
        x_in, (gate,) = self.norm(x, temb)
        attn = self.attn(x_in, None, rope, mask, transformer_options)
        mlp = _gelu_tanh(self.proj_mlp(x_in))
        return torch.addcmul(x, self.proj_out(torch.cat((attn, mlp), -1)), gate)


class RefinerAttention(nn.Module):
    """Plain self-attention of the text refiner (no qk norm, no RoPE)."""

    def __init__(self, heads, head_dim, dtype=None, device=None, operations=None):
        super().__init__()
        dim = heads * head_dim
        self.heads = heads
        self.to_q = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.to_k = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.to_v = operations.Linear(dim, dim, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([operations.Linear(dim, dim, dtype=dtype, device=device)])

    def forward(self, x, mask, transformer_options):
        out = attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads, mask, transformer_options)
        return self.to_out[0](out)


class RefinerBlock(nn.Module):
    def __init__(self, config: FramePackConfig, dtype=None, device=None, operations=None):
        super().__init__()
        dim, kw = config.inner_dim, dict(dtype=dtype, device=device, operations=operations)
        self.norm1 = operations.LayerNorm(dim, elementwise_affine=True, eps=1e-6, dtype=dtype, device=device)
        self.attn = RefinerAttention(config.num_attention_heads, config.attention_head_dim, **kw)
        self.norm2 = operations.LayerNorm(dim, elementwise_affine=True, eps=1e-6, dtype=dtype, device=device)
        self.ff = FeedForward(dim, config.mlp_dim, F.silu, **kw)
        self.norm_out = nn.Module()
        self.norm_out.linear = operations.Linear(dim, 2 * dim, dtype=dtype, device=device)

    def forward(self, x, temb, mask, transformer_options):
        gate_attn, gate_ff = self.norm_out.linear(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        x = torch.addcmul(x, self.attn(self.norm1(x), mask, transformer_options), gate_attn)
        return torch.addcmul(x, self.ff(self.norm2(x)), gate_ff)


class TokenRefiner(nn.Module):
    """`context_embedder`: llama tokens -> proj_in -> refiner blocks conditioned on timestep and
    the MASK-WEIGHTED mean of the (unprojected) text tokens."""

    def __init__(self, config: FramePackConfig, dtype=None, device=None, operations=None):
        super().__init__()
        dim, kw = config.inner_dim, dict(dtype=dtype, device=device, operations=operations)
        self.time_text_embed = nn.Module()
        self.time_text_embed.timestep_embedder = TimestepEmbedding(dim, **kw)
        self.time_text_embed.text_embedder = TextProjection(config.text_embed_dim, dim, **kw)
        self.proj_in = operations.Linear(config.text_embed_dim, dim, dtype=dtype, device=device)
        self.token_refiner = nn.Module()
        self.token_refiner.refiner_blocks = nn.ModuleList(
            [RefinerBlock(config, **kw) for _ in range(config.num_refiner_layers)])

    def forward(self, context, timestep, text_mask: KeyMask | None, transformer_options):
        if text_mask is None:
            pooled = context.float().mean(1)
        else:
            lengths = torch.tensor(text_mask.lengths, device=context.device)
            weights = (torch.arange(context.shape[1], device=context.device)[None] < lengths[:, None]).float()
            pooled = (context.float() * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
        emb = self.time_text_embed
        temb = emb.timestep_embedder(timestep, context.dtype) + emb.text_embedder(pooled.to(context.dtype))
        x = self.proj_in(context)
        for block in self.token_refiner.refiner_blocks:
            x = block(x, temb, text_mask, transformer_options)
        return x


class ImageProjection(nn.Module):
    """SigLIP image embeds (image_proj_dim) -> up (3*D) -> SiLU -> down (D)."""

    def __init__(self, in_features, dim, dtype=None, device=None, operations=None):
        super().__init__()
        self.up = operations.Linear(in_features, 3 * dim, dtype=dtype, device=device)
        self.down = operations.Linear(3 * dim, dim, dtype=dtype, device=device)

    def forward(self, x):
        return self.down(F.silu(self.up(x)))


class HistoryPatchEmbed(nn.Module):
    """`clean_x_embedder`: clean latents at 1x / 2x / 4x compression; kernel = stride."""

    KERNELS = {"proj": (1, 2, 2), "proj_2x": (2, 4, 4), "proj_4x": (4, 8, 8)}

    def __init__(self, in_channels, dim, dtype=None, device=None, operations=None):
        super().__init__()
        for name, k in self.KERNELS.items():
            setattr(self, name, operations.Conv3d(in_channels, dim, kernel_size=k, stride=k, dtype=dtype, device=device))

    def forward(self, name: str, latents: torch.Tensor) -> torch.Tensor:
        kernel = self.KERNELS[name]
        pad = [(-n) % k for n, k in zip(latents.shape[2:], kernel)]
        if any(pad):
            latents = F.pad(latents, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
        return getattr(self, name)(latents).flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, config: FramePackConfig, dtype=None, device=None, operations=None):
        super().__init__()
        k = (config.patch_size_t, config.patch_size, config.patch_size)
        self.proj = operations.Conv3d(config.in_channels, config.inner_dim, kernel_size=k, stride=k, dtype=dtype,
                                      device=device)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class AdaNormContinuous(nn.Module):
    """`norm_out`: LayerNorm modulated by linear(SiLU(temb)); chunks are (scale, shift)."""

    def __init__(self, dim, dtype=None, device=None, operations=None):
        super().__init__()
        self.linear = operations.Linear(dim, 2 * dim, dtype=dtype, device=device)
        self.norm = operations.LayerNorm(dim, elementwise_affine=False, eps=1e-6, dtype=dtype, device=device)

    def forward(self, x, temb):
        scale, shift = self.linear(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        return torch.addcmul(shift, self.norm(x), 1 + scale)


# --------------------------------------------------------------------------------------------
# The transformer
# --------------------------------------------------------------------------------------------

# (keyword of the clean latents, keyword of their indices, embedder name, RoPE pooling), in the
# order they are PREPENDED to the noisy tokens, so the final order is [4x | 2x | 1x | noisy].
CLEAN_GROUPS = (
    ("clean_latents", "clean_latent_indices", "proj", 1),
    ("clean_latents_2x", "clean_latent_2x_indices", "proj_2x", 2),
    ("clean_latents_4x", "clean_latent_4x_indices", "proj_4x", 4),
)


def _to_batch(t: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:])
    raise ValueError(f"FramePackTransformer: `{name}` has batch {t.shape[0]}, the latent has batch {batch}")


def _keep_valid_tokens(context: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Batch 1: the prompt's valid tokens only; an all-padding prompt keeps its first token."""
    keep = valid[0].clone()
    keep[0] |= ~keep.any()
    return context[:, keep]


def _indices(idx, batch: int, count: int, name: str, device) -> torch.Tensor:
    """1-D (shared) or (B, k) per-sample frame indices -> (1 or B, k) on `device`."""
    if idx is None:
        raise ValueError(f"FramePackTransformer: `{name}` is required when its latents are given")
    idx = torch.as_tensor(idx).to(device)
    if idx.ndim == 1:
        idx = idx[None]
    if idx.ndim != 2 or idx.shape[1] != count or idx.shape[0] not in (1, batch):
        raise ValueError(f"FramePackTransformer: `{name}` must be ({count},) or ({batch}, {count}) frame indices, "
                         f"got shape {tuple(idx.shape)}")
    return idx


class FramePackTransformer(nn.Module):
    """FramePack's packed HunyuanVideo transformer; state-dict keys are the diffusers keys."""

    def __init__(self, config: FramePackConfig, dtype=None, device=None, operations=comfy.ops.disable_weight_init):
        super().__init__()
        self.config = config
        self.dtype = dtype
        self.fp32_output = config.fp32_output
        dim = config.inner_dim
        kw = dict(dtype=dtype, device=device, operations=operations)

        self.x_embedder = PatchEmbed(config, **kw)
        self.clean_x_embedder = HistoryPatchEmbed(config.in_channels, dim, **kw) if config.has_clean_x_embedder else None
        self.context_embedder = TokenRefiner(config, **kw)
        self.image_projection = ImageProjection(config.image_proj_dim, dim, **kw) if config.has_image_proj else None
        self.time_text_embed = ConditionEmbedding(dim, config.pooled_projection_dim, config.guidance_embeds, **kw)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(config, **kw) for _ in range(config.num_layers)])
        self.single_transformer_blocks = nn.ModuleList(
            [SingleTransformerBlock(config, **kw) for _ in range(config.num_single_layers)])
        self.norm_out = AdaNormContinuous(dim, **kw)
        self.proj_out = operations.Linear(
            dim, config.patch_size_t * config.patch_size ** 2 * config.out_channels, dtype=dtype, device=device)
        # The float32 output head casts its (bf16 / fp8) weights to the float32 input on the fly.
        self.norm_out.linear.comfy_cast_weights = True
        self.proj_out.comfy_cast_weights = True

    # ---- input preparation -------------------------------------------------------------------

    def _image_tokens(self, x, kwargs, batch, h, w):
        """Embed the noisy latent and the present clean groups; build their RoPE tables.

        Returns tokens (B, L_img, D) in order [4x | 2x | 1x | noisy] and cos/sin tables
        (1 or B, L_img, head_dim/2, 2) in the same order.
        """
        cfg = self.config
        device, dtype = x.device, x.dtype
        tokens = [self.x_embedder(x)]
        frames = _indices(kwargs["latent_indices"], batch, x.shape[2] // cfg.patch_size_t, "latent_indices", device)
        tables = [_group_rope(frames, h, w, cfg.rope_axes_dim, cfg.rope_theta, 1)]
        for latent_key, index_key, embedder, pool in CLEAN_GROUPS:
            latents = kwargs.get(latent_key)
            if latents is None:
                continue
            if self.clean_x_embedder is None:
                raise ValueError(f"FramePackTransformer: `{latent_key}` given but this model has no clean_x_embedder")
            if latents.ndim != 5 or latents.shape[1] != cfg.in_channels or tuple(latents.shape[3:]) != tuple(x.shape[3:]):
                raise ValueError(f"FramePackTransformer: `{latent_key}` must be (B, {cfg.in_channels}, k, "
                                 f"{x.shape[3]}, {x.shape[4]}) like the noisy latent, got {tuple(latents.shape)}")
            latents = _to_batch(latents, batch, latent_key).to(device=device, dtype=dtype)
            frames = _indices(kwargs.get(index_key), batch, latents.shape[2], index_key, device)
            tokens.insert(0, self.clean_x_embedder(embedder, latents))
            tables.insert(0, _group_rope(frames, h, w, cfg.rope_axes_dim, cfg.rope_theta, pool))
        rope_batch = max(t.shape[0] for t in tables)
        tables = [t.expand(rope_batch, *t.shape[1:]) for t in tables]
        return torch.cat(tokens, 1), torch.cat(tables, 1)

    def _text_tokens(self, context, context_mask, timestep, image_embeds, batch, dtype, transformer_options):
        """[SigLIP tokens | refined llama tokens] and, when samples have different valid lengths,
        the KeyMask of the text side (None when nothing needs masking)."""
        context = _to_batch(context, batch, "context").to(dtype)
        text_mask = None
        if context_mask is not None:
            valid = _to_batch(context_mask, batch, "context_mask").to(context.device) > 0
            if valid.shape != context.shape[:2]:
                raise ValueError(f"FramePackTransformer: `context_mask` must be {tuple(context.shape[:2])}, "
                                 f"got {tuple(valid.shape)}")
            if batch == 1:  # crop to the valid tokens: no mask at all (one host sync per forward)
                context = _keep_valid_tokens(context, valid)
            else:
                # Compact each sample's valid tokens to the front (order kept): text tokens carry
                # no position, so this changes nothing but makes "valid" a prefix per sample.
                order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
                context = context.gather(1, order[..., None].expand_as(context))
                # One host sync per forward; a sample without any valid token keeps its first one.
                lengths = valid.sum(1).clamp_(min=1).tolist()
                if min(lengths) < context.shape[1]:
                    text_mask = KeyMask(lengths, context.shape[1], context.device, dtype)
        txt = self.context_embedder(context, timestep, text_mask, transformer_options)
        if image_embeds is not None:
            if self.image_projection is None:
                raise ValueError("FramePackTransformer: `image_embeds` given but this model has no image_projection")
            siglip = self.image_projection(_to_batch(image_embeds, batch, "image_embeds").to(device=txt.device,
                                                                                            dtype=dtype))
            txt = torch.cat((siglip, txt), 1)
            if text_mask is not None:
                text_mask = text_mask.shifted(siglip.shape[1])
        return txt, text_mask

    def _block_stack(self, img, img_rope, temb, context, context_mask, timestep, image_embeds, batch, dtype,
                     transformer_options):
        """The text side, then the dual-stream and single-stream blocks; returns the image tokens after them."""
        txt, txt_mask = self._text_tokens(context, context_mask, timestep, image_embeds, batch, dtype,
                                           transformer_options)
        n_img, n_txt = img.shape[1], txt.shape[1]
        # Text tokens get the identity rotation, so one table serves the whole joint sequence.
        identity = img_rope.new_zeros(img_rope.shape[0], n_txt, *img_rope.shape[2:])
        identity[..., 0] = 1.0
        rope = torch.cat((img_rope, identity), 1).unsqueeze(2)  # (1 or B, L, 1, head_dim/2, 2)
        # Image tokens come first and are always valid.
        mask = None if txt_mask is None else txt_mask.shifted(n_img)

        for block in self.transformer_blocks:
            img, txt = block(img, txt, temb, rope, mask, transformer_options)
        joint = torch.cat((img, txt), 1)
        for block in self.single_transformer_blocks:
            joint = block(joint, temb, rope, mask, transformer_options)
        return joint[:, :n_img]

    # ---- forward -------------------------------------------------------------------------------

    def forward(self, x, timestep, context, control=None, transformer_options={}, **kwargs):
        """Runs ComfyUI's DIFFUSION_MODEL wrappers (step caches such as EasyCache hook in here) around `_forward`.

        transformer_options is passed last among the positional arguments, where ComfyUI's own models
        pass it and where those wrappers look for it.
        """
        return comfy.patcher_extension.WrapperExecutor.new_class_executor(
            self._forward, self,
            comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL,
                                                     transformer_options),
        ).execute(x, timestep, context, control, transformer_options, **kwargs)

    def _forward(self, x, timestep, context, control=None, transformer_options={}, *, context_mask=None,
                pooled_output=None, guidance=None, image_embeds=None, latent_indices=None, clean_latents=None,
                clean_latent_indices=None, clean_latents_2x=None, clean_latent_2x_indices=None,
                clean_latents_4x=None, clean_latent_4x_indices=None, **kwargs):
        """Velocity for the noisy latent `x` (B, C, T, H, W); see docs/design.md "The transformer call".

        timestep (B,) = sigma*1000; guidance (B,) = distilled guidance*1000; context (B, n, 4096)
        with context_mask (B, n) (1 = valid) or None; pooled_output (B, 768); image_embeds
        (B, 729, 1152) or None; *_indices 1-D (shared) or (B, k) (per sample) frame indices.
        Optional keyword `fp32_output` (bool) overrides the config's float32 output head for this call.
        """
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"FramePackTransformer: x must be (B, {cfg.in_channels}, T, H, W), got {tuple(x.shape)}")
        batch, _, frames, height, width = x.shape
        p, p_t = cfg.patch_size, cfg.patch_size_t
        if height % p or width % p or frames % p_t:
            raise ValueError(f"FramePackTransformer: latent T, H, W {frames, height, width} must be multiples of "
                             f"the patch size {p_t, p, p}")
        if latent_indices is None:
            raise ValueError("FramePackTransformer: `latent_indices` (frame indices of x) is required")
        if pooled_output is None:
            raise ValueError("FramePackTransformer: `pooled_output` (B, pooled CLIP-L text) is required")
        t, h, w = frames // p_t, height // p, width // p
        dtype = x.dtype
        timestep = _to_batch(torch.as_tensor(timestep, device=x.device).reshape(-1), batch, "timestep")
        if guidance is not None:
            guidance = _to_batch(torch.as_tensor(guidance, device=x.device).reshape(-1), batch, "guidance")

        groups = dict(latent_indices=latent_indices, clean_latents=clean_latents,
                      clean_latent_indices=clean_latent_indices, clean_latents_2x=clean_latents_2x,
                      clean_latent_2x_indices=clean_latent_2x_indices, clean_latents_4x=clean_latents_4x,
                      clean_latent_4x_indices=clean_latent_4x_indices)
        img, img_rope = self._image_tokens(x, groups, batch, h, w)
        temb = self.time_text_embed(timestep, _to_batch(pooled_output, batch, "pooled_output").to(dtype), guidance)
        # A step cache (MagCache) attached for this sampling run may replace the block stack by the residual it
        # added at an earlier step; the text side feeds only the stack, so it is skipped with it.
        step_cache = transformer_options.get(MAGCACHE_RUN_KEY)
        img_out = None if step_cache is None else step_cache.reuse(img, transformer_options)
        if img_out is None:
            img_out = self._block_stack(img, img_rope, temb, context, context_mask, timestep, image_embeds, batch,
                                        dtype, transformer_options)
            if step_cache is not None:
                step_cache.record(img, img_out, transformer_options)

        out = img_out[:, img.shape[1] - t * h * w:]
        fp32_output = kwargs.get("fp32_output")
        if self.fp32_output if fp32_output is None else fp32_output:
            out, temb = out.float(), temb.float()
        out = self.proj_out(self.norm_out(out, temb))
        out = out.reshape(batch, t, h, w, -1, p_t, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        # float32 when fp32_output (ComfyUI casts the model output to float32 anyway).
        return out.reshape(batch, -1, frames, height, width)
