"""One-frame LoRA training through ComfyUI's real execution engine, on the tests' tiny FramePack.

The graphs are what a user builds: images -> FramePackEncodeImage -> FramePackOneFrameLayout ->
FramePack One-Frame Training Sample (or the folder dataset node) -> FramePack Train One-Frame LoRA
-> FramePack Save One-Frame LoRA -> its lora_settings into a layout node with preset "from LoRA".
The synthetic task: the target is a fixed function of the controls (the reference image itself),
so a LoRA can learn it.
"""
from __future__ import annotations

import hashlib
import json
import os

import comfy.latent_formats
import comfy.model_management
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save

from conftest import GraphError
from framepack_oneframe.framepack_core import lora_metadata, training
from framepack_oneframe.framepack_core.layout import (LayoutOptions, Siglip, layout_model_inputs, lora_settings_of,
                                                      resolve_layout)
from test_oneframe_graph import RES, _png, fp_models, images  # noqa: F401  (fixtures)

LAYOUT_WIDGETS = dict(latent_window_size=-1, target_index=-1, control_index="", latent_index=-1, history_index=-1,
                      use_clean_latents_post="preset", use_clean_latents_2x="preset", use_clean_latents_4x="preset",
                      siglip_source="preset", siglip_mix="0.7,0.3")
TRAIN = dict(steps=12, learning_rate=5e-3, rank=4, alpha=4.0, discrete_flow_shift=3.0, guidance=1.0, seed=5,
             optimizer="AdamW", gradient_checkpointing=False)
PAIRS = [("fp_start.png", "fp_ref.png"), ("fp_ref2.png", "fp_wide.png")]


@pytest.fixture(autouse=True)
def _unload_after():
    yield
    comfy.model_management.unload_all_models()


@pytest.fixture(scope="module")
def loras_dir(models_dir):
    return models_dir / "loras"


def layout_node(preset="kisekaeichi", start=None, controls=None, lora_settings=None, **widgets):
    inputs = {"preset": preset, **LAYOUT_WIDGETS, **widgets}
    for name, link in (("start", start), ("controls", controls), ("lora_settings", lora_settings)):
        if link is not None:
            inputs[name] = link
    return {"class_type": "FramePackOneFrameLayout", "inputs": inputs}


def encode(image_node):
    return {"class_type": "FramePackEncodeImage",
            "inputs": {"image": [image_node, 0], "vae": ["vae", 0], "resolution": RES, "width": 0, "height": 0,
                       "mask_mode": "keep where mask is 0 (LoadImage alpha)"}}


def loaders(fp_models):
    return {
        "model": {"class_type": "FramePackModelLoader",
                  "inputs": {"model_name": fp_models["diffusion_models"], "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": fp_models["vae"]}},
        "caption": {"class_type": "FPTestConditioning",
                    "inputs": {"seed": 1, "tokens": 7, "padding": 0, "dim": 4096, "pooled_dim": 768}},
    }


def sample_graph(fp_models, pairs=PAIRS, preset="kisekaeichi", train=None, **layout_widgets):
    """Loaders, one Training Sample node per (start, reference) pair whose target is the reference image
    (oichi: the start alone), and the trainer."""
    p = loaders(fp_models)
    previous = None
    for i, (start, ref) in enumerate(pairs):
        p[f"s{i}"] = {"class_type": "LoadImage", "inputs": {"image": start}}
        p[f"r{i}"] = {"class_type": "LoadImage", "inputs": {"image": ref}}
        p[f"es{i}"], p[f"er{i}"] = encode(f"s{i}"), encode(f"r{i}")
        controls = None
        if preset != "oichi":
            p[f"list{i}"] = {"class_type": "FramePackControlList", "inputs": {"control": [f"er{i}", 0]}}
            controls = [f"list{i}", 0]
        p[f"layout{i}"] = layout_node(preset, start=[f"es{i}", 0], controls=controls, **layout_widgets)
        p[f"sample{i}"] = {"class_type": "FramePackOneFrameTrainingSample",
                           "inputs": {"layout": [f"layout{i}", 0], "target": [f"r{i}", 0], "vae": ["vae", 0]}}
        if previous:
            p[f"sample{i}"]["inputs"]["previous"] = [previous, 0]
        previous = f"sample{i}"
    p["train"] = {"class_type": "FramePackTrainOneFrameLoRA",
                  "inputs": {"model": ["model", 0], "dataset": [previous, 0], "positive": ["caption", 0],
                             **TRAIN, **(train or {})}}
    return p


def sampler(model_link, layout="layout0"):
    return {"class_type": "FramePackOneFrameSampler",
            "inputs": {"model": model_link, "positive": ["caption", 0], "negative": ["caption", 0],
                       "layout": [layout, 0], "seed": 3, "steps": 4, "distilled_guidance": 1.0, "cfg": 1.0,
                       "guidance_rescale": 0.0, "shift": 0.0, "solver": "unipc_bh1", "batch_size": 1}}


def saver(prefix):
    return {"class_type": "FramePackSaveOneFrameLoRA",
            "inputs": {"lora": ["train", 1], "metadata": ["train", 2], "filename_prefix": prefix}}


def model_space(latent: dict) -> torch.Tensor:
    """A sampler's LATENT (VAE Decode's scale) in the model's space, where the dataset keeps its targets."""
    return comfy.latent_formats.HunyuanVideo().process_in(latent["samples"].float())


# ------------------------------------------------------------------------------------------------
# Training works
# ------------------------------------------------------------------------------------------------


def test_loss_falls_and_the_lora_pulls_the_sampler_toward_the_target(run_graph, fp_models, images):
    p = sample_graph(fp_models, train=dict(steps=24))
    p["with_lora"], p["without"] = sampler(["train", 0]), sampler(["model", 0])
    out = run_graph(p, outputs_of=["train", "with_lora", "without", "sample1"])
    frozen = run_graph(sample_graph(fp_models, train=dict(steps=24, learning_rate=1e-7)), outputs_of=["train"])
    model, lora, metadata, loss_map, steps = out["train"]
    assert steps == 24 and len(loss_map["loss"]) == 24
    # The same seed draws the same samples, noise and noise levels in both runs: step by step, the losses
    # differ only by what was learnt.
    learnt, base = np.array(loss_map["loss"][12:]), np.array(frozen["train"][3]["loss"][12:])
    assert learnt.mean() < 0.6 * base.mean(), (learnt, base)
    # The returned MODEL samples with the LoRA: sample 0's frame moves toward its target (the reference).
    target = out["sample1"][0].samples[0].target
    near = float((model_space(out["with_lora"][0]) - target).norm())
    far = float((model_space(out["without"][0]) - target).norm())
    assert near < 0.9 * far, (near, far)


def test_gradient_checkpointing_gives_the_same_training(run_graph, fp_models, images):
    plain = run_graph(sample_graph(fp_models, PAIRS[:1], train=dict(steps=3)), outputs_of=["train"])["train"]
    ckpt = run_graph(sample_graph(fp_models, PAIRS[:1], train=dict(steps=3, gradient_checkpointing=True)),
                     outputs_of=["train"])["train"]
    assert plain[3]["loss"] == pytest.approx(ckpt[3]["loss"], rel=1e-5)
    for k in plain[1]:
        torch.testing.assert_close(plain[1][k], ckpt[1][k], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# The file: musubi's format, and the layout inside it
# ------------------------------------------------------------------------------------------------


def test_saved_file_is_musubi_format_with_its_layout_and_loads_back(run_graph, fp_models, images, loras_dir):
    p = sample_graph(fp_models, train=dict(steps=4), control_index="0;12", target_index=3)
    p["save"] = saver("fp_test/kise")
    p["with_lora"] = sampler(["train", 0])
    out = run_graph(p, outputs_of=["save", "with_lora", "layout0"])
    name, settings = out["save"]
    assert name.startswith("fp_test/kise_") and name.endswith("_.safetensors")
    path = loras_dir / name
    sd = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    # Tensors: musubi's names and dtypes (float32, a 0-dim alpha), on the dual and single blocks' Linears.
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in sd}
    assert all(m.startswith(("lora_unet_transformer_blocks_", "lora_unet_single_transformer_blocks_")) for m in modules)
    assert not any("norm" in m for m in modules)
    assert "lora_unet_transformer_blocks_0_attn_to_q" in modules and "lora_unet_single_transformer_blocks_0_proj_mlp" in modules
    for m in modules:
        assert sd[f"{m}.lora_down.weight"].shape[0] == 4 and sd[f"{m}.lora_up.weight"].shape[1] == 4
        assert sd[f"{m}.alpha"].shape == () and float(sd[f"{m}.alpha"]) == 4.0
    assert {t.dtype for t in sd.values()} == {torch.float32}
    # Header: musubi's keys as it spells them, the layout at the top level and in ss_datasets.
    assert meta["ss_network_module"] == "networks.lora_framepack" and meta["ss_base_model_version"] == "framepack"
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4.0" and meta["ss_steps"] == "4"
    assert meta["ss_timestep_sampling"] == "shift" and meta["ss_discrete_flow_shift"] == "3.0"
    assert meta["modelspec.architecture"] == "framepack/lora"
    top = {"fp_1f_target_index": "3", "fp_1f_clean_indices": "[0, 12]", "fp_1f_no_post": "true",
           "fp_1f_no_2x": "true", "fp_1f_no_4x": "true", "fp_latent_window_size": "9",
           "fp_1f_siglip_source": "start", "fp_1f_masked_controls": "[0, 1]"}
    assert {k: meta[k] for k in top} == top
    (entry,) = json.loads(meta["ss_datasets"])
    assert entry["fp_1f_target_index"] == 3 and entry["fp_1f_clean_indices"] == [0, 12]
    assert entry["fp_1f_no_post"] is True and entry["resolution"] == [128, 128] and entry["has_control"] is True
    # musubi's additional-networks hashes, recomputed here from the file's tensors
    blob = save(sd, {k: v for k, v in meta.items() if k.startswith("ss_")})
    assert meta["sshs_model_hash"] == hashlib.sha256(blob[8 + int.from_bytes(blob[:8], "little"):]).hexdigest()
    # The saver's settings are the header read back, and they are the trained layout.
    assert settings == lora_metadata.read_settings(meta)[0]
    assert {k: v for k, v in settings.items() if k != "resolution"} == lora_settings_of(out["layout0"][0].layouts[0])

    # The file through the pack's LoRA loader gives the trained MODEL's image, and the layout back.
    q = sample_graph(fp_models, train=dict(steps=4), control_index="0;12", target_index=3)
    del q["train"]
    q["lora"] = {"class_type": "FramePackLoraLoader",
                 "inputs": {"model": ["model", 0], "lora_name": name, "strength": 1.0}}
    q["from_lora"] = layout_node("from LoRA", start=["es0", 0], controls=["list0", 0], lora_settings=["lora", 1])
    q["loaded"] = sampler(["lora", 0], layout="from_lora")
    q["base"] = sampler(["model", 0], layout="from_lora")
    back = run_graph(q, outputs_of=["loaded", "from_lora", "base"])
    # The file gives the trained MODEL's change. Not bit for bit: ComfyUI merges a loaded LoRA into the bf16
    # weights with stochastic rounding, while the trained MODEL adds it to each weight as it is cast.
    loaded, trained, base = (x[0]["samples"] for x in (back["loaded"], out["with_lora"], back["base"]))
    assert float((loaded - trained).norm()) < 0.05 * float((trained - base).norm())
    assert lora_settings_of(back["from_lora"][0].layouts[0]) == lora_settings_of(out["layout0"][0].layouts[0])


# (preset, knobs): every preset, with knobs that move what the file must record
PRESET_CASES = [
    ("oichi", dict(latent_window_size=7, target_index=5)),
    ("kisekaeichi", dict()),
    ("1f-mc", dict(use_clean_latents_2x="on")),
    ("eichi", dict(target_index=12)),  # eichi clamps the target to lws - 1
    ("kijai", dict()),  # the reference's mask is not applied; SigLIP mixes 0.7 start + 0.3 reference
    ("plusone", dict(use_clean_latents_post="preset")),  # SigLIP of the first reference
]


@pytest.mark.parametrize("preset,knobs", PRESET_CASES, ids=[c[0] for c in PRESET_CASES])
def test_from_lora_gives_back_the_layout_it_was_trained_on(run_graph, fp_models, images, preset, knobs):
    p = sample_graph(fp_models, PAIRS[:1], preset=preset, train=dict(steps=1), **knobs)
    p["save"] = saver(f"fp_test/{preset}")
    p["from_lora"] = layout_node("from LoRA", start=["es0", 0], controls=p["layout0"]["inputs"].get("controls"),
                                 lora_settings=["save", 1])
    out = run_graph(p, outputs_of=["layout0", "from_lora"])
    trained, loaded = out["layout0"][0].layouts[0], out["from_lora"][0].layouts[0]
    assert loaded.preset == "from LoRA"
    for field in ("latent_window_size", "target_index", "clean", "clean_2x", "clean_4x", "siglip"):
        assert getattr(loaded, field) == getattr(trained, field), field


def test_metadata_round_trips_into_the_layout():
    """Without the engine: every preset and a few knobs, layout -> header keys -> read back -> from LoRA."""
    cases = [("oichi", {}), ("oichi", dict(use_clean_latents_post=False, siglip_source=Siglip(()))),
             ("kisekaeichi", dict(target_index=4)), ("1f-mc", {}), ("eichi", dict(history_index=20)),
             ("kijai", {}), ("plusone", {}), ("oichi", dict(control_index=(0, 15)))]
    for preset, knobs in cases:
        n = 1 if preset == "oichi" else 2
        trained = resolve_layout(n, LayoutOptions(preset=preset, **knobs))
        header = lora_metadata.header_from_settings(lora_settings_of(trained))
        assert all(isinstance(v, str) for v in header.values())
        settings, _ = lora_metadata.read_settings(header)
        loaded = resolve_layout(n, LayoutOptions(preset="from LoRA", lora_settings=settings))
        for field in ("latent_window_size", "target_index", "clean", "clean_2x", "clean_4x", "siglip"):
            assert getattr(loaded, field) == getattr(trained, field), (preset, knobs, field)
    assert lora_metadata.parse_siglip_label("0.7*start + 0.3*control 1") == [[0, 0.7], [1, 0.3]]
    assert lora_metadata.parse_siglip_label("control 2") == [[2, 1.0]]
    assert lora_metadata.parse_siglip_label("the start") is None


def test_noise_levels_follow_musubis_shift_sampling():
    g = torch.Generator().manual_seed(0)
    plain = training.shift_sigmas(g, 20000, 1.0)
    shifted = training.shift_sigmas(torch.Generator().manual_seed(0), 20000, 3.0)
    assert abs(float(plain.median()) - 0.5) < 0.01  # sigmoid of a standard normal
    # the same draws, shifted: t' = 3t / (1 + 2t)
    torch.testing.assert_close(shifted, 3 * plain / (1 + 2 * plain))
    assert 0 < float(shifted.min()) and float(shifted.max()) < 1


# ------------------------------------------------------------------------------------------------
# Folders
# ------------------------------------------------------------------------------------------------


def _folder_dataset(root, captions=("a red coat", "a blue dress"), controls_per=2, alpha_on=1):
    imgs, ctrls = root / "images", root / "controls"
    imgs.mkdir(parents=True, exist_ok=True)
    ctrls.mkdir(parents=True, exist_ok=True)
    alpha = np.zeros((96, 96), np.uint8)
    alpha[:, 48:] = 255  # right half opaque
    for i, (stem, text) in enumerate(zip(("a", "b"), captions)):
        _png(imgs / f"{stem}.png", 10 + i)
        if text is not None:
            (imgs / f"{stem}.txt").write_text(text)
        for k in range(controls_per):
            _png(ctrls / f"{stem}_{k}.png", 20 + 2 * i + k, alpha=alpha if k == alpha_on else None)
    return imgs, ctrls


def folder_graph(fp_models, imgs, ctrls, steps=2, preset="kisekaeichi"):
    p = loaders(fp_models)
    p["layout"] = layout_node(preset)  # settings only: no pictures
    p["data"] = {"class_type": "FramePackOneFrameDatasetFolder",
                 "inputs": {"image_directory": str(imgs), "control_directory": str(ctrls), "layout": ["layout", 0],
                            "vae": ["vae", 0], "resolution": RES, "caption_extension": ".txt",
                            "mask_mode": "keep where mask is 1"}}
    p["text"] = {"class_type": "FPTestTextConditioning", "inputs": {"text": ["data", 1]}}
    p["train"] = {"class_type": "FramePackTrainOneFrameLoRA",
                  "inputs": {"model": ["model", 0], "dataset": ["data", 0], "positive": ["text", 0],
                             **TRAIN, "steps": steps}}
    return p


def test_folder_dataset_follows_musubis_conventions(run_graph, fp_models, comfy_base_dir):
    imgs, ctrls = _folder_dataset(comfy_base_dir / "input" / "fp_train_ok")
    out = run_graph(folder_graph(fp_models, imgs, ctrls), outputs_of=["data", "train", "layout"])
    dataset, captions, summary = out["data"]
    assert captions == ["a red coat", "a blue dress"]  # file-name order, one per sample
    assert [s.name for s in dataset.samples] == ["a.png", "b.png"] and "2 samples" in summary
    sample = dataset.samples[0]
    lay = sample.layout.layouts[0]
    assert lay.target_index == 1 and lay.clean_indices == [0, 10]  # kisekaeichi, applied to each sample
    assert sample.target.shape == (1, 16, 1, RES // 8, RES // 8)
    # a_1's alpha is its mask, multiplied into its clean latent: the transparent left half is zero
    assert sample.layout.controls[0].mask is None and sample.layout.controls[1].mask is not None
    clean = layout_model_inputs(sample.layout, 1)[0]["clean_latents"]
    mask = sample.layout.controls[1].mask[0, 0, 0]
    assert float(clean[0, :, 1][:, mask == 0].abs().max()) == 0.0
    assert float(clean[0, :, 1][:, mask == 1].abs().max()) > 0.0
    metadata = out["train"][2]
    (entry,) = json.loads(metadata["ss_datasets"])
    assert entry["image_directory"] == "images" and entry["control_directory"] == "controls"
    assert entry["fp_1f_clean_indices"] == [0, 10] and metadata["ss_num_train_items"] == "2"


@pytest.mark.parametrize("case,match", [
    ("missing_control", r"FramePackOneFrameDatasetFolder: 1 problem\(s\) in the dataset: b\.png: 1 control image\(s\)"),
    ("empty_caption", r"FramePackOneFrameDatasetFolder: .*b\.png: no caption \(b\.txt is missing or empty\)"),
    ("no_folder", r"FramePackOneFrameDatasetFolder: input 'image_directory': folder .* does not exist"),
    ("bad_control_name", r"FramePackOneFrameDatasetFolder: control image 'a_ref\.png' does not name a control number"),
])
def test_bad_datasets_fail_clearly_before_training(run_graph, fp_models, comfy_base_dir, loras_dir, case, match):
    imgs, ctrls = _folder_dataset(comfy_base_dir / "input" / f"fp_train_{case}",
                                  captions=("x y", None if case == "empty_caption" else "z"))
    if case == "missing_control":
        os.remove(ctrls / "b_1.png")
    if case == "bad_control_name":
        Image.open(ctrls / "a_1.png").save(ctrls / "a_ref.png")
    if case == "no_folder":
        imgs = imgs.parent / "nowhere"
    p = folder_graph(fp_models, imgs, ctrls)
    files_before = sorted(loras_dir.rglob("*")) if loras_dir.exists() else []
    with pytest.raises(GraphError, match=match):
        run_graph(p, outputs_of=["train"])
    assert (sorted(loras_dir.rglob("*")) if loras_dir.exists() else []) == files_before


def test_bad_settings_and_layouts_are_refused_before_training(run_graph, fp_models, images):
    with pytest.raises(training.TrainingError, match=r"FramePackTrainOneFrameLoRA: input 'rank' is 0; allowed range 1\.\.256"):
        training.check_settings(training.TrainingSettings(rank=0))
    with pytest.raises(training.TrainingError, match=r"input 'optimizer' is 'Lion'; allowed: AdamW, Adam, SGD"):
        training.check_settings(training.TrainingSettings(optimizer="Lion"))
    # samples of two layouts in one dataset
    p = sample_graph(fp_models)
    p["layout1"]["inputs"]["target_index"] = 5
    with pytest.raises(GraphError, match=r"FramePackTrainOneFrameLoRA: input 'dataset': sample 'graph sample 1' has "
                                         r"another layout than 'graph sample 0' \(target_index 5 vs 1\)"):
        run_graph(p, outputs_of=["train"])
    # one caption per sample, or one for all
    out = run_graph(sample_graph(fp_models, train=dict(steps=1)), outputs_of=["model", "sample1", "caption"])
    (model,), (dataset,), (caption,) = out["model"], out["sample1"], out["caption"]
    with pytest.raises(training.TrainingError, match=r"FramePackTrainOneFrameLoRA: input 'positive' has 3 "
                                                     r"conditionings for 2 samples"):
        training.train_lora(model, dataset, [caption] * 3, training.TrainingSettings(steps=1))
    # a sweep is several layouts
    p = sample_graph(fp_models, PAIRS[:1])
    p["sweep"] = {"class_type": "FramePackLayoutSweep",
                  "inputs": {"layout": ["layout0", 0], "vary": "target_index", "values": "1,2"}}
    p["sample0"]["inputs"]["layout"] = ["sweep", 0]
    with pytest.raises(GraphError, match=r"FramePackOneFrameTrainingSample: input 'layout' is a sweep over target_index"):
        run_graph(p, outputs_of=["train"])
    # a settings-only layout cannot sample
    q = loaders(fp_models)
    q["layout"] = layout_node("kisekaeichi")
    q["sampler"] = sampler(["model", 0], layout="layout")
    with pytest.raises(GraphError, match=r"input 'layout' has no start image"):
        run_graph(q, outputs_of=["sampler"])


MUSUBI_SRC = os.environ.get("MUSUBI_TUNER_SRC")  # kohya-ss/musubi-tuner's src/ folder, for a run by hand


@pytest.mark.skipif(not MUSUBI_SRC, reason="musubi-tuner's loader check runs by hand: MUSUBI_TUNER_SRC=<musubi>/src")
def test_musubi_tuners_own_loader_merges_the_saved_lora(run_graph, fp_models, images, models_dir, loras_dir):
    import sys

    sys.path.insert(0, MUSUBI_SRC)
    from musubi_tuner.utils.lora_utils import load_safetensors_with_lora_and_fp8

    p = sample_graph(fp_models, PAIRS[:1], train=dict(steps=2))
    p["save"] = saver("fp_test/musubi")
    name, _ = run_graph(p, outputs_of=["save"])["save"]
    lora = load_file(str(loras_dir / name))
    base_file = str(models_dir / "diffusion_models" / fp_models["diffusion_models"])
    base = load_file(base_file)
    merged = load_safetensors_with_lora_and_fp8(base_file, [lora], [1.0], False, torch.device("cpu"))
    modules = {k[len("lora_unet_"):].rsplit(".", 1)[0] for k in lora if k.endswith(".alpha")}
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    # musubi's key rule finds every module of the file, and nothing else moves
    assert {("lora_unet_" + k[:-len(".weight")].replace(".", "_"))[len("lora_unet_"):] for k in changed} == modules
    for key in changed:
        m = "lora_unet_" + key[:-len(".weight")].replace(".", "_")
        delta = lora[f"{m}.lora_up.weight"] @ lora[f"{m}.lora_down.weight"] * (lora[f"{m}.alpha"] / 4)
        torch.testing.assert_close(merged[key].float(), (base[key].float() + delta), rtol=1e-2, atol=1e-2)
