"""FramePackModelLoader through the real ComfyUI engine: files, dtypes, prefixes, parity, errors, memory.

Every checkpoint here is a real safetensors file of the real architecture at the tiny test
configuration (tests/tiny_framepack.py), written into the scratch `models/diffusion_models/`.
The pack's classes are compared by value (class names, tensors), never by identity: in tests the
pack imports as `framepack_oneframe.*` while ComfyUI's loader gives it another module name.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tiny_framepack as tiny
from conftest import BASE_DIR, COMFY_DIR, GraphError, PACK_NAME

SEED = 7
DTYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
}


@pytest.fixture(scope="module")
def reference_sd() -> dict[str, torch.Tensor]:
    return tiny.reference_state_dict(SEED)


@pytest.fixture(scope="module")
def unet_dir(models_dir) -> Path:
    return models_dir / "diffusion_models"


@pytest.fixture(scope="module")
def loader_module():
    from framepack_oneframe.framepack_core import loader

    return loader


def _unique(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def _run_loader(run_graph, name: str, weight_dtype: str = "default"):
    prompt = {
        "1": {"class_type": "FramePackModelLoader", "inputs": {"model_name": name, "weight_dtype": weight_dtype}},
        "2": {"class_type": "FPTestCapture", "inputs": {"value": ["1", 0]}},
    }
    return run_graph(prompt, outputs_of=["1"])["1"][0]


def _graph_error(run_graph, name: str, weight_dtype: str = "default") -> str:
    with pytest.raises(GraphError) as info:
        _run_loader(run_graph, name, weight_dtype)
    return str(info.value)


def _model_sd(patcher) -> dict[str, torch.Tensor]:
    return patcher.model.diffusion_model.state_dict()


def _assert_same_tensors(loaded: dict, expected: dict):
    assert set(loaded) == set(expected)
    for k, v in expected.items():
        assert loaded[k].dtype == v.dtype, (k, loaded[k].dtype, v.dtype)
        assert loaded[k].shape == v.shape, k
        assert torch.equal(loaded[k].view(torch.uint8), v.contiguous().view(torch.uint8)), k


# --------------------------------------------------------------------------------------------
# Files, dtypes, prefixes, folders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("file_dtype", list(DTYPES))
def test_single_file_each_dtype_loads_bit_exact(run_graph, unet_dir, reference_sd, file_dtype):
    name = _unique(f"fp-{file_dtype}") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED, dtype=DTYPES[file_dtype])
    patcher = _run_loader(run_graph, name)

    assert type(patcher).__name__ == "ModelPatcher"
    assert type(patcher.model).__name__ == "FramePackModel"
    assert type(patcher.model.diffusion_model).__name__ == "FramePackTransformer"
    assert patcher.model.diffusion_model.dtype == DTYPES[file_dtype]
    assert patcher.model.latent_format.__class__.__name__ == "HunyuanVideo"
    assert patcher.model.model_type.name == "FLOW"
    assert patcher.model.model_sampling.multiplier == 1000
    assert patcher.model.framepack_config.rope_axes_dim == tuple(tiny.TINY_CONFIG["rope_axes_dim"])
    # Exactly the file's tensors: same keys, dtypes, bits.
    _assert_same_tensors(_model_sd(patcher), {k: v.to(DTYPES[file_dtype]) for k, v in reference_sd.items()})
    # ComfyUI sees the diffusers names under diffusion_model. (LoRA patches address these).
    assert "diffusion_model.transformer_blocks.0.attn.to_q.weight" in patcher.model_state_dict()


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model.", "transformer."])
def test_key_prefixes_are_stripped(run_graph, unet_dir, reference_sd, prefix):
    name = _unique("fp-prefixed") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED, dtype=torch.bfloat16, prefix=prefix)
    patcher = _run_loader(run_graph, name)
    _assert_same_tensors(_model_sd(patcher), {k: v.to(torch.bfloat16) for k, v in reference_sd.items()})


def test_sharded_diffusers_folder_and_its_config_json(run_graph, unet_dir, reference_sd, loader_module):
    name = _unique("FramePackI2V_HY")
    folder = tiny.save_diffusers_folder(unet_dir / name, SEED, dtype=torch.bfloat16, shards=3)
    # config.json is where the RoPE split comes from (shapes cannot tell it): change it to see it used.
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_axes_dim"] = [8, 4, 4]
    (folder / "config.json").write_text(json.dumps(cfg))

    listed = loader_module.list_checkpoints()
    assert name in listed
    assert not [n for n in listed if n.replace(os.sep, "/").startswith(name + "/")], "shards must not be listed"

    patcher = _run_loader(run_graph, name)
    _assert_same_tensors(_model_sd(patcher), {k: v.to(torch.bfloat16) for k, v in reference_sd.items()})
    assert patcher.model.framepack_config.rope_axes_dim == (8, 4, 4)


def test_replaced_file_is_reloaded(run_graph, unet_dir):
    """ComfyUI caches node outputs by input; a file replaced under the same name must not give the old weights."""
    name = _unique("fp-replaced") + ".safetensors"
    tiny.save_single_file(unet_dir / name, 1)
    first = _model_sd(_run_loader(run_graph, name))["proj_out.weight"].clone()
    tiny.save_single_file(unet_dir / name, 2)
    os.utime(unet_dir / name, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    second = _model_sd(_run_loader(run_graph, name))["proj_out.weight"]
    assert not torch.equal(first, second)
    assert torch.equal(second, tiny.reference_state_dict(2)["proj_out.weight"])


def test_loader_registers_comfys_reload_factory(run_graph, unet_dir, reference_sd):
    """ComfyUI reloads a Dynamic VRAM model as a classic one through `cached_patcher_init(..., disable_dynamic=True)`
    (TorchCompileModel, hooks, multi-GPU, the pack's trainer). Without the factory those raise on our MODEL."""
    import comfy.model_patcher

    name = _unique("fp-reload") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED, dtype=torch.bfloat16)
    patcher = _run_loader(run_graph, name, "bf16")
    factory, args = patcher.cached_patcher_init
    reloaded = factory(*args, disable_dynamic=True)
    assert type(reloaded) is comfy.model_patcher.ModelPatcher
    assert reloaded.model is not patcher.model
    assert reloaded.model.framepack_config == patcher.model.framepack_config
    _assert_same_tensors(_model_sd(reloaded), _model_sd(patcher))
    _assert_same_tensors(_model_sd(reloaded), {k: v.to(torch.bfloat16) for k, v in reference_sd.items()})


def test_list_checkpoints_only_safetensors_and_folders(unet_dir, loader_module):
    single = _unique("single") + ".safetensors"
    tiny.save_single_file(unet_dir / "sub" / single, SEED)
    (unet_dir / (_unique("pickle") + ".ckpt")).write_bytes(b"not loaded")
    listed = [n.replace(os.sep, "/") for n in loader_module.list_checkpoints()]
    assert f"sub/{single}" in listed
    assert not [n for n in listed if n.endswith(".ckpt")]


@pytest.mark.parametrize("cast_to", ["fp8_e4m3fn", "fp8_e5m2", "fp8_e4m3fn_fast"])
def test_bf16_cast_to_fp8_keeps_norms_and_biases_bf16(run_graph, unet_dir, reference_sd, cast_to):
    name = _unique("fp-bf16-for-fp8") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED, dtype=torch.bfloat16)
    patcher = _run_loader(run_graph, name, cast_to)
    fp8 = DTYPES[cast_to]
    expected = {}
    for k, v in reference_sd.items():
        v = v.to(torch.bfloat16)
        keep = v.ndim < 2 or "norm" in k
        expected[k] = v if keep else v.to(fp8)
    loaded = _model_sd(patcher)
    _assert_same_tensors(loaded, expected)
    assert loaded["transformer_blocks.0.attn.to_q.weight"].dtype == fp8
    assert loaded["transformer_blocks.0.attn.to_q.bias"].dtype == torch.bfloat16
    assert loaded["transformer_blocks.0.attn.norm_q.weight"].dtype == torch.bfloat16
    assert loaded["norm_out.linear.weight"].dtype == torch.bfloat16
    assert patcher.model.diffusion_model.dtype == fp8
    # Only "_fast" asks ComfyUI for its fp8-matmul layers (used where the device has fp8 compute);
    # otherwise ComfyUI's manual-cast layers cast the fp8 weights up when they run.
    assert patcher.model.model_config.optimizations["fp8"] is cast_to.endswith("_fast")
    assert patcher.model.manual_cast_dtype in (torch.bfloat16, torch.float32)


def test_fp8_cast_saturates_instead_of_nan(run_graph, unet_dir, reference_sd):
    sd = {k: v.to(torch.bfloat16) for k, v in reference_sd.items()}
    sd["proj_out.weight"][0, :2] = torch.tensor([1000.0, -1e5])
    name = _unique("fp-outliers") + ".safetensors"
    save_file(sd, str(unet_dir / name))
    w = _model_sd(_run_loader(run_graph, name, "fp8_e4m3fn"))["proj_out.weight"].float()
    assert w[0, :2].tolist() == [448.0, -448.0]
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp16", "fp32"])
def test_weight_dtype_casts_every_tensor(run_graph, unet_dir, reference_sd, weight_dtype):
    name = _unique("fp-fp32-cast") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED, dtype=torch.float32)
    patcher = _run_loader(run_graph, name, weight_dtype)
    _assert_same_tensors(_model_sd(patcher), {k: v.to(DTYPES[weight_dtype]) for k, v in reference_sd.items()})


def test_scaled_fp8_weights_are_dequantized(run_graph, unet_dir, reference_sd):
    """ComfyUI's scaled fp8 format: weight x scale_weight is multiplied in (bf16 under "default")."""
    sd, scales = {}, {}
    for k, v in reference_sd.items():
        if v.ndim >= 2 and "norm" not in k:
            scale = torch.tensor(v.abs().max().item() / 200.0)
            sd[k] = (v / scale).to(torch.float8_e4m3fn)
            sd[k[: -len(".weight")] + ".scale_weight"] = scale
            sd[k[: -len(".weight")] + ".scale_input"] = torch.tensor(1.0)
            scales[k] = scale
        else:
            sd[k] = v.to(torch.bfloat16)
    sd["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    name = _unique("fp-scaled-fp8") + ".safetensors"
    save_file(sd, str(unet_dir / name))
    loaded = _model_sd(_run_loader(run_graph, name))
    expected = {k: ((sd[k].float() * scales[k]).to(torch.bfloat16) if k in scales else sd[k]) for k in reference_sd}
    _assert_same_tensors(loaded, expected)


# --------------------------------------------------------------------------------------------
# The MODEL in ComfyUI: model management and the forward through apply_model
# --------------------------------------------------------------------------------------------


def _forward_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    c = tiny.TINY_CONFIG
    return dict(
        x=r(1, 16, 1, 8, 8),
        sigma=torch.tensor([0.7]),
        context=r(1, 6, c["text_embed_dim"]),
        pooled=r(1, c["pooled_projection_dim"]),
        image_embeds=r(1, 5, c["image_proj_dim"]),
        guidance=torch.tensor([10.0]),
        latent_indices=torch.tensor([9]),
        clean_latents=r(1, 16, 2, 8, 8),
        clean_latent_indices=torch.tensor([0, 10]),
        clean_latents_2x=r(1, 16, 2, 8, 8),
        clean_latent_2x_indices=torch.tensor([11, 12]),
        clean_latents_4x=r(1, 16, 4, 8, 8),
        clean_latent_4x_indices=torch.tensor([13, 14, 15, 16]),
    )


def _reference_velocity(sd: dict[str, torch.Tensor], inp) -> torch.Tensor:
    ref = tiny.make_reference(SEED)
    ref.load_state_dict({k: v.float() for k, v in sd.items()})
    with torch.no_grad():
        return ref(
            hidden_states=inp["x"], timestep=inp["sigma"] * 1000, encoder_hidden_states=inp["context"],
            encoder_attention_mask=torch.ones(1, inp["context"].shape[1]), pooled_projections=inp["pooled"],
            image_embeds=inp["image_embeds"], indices_latents=inp["latent_indices"], guidance=inp["guidance"] * 1000,
            latents_clean=inp["clean_latents"], indices_latents_clean=inp["clean_latent_indices"],
            latents_history_2x=inp["clean_latents_2x"], indices_latents_history_2x=inp["clean_latent_2x_indices"],
            latents_history_4x=inp["clean_latents_4x"], indices_latents_history_4x=inp["clean_latent_4x_indices"],
            return_dict=False,
        )[0]


@pytest.mark.parametrize("file_dtype,weight_dtype", [
    ("fp32", "default"), ("bf16", "default"), ("bf16", "fp8_e4m3fn"),
    ("mixed", "default"),  # fp32 weights with bf16 biases and norms: manual cast at the weights' own dtype
])
def test_loaded_model_runs_through_model_management_and_matches_diffusers(
        run_graph, unet_dir, reference_sd, file_dtype, weight_dtype):
    import comfy.model_management

    name = _unique(f"fp-parity-{file_dtype}") + ".safetensors"
    if file_dtype == "mixed":
        save_file({k: v.to(torch.bfloat16) if v.ndim < 2 else v for k, v in reference_sd.items()}, str(unet_dir / name))
    else:
        tiny.save_single_file(unet_dir / name, SEED, dtype=DTYPES[file_dtype])
    patcher = _run_loader(run_graph, name, weight_dtype)
    comfy.model_management.load_models_gpu([patcher])
    assert any(m.model is patcher for m in comfy.model_management.current_loaded_models)

    inp = _forward_inputs()
    extra = {k: inp[k] for k in (
        "image_embeds", "guidance", "latent_indices", "clean_latents", "clean_latent_indices", "clean_latents_2x",
        "clean_latent_2x_indices", "clean_latents_4x", "clean_latent_4x_indices")}
    extra["guidance"] = extra["guidance"] * 1000
    with torch.no_grad():
        denoised = patcher.model.apply_model(inp["x"], inp["sigma"], c_crossattn=inp["context"],
                                             pooled_output=inp["pooled"], **extra)
    assert denoised.shape == inp["x"].shape
    velocity = (inp["x"] - denoised) / inp["sigma"]  # ComfyUI's FLOW convention: denoised = x - v * sigma

    # The reference runs in float32 on exactly the weights the loader kept (bf16 / fp8 rounded).
    expected = _reference_velocity(_model_sd(patcher), inp)
    err = (velocity - expected).norm() / expected.norm()
    assert err < 1e-5, f"relative error {err:.2e}"
    comfy.model_management.unload_all_models()

    # ComfyUI's low-VRAM mode: weights beyond the budget stay put and are cast layer by layer.
    patcher.load(torch.device("cpu"), lowvram_model_memory=patcher.model_size() // 3)
    assert patcher.model.model_lowvram
    with torch.no_grad():
        low = patcher.model.apply_model(inp["x"], inp["sigma"], c_crossattn=inp["context"],
                                        pooled_output=inp["pooled"], **extra)
    patcher.detach()
    assert torch.allclose(low, denoised, rtol=1e-6, atol=1e-6)


def test_memory_required_is_sensible(run_graph, unet_dir):
    name = _unique("fp-mem") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED, dtype=torch.bfloat16)
    model = _run_loader(run_graph, name).model
    one = model.memory_required((1, 16, 1, 80, 80))  # 640x640, one frame
    two = model.memory_required((2, 16, 1, 80, 80))
    assert two == pytest.approx(2 * one)
    assert model.memory_required((1, 16, 1, 160, 160)) > 3 * one
    # Scaled to the released width in bf16 (CPU computes in fp32): above the 0.55-0.65 GiB measured on
    # an H100 for 640x640 with full 1x/2x/4x context, without being absurd.
    compute_bytes = (model.manual_cast_dtype or model.get_dtype()).itemsize
    full = one / model.framepack_config.inner_dim * 3072 * 2 / compute_bytes
    assert 0.7 * 2**30 < full < 1.5 * 2**30


def test_is_framepack_model(run_graph, unet_dir):
    import comfy.model_patcher

    from framepack_oneframe.framepack_core.comfy_model import (
        NotFramePackModelError, is_framepack_model, require_framepack_model)

    name = _unique("fp-check") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED)
    patcher = _run_loader(run_graph, name)
    assert is_framepack_model(patcher)
    assert require_framepack_model(patcher, "FramePackOneFrameSampler") is patcher
    other = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    assert not is_framepack_model(other)
    assert not is_framepack_model("not a model")
    with pytest.raises(NotFramePackModelError, match=r"FramePackOneFrameSampler: input 'model' is not a FramePack model "
                                                       r"\(got a Linear model\); expected a FramePack MODEL from the "
                                                       r"FramePackModelLoader"):
        require_framepack_model(other, "FramePackOneFrameSampler")


# --------------------------------------------------------------------------------------------
# Bad input: clear errors, before any weight is read
# --------------------------------------------------------------------------------------------


def _small(shape=(4, 4), dtype=torch.bfloat16):
    return torch.zeros(shape, dtype=dtype)


def _hunyuan_diffusers_keys(reference_sd):
    return {k: v for k, v in reference_sd.items() if not k.startswith(("clean_x_embedder.", "image_projection."))}


OTHER_ARCHITECTURES = {
    "hunyuan_diffusers": (
        lambda sd: _hunyuan_diffusers_keys(sd),
        "this is a HunyuanVideo transformer in diffusers format without FramePack's clean_x_embedder and "
        "image_projection"),
    "hunyuan_comfy_native": (
        lambda sd: {"img_in.proj.weight": _small((8, 16, 1, 2, 2)), "txt_in.individual_token_refiner.blocks.0.norm1.weight": _small((8,)),
                    "double_blocks.0.img_attn.qkv.weight": _small((24, 8)), "single_blocks.0.linear1.weight": _small()},
        "this is a HunyuanVideo transformer in ComfyUI/original format"),
    "sd15": (
        lambda sd: {"model.diffusion_model.input_blocks.0.0.weight": _small((8, 4, 3, 3)),
                    "model.diffusion_model.out.2.weight": _small((4, 8, 3, 3)),
                    "first_stage_model.decoder.conv_in.weight": _small((8, 4, 3, 3)),
                    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": _small()},
        "this is a Stable Diffusion UNet"),
    "sdxl": (
        lambda sd: {"model.diffusion_model.input_blocks.0.0.weight": _small((8, 4, 3, 3)),
                    "model.diffusion_model.label_emb.0.0.weight": _small(),
                    "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": _small((4,))},
        "this is a Stable Diffusion XL UNet"),
    "flux": (
        lambda sd: {"img_in.weight": _small((8, 64)), "txt_in.weight": _small((8, 32)), "time_in.in_layer.weight": _small(),
                    "double_blocks.0.img_attn.qkv.weight": _small((24, 8)), "single_blocks.0.linear1.weight": _small()},
        "this is a Flux transformer"),
}


@pytest.mark.parametrize("arch", list(OTHER_ARCHITECTURES))
def test_other_architectures_are_named(run_graph, unet_dir, reference_sd, arch):
    make, message = OTHER_ARCHITECTURES[arch]
    name = _unique(f"other-{arch}") + ".safetensors"
    save_file(make(reference_sd), str(unet_dir / name))
    text = _graph_error(run_graph, name)
    assert f"FramePackModelLoader: {unet_dir / name}: {message}" in text, text
    assert "expected a FramePack transformer" in text


@pytest.mark.parametrize("arch, family", [("hunyuan_diffusers", "HunyuanVideo"), ("hunyuan_comfy_native", "HunyuanVideo"),
                                          ("sdxl", "SDXL"), ("flux", "Flux")])
def test_one_guesser_names_checkpoints_and_loras_alike(reference_sd, arch, family):
    """The loader and the LoRA nodes ask the same function: a checkpoint of a family and a LoRA made
    for it get the same family name (the loader's message and the LoRA error are two wordings of it)."""
    import tiny_lora

    from framepack_oneframe.framepack_core.architecture import guess_architecture

    keys = OTHER_ARCHITECTURES[arch][0](reference_sd)
    keys = {k.removeprefix("model.diffusion_model."): v for k, v in keys.items()}
    assert guess_architecture(keys).family == family
    lora = {"HunyuanVideo": lambda: tiny_lora.hunyuan_fused_lora({k: v.shape for k, v in reference_sd.items()},
                                                                 rank=2, seed=1)[0],
            "SDXL": tiny_lora.sdxl_lora, "Flux": tiny_lora.flux_lora}[family]()
    assert guess_architecture(lora, shapes={k: tuple(v.shape) for k, v in lora.items()}).family == family
    assert guess_architecture(reference_sd).is_framepack
    assert guess_architecture(tiny_lora.write_lora(tiny_lora.lora_factors(
        {k: v.shape for k, v in reference_sd.items()}, ["transformer_blocks.0.attn.to_q"], 2, 1, "lora"),
        "lora", 2.0)).is_framepack


def _truncate(path: Path, keep_fraction=0.6):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])


def test_truncated_file(run_graph, unet_dir):
    name = _unique("fp-truncated") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED)
    _truncate(unet_dir / name)
    text = _graph_error(run_graph, name)
    assert f"FramePackModelLoader: {unet_dir / name}: truncated: the header describes" in text, text
    assert "expected the complete file" in text


def test_file_shorter_than_its_header(run_graph, unet_dir):
    name = _unique("fp-header-cut") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED)
    _truncate(unet_dir / name, 0.002)  # inside the JSON header
    text = _graph_error(run_graph, name)
    assert f"{unet_dir / name}: truncated or not a safetensors file: its header claims" in text, text


def test_missing_shard_of_a_diffusers_folder(run_graph, unet_dir):
    name = _unique("FramePack-missing-shard")
    folder = tiny.save_diffusers_folder(unet_dir / name, SEED, shards=2)
    shard = folder / "diffusion_pytorch_model-00002-of-00002.safetensors"
    shard.unlink()
    text = _graph_error(run_graph, name)
    assert f"FramePackModelLoader: {shard}: missing: diffusion_pytorch_model.safetensors.index.json lists" in text, text


def test_missing_file(run_graph, loader_module):
    with pytest.raises(loader_module.FramePackLoadError, match=r"^FramePackModelLoader: nope\.safetensors: not found"):
        loader_module.load_framepack("nope.safetensors")
    # A file missing from the list: ComfyUI 0.3.75 lets the node say so; a current ComfyUI (0.28) checks
    # the combo value first and answers "Value not in list" for the input. Either names the file.
    with pytest.raises(GraphError) as info:
        _run_loader(run_graph, "nope.safetensors")
    text = str(info.value)
    if "value_not_in_list" in text:
        (error,) = info.value.details["node_errors"]["1"]["errors"]
        assert error["extra_info"]["input_name"] == "model_name", error
        assert error["extra_info"]["received_value"] == "nope.safetensors", error
    else:
        assert "FramePackModelLoader: nope.safetensors: not found (looked in " in text, text


@pytest.mark.parametrize("dtype,label", [(torch.int8, "I8"), (torch.float64, "F64")])
def test_unsupported_tensor_dtypes(run_graph, unet_dir, reference_sd, dtype, label):
    sd = {k: v.to(torch.bfloat16) for k, v in reference_sd.items()}
    sd["transformer_blocks.0.attn.to_q.weight"] = reference_sd["transformer_blocks.0.attn.to_q.weight"].to(dtype)
    name = _unique(f"fp-{label}") + ".safetensors"
    save_file(sd, str(unet_dir / name))
    text = _graph_error(run_graph, name)
    assert (f"FramePackModelLoader: {unet_dir / name}: unsupported tensor dtype {label} "
            f"(e.g. 'transformer_blocks.0.attn.to_q.weight'); expected float32, float16, bfloat16") in text, text


def test_unsupported_weight_dtype(run_graph, unet_dir, loader_module):
    name = _unique("fp-wd") + ".safetensors"
    tiny.save_single_file(unet_dir / name, SEED)
    with pytest.raises(loader_module.FramePackLoadError,
                       match=r"^FramePackModelLoader: weight_dtype 'int8': not a supported weight dtype; expected one "
                             r"of default, bf16, fp16, fp32, fp8_e4m3fn, fp8_e5m2, fp8_e4m3fn_fast$"):
        loader_module.load_framepack(name, "int8")
    text = _graph_error(run_graph, name, "int8")
    assert "weight_dtype" in text and "int8" in text


def test_incomplete_framepack_checkpoint(run_graph, unet_dir, reference_sd):
    sd = {k: v for k, v in reference_sd.items() if not k.startswith("single_transformer_blocks.0.proj_out")}
    name = _unique("fp-incomplete") + ".safetensors"
    save_file(sd, str(unet_dir / name))
    text = _graph_error(run_graph, name)
    assert f"{unet_dir / name}: incomplete or inconsistent FramePack checkpoint: 2 tensors missing" in text, text


def test_bad_inputs_fail_before_reading_any_weight(unet_dir, reference_sd, loader_module, monkeypatch):
    """No weight is read (safe_open never called) and no model reaches model management."""
    import comfy.model_management

    bad = {}
    for arch in ("hunyuan_diffusers", "flux", "sd15"):
        bad[arch] = unet_dir / (_unique(f"early-{arch}") + ".safetensors")
        save_file(OTHER_ARCHITECTURES[arch][0](reference_sd), str(bad[arch]))
    bad["truncated"] = tiny.save_single_file(unet_dir / (_unique("early-trunc") + ".safetensors"), SEED)
    _truncate(bad["truncated"])
    sd = dict(reference_sd, extra=torch.zeros(2, dtype=torch.float64))
    bad["f64"] = unet_dir / (_unique("early-f64") + ".safetensors")
    save_file(sd, str(bad["f64"]))

    opened = []
    monkeypatch.setattr(loader_module, "safe_open", lambda *a, **k: opened.append(a) or pytest.fail("weights read"))
    before = list(comfy.model_management.current_loaded_models)
    for label, path in bad.items():
        with pytest.raises(loader_module.FramePackLoadError, match=f"^FramePackModelLoader: {path}: "):
            loader_module.load_framepack(str(path))
    assert opened == []
    assert comfy.model_management.current_loaded_models == before


# --------------------------------------------------------------------------------------------
# Memory: one copy of the weights, never two
# --------------------------------------------------------------------------------------------

_RSS_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    base, comfy_dir, path, weight_dtype = sys.argv[1:5]
    sys.argv = [sys.argv[0], "--cpu", "--base-directory", base, "--disable-api-nodes"]
    sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing()
    import utils.extra_config, folder_paths
    sys.path.append(base + "/pkgs")
    from framepack_oneframe.framepack_core.loader import load_framepack

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
    before = status("VmRSS")
    patcher = load_framepack(path, weight_dtype)
    # Touch every weight, so that the pages the model really holds are counted.
    total = sum(float(p.float().sum()) for p in patcher.model.diffusion_model.parameters())
    print(json.dumps({"before": before, "peak": status("VmHWM"), "after": status("VmRSS")}))
""")


def _big_checkpoint(path: Path, dtype: torch.dtype, mbytes: int) -> Path:
    """The tiny architecture made wide (hidden 512) with as many single blocks as ~`mbytes` MB need; random."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    config = dict(tiny.TINY_CONFIG, num_attention_heads=8, attention_head_dim=64, rope_axes_dim=(8, 28, 28))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in HunyuanVideoFramepackTransformer3DModel(**config).state_dict().items()}
    block = [s for k, s in shapes.items() if k.startswith("single_transformer_blocks.0.")]
    block_bytes = sum(s.numel() for s in block) * torch.tensor([], dtype=dtype).element_size()
    for i in range(1, max(1, round(mbytes * 1e6 / block_bytes))):
        shapes.update({k.replace("single_transformer_blocks.0.", f"single_transformer_blocks.{i}."): s
                       for k, s in shapes.items() if k.startswith("single_transformer_blocks.0.")})
    g = torch.Generator().manual_seed(0)
    save_file({k: (torch.randn(s, generator=g) * 0.02).to(dtype) for k, s in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("file_dtype,weight_dtype,budget", [
    ("bf16", "default", 1.25),  # zero copy: the model is the file's memory map
    ("fp32", "bf16", 1.75),     # cast: the mapped fp32 pages (1x) + the bf16 copies (0.5x)
])
def test_peak_host_memory_is_one_copy_of_the_weights(tmp_path, file_dtype, weight_dtype, budget):
    path = _big_checkpoint(tmp_path / "big.safetensors", DTYPES[file_dtype], 180)
    size = path.stat().st_size
    assert size > 150e6
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(BASE_DIR), str(COMFY_DIR), str(path), weight_dtype],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=""))
    assert out.returncode == 0, out.stderr[-4000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    growth = (m["peak"] - m["before"]) / size
    print(f"peak RSS growth {growth:.3f}x of {size / 1e6:.0f} MB ({file_dtype} file, weight_dtype {weight_dtype})")
    assert growth < budget, f"peak RSS grew by {growth:.2f}x the file size ({m})"
    # And the weights are really there (not just lazily absent): at least the cast/mapped size.
    assert (m["after"] - m["before"]) / size > (0.45 if weight_dtype == "bf16" else 0.9), m
