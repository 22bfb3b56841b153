"""The FlashAttention-4 backend's plumbing on the CPU (the kernel itself is GPU-only; its numbers
against SDPA are checked by tests/test_gpu_paths.py on a GPU with flash-attn-4 installed).

* The model's attention reaches ComfyUI's `optimized_attention_override` hook, and a call the
  kernel cannot serve (here: CPU tensors) goes to ComfyUI's own function unchanged, bit for bit.
* The (B, L, H*D) <-> (B, L, H, D) views the override feeds the kernel are right: with a
  reference kernel of FlashAttention-4's signature standing in for the CUDA one, the model's
  output equals the SDPA path's.
* The node, in a real graph through ComfyUI's engine: with the stand-in kernel the sampled latent
  equals the graph without the node; without the package it stops the prompt with its name and
  the install command, before any model call.
"""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from comfy.ldm.modules import attention as comfy_attention
from conftest import GraphError
from framepack_oneframe.framepack_core import attention_fa4
from test_comfy_sampling import _transformer_class, pack_graph
from test_model_invariants import model  # noqa: F401  (fixture: the tiny reference-weight transformer)
from test_model_parity import make_inputs
from test_oneframe_graph import fp_models, images, latent  # noqa: F401  (fixtures)


def _run(model, inp, transformer_options):
    kwargs = {k: v for k, v in inp.items() if k not in ("x", "timestep", "context", "context_mask")}
    with torch.no_grad():
        return model(inp["x"], inp["timestep"], inp["context"], transformer_options=transformer_options, **kwargs)


def test_hook_is_reached_and_falls_back_on_cpu(model):
    calls = []

    def spy(func, *args, **kwargs):
        calls.append(func.__name__)
        return attention_fa4.fa4_attention_override(func, *args, **kwargs)

    inp = make_inputs(4)
    plain = _run(model, inp, {})
    hooked = _run(model, inp, {"optimized_attention_override": spy})
    assert calls and set(calls) == {comfy_attention.optimized_attention.__name__}
    assert torch.equal(hooked, plain)


def _reference_kernel(q, k, v):
    """FlashAttention-4's contract: (B, L, H, D) in, (B, L, H, D) out."""
    assert q.dim() == 4 and q.stride(-1) == 1
    return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def test_views_fed_to_the_kernel_are_right(model, monkeypatch):
    served = []

    def serves(q, k, v, head_dim, mask):
        served.append(mask is None)
        return mask is None

    monkeypatch.setattr(attention_fa4, "fa4_serves", serves)
    monkeypatch.setattr(attention_fa4, "_fa4_kernel", _reference_kernel)
    inp = make_inputs(5)
    plain = _run(model, inp, {})
    ours = _run(model, inp, {"optimized_attention_override": attention_fa4.fa4_attention_override})
    assert served and all(served)
    assert ((ours - plain).norm() / plain.norm()).item() < 1e-5
    # the skip_reshape / skip_output_reshape forms ComfyUI's other models use
    q, k, v = (torch.randn(2, 3, 7, 16) for _ in range(3))  # (B, H, L, D)
    out = attention_fa4.fa4_attention_override(comfy_attention.attention_pytorch, q, k, v, 3, skip_reshape=True,
                                               skip_output_reshape=True)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


@pytest.mark.skipif(attention_fa4.fa4_import_error() is None, reason="flash-attn-4 is installed here")
def test_use_fa4_without_the_package_names_it():
    with pytest.raises(RuntimeError, match="flash-attn-4.*not usable"):
        attention_fa4.use_fa4(object())


def _with_node(p):
    p["fa4"] = {"class_type": "FramePackFlashAttention4", "inputs": {"model": ["model", 0]}}
    p["sampler"]["inputs"]["model"] = ["fa4", 0]
    return p


def _loaded_module(run_graph, fp_models, images):
    """attention_fa4 as ComfyUI's loader imported it (the pack may live there under a second module name)."""
    cls = _transformer_class(run_graph, fp_models, images)
    return importlib.import_module(cls.__module__.rsplit(".", 1)[0] + ".attention_fa4")


def test_node_in_a_graph_samples_the_same_latent(run_graph, fp_models, images, monkeypatch):
    attention_fa4 = _loaded_module(run_graph, fp_models, images)
    served = []

    def serves(q, k, v, head_dim, mask):
        served.append(mask is None)
        return mask is None

    monkeypatch.setattr(attention_fa4, "fa4_import_error", lambda: None)
    monkeypatch.setattr(attention_fa4, "fa4_serves", serves)
    monkeypatch.setattr(attention_fa4, "_fa4_kernel", _reference_kernel)
    plain = latent(run_graph, pack_graph(fp_models, "kisekaeichi", "fp_ref.png", steps=3, seed=7))
    assert not served
    ours = latent(run_graph, _with_node(pack_graph(fp_models, "kisekaeichi", "fp_ref.png", steps=3, seed=7)))
    assert served and all(served)
    assert ((ours - plain).norm() / plain.norm()).item() < 1e-4


@pytest.mark.skipif(attention_fa4.fa4_import_error() is None, reason="flash-attn-4 is installed here")
def test_node_without_the_package_stops_the_prompt(run_graph, fp_models, images, monkeypatch):
    attention_fa4 = _loaded_module(run_graph, fp_models, images)
    calls = []
    monkeypatch.setattr(attention_fa4, "fa4_attention_override", lambda *a, **k: calls.append(1))
    with pytest.raises(GraphError, match=r"FramePackFlashAttention4: FlashAttention-4 is not usable.*pip install "
                                         r"flash-attn-4"):
        run_graph(_with_node(pack_graph(fp_models, "kisekaeichi", "fp_ref.png", steps=3)), outputs_of=["sampler"])
    assert not calls
