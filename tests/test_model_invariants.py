"""FramePackTransformer properties that the diffusers reference cannot check.

diffusers needs all three clean groups and shared 1-D indices; the one-frame layouts use any subset
of groups and the sweep runs different layouts per sample. These tests pin the behaviour there
by invariants: shapes, sensitivity to each input, masking, per-sample batching, and every
attention backend ComfyUI may select. Plus `infer_config` on the real 13B shapes (no allocation).
"""
from __future__ import annotations

import math

import pytest
import torch

import comfy.ops
import tiny_framepack
from comfy.ldm.modules import attention as comfy_attention
from framepack_oneframe.framepack_core import model as fp_model
from framepack_oneframe.framepack_core.model import (FramePackConfig, FramePackTransformer, default_rope_axes_dim,
                                                     infer_config)
from test_model_parity import make_inputs, relative_error, run_ours

CLOSE = 1e-5


@pytest.fixture(scope="module")
def model():
    state = tiny_framepack.reference_state_dict(seed=0)
    m = FramePackTransformer(infer_config({k: v.shape for k, v in state.items()}))
    m.load_state_dict(state, strict=True)
    return m.eval()


def one_x_only(inp: dict) -> dict:
    """kisekaeichi-style layout: the 1x clean group only, 2x / 4x absent."""
    return {**inp, "clean_latents_2x": None, "clean_latent_2x_indices": None,
            "clean_latents_4x": None, "clean_latent_4x_indices": None}


def test_1x_only_layout_shape_and_sensitivity(model):
    inp = one_x_only(make_inputs(1, height=10, width=12))
    out = run_ours(model, inp)
    assert out.shape == inp["x"].shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    changed = dict(inp, clean_latents=inp["clean_latents"].clone())
    changed["clean_latents"][:, :, 1] += 1.0  # only the second clean frame
    assert relative_error(run_ours(model, changed), out) > 1e-3
    moved = dict(inp, clean_latent_indices=inp["clean_latent_indices"] + 3)  # RoPE positions matter
    assert relative_error(run_ours(model, moved), out) > 1e-4


def test_no_clean_groups_and_no_image_embeds(model):
    inp = make_inputs(2)
    for key in ("clean_latents", "clean_latents_2x", "clean_latents_4x", "image_embeds"):
        inp[key] = None
    out = run_ours(model, inp)
    assert out.shape == inp["x"].shape and torch.isfinite(out).all()


@pytest.mark.parametrize("group", ["clean_latents", "clean_latents_2x", "clean_latents_4x", "image_embeds",
                                   "context", "pooled_output", "guidance", "timestep"])
def test_every_input_changes_the_output(model, group):
    inp = make_inputs(3)
    base = run_ours(model, inp)
    changed = dict(inp)
    changed[group] = inp[group] + (1.0 if group not in ("guidance", "timestep") else 250.0)
    assert relative_error(run_ours(model, changed), base) > 1e-4


def test_group_order_in_the_sequence_matters(model):
    """Swapping the 1x and 2x frame indices changes RoPE positions, so the output (a guard that
    indices are attached to their own group)."""
    inp = make_inputs(4)
    swapped = dict(inp, clean_latent_indices=inp["clean_latent_2x_indices"],
                   clean_latent_2x_indices=inp["clean_latent_indices"])
    assert relative_error(run_ours(model, swapped), run_ours(model, inp)) > 1e-4


def _pad_text(inp: dict, where: str, count: int = 4, scale: float = 1e3) -> dict:
    """Insert `count` huge random padding tokens (mask 0) at the end, front or middle of the text."""
    ctx, mask = inp["context"], inp["context_mask"]
    pad = scale * torch.randn(ctx.shape[0], count, ctx.shape[2])
    pad_mask = torch.zeros(ctx.shape[0], count, dtype=mask.dtype)
    cut = {"end": ctx.shape[1], "front": 0, "middle": ctx.shape[1] // 2}[where]
    return dict(inp, context=torch.cat([ctx[:, :cut], pad, ctx[:, cut:]], 1),
                context_mask=torch.cat([mask[:, :cut], pad_mask, mask[:, cut:]], 1))


@pytest.mark.parametrize("where", ["end", "front", "middle"])
def test_masked_text_padding_changes_nothing_batch1(model, where):
    inp = make_inputs(5)
    base = run_ours(model, inp, mask=False)
    padded = _pad_text(inp, where)
    assert relative_error(run_ours(model, padded), base) < CLOSE
    # Without the mask the same padding is real text and must change the output.
    assert relative_error(run_ours(model, padded, mask=False), base) > 1e-3


@pytest.mark.parametrize("batch", [1, 2])
def test_all_padding_text_stays_finite(model, batch):
    """A prompt whose mask is all zeros (an empty prompt) keeps one token instead of producing NaN."""
    inp = make_inputs(16, batch=batch, text_lengths=(5,) * batch)
    inp["context_mask"][0] = 0
    out = run_ours(model, inp)
    assert torch.isfinite(out).all()
    if batch == 2:  # the other sample is unaffected
        alone = {k: (v[1:] if torch.is_tensor(v) and not k.endswith("indices") else v) for k, v in inp.items()}
        assert relative_error(out[1:], run_ours(model, alone)) < CLOSE


def _split(inp: dict, i: int) -> dict:
    """Sample i of a batched input (1-D shared indices stay as they are)."""
    out = {}
    for k, v in inp.items():
        if v is None or (k.endswith("indices") and v.ndim == 1):
            out[k] = v
        else:
            out[k] = v[i:i + 1]
    return out


@pytest.mark.parametrize("where", ["end", "front", "middle"])
def test_masked_text_padding_changes_nothing_batch2(model, where):
    """Two samples, different text lengths and padding positions: each equals its own unpadded run."""
    a, b = make_inputs(6), make_inputs(7, text_lengths=(4,))
    b["context"], b["context_mask"] = b["context"][:, :4], b["context_mask"][:, :4]
    b = _pad_text(b, where, count=3)  # b: 7 tokens, 4 valid
    batch = {k: torch.cat([a[k], b[k]]) if k in ("x", "timestep", "context", "context_mask", "pooled_output",
                                                  "guidance", "image_embeds", "clean_latents", "clean_latents_2x",
                                                  "clean_latents_4x") else a[k] for k in a}
    b_alone = {**b, **{k: a[k] for k in a if k.endswith("indices")}}
    got = run_ours(model, batch)
    assert relative_error(got[:1], run_ours(model, a, mask=False)) < CLOSE
    assert relative_error(got[1:], run_ours(model, b_alone)) < CLOSE


def _per_sample_batch(seed: int):
    """Two samples with different RoPE frame indices for every group, as (B, k) tensors."""
    a, b = make_inputs(seed), make_inputs(seed + 100)
    batch = {}
    for k in a:
        if k.endswith("indices"):
            batch[k] = torch.stack([a[k], b[k]])
        elif k == "context_mask":
            batch[k] = None
        else:
            batch[k] = torch.cat([a[k], b[k]])
    return a, b, batch


def test_all_valid_mask_is_no_mask(model, monkeypatch):
    """A batch whose masks are all ones takes the unmasked path (no split, no bias) and equals it."""
    a, b, batch = _per_sample_batch(15)
    calls = []
    real = comfy_attention.optimized_attention

    def spy(q, k, v, heads, mask=None, **kwargs):
        calls.append((q.shape[0], mask is None))
        return real(q, k, v, heads, mask=mask, **kwargs)

    monkeypatch.setattr(comfy_attention, "optimized_attention", spy)
    ones = dict(batch, context_mask=torch.ones(batch["context"].shape[:2], dtype=torch.long))
    assert torch.equal(run_ours(model, ones), run_ours(model, batch, mask=False))
    assert calls and all(c == (2, True) for c in calls)


def test_per_sample_indices_equal_separate_runs(model):
    a, b, batch = _per_sample_batch(8)
    got = run_ours(model, batch, mask=False)
    assert relative_error(got[:1], run_ours(model, a, mask=False)) < CLOSE
    assert relative_error(got[1:], run_ours(model, b, mask=False)) < CLOSE
    # 1-D indices shared by the batch give the same result as the same indices per sample.
    shared = {**batch, **{k: a[k] for k in a if k.endswith("indices")}}
    per_sample = {**batch, **{k: a[k][None].expand(2, -1) for k in a if k.endswith("indices")}}
    assert torch.equal(run_ours(model, shared, mask=False), run_ours(model, per_sample, mask=False))


def _sage_stand_in(q, k, v, heads, mask=None, **kwargs):
    """A backend named like ComfyUI's sage attention, which ignores masks: ours must not pass one."""
    assert mask is None, "masks are silently ignored by sage attention; the model must split the batch instead"
    return comfy_attention.attention_pytorch(q, k, v, heads, **kwargs)


_sage_stand_in.__name__ = "attention_sage"


@pytest.mark.parametrize("split", [True, False], ids=["split_batch", "key_bias"])
@pytest.mark.parametrize("backend", ["attention_pytorch", "attention_basic", "attention_sub_quad", "sage_stand_in"])
def test_every_attention_backend_masks_padding(model, monkeypatch, backend, split):
    """ComfyUI picks optimized_attention from its flags; each must mask padding, including padding
    that is not at the end, both ways a masked batch can run (each sample alone on its valid prefix,
    or one call with an additive key bias; mask-ignoring backends always split)."""
    fn = _sage_stand_in if backend == "sage_stand_in" else getattr(comfy_attention, backend)
    monkeypatch.setattr(comfy_attention, "optimized_attention", fn)
    monkeypatch.setattr(fp_model, "SPLIT_MASKED_BATCH", split)
    a, b, batch = _per_sample_batch(9)
    n = batch["context"].shape[1]
    batch = _pad_text({**batch, "context_mask": torch.ones(2, n, dtype=torch.long)}, "middle")
    batch["context_mask"][0, :2] = 0  # sample 0 also has its first two tokens masked
    got = run_ours(model, batch)
    a_alone = dict(a, context=a["context"][:, 2:], context_mask=None)
    assert relative_error(got[:1], run_ours(model, a_alone, mask=False)) < CLOSE
    assert relative_error(got[1:], run_ours(model, b, mask=False)) < CLOSE


def test_rope_compile_branch_equals_eager_branch(model, monkeypatch):
    """apply_rope has a real-arithmetic form for torch.compile; it must give the eager (complex) numbers."""
    inp = make_inputs(14)
    eager = run_ours(model, inp)
    monkeypatch.setattr(fp_model, "_is_compiling", lambda: True)
    assert relative_error(run_ours(model, inp), eager) < 1e-6


def test_built_only_from_comfy_operations():
    """Every layer with weights is a ComfyUI op, so ComfyUI can cast / stream / patch all of them."""
    m = FramePackTransformer(infer_config({k: v.shape for k, v in tiny_framepack.reference_state_dict().items()}),
                             device="meta")
    for name, module in m.named_modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert isinstance(module, comfy.ops.CastWeightBiasOp), name


def test_manual_cast_bf16_weights_close_to_float32(model):
    """bf16 weights through comfy.ops.manual_cast (how ComfyUI runs low-precision weights), float32
    head (fp32_output): close to the float32 model, and the output is float32."""
    state = model.state_dict()
    low = FramePackTransformer(model.config, dtype=torch.bfloat16, operations=comfy.ops.manual_cast)
    low.load_state_dict(state)
    assert low.proj_out.weight.dtype == torch.bfloat16
    inp = make_inputs(10)
    for key in ("x", "context", "pooled_output", "image_embeds", "clean_latents", "clean_latents_2x",
                "clean_latents_4x"):
        inp[key] = inp[key].to(torch.bfloat16)
    out = run_ours(low, inp, mask=False)
    assert out.dtype == torch.float32
    ref = run_ours(model, {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
                           for k, v in inp.items()}, mask=False)
    assert relative_error(out, ref) < 0.05


def test_bf16_weights_without_cast_ops_keep_float32_head(model):
    """Plain disable_weight_init ops with bf16 weights and bf16 activations: the float32 head casts its
    weights itself (otherwise F.linear would fail on mixed dtypes)."""
    low = FramePackTransformer(model.config, dtype=torch.bfloat16)
    low.load_state_dict(model.state_dict())
    inp = {k: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() and k not in
               ("timestep", "guidance") else v) for k, v in make_inputs(12).items()}
    out = run_ours(low, inp, mask=False)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert run_ours(low, dict(inp, fp32_output=False), mask=False).dtype == torch.bfloat16  # per call
    low.fp32_output = False  # per model
    lowered = run_ours(low, inp, mask=False)
    assert lowered.dtype == torch.bfloat16 and relative_error(lowered, out) < 0.05


# --- configuration ---------------------------------------------------------------------------


def full_size_shapes() -> dict[str, tuple[int, ...]]:
    """Shapes of the released 13B model, from diffusers' class on the meta device (no memory)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    with torch.device("meta"):
        reference = HunyuanVideoFramepackTransformer3DModel(has_image_proj=True, has_clean_x_embedder=True)
    return {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_infer_config_full_size():
    shapes = full_size_shapes()
    cfg = infer_config(shapes)
    assert (cfg.num_attention_heads, cfg.attention_head_dim) == (24, 128)
    assert (cfg.num_layers, cfg.num_single_layers, cfg.num_refiner_layers) == (20, 40, 2)
    assert cfg.rope_axes_dim == (16, 56, 56) and cfg.mlp_ratio == 4.0
    assert (cfg.text_embed_dim, cfg.pooled_projection_dim, cfg.image_proj_dim) == (4096, 768, 1152)
    assert cfg.guidance_embeds and cfg.has_image_proj and cfg.has_clean_x_embedder
    assert cfg == FramePackConfig()  # the defaults are the released model
    assert len(shapes) == 1274
    assert sum(math.prod(s) for s in shapes.values()) == 12_874_314_816
    # Our module at that config has exactly these keys and shapes.
    ours = FramePackTransformer(cfg, dtype=torch.bfloat16, device="meta")
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == shapes


def test_infer_config_tiny_and_config_json():
    shapes = {k: v.shape for k, v in tiny_framepack.reference_state_dict().items()}
    cfg = infer_config(shapes)
    for key in ("num_attention_heads", "attention_head_dim", "num_layers", "num_single_layers", "num_refiner_layers",
                "text_embed_dim", "pooled_projection_dim", "image_proj_dim", "patch_size", "patch_size_t"):
        assert getattr(cfg, key) == tiny_framepack.TINY_CONFIG[key], key
    assert cfg.rope_axes_dim == (4, 6, 6)
    # A diffusers folder's config.json supplies what shapes cannot tell ...
    cfg = infer_config(shapes, {"rope_axes_dim": [2, 8, 6], "rope_theta": 100.0, "num_layers": 1})
    assert cfg.rope_axes_dim == (2, 8, 6) and cfg.rope_theta == 100.0
    # ... and must agree with the shapes on the rest.
    with pytest.raises(ValueError, match="num_layers"):
        infer_config(shapes, {"num_layers": 3})
    with pytest.raises(ValueError, match="x_embedder.proj.weight"):
        infer_config({k: v for k, v in shapes.items() if not k.startswith("x_embedder")})


def test_default_rope_axes_dim_rule():
    assert default_rope_axes_dim(128) == (16, 56, 56)
    assert default_rope_axes_dim(16) == (4, 6, 6)
    for head_dim in (32, 64, 96, 256):
        dims = default_rope_axes_dim(head_dim)
        assert sum(dims) == head_dim and all(d % 2 == 0 for d in dims)


def test_clear_errors_for_bad_inputs(model):
    inp = make_inputs(13)
    with pytest.raises(ValueError, match="clean_latent_2x_indices"):
        run_ours(model, dict(inp, clean_latent_2x_indices=None))
    with pytest.raises(ValueError, match="clean_latents_4x"):
        run_ours(model, dict(inp, clean_latents_4x=inp["clean_latents_4x"][..., :4]))
    with pytest.raises(ValueError, match="latent_indices"):
        run_ours(model, dict(inp, latent_indices=torch.tensor([[1, 2]])))
