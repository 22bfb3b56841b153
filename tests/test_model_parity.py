"""FramePackTransformer against diffusers' HunyuanVideoFramepackTransformer3DModel on the same weights.

The reference is diffusers 0.42.1 (bit-identical to lllyasviel's original in float32, see
spec/model.md) at the tiny configuration of `tiny_framepack`. Our module is built from
`infer_config(shapes)` and gets the reference's state dict through a strict `load_state_dict`, so
these tests also prove the weight keys are exactly the diffusers keys.

Argument mapping (ours -> diffusers forward):
  x -> hidden_states, timestep -> timestep, context -> encoder_hidden_states,
  context_mask -> encoder_attention_mask (diffusers needs one; all ones when ours gets None),
  pooled_output -> pooled_projections, image_embeds -> image_embeds,
  latent_indices -> indices_latents, guidance -> guidance,
  clean_latents / clean_latent_indices -> latents_clean / indices_latents_clean,
  clean_latents_2x / clean_latent_2x_indices -> latents_history_2x / indices_latents_history_2x,
  clean_latents_4x / clean_latent_4x_indices -> latents_history_4x / indices_latents_history_4x.
Timestep: diffusers' FramePack pipeline passes the scheduler's timesteps (sigma * 1000) straight
into the sinusoid, and so does ComfyUI (model multiplier 1000): both get the same number here.
Guidance likewise (distilled guidance * 1000).

diffusers cannot run without all three clean groups or with per-sample indices; those layouts are
covered by tests/test_model_invariants.py.
"""
from __future__ import annotations

import pytest
import torch

import tiny_framepack
from framepack_oneframe.framepack_core.model import FramePackTransformer, infer_config

TOLERANCE = 1e-5  # relative error: norm(ours - reference) / norm(reference)


@pytest.fixture(scope="module")
def models():
    reference = tiny_framepack.make_reference(seed=0)
    state = reference.state_dict()
    ours = FramePackTransformer(infer_config({k: v.shape for k, v in state.items()}))
    ours.load_state_dict(state, strict=True)
    return reference, ours.eval()


def make_inputs(seed: int, batch: int = 1, height: int = 8, width: int = 8, text_lengths=(7,),
                counts=(2, 2, 16), siglip_tokens: int = 5):
    """Random conditioning for the tiny model; text_lengths[i] valid tokens for sample i, the rest padding."""
    cfg = tiny_framepack.TINY_CONFIG
    g = torch.Generator().manual_seed(seed)
    n = max(text_lengths)
    mask = torch.zeros(batch, n, dtype=torch.long)
    for i, length in enumerate(text_lengths):
        mask[i, :length] = 1
    k1, k2, k4 = counts
    # Frame indices like a one-frame layout: clean 1x around the target, then history further away.
    idx = torch.randperm(40, generator=g)
    return dict(
        x=torch.randn(batch, 16, 1, height, width, generator=g),
        timestep=torch.rand(batch, generator=g) * 1000,
        context=torch.randn(batch, n, cfg["text_embed_dim"], generator=g),
        context_mask=mask,
        pooled_output=torch.randn(batch, cfg["pooled_projection_dim"], generator=g),
        guidance=torch.full((batch,), 10.0 * 1000),
        image_embeds=torch.randn(batch, siglip_tokens, cfg["image_proj_dim"], generator=g),
        latent_indices=idx[:1],
        clean_latents=torch.randn(batch, 16, k1, height, width, generator=g),
        clean_latent_indices=idx[1:1 + k1],
        clean_latents_2x=torch.randn(batch, 16, k2, height, width, generator=g),
        clean_latent_2x_indices=idx[1 + k1:1 + k1 + k2],
        clean_latents_4x=torch.randn(batch, 16, k4, height, width, generator=g),
        clean_latent_4x_indices=idx[1 + k1 + k2:1 + k1 + k2 + k4],
    )


def run_reference(reference, inp, mask=True):
    with torch.no_grad():
        return reference(
            hidden_states=inp["x"], timestep=inp["timestep"], encoder_hidden_states=inp["context"],
            encoder_attention_mask=inp["context_mask"] if mask else torch.ones_like(inp["context_mask"]),
            pooled_projections=inp["pooled_output"], image_embeds=inp["image_embeds"],
            indices_latents=inp["latent_indices"], guidance=inp["guidance"],
            latents_clean=inp["clean_latents"], indices_latents_clean=inp["clean_latent_indices"],
            latents_history_2x=inp["clean_latents_2x"], indices_latents_history_2x=inp["clean_latent_2x_indices"],
            latents_history_4x=inp["clean_latents_4x"], indices_latents_history_4x=inp["clean_latent_4x_indices"],
            return_dict=False,
        )[0]


def run_ours(model, inp, mask=True):
    kwargs = {k: v for k, v in inp.items() if k not in ("x", "timestep", "context", "context_mask")}
    with torch.no_grad():
        return model(inp["x"], inp["timestep"], inp["context"], context_mask=inp["context_mask"] if mask else None,
                     **kwargs)


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return ((ours.float() - reference).norm() / reference.norm()).item()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch1_matches_diffusers(models, seed):
    reference, ours = models
    inp = make_inputs(seed)
    expected = run_reference(reference, inp, mask=False)
    assert expected.abs().mean() > 1e-2  # a live network, not a zero output
    assert relative_error(run_ours(ours, inp, mask=False), expected) < TOLERANCE


@pytest.mark.parametrize("height,width,counts", [(10, 14, (1, 3, 5)), (6, 12, (2, 1, 7)), (16, 8, (3, 2, 16))])
def test_batch1_padding_of_2x_4x_groups_matches_diffusers(models, height, width, counts):
    """Grids and frame counts that are not multiples of the 2x / 4x kernels: replicate padding of
    the latents and of the RoPE tables, then average pooling, must match diffusers."""
    reference, ours = models
    inp = make_inputs(11, height=height, width=width, counts=counts)
    assert relative_error(run_ours(ours, inp, mask=False), run_reference(reference, inp, mask=False)) < TOLERANCE


def test_batch1_with_padded_text_matches_diffusers(models):
    """Batch 1 whose text mask has padding: diffusers crops to the valid tokens, so must we."""
    reference, ours = models
    inp = make_inputs(4, text_lengths=(5,))
    inp["context"] = torch.cat([inp["context"], 50 * torch.randn(1, 3, inp["context"].shape[2])], 1)
    inp["context_mask"] = torch.cat([inp["context_mask"], torch.zeros(1, 3, dtype=torch.long)], 1)
    assert relative_error(run_ours(ours, inp), run_reference(reference, inp)) < TOLERANCE


@pytest.mark.parametrize("seed", [5, 6])
def test_batch2_different_text_lengths_matches_diffusers(models, seed):
    reference, ours = models
    inp = make_inputs(seed, batch=2, text_lengths=(9, 4))
    expected = run_reference(reference, inp)
    got = run_ours(ours, inp)
    assert relative_error(got, expected) < TOLERANCE
    for i in range(2):  # each sample on its own, not just the batch norm
        assert relative_error(got[i], expected[i]) < TOLERANCE


def test_forward_reads_every_weight(models):
    """Zeroing any one weight tensor changes the output: no parameter is unused or mis-wired."""
    reference, ours = models
    inp = make_inputs(7, height=4, width=4, text_lengths=(3,), counts=(1, 2, 4), siglip_tokens=2)
    base = run_ours(ours, inp, mask=False)
    state = {k: v.clone() for k, v in ours.state_dict().items()}
    unused = []
    try:
        for name, param in ours.named_parameters():
            with torch.no_grad():
                saved = param.clone()
                param.zero_()
                if torch.equal(run_ours(ours, inp, mask=False), base):
                    unused.append(name)
                param.copy_(saved)
    finally:
        ours.load_state_dict(state)
    assert not unused, unused


@pytest.mark.parametrize("fmt", ["single_file", "prefixed_single_file", "diffusers_folder"])
def test_loaded_through_load_framepack_matches_diffusers(models, tmp_path, fmt):
    """The same weights written as the files users have and read by the pack's loader
    (`framepack_core.loader.load_framepack`, what the FramePackModelLoader node calls)."""
    from framepack_oneframe.framepack_core.loader import load_framepack

    reference, _ = models
    if fmt == "diffusers_folder":
        path = tiny_framepack.save_diffusers_folder(tmp_path / "FramePackI2V_HY", seed=0)
    else:
        prefix = "model.diffusion_model." if fmt == "prefixed_single_file" else ""
        path = tiny_framepack.save_single_file(tmp_path / "tiny.safetensors", seed=0, prefix=prefix)
    patcher = load_framepack(str(path), "default")
    ours = patcher.model.diffusion_model
    assert isinstance(ours, FramePackTransformer)
    for inp in (make_inputs(21, height=10, width=14, counts=(2, 3, 5)), make_inputs(22, batch=2, text_lengths=(6, 3))):
        inp = {k: v.to(ours.dtype) if torch.is_tensor(v) and v.is_floating_point() and k not in ("timestep", "guidance")
               else v for k, v in inp.items()}
        assert relative_error(run_ours(ours, inp), run_reference(reference, inp)) < TOLERANCE
