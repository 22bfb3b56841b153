"""LoRA loading for FramePack, through ComfyUI's real executor and ModelPatcher.

Every format (musubi lora_unet_ with/without alpha, LoHa, LoKr, diffusers/PEFT lora_A/lora_B with
each prefix, HunyuanVideo fused names) is written as a real .safetensors file for the tiny model,
loaded by the FramePackLoraLoader / FramePackLoraStack nodes in a graph with FramePackModelLoader,
and the weights ComfyUI actually loads (`load_models_gpu`) are compared with W + s·ΔW, ΔW computed
here from each format's formula in float64.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

import tiny_framepack
import tiny_lora
from conftest import GraphError

import comfy.model_management
import comfy.model_patcher

from framepack_oneframe.framepack_core import lora as fp_lora
from framepack_oneframe.framepack_core import lora_metadata

P = "diffusion_model."
MODEL_FP32 = "fp_lora_tiny_fp32.safetensors"
MODEL_BF16 = "fp_lora_tiny_bf16.safetensors"
STACK_SLOTS = 5


# --------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes(models_dir):
    sd = tiny_framepack.reference_state_dict(seed=0)
    tiny_framepack.save_single_file(models_dir / "diffusion_models" / MODEL_FP32, seed=0)
    tiny_framepack.save_single_file(models_dir / "diffusion_models" / MODEL_BF16, seed=0, dtype=torch.bfloat16)
    return {k: v.shape for k, v in sd.items()}


@pytest.fixture(scope="module")
def lora_dir(models_dir):
    return models_dir / "loras"


@pytest.fixture(autouse=True)
def _unload_after():
    yield
    comfy.model_management.unload_all_models()


def graph(model_name=MODEL_FP32, weight_dtype="default", loras=(), stack=None):
    """Loader → chained FramePackLoraLoader per (name, strength) [→ FramePackLoraStack]. Returns
    (prompt, id of the last MODEL-producing node)."""
    prompt = {"1": {"class_type": "FramePackModelLoader", "inputs": {"model_name": model_name,
                                                                     "weight_dtype": weight_dtype}}}
    last = "1"
    for i, (name, strength) in enumerate(loras):
        nid = str(10 + i)
        prompt[nid] = {"class_type": "FramePackLoraLoader",
                       "inputs": {"model": [last, 0], "lora_name": name, "strength": strength}}
        last = nid
    if stack is not None:
        inputs = {"model": [last, 0]}
        slots = list(stack) + [("None", 1.0, True)] * (STACK_SLOTS - len(stack))
        for i, (name, strength, enabled) in enumerate(slots, start=1):
            inputs.update({f"lora_name_{i}": name, f"strength_{i}": strength, f"enabled_{i}": enabled})
        prompt["30"] = {"class_type": "FramePackLoraStack", "inputs": inputs}
        last = "30"
    prompt["99"] = {"class_type": "FPTestCapture", "inputs": {"value": [last, 0]}}
    prompt["98"] = {"class_type": "FPTestCapture", "inputs": {"value": [last, 2] if last != "1" else [last, 0]}}
    return prompt, last


def run(run_graph, **kw):
    """Run the graph; return (base patcher, last node outputs)."""
    prompt, last = graph(**kw)
    out = run_graph(prompt, outputs_of=["1", last])
    return out["1"][0], out[last]


def loaded_weights(patcher) -> dict[str, torch.Tensor]:
    """The diffusion model's weights as ComfyUI loads them for sampling (patches applied)."""
    comfy.model_management.load_models_gpu([patcher])
    sd = {k[len(P):]: v.detach().clone() for k, v in patcher.model.state_dict().items() if k.startswith(P)}
    comfy.model_management.unload_all_models()
    return sd


def assert_patched(base, patched, deltas, strength, rel=1e-5):
    """patched == base + strength·ΔW on the weights in `deltas`, unchanged elsewhere."""
    assert deltas, "the test LoRA changes nothing"
    for key, w in base.items():
        if key in deltas:
            want = w.double() + strength * deltas[key]
            err = (patched[key].double() - want).abs().max().item()
            scale = want.abs().max().item()
            assert err <= rel * scale + 1e-7, f"{key}: max error {err:.3g} (scale {scale:.3g})"
            assert not torch.equal(patched[key], w), f"{key} was not patched"
        else:
            assert torch.equal(patched[key], w), f"{key} changed but the LoRA does not touch it"


def make_lora(lora_dir, shapes, name, kind="lora", naming="musubi", alpha=2.0, rank=4, seed=1, metadata=None,
              modules=None, dtype=torch.bfloat16):
    """Write a LoRA file; return {diffusers weight key: ΔW at strength 1} from the file's exact numbers."""
    modules = modules or tiny_lora.target_modules(shapes)
    factors = tiny_lora.lora_factors(shapes, modules, rank, seed, kind)
    sd = tiny_lora.write_lora(factors, kind, alpha, naming=naming, dtype=dtype)
    tiny_lora.save(lora_dir / name, sd, metadata)
    stored = {m: {k: v.to(dtype).float() for k, v in f.items()} for m, f in factors.items()}
    return {m + ".weight": tiny_lora.delta(f, kind, alpha, rank) for m, f in stored.items()}


# --------------------------------------------------------------------------------------------
# formats
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [2.0, None], ids=["alpha_half_rank", "no_alpha"])
def test_musubi_lora_equals_w_plus_scaled_up_down(run_graph, shapes, lora_dir, alpha):
    name = f"musubi_{alpha}.safetensors"
    deltas = make_lora(lora_dir, shapes, name, alpha=alpha)
    base, (patched, settings, info) = run(run_graph, loras=[(name, 0.7)])
    base_w = loaded_weights(base)
    assert_patched(base_w, loaded_weights(patched), deltas, 0.7)
    n = len(tiny_lora.target_modules(shapes))
    assert f"patched {n} weights from {n} LoRA modules ({n} LoRA)" in info
    assert "musubi/kohya lora_unet_" in info and "WARNING" not in info
    assert settings == {}


@pytest.mark.parametrize("naming", ["transformer", "diffusion_model", "bare"])
def test_diffusers_peft_lora_with_each_prefix(run_graph, shapes, lora_dir, naming):
    name = f"peft_{naming}.safetensors"
    deltas = make_lora(lora_dir, shapes, name, naming=naming, alpha=None, seed=2)
    base, (patched, _, info) = run(run_graph, loras=[(name, 1.0)])
    assert_patched(loaded_weights(base), loaded_weights(patched), deltas, 1.0)
    assert "WARNING" not in info


def test_musubi_convert_lora_diffusers_output(run_graph, shapes, lora_dir):
    """musubi-tuner's convert_lora.py --target other: 'diffusion_model.' + the lora_unet_ name with every
    '_' turned into '.' (e.g. diffusion_model.single.transformer.blocks.0.proj.mlp), alpha folded into
    both factors as sqrt(alpha/rank), lora_A/lora_B, no alpha key."""
    modules = tiny_lora.target_modules(shapes)
    factors = tiny_lora.lora_factors(shapes, modules, 4, 18, "lora")
    alpha, rank = 2.0, 4
    root = (alpha / rank) ** 0.5
    sd = {}
    for m, f in factors.items():
        base = "diffusion_model." + m.replace("_", ".")
        sd[f"{base}.lora_A.weight"] = f["down"] * root
        sd[f"{base}.lora_B.weight"] = f["up"] * root
    tiny_lora.save(lora_dir / "musubi_converted.safetensors", sd)
    deltas = {m + ".weight": tiny_lora.delta(f, "lora", alpha, rank) for m, f in factors.items()}
    base, (patched, _, info) = run(run_graph, loras=[("musubi_converted.safetensors", 1.0)])
    assert_patched(loaded_weights(base), loaded_weights(patched), deltas, 1.0)
    assert f"patched {len(modules)} weights" in info and "WARNING" not in info


@pytest.mark.parametrize("kind", ["loha", "lokr"])
@pytest.mark.parametrize("naming", ["musubi", "diffusion_model"])
def test_loha_and_lokr_follow_their_formulas(run_graph, shapes, lora_dir, kind, naming):
    name = f"{kind}_{naming}.safetensors"
    deltas = make_lora(lora_dir, shapes, name, kind=kind, naming=naming, alpha=3.0, rank=2, seed=3)
    base, (patched, _, info) = run(run_graph, loras=[(name, -1.5)])
    assert_patched(loaded_weights(base), loaded_weights(patched), deltas, -1.5)
    assert {"loha": "LoHa", "lokr": "LoKr"}[kind] in info


@pytest.mark.parametrize("naming", ["musubi", "diffusion_pipe"])
def test_hunyuan_fused_names_land_on_the_right_slices(run_graph, shapes, lora_dir, naming):
    sd, deltas = tiny_lora.hunyuan_fused_lora(shapes, rank=4, seed=4, naming=naming)
    name = f"hunyuan_fused_{naming}.safetensors"
    tiny_lora.save(lora_dir / name, sd)
    base, (patched, _, info) = run(run_graph, loras=[(name, 0.5)])
    assert_patched(loaded_weights(base), loaded_weights(patched), deltas, 0.5)
    assert "3 fused HunyuanVideo layers split" in info  # img_attn_qkv, txt_attn_qkv, linear1
    assert "WARNING" not in info


def test_fused_split_matches_the_same_lora_in_split_form(shapes):
    """Core check without the engine: q/k/v rows of a fused LoRA = a split LoRA with up cut in three."""
    sd, deltas = tiny_lora.hunyuan_fused_lora(shapes, rank=3, seed=5)
    model_shapes = {P + k: v for k, v in shapes.items()}
    patches, report = fp_lora.lora_to_patches(sd, model_shapes, name="fused")
    assert report.fused == 3 and not report.unmatched
    assert set(patches) == {P + k for k in deltas}
    for key, want in deltas.items():
        w = torch.zeros(shapes[key])
        got = comfy.lora.calculate_weight([(1.0, patches[P + key], 1.0, None, None)], w, key)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------
# stacking, strength, unpatching, dtypes
# --------------------------------------------------------------------------------------------

def test_two_loras_add_chained_and_stacked(run_graph, shapes, lora_dir):
    d1 = make_lora(lora_dir, shapes, "stack_a.safetensors", seed=6)
    d2 = make_lora(lora_dir, shapes, "stack_b.safetensors", kind="loha", rank=2, alpha=1.0, seed=7,
                   modules=[m for m in tiny_lora.target_modules(shapes) if "attn" in m])
    both = {k: 0.8 * d1.get(k, 0) + (-0.3) * d2.get(k, 0) for k in set(d1) | set(d2)}
    base, (chained, _, _) = run(run_graph, loras=[("stack_a.safetensors", 0.8), ("stack_b.safetensors", -0.3)])
    base_w = loaded_weights(base)
    assert_patched(base_w, loaded_weights(chained), both, 1.0)
    _, (stacked, _, info) = run(run_graph, stack=[("stack_a.safetensors", 0.8, True), ("None", 1.0, True),
                                                  ("stack_b.safetensors", -0.3, True),
                                                  ("stack_a.safetensors", 5.0, False)])
    assert_patched(base_w, loaded_weights(stacked), both, 1.0)
    assert info.count("patched") == 2


def test_strength_zero_and_disabled_equal_the_base(run_graph, shapes, lora_dir):
    make_lora(lora_dir, shapes, "zero.safetensors", seed=8)
    base, (zero, _, _) = run(run_graph, loras=[("zero.safetensors", 0.0)])
    base_w = loaded_weights(base)
    for k, v in loaded_weights(zero).items():
        assert torch.equal(v, base_w[k]), k
    _, (off, _, info) = run(run_graph, stack=[("zero.safetensors", 1.0, False)])
    for k, v in loaded_weights(off).items():
        assert torch.equal(v, base_w[k]), k
    assert "no LoRA enabled" in info


def test_unpatching_restores_bf16_base_bit_exactly(run_graph, shapes, lora_dir):
    deltas = make_lora(lora_dir, shapes, "restore.safetensors", seed=9)
    base, (patched, _, _) = run(run_graph, model_name=MODEL_BF16, loras=[("restore.safetensors", 2.0)])
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    comfy.model_management.load_models_gpu([patched])
    now = patched.model.state_dict()
    assert any(not torch.equal(now[P + k], before[P + k]) for k in deltas)
    assert all(v.dtype == before[k].dtype for k, v in now.items())
    patched.unpatch_model(device_to=patched.offload_device)
    after = patched.model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} not restored"
    # the bf16 patched weights are W + s·ΔW rounded to bf16
    assert_patched(loaded_weights(base), loaded_weights(patched), deltas, 2.0, rel=2 ** -7)


@pytest.mark.parametrize("weight_dtype", ["fp8_e4m3fn", "fp16"])
def test_low_precision_base_gets_the_patch(run_graph, shapes, lora_dir, weight_dtype):
    deltas = make_lora(lora_dir, shapes, "lowp.safetensors", alpha=4.0, seed=10)
    base, (patched, _, _) = run(run_graph, model_name=MODEL_BF16, weight_dtype=weight_dtype,
                                loras=[("lowp.safetensors", 1.0)])
    base_w, patched_w = loaded_weights(base), loaded_weights(patched)
    dtype = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp16": torch.float16}[weight_dtype]
    rel = {"fp8_e4m3fn": 2 ** -3, "fp16": 2 ** -10}[weight_dtype]
    for key, d in deltas.items():
        assert patched_w[key].dtype == dtype
        want = base_w[key].double() + d
        err = (patched_w[key].double() - want).abs()
        # within one rounding step of the target (ComfyUI patches in float32, then rounds; fp8 stochastically)
        assert (err <= rel * want.abs() + 2 ** -9).all(), f"{key}: max error {err.max():.3g}"
        assert (patched_w[key].double() != base_w[key].double()).float().mean() > 0.5
    # the patched model still computes
    out = _apply_model(patched)
    assert torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------
# names, reports and errors
# --------------------------------------------------------------------------------------------

def test_awkward_file_names_and_same_name_in_two_folders(run_graph, shapes, lora_dir):
    names = ["my lora v1.2 (final).safetensors", "odd\\back slash.name.safetensors",
             "set a/same.safetensors", "set b/same.safetensors"]
    deltas = [make_lora(lora_dir, shapes, n, seed=20 + i) for i, n in enumerate(names)]
    results = []
    base = None
    for n, d in zip(names, deltas):
        base, (patched, _, info) = run(run_graph, loras=[(n, 1.0)])
        results.append((loaded_weights(patched), d, info))
    base_w = loaded_weights(base)
    for (w, d, info), n in zip(results, names):
        assert_patched(base_w, w, d, 1.0)
        assert n in info
    key = "transformer_blocks.0.attn.to_q.weight"
    assert not torch.equal(results[2][0][key], results[3][0][key])  # the two same.safetensors differ


def test_unmatched_keys_are_reported(run_graph, shapes, lora_dir):
    modules = tiny_lora.target_modules(shapes)
    factors = tiny_lora.lora_factors(shapes, modules, 4, 11, "lora")
    sd = tiny_lora.write_lora(factors, "lora", 4.0)
    sd["lora_unet_transformer_blocks_7_attn_to_q.lora_down.weight"] = torch.zeros(4, 32)  # block not in model
    sd["lora_unet_transformer_blocks_7_attn_to_q.lora_up.weight"] = torch.zeros(32, 4)
    sd["lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"] = torch.zeros(8, 4)
    sd["some_unknown_thing"] = torch.zeros(3)
    tiny_lora.save(lora_dir / "partial.safetensors", sd)
    _, (_, _, info) = run(run_graph, loras=[("partial.safetensors", 1.0)])
    assert f"patched {len(modules)} weights" in info
    assert "WARNING: 4 of" in info and "lora_unet_transformer_blocks_7_attn_to_q.lora_down.weight" in info
    assert "some_unknown_thing" in info


@pytest.mark.parametrize("maker, family", [
    (tiny_lora.sdxl_lora, "SDXL"),
    (tiny_lora.sd15_lora, "SD 1.x"),
    (tiny_lora.wan_lora, "Wan"),
    (tiny_lora.flux_lora, "Flux"),
])
def test_lora_for_another_model_gives_a_clear_error(run_graph, shapes, lora_dir, maker, family):
    name = f"other_{family}.safetensors"
    tiny_lora.save(lora_dir / name, maker())
    with pytest.raises(GraphError) as e:
        run(run_graph, loras=[(name, 1.0)])
    msg = str(e.value)
    assert "FramePackLoraLoader" in msg and "lora_name" in msg and name in msg
    assert f"this looks like a LoRA for {family}" in msg


def test_header_naming_another_model_is_refused_even_when_names_match(run_graph, shapes, lora_dir):
    # a diffusers Flux LoRA uses FramePack's own layer names; only the header tells them apart
    make_lora(lora_dir, shapes, "flux_named_like_fp.safetensors", naming="transformer", alpha=None,
              metadata={"modelspec.architecture": "flux-1-dev/lora", "ss_base_model_version": "flux1"})
    with pytest.raises(GraphError, match=r"this looks like a LoRA for Flux \(its header says modelspec.architecture"):
        run(run_graph, loras=[("flux_named_like_fp.safetensors", 1.0)])


def test_hunyuan_video_header_loads_with_a_note(run_graph, shapes, lora_dir):
    meta = {"modelspec.architecture": "hunyuan-video/lora", "ss_base_model_version": "hunyuan_video"}
    deltas = make_lora(lora_dir, shapes, "hv.safetensors", metadata=meta, seed=12)
    base, (patched, _, info) = run(run_graph, loras=[("hv.safetensors", 1.0)])
    assert_patched(loaded_weights(base), loaded_weights(patched), deltas, 1.0)
    assert "looks like a LoRA for HunyuanVideo" in info


def test_non_framepack_model_is_refused():
    from framepack_oneframe.nodes.lora import FramePackLoraLoader

    other = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(ValueError, match="FramePackLoraLoader: input 'model' is not a FramePack model .*expected a FramePack MODEL"):
        FramePackLoraLoader.execute(other, "whatever.safetensors", 1.0)


# --------------------------------------------------------------------------------------------
# the header ("instruction manual")
# --------------------------------------------------------------------------------------------

def test_musubi_header_gives_resolution_and_says_one_frame_settings_are_absent(run_graph, shapes, lora_dir):
    factors = tiny_lora.lora_factors(shapes, tiny_lora.target_modules(shapes), 4, 13, "lora")
    sd = tiny_lora.write_lora(factors, "lora", 2.0)
    tiny_lora.save(lora_dir / "musubi_1f.safetensors", sd, tiny_lora.musubi_header(sd, resolution=(640, 640)))
    _, (_, settings, info) = run(run_graph, loras=[("musubi_1f.safetensors", 1.0)])
    assert settings == {"resolution": [640, 640]}
    assert "architecture framepack/lora" in info and "module networks.lora_framepack" in info
    assert "control images yes" in info
    assert "one-frame settings (target index, clean indices, no_post) are not in the header" in info


@pytest.mark.parametrize("where, text, expect", [
    ("ss_training_comment", "kisekaeichi: --one_frame_inference target_index=1,control_index=0;10,no_post,no_2x,no_4x",
     {"target_index": 1, "clean_indices": [0, 10], "no_post": True, "no_2x": True, "no_4x": True}),
    ("modelspec.description", "1f-mc. Use target_index=9, control_index=0;1, no_2x, no_4x",
     {"target_index": 9, "clean_indices": [0, 1], "no_post": False, "no_2x": True, "no_4x": True}),
    ("ss_training_comment", "dataset: fp_1f_clean_indices = [0, 10]\nfp_1f_target_index = 4\nfp_1f_no_post = true\n"
                            "fp_latent_window_size = 9",
     {"target_index": 4, "clean_indices": [0, 10], "no_post": True, "latent_window_size": 9}),
])
def test_settings_written_by_hand_in_the_header_are_read(where, text, expect):
    meta = tiny_lora.musubi_header({"x": torch.zeros(1)}, resolution=(960, 544))
    meta[where] = text
    settings, header = lora_metadata.read_settings(meta)
    assert settings == dict(expect, resolution=[960, 544])
    assert f"from the text of {where}" in header


def test_structured_fp_1f_keys_and_no_metadata_file():
    meta = tiny_lora.musubi_header({"x": torch.zeros(1)})
    ds = json.loads(meta["ss_datasets"])
    ds[0].update(fp_1f_clean_indices=[0, 1], fp_1f_target_index=9, fp_1f_no_post=False, fp_latent_window_size=9)
    meta["ss_datasets"] = json.dumps(ds)
    settings, _ = lora_metadata.read_settings(meta)
    assert settings == {"target_index": 9, "clean_indices": [0, 1], "no_post": False, "latent_window_size": 9,
                        "resolution": [960, 544]}
    assert lora_metadata.read_settings({}) == ({}, "header: no metadata (the LoRA records no training settings)")
    minimal = tiny_lora.musubi_header({"x": torch.zeros(1)}, no_metadata=True)
    settings, header = lora_metadata.read_settings(minimal)
    assert settings == {} and "not in the header" in header


# What a LoRA trained by this pack writes (issue 11): the layout at the header's top level, as
# safetensors metadata strings, and again inside each ss_datasets entry (as JSON values).
PACK_LAYOUT_KEYS = {"fp_1f_target_index": 4, "fp_1f_clean_indices": [0, 10], "fp_1f_no_post": True,
                    "fp_latent_window_size": 9, "fp_1f_no_2x": True, "fp_1f_no_4x": True}
PACK_LAYOUT = {"target_index": 4, "clean_indices": [0, 10], "no_post": True, "latent_window_size": 9,
               "no_2x": True, "no_4x": True}


def _lora_with_header(lora_dir, shapes, name, top=None, dataset_keys=None, nest=None, seed=40):
    """A real LoRA file with a musubi header plus `top` keys (str()'d, as safetensors stores them) and
    `dataset_keys` in ss_datasets[0] itself (nest None) or in its first `subsets` / `datasets` dict."""
    factors = tiny_lora.lora_factors(shapes, tiny_lora.target_modules(shapes)[:2], 2, seed, "lora")
    sd = tiny_lora.write_lora(factors, "lora", 2.0)
    meta = tiny_lora.musubi_header(sd, resolution=(640, 640))
    ds = json.loads(meta["ss_datasets"])
    if dataset_keys is not None:
        if nest is None:
            ds[0].update(dataset_keys)
        else:
            ds[0][nest] = [{"image_dir": "other", "num_repeats": 1}, dict(dataset_keys, image_dir="train_images")]
    meta["ss_datasets"] = json.dumps(ds)
    meta.update({k: str(v) for k, v in (top or {}).items()})
    tiny_lora.save(lora_dir / name, sd, meta)
    return lora_dir / name


@pytest.mark.parametrize("where", ["top_level", "dataset", "subsets", "datasets", "both"])
def test_pack_layout_keys_are_read_from_a_real_file(shapes, lora_dir, where):
    top = PACK_LAYOUT_KEYS if where in ("top_level", "both") else None
    in_ds = PACK_LAYOUT_KEYS if where != "top_level" else None
    nest = where if where in ("subsets", "datasets") else None
    path = _lora_with_header(lora_dir, shapes, f"pack_layout_{where}.safetensors", top, in_ds, nest)
    meta = lora_metadata.read_header(path)
    assert meta["ss_base_model_version"] == "framepack"  # the file's own header, read without its tensors
    settings, header = lora_metadata.read_settings(meta)
    assert settings == dict(PACK_LAYOUT, resolution=[640, 640])
    expected_place = {"top_level": "the header's top level", "dataset": "ss_datasets[0]",
                      "subsets": "ss_datasets[0].subsets[1]", "datasets": "ss_datasets[0].datasets[1]",
                      "both": "the header's top level"}[where]
    assert f"at {expected_place})" in header, header
    assert "not in the header" not in header and "WARNING" not in header


def test_pack_layout_from_the_loader_node_resolves_the_trained_layout(run_graph, shapes, lora_dir):
    """Through the engine: FramePackLoraLoader's settings output of a file whose layout sits only in an
    ss_datasets subset, then preset 'from LoRA' gives exactly that layout with nothing typed."""
    from framepack_oneframe.framepack_core.layout import resolve_layout

    _lora_with_header(lora_dir, shapes, "pack_layout_graph.safetensors", None, PACK_LAYOUT_KEYS, "subsets")
    _, (_, settings, info) = run(run_graph, loras=[("pack_layout_graph.safetensors", 1.0)])
    assert settings == dict(PACK_LAYOUT, resolution=[640, 640])
    assert "at ss_datasets[0].subsets[1]" in info
    lay = resolve_layout(2, preset="from LoRA", lora_settings=settings)
    assert (lay.target_index, lay.clean_indices, lay.clean_2x.present, lay.clean_4x.present) == (4, [0, 10], False, False)
    assert [s.kind for s in lay.clean] == ["control", "control"]  # no post
    assert not any("LoRA settings have no" in w for w in lay.warnings)


def test_header_places_that_disagree_first_wins_and_is_said(shapes, lora_dir):
    path = _lora_with_header(lora_dir, shapes, "pack_layout_conflict.safetensors",
                             {"fp_1f_target_index": 4, "fp_1f_no_post": "yes"},
                             {"fp_1f_target_index": 1, "fp_1f_clean_indices": "0;10", "fp_latent_window_size": "nine"})
    settings, header = lora_metadata.read_settings(lora_metadata.read_header(path))
    # top level wins for target_index; the dataset adds clean_indices; the unreadable window size is skipped
    assert settings == {"target_index": 4, "no_post": True, "clean_indices": [0, 10], "resolution": [640, 640]}
    assert "WARNING: ss_datasets[0] says target_index=1 but the header's top level says 4; using 4" in header


def test_stack_merges_settings_first_wins_and_warns(run_graph, shapes, lora_dir):
    for name, text in (("set_k.safetensors", "target_index=1,control_index=0;10,no_post,no_2x,no_4x"),
                       ("set_m.safetensors", "target_index=9,control_index=0;1,no_2x,no_4x")):
        factors = tiny_lora.lora_factors(shapes, tiny_lora.target_modules(shapes)[:2], 2, 14, "lora")
        sd = tiny_lora.write_lora(factors, "lora", 2.0)
        tiny_lora.save(lora_dir / name, sd, tiny_lora.musubi_header(sd, training_comment=text))
    make_lora(lora_dir, shapes, "set_none.safetensors", seed=15)
    factors = tiny_lora.lora_factors(shapes, tiny_lora.target_modules(shapes)[:2], 2, 16, "lora")
    sd = tiny_lora.write_lora(factors, "lora", 2.0)  # a style LoRA: musubi header, resolution only
    tiny_lora.save(lora_dir / "set_style.safetensors", sd, tiny_lora.musubi_header(sd, resolution=(512, 768)))
    _, (_, settings, info) = run(run_graph, stack=[("set_none.safetensors", 1.0, True),
                                                   ("set_style.safetensors", 1.0, True),
                                                   ("set_k.safetensors", 1.0, True),
                                                   ("set_m.safetensors", 1.0, True)])
    assert settings == {"target_index": 1, "clean_indices": [0, 10], "no_post": True, "no_2x": True, "no_4x": True,
                        "resolution": [960, 544]}  # kisekaeichi's recipe and its own resolution
    assert "WARNING settings conflict: set_m.safetensors says target_index=9" in info
    assert "set_style.safetensors says resolution=[512, 768]" in info


# --------------------------------------------------------------------------------------------
# the patched model runs
# --------------------------------------------------------------------------------------------

def _apply_model(patcher, load=True):
    """One forward of the patched model through BaseModel.apply_model (ComfyUI's casting and wrappers)."""
    if load:
        comfy.model_management.load_models_gpu([patcher])
    cfg = tiny_framepack.TINY_CONFIG
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 1, 8, 8, generator=g)
    kwargs = dict(
        c_crossattn=torch.randn(1, 5, cfg["text_embed_dim"], generator=g),
        pooled_output=torch.randn(1, cfg["pooled_projection_dim"], generator=g),
        guidance=torch.tensor([10000.0]),
        image_embeds=torch.randn(1, 3, cfg["image_proj_dim"], generator=g),
        latent_indices=torch.tensor([9]),
        clean_latents=torch.randn(1, 16, 2, 8, 8, generator=g),
        clean_latent_indices=torch.tensor([0, 10]),
    )
    with torch.no_grad():
        return patcher.model.apply_model(x, torch.tensor([0.5]), **kwargs).float()


def test_patched_model_output_changes_and_strength_zero_matches_base(run_graph, shapes, lora_dir):
    make_lora(lora_dir, shapes, "run.safetensors", seed=16)
    base, (patched, _, _) = run(run_graph, loras=[("run.safetensors", 1.0)])
    _, (zero, _, _) = run(run_graph, loras=[("run.safetensors", 0.0)])
    out_base, out_patched, out_zero = _apply_model(base), _apply_model(patched), _apply_model(zero)
    assert torch.isfinite(out_patched).all()
    assert not torch.allclose(out_base, out_patched, atol=1e-3)
    torch.testing.assert_close(out_zero, out_base, rtol=0, atol=0)


def test_low_vram_mode_patches_lazily_with_the_same_result(run_graph, shapes, lora_dir):
    """With no room for the weights ComfyUI leaves them unpatched and applies the LoRA per layer at
    compute time (LowVramPatch on comfy.ops layers); the output must equal the fully patched model's."""
    deltas = make_lora(lora_dir, shapes, "lowvram.safetensors", seed=17)
    base, (patched, _, _) = run(run_graph, model_name=MODEL_FP32, loras=[("lowvram.safetensors", 1.0)])
    base_w = loaded_weights(base)
    full = _apply_model(patched)
    comfy.model_management.unload_all_models()
    patched.load(torch.device("cpu"), lowvram_model_memory=1)
    try:
        stored = {k[len(P):]: v for k, v in patched.model.state_dict().items() if k.startswith(P)}
        assert all(torch.equal(stored[k], base_w[k]) for k in deltas), "low-VRAM load merged the LoRA eagerly"
        lazy = _apply_model(patched, load=False)
    finally:
        patched.unpatch_model(device_to=patched.offload_device)
    # float32 weights: eager and lazy patching compute the same float32 numbers
    torch.testing.assert_close(lazy, full, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(lazy, _apply_model(base), atol=1e-3)


# --------------------------------------------------------------------------------------------
# the whole one-frame graph: LoRA → sampler, LoRA header → layout "from LoRA"
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def oneframe_models(models_dir, comfy_base_dir):
    """scripts/random_models.py: tiny FramePack with real I/O sizes + real-size random HunyuanVideo VAE."""
    import importlib.util

    import numpy as np
    from PIL import Image

    from conftest import REPO_ROOT

    spec = importlib.util.spec_from_file_location("_fp1f_random_models", REPO_ROOT / "scripts" / "random_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = module.install(models_dir, log=lambda *a: None)
    for i in range(2):
        small = np.random.default_rng(40 + i).uniform(0, 255, (6, 6, 3)).astype(np.uint8)
        Image.fromarray(small).resize((96, 96), Image.BICUBIC).save(comfy_base_dir / "input" / f"lora_img{i}.png")
    with safe_open(str(files["diffusion_models"]), "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    return files, {k: torch.Size(v) for k, v in shapes.items()}


def oneframe_graph(files, lora_name, strength, lora_into_sampler=True):
    enc = {"vae": ["vae", 0], "resolution": 128, "width": 0, "height": 0,
           "mask_mode": "keep where mask is 0 (LoadImage alpha)"}
    p = {
        "model": {"class_type": "FramePackModelLoader",
                  "inputs": {"model_name": files["diffusion_models"].name, "weight_dtype": "default"}},
        "lora": {"class_type": "FramePackLoraLoader",
                 "inputs": {"model": ["model", 0], "lora_name": lora_name, "strength": strength}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": files["vae"].name}},
        "img0": {"class_type": "LoadImage", "inputs": {"image": "lora_img0.png"}},
        "img1": {"class_type": "LoadImage", "inputs": {"image": "lora_img1.png"}},
        "enc0": {"class_type": "FramePackEncodeImage", "inputs": dict(enc, image=["img0", 0])},
        "enc1": {"class_type": "FramePackEncodeImage", "inputs": dict(enc, image=["img1", 0])},
        "list1": {"class_type": "FramePackControlList", "inputs": {"control": ["enc1", 0]}},
        "layout": {"class_type": "FramePackOneFrameLayout",
                   "inputs": {"start": ["enc0", 0], "controls": ["list1", 0], "preset": "from LoRA",
                              "lora_settings": ["lora", 1], "latent_window_size": -1, "target_index": -1,
                              "control_index": "", "latent_index": -1, "history_index": -1,
                              "use_clean_latents_post": "preset", "use_clean_latents_2x": "preset",
                              "use_clean_latents_4x": "preset", "siglip_source": "preset",
                              "siglip_mix": "0.7,0.3"}},
        "pos": {"class_type": "FPTestConditioning",
                "inputs": {"seed": 1, "tokens": 7, "padding": 0, "dim": 4096, "pooled_dim": 768}},
        "neg": {"class_type": "FPTestConditioning",
                "inputs": {"seed": 2, "tokens": 5, "padding": 0, "dim": 4096, "pooled_dim": 768}},
        "sampler": {"class_type": "FramePackOneFrameSampler",
                    "inputs": {"model": ["lora" if lora_into_sampler else "model", 0], "positive": ["pos", 0],
                               "negative": ["neg", 0], "layout": ["layout", 0], "seed": 3, "steps": 2,
                               "distilled_guidance": 10.0, "cfg": 1.0, "guidance_rescale": 0.0, "shift": 0.0,
                               "solver": "unipc_bh1", "batch_size": 1}},
        "out": {"class_type": "FPTestCapture", "inputs": {"value": ["sampler", 0]}},
    }
    return p


def test_lora_model_and_settings_run_through_the_one_frame_sampler(run_graph, oneframe_models, lora_dir):
    files, shapes = oneframe_models
    modules = tiny_lora.target_modules(shapes)
    factors = tiny_lora.lora_factors(shapes, modules, 4, 30, "lora")
    sd = tiny_lora.write_lora(factors, "lora", 4.0)
    comment = "kisekaeichi: target_index=1,control_index=0;10,no_post,no_2x,no_4x"
    tiny_lora.save(lora_dir / "graph_kisekaeichi.safetensors", sd, tiny_lora.musubi_header(sd, training_comment=comment))

    def sample(strength, into_sampler=True):
        out = run_graph(oneframe_graph(files, "graph_kisekaeichi.safetensors", strength, into_sampler),
                        outputs_of=["sampler", "layout"])
        return out["sampler"][0]["samples"], out["layout"][0]

    base, layout = sample(1.0, into_sampler=False)
    with_lora, _ = sample(1.0)
    zero, _ = sample(0.0)
    assert layout.layouts[0].target_index == 1  # the LoRA header's kisekaeichi settings reached the layout
    assert torch.isfinite(with_lora).all() and with_lora.shape == base.shape
    assert not torch.allclose(with_lora, base, atol=1e-4)
    assert torch.equal(zero, base)


def test_lora_for_full_size_framepack_on_tiny_model_names_the_size_mismatch(run_graph, shapes, lora_dir):
    sd = {}
    for m in ("transformer_blocks.0.attn.to_q", "single_transformer_blocks.0.proj_mlp"):
        rows = 12288 if "proj_mlp" in m else 3072
        sd[f"{tiny_lora.musubi_name(m)}.lora_down.weight"] = torch.zeros(1, 3072)
        sd[f"{tiny_lora.musubi_name(m)}.lora_up.weight"] = torch.zeros(rows, 1)
    tiny_lora.save(lora_dir / "full_size.safetensors", sd)
    with pytest.raises(GraphError, match=r"Its layer sizes differ from the model's \(lora_unet_\S+ \d+x3072 vs "):
        run(run_graph, loras=[("full_size.safetensors", 1.0)])


def test_unreadable_file_and_replaced_file(run_graph, shapes, lora_dir):
    (lora_dir / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header")
    with pytest.raises(GraphError, match=r"FramePackLoraLoader: lora_name 'broken.safetensors': cannot read the LoRA file"):
        run(run_graph, loras=[("broken.safetensors", 1.0)])
    # replacing a file under the same name is picked up (ComfyUI would otherwise reuse its cached output)
    d1 = make_lora(lora_dir, shapes, "replaced.safetensors", seed=31)
    base, (first, _, _) = run(run_graph, loras=[("replaced.safetensors", 1.0)])
    base_w = loaded_weights(base)
    assert_patched(base_w, loaded_weights(first), d1, 1.0)
    import os
    import time as _time
    _time.sleep(0.01)
    d2 = make_lora(lora_dir, shapes, "replaced.safetensors", seed=32)
    os.utime(lora_dir / "replaced.safetensors")
    _, (second, _, _) = run(run_graph, loras=[("replaced.safetensors", 1.0)])
    assert_patched(base_w, loaded_weights(second), d2, 1.0)


@pytest.mark.parametrize("lora_module, model_weight", [
    ("lora_unet_transformer_blocks_0_attn_to_out_0", "transformer_blocks.0.attn.to_out.0"),
    ("lora_transformer_blocks_0_attn_to_q", "transformer_blocks.0.attn.to_q"),
    ("lora_transformer_transformer_blocks_0_attn_add_k_proj", "transformer_blocks.0.attn.add_k_proj"),
    ("lycoris_single_transformer_blocks_0_proj_out", "single_transformer_blocks.0.proj_out"),
    ("base_model.model.transformer_blocks.0.ff_context.net.2", "transformer_blocks.0.ff_context.net.2"),
    ("model.diffusion_model.single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_mlp"),
    ("diffusion_model.single.transformer.blocks.0.attn.to.v", "single_transformer_blocks.0.attn.to_v"),
    ("transformer.double_blocks.0.txt_attn_proj", "transformer_blocks.0.attn.to_add_out"),
    ("diffusion_model.double_blocks.0.img_mlp.2", "transformer_blocks.0.ff.net.2"),
    ("double_blocks.0.txt_mod.lin", "transformer_blocks.0.norm1_context.linear"),
    ("lora_unet_single_blocks_0_modulation_linear", "single_transformer_blocks.0.norm.linear"),
    ("blocks.0.self_attn.q", None),
    ("lora_unet_transformer_blocks_1_attn_to_q", None),  # the tiny model has one dual block
])
def test_module_names_from_every_trainer_find_their_weight(shapes, lora_module, model_weight):
    table = fp_lora.build_target_table({P + k: v for k, v in shapes.items()})
    target = fp_lora.find_target(lora_module, table)
    if model_weight is None:
        assert target is None
    else:
        assert target is not None and target.parts == ((P + model_weight + ".weight", 0, -1),)
