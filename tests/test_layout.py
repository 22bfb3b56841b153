"""The one-frame layout against shared/spec/oneframe.md sections 1-3.

Every table row of the spec is an explicit expectation here; on top, seeded random option
combinations are checked against `spec_section_1`, a straightforward re-statement of the spec's
numbered steps written independently of framepack_core.layout.
"""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from framepack_oneframe.framepack_core.layout import (
    Control,
    LayoutError,
    LayoutOptions,
    Siglip,
    build_layout,
    is_layout,
    layout_model_inputs,
    mask_to_latent,
    resolve_layout,
    sweep_layout,
)
from framepack_oneframe.nodes.layout_widgets import layout_from_widgets, node_error, parse_index_list


def widgets(n_controls, lora_settings=None, **values):
    """The layout node's way in: widget values (-1, "preset", "on"/"off", "0;10", "control N") -> layout."""
    return layout_from_widgets(values, n_controls, lora_settings)


def spec_section_1(n_controls, lws=9, target_index=None, control_index=(), no_post=False, no_2x=False, no_4x=False):
    """Spec section 1, steps 1-8, literally. Returns (target, clean sources, clean indices, 2x indices, 4x indices)."""
    target = lws  # step 1
    if target_index is not None:
        target = target_index
    sources = [f"c{i}" for i in range(n_controls)] or ["zero"]  # step 2
    if not no_post:  # step 3
        sources.append("post")
    indices = [0] * len(sources)  # step 4
    if not no_post:
        indices[-1] = 1 + lws
    for i, v in enumerate(control_index):  # step 6
        if i < len(indices):
            indices[i] = v
    two = None if no_2x else [lws + 2, lws + 3]  # step 7
    four = None if no_4x else list(range(lws + 4, lws + 20))  # step 8
    return target, sources, indices, two, four


def observed(layout):
    sources = [f"c{s.control}" if s.kind == "control" else s.kind for s in layout.clean]
    two = list(layout.clean_2x.indices) or None
    four = list(layout.clean_4x.indices) or None
    return layout.target_index, sources, layout.clean_indices, two, four


# ------------------------------------------------------------------------------------------------
# Spec section 1 table (musubi recipes) and the LoRA training settings
# ------------------------------------------------------------------------------------------------


def test_basic_edit_default():
    lay = resolve_layout(1, preset="oichi")
    assert observed(lay) == (9, ["c0", "post"], [0, 10], [11, 12], list(range(13, 29)))
    assert [s.mask for s in lay.clean] == [True, False]
    assert lay.siglip.weights == ((0, 1.0),)
    assert lay.warnings == []


def test_basic_edit_no_2x_no_4x():
    lay = widgets(1, preset="oichi", use_clean_latents_2x="off", use_clean_latents_4x="off")
    assert observed(lay) == (9, ["c0", "post"], [0, 10], None, None)


def test_kisekaeichi_recipe():
    lay = resolve_layout(2, preset="kisekaeichi")
    # target_index=1, control_index=0;10, no_2x, no_4x, no_post; both controls masked
    assert observed(lay) == (1, ["c0", "c1"], [0, 10], None, None)
    assert [s.mask for s in lay.clean] == [True, True]
    assert observed(lay) == spec_section_1(2, 9, 1, [0, 10], True, True, True)


def test_1f_mc_recipe():
    lay = resolve_layout(2, preset="1f-mc")
    assert observed(lay) == (9, ["c0", "c1", "post"], [0, 1, 10], None, None)
    assert observed(lay) == spec_section_1(2, 9, 9, [0, 1], False, True, True)
    assert lay.warnings == []


def test_stable_target_up_to_40_is_not_warned_beyond_is():
    assert not any("stable" in w for w in resolve_layout(1, preset="oichi", target_index=40).warnings)
    assert any("stable up to ~40" in w for w in resolve_layout(1, preset="oichi", target_index=41).warnings)


@pytest.mark.parametrize(
    "settings, n, expect",
    [
        # musubi default LoRA: clean [0], target 9, post kept
        ({"clean_indices": [0], "target_index": 9, "no_post": False, "no_2x": False, "no_4x": False,
          "latent_window_size": 9}, 1, (9, ["c0", "post"], [0, 10], [11, 12], list(range(13, 29)))),
        # 1f-mc LoRA: [0, 1] / 9
        ({"clean_indices": [0, 1], "target_index": 9, "no_post": False, "no_2x": True, "no_4x": True,
          "latent_window_size": 9}, 2, (9, ["c0", "c1", "post"], [0, 1, 10], None, None)),
        # kisekaeichi LoRA: [0, 10] / 1 / no post
        ({"clean_indices": [0, 10], "target_index": 1, "no_post": True, "no_2x": True, "no_4x": True,
          "latent_window_size": 9}, 2, (1, ["c0", "c1"], [0, 10], None, None)),
        # community kisekaeichi LoRAs: target 4, [0, 10], no post
        ({"clean_indices": [0, 10], "target_index": 4, "no_post": True, "no_2x": True, "no_4x": True,
          "latent_window_size": 9}, 2, (4, ["c0", "c1"], [0, 10], None, None)),
    ],
)
def test_from_lora_training_settings(settings, n, expect):
    lay = resolve_layout(n, preset="from LoRA", lora_settings=settings)
    assert observed(lay) == expect
    assert not any("LoRA settings have no" in w for w in lay.warnings)


def test_from_lora_missing_keys_are_defaulted_and_reported():
    lay = resolve_layout(2, preset="from LoRA", lora_settings={"target_index": 4, "clean_indices": [0, 10],
                                                               "no_post": True})
    assert observed(lay) == (4, ["c0", "c1"], [0, 10], [11, 12], list(range(13, 29)))
    assert any("no latent_window_size, no_2x, no_4x" in w for w in lay.warnings)
    lay = resolve_layout(1, preset="from LoRA", lora_settings={})
    assert observed(lay) == (9, ["c0", "post"], [0, 10], [11, 12], list(range(13, 29)))
    with pytest.raises(LayoutError, match="FramePackOneFrameLayout: input 'lora_settings'"):
        widgets(1, preset="from LoRA")


def test_from_lora_window_size_moves_post_and_groups():
    lay = resolve_layout(1, preset="from LoRA", lora_settings={"latent_window_size": 5, "clean_indices": [0]})
    assert observed(lay) == (5, ["c0", "post"], [0, 6], [7, 8], list(range(9, 25)))


def test_lora_settings_with_other_preset_warn():
    lay = resolve_layout(1, preset="oichi", lora_settings={"target_index": 4})
    assert lay.target_index == 9
    assert any("not applied" in w for w in lay.warnings)


def test_no_control_uses_one_zero_latent():
    lay = resolve_layout(0, preset="oichi")
    assert observed(lay) == (9, ["zero", "post"], [0, 10], [11, 12], list(range(13, 29)))


def test_control_index_can_overwrite_post_index():
    lay = widgets(1, preset="oichi", control_index="3;7")
    assert observed(lay) == (9, ["c0", "post"], [3, 7], [11, 12], list(range(13, 29)))


def test_control_index_extra_values_are_reported():
    lay = resolve_layout(1, preset="kisekaeichi")  # one control, the recipe's 0;10 has a spare value
    assert lay.clean_indices == [0]
    assert any("expects 2 controls" in w for w in lay.warnings)
    assert any("[10] ignored" in w for w in lay.warnings)


# ------------------------------------------------------------------------------------------------
# Random option combinations against the independent re-statement
# ------------------------------------------------------------------------------------------------


def test_random_canonical_combinations_match_spec():
    rng = random.Random(1234)
    for _ in range(500):
        n = rng.randint(0, 5)
        lws = rng.randint(1, 64)
        target = rng.choice([None, rng.randint(0, 80)])
        ci = [rng.randint(0, 40) for _ in range(rng.randint(0, 6))]
        no_post, no_2x, no_4x = (rng.random() < 0.5 for _ in range(3))
        lay = widgets(
            n, preset="oichi", latent_window_size=lws, target_index=-1 if target is None else target,
            control_index=rng.choice([";", ","]).join(map(str, ci)),
            use_clean_latents_post="off" if no_post else rng.choice(["on", "preset"]),
            use_clean_latents_2x="off" if no_2x else rng.choice(["on", "preset"]),
            use_clean_latents_4x="off" if no_4x else rng.choice(["on", "preset"]),
        )
        assert observed(lay) == spec_section_1(n, lws, target, ci, no_post, no_2x, no_4x), (n, lws, target, ci)
        assert lay.latent_window_size == lws
        # masks: every control slot is masked, zero slots never
        assert [s.mask for s in lay.clean] == [s.kind == "control" for s in lay.clean]


def test_random_recipe_presets_with_overrides_match_spec():
    rng = random.Random(99)
    recipes = {  # preset -> spec recipe (target, control_index, no_post, no_2x, no_4x)
        "kisekaeichi": (1, [0, 10], True, True, True),
        "1f-mc": (9, [0, 1], False, True, True),
        "oichi": (None, [], False, False, False),
    }
    for _ in range(300):
        preset = rng.choice(list(recipes))
        target, ci, no_post, no_2x, no_4x = recipes[preset]
        n = rng.randint(1, 4)
        lws = rng.choice([-1, rng.randint(1, 64)])
        kw = {}
        if rng.random() < 0.5:
            target = rng.randint(0, 60)
            kw["target_index"] = target
        if rng.random() < 0.5:
            user_ci = [rng.randint(0, 30) for _ in range(rng.randint(1, 4))]
            kw["control_index"] = ";".join(map(str, user_ci))
            ci = user_ci + ci[len(user_ci):]  # user values overwrite the recipe's, in order
        for key, flag in (("use_clean_latents_post", "no_post"), ("use_clean_latents_2x", "no_2x"),
                          ("use_clean_latents_4x", "no_4x")):
            if rng.random() < 0.5:
                val = rng.choice(["on", "off"])
                kw[key] = val
                if flag == "no_post":
                    no_post = val == "off"
                elif flag == "no_2x":
                    no_2x = val == "off"
                else:
                    no_4x = val == "off"
        lay = widgets(n, preset=preset, latent_window_size=lws, **kw)
        real_lws = 9 if lws == -1 else lws
        assert observed(lay) == spec_section_1(n, real_lws, target, ci, no_post, no_2x, no_4x), (preset, n, lws, kw)


# ------------------------------------------------------------------------------------------------
# Spec section 2: the eichi vocabulary
# ------------------------------------------------------------------------------------------------


def test_eichi_defaults():
    lay = resolve_layout(2, preset="eichi")
    # target default 1, latent_index 0, history_index 13, every toggle on (eichi's UI defaults)
    assert observed(lay) == (1, ["c0", "c1", "post"], [0, 13, 10], [11, 12], list(range(13, 29)))
    assert any("inside the 4x group" in w for w in lay.warnings)  # 13 collides with the 4x group's first index


def test_eichi_target_clamped_to_window_with_warning():
    lay = resolve_layout(1, preset="eichi", latent_window_size=5, target_index=7)
    assert lay.target_index == 4
    assert any("clamped to 4" in w for w in lay.warnings)


@pytest.mark.parametrize("post", ["on", "off"])
@pytest.mark.parametrize("g2x", ["on", "off"])
@pytest.mark.parametrize("g4x", ["on", "off"])
def test_eichi_toggles_really_act(post, g2x, g4x):
    lay = widgets(2, preset="eichi", latent_index=2, history_index=6, target_index=4,
                         use_clean_latents_post=post, use_clean_latents_2x=g2x, use_clean_latents_4x=g4x)
    expect_sources = ["c0", "c1"] + (["post"] if post == "on" else [])
    expect_indices = [2, 6] + ([10] if post == "on" else [])
    assert observed(lay) == (4, expect_sources, expect_indices, [11, 12] if g2x == "on" else None,
                             list(range(13, 29)) if g4x == "on" else None)


def test_eichi_causal_constraint_is_a_warning_not_a_clamp():
    lay = widgets(2, preset="eichi", target_index=8, history_index=5, use_clean_latents_4x="off")
    assert lay.target_index == 8 and lay.clean_indices[1] == 5
    assert any("causal constraint" in w for w in lay.warnings)
    ok = widgets(2, preset="eichi", target_index=4, history_index=5, use_clean_latents_4x="off")
    assert not any("causal" in w for w in ok.warnings)


# ------------------------------------------------------------------------------------------------
# Spec section 3: compatibility modes
# ------------------------------------------------------------------------------------------------


def test_kijai_normal_mode():
    lay = resolve_layout(1, preset="kijai")
    assert observed(lay) == (8, ["c0"], [0], None, None)
    assert lay.siglip.weights == ((0, 1.0),)


def test_kijai_kisekaeichi_mode():
    lay = resolve_layout(2, preset="kijai")
    assert observed(lay) == (1, ["c0", "c1"], [0, 13], None, None)
    assert [s.mask for s in lay.clean] == [True, False]  # kijai's reference_mask never applies
    assert lay.siglip.weights == ((0, 0.7), (1, 0.3))
    lay = resolve_layout(2, preset="kijai", target_index=3, history_index=16, latent_window_size=5)
    assert observed(lay) == (3, ["c0", "c1"], [0, 16], None, None)


def test_plusone_v2_reference_mode():
    lay = resolve_layout(3, preset="plusone")
    # controls [start, ref1, ref2, zero post]; indices 0.. then post 1+lws; control_index 0;10 overrides
    assert observed(lay) == (5, ["c0", "c1", "c2", "post"], [0, 10, 0, 10], None, None)
    assert lay.siglip.weights == ((1, 1.0),)  # first reference's embedding
    assert all(s.mask for s in lay.clean if s.kind == "control")
    lay = widgets(2, preset="plusone", control_index="0;7;8", target_index=2, latent_window_size=5)
    assert observed(lay) == (2, ["c0", "c1", "post"], [0, 7, 8], None, None)


def test_plusone_normal_mode():
    assert observed(resolve_layout(1, preset="plusone")) == (8, ["c0"], [0], None, None)


def test_siglip_source_choices():
    assert widgets(3, preset="oichi", siglip_source="control 2").siglip.weights == ((2, 1.0),)
    assert widgets(3, preset="oichi", siglip_source="mix", siglip_mix="0.5,0.25,0.25").siglip.weights == (
        (0, 0.5), (1, 0.25), (2, 0.25))
    assert widgets(1, preset="oichi", siglip_source="none").siglip.weights == ()
    with pytest.raises(LayoutError, match="'siglip_source'"):
        widgets(1, preset="oichi", siglip_source="control 3")
    with pytest.raises(LayoutError, match="'siglip_mix'"):
        widgets(2, preset="oichi", siglip_source="mix", siglip_mix="0.5,x")


# ------------------------------------------------------------------------------------------------
# Errors and warnings
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0;;10", "a;b", "0;10;", "1.5", "0 10", "-1", "256"])
def test_malformed_or_out_of_range_control_index(text):
    with pytest.raises(LayoutError, match="FramePackOneFrameLayout: input 'control_index'"):
        widgets(1, preset="oichi", control_index=text)


def test_control_index_parsing():
    assert parse_index_list(" 0 ; 10 ") == [0, 10]
    assert parse_index_list("0,1,10") == [0, 1, 10]
    assert parse_index_list("") == []


@pytest.mark.parametrize("name, value, rng", [
    ("latent_window_size", 0, "1..64"), ("latent_window_size", 65, "1..64"),
    ("target_index", 256, "0..255"), ("target_index", -2, "0..255"),
    ("latent_index", 300, "0..255"), ("history_index", -5, "0..255"),
])
def test_out_of_range_knobs_name_input_and_range(name, value, rng):
    with pytest.raises(LayoutError, match=f"FramePackOneFrameLayout: input '{name}' is {value}; allowed range {rng}"):
        widgets(2, preset="eichi", **{name: value})


def test_bad_preset_and_toggle():
    with pytest.raises(LayoutError, match="'preset'"):
        widgets(1, preset="nope")
    with pytest.raises(LayoutError, match="'use_clean_latents_2x'"):
        widgets(1, preset="oichi", use_clean_latents_2x="maybe")


def test_index_collisions_are_warned():
    lay = widgets(2, preset="oichi", control_index="0;0", target_index=0)
    assert any("share index 0" in w for w in lay.warnings)
    assert any("target index 0 equals a clean 1x index" in w for w in lay.warnings)


def test_history_index_without_reference_is_reported():
    lay = resolve_layout(1, preset="eichi", history_index=13)
    assert lay.clean_indices == [0, 10]
    assert any("history_index given" in w for w in lay.warnings)


def test_summary_and_dict_show_resolved_values():
    lay = resolve_layout(2, preset="kisekaeichi")
    text = lay.summary()
    assert "target index: 1" in text and "clean 1x indices: [0, 10]" in text and "clean 2x: off" in text
    d = lay.to_dict()
    assert d["target_index"] == 1 and [c["index"] for c in d["clean"]] == [0, 10]
    assert d["clean_4x"] == {"present": False, "indices": [], "frames": 0}
    assert d["summary"] == text
    assert layout_from_widgets({"preset": "kisekaeichi", "unknown": 3}, 2).to_dict() == d


# ------------------------------------------------------------------------------------------------
# Model inputs
# ------------------------------------------------------------------------------------------------


def _control(seed, b=1, h=4, w=6, mask=None, embeds=True):
    g = torch.Generator().manual_seed(seed)
    return Control(latent=torch.randn(b, 16, 1, h, w, generator=g), mask=mask,
                   image_embeds=torch.randn(b, 729, 8, generator=g) if embeds else None)


def test_model_inputs_kisekaeichi_with_masks():
    m0 = torch.rand(1, 1, 1, 4, 6)
    m1 = torch.rand(1, 1, 1, 4, 6)
    c0, c1 = _control(0, mask=m0), _control(1, mask=m1)
    lay = build_layout((c0, c1), preset="kisekaeichi")
    out, seeds = layout_model_inputs(lay, 3)
    assert seeds == [0, 1, 2]
    assert set(out) == {"latent_indices", "clean_latents", "clean_latent_indices", "clean_latents_2x",
                        "clean_latent_2x_indices", "clean_latents_4x", "clean_latent_4x_indices", "image_embeds"}
    assert out["latent_indices"].tolist() == [1]
    assert out["clean_latent_indices"].tolist() == [0, 10]
    assert out["clean_latents"].shape == (3, 16, 2, 4, 6)
    torch.testing.assert_close(out["clean_latents"][:, :, 0:1], (c0.latent * m0).expand(3, -1, -1, -1, -1))
    torch.testing.assert_close(out["clean_latents"][:, :, 1:2], (c1.latent * m1).expand(3, -1, -1, -1, -1))
    assert out["clean_latents_2x"] is None and out["clean_latent_2x_indices"] is None
    assert out["clean_latents_4x"] is None and out["clean_latent_4x_indices"] is None
    torch.testing.assert_close(out["image_embeds"], c0.image_embeds.expand(3, -1, -1))


def test_model_inputs_default_groups_and_post_are_zero():
    c0 = _control(0)
    out, seeds = layout_model_inputs(build_layout((c0,), preset="oichi"), 1)
    assert seeds == [0]
    assert out["clean_latents"].shape == (1, 16, 2, 4, 6)
    torch.testing.assert_close(out["clean_latents"][:, :, :1], c0.latent)
    assert out["clean_latents"][:, :, 1].abs().max() == 0
    assert out["clean_latents_2x"].shape == (1, 16, 2, 4, 6) and out["clean_latents_2x"].abs().max() == 0
    assert out["clean_latents_4x"].shape == (1, 16, 16, 4, 6) and out["clean_latents_4x"].abs().max() == 0
    assert out["clean_latent_2x_indices"].tolist() == [11, 12]
    assert out["clean_latent_4x_indices"].tolist() == list(range(13, 29))


def test_model_inputs_kijai_reference_mask_ignored_and_siglip_mix():
    c0, c1 = _control(0), _control(1, mask=torch.zeros(1, 1, 1, 4, 6))
    out, _ = layout_model_inputs(build_layout((c0, c1), preset="kijai"), 1)
    torch.testing.assert_close(out["clean_latents"][:, :, 1:2], c1.latent)
    torch.testing.assert_close(out["image_embeds"], 0.7 * c0.image_embeds + 0.3 * c1.image_embeds)


def test_model_inputs_per_image_rows_and_batch_mismatch():
    c0 = _control(0, b=2)
    out, seeds = layout_model_inputs(build_layout((c0,), preset="oichi"), 2)  # 2 start images x 2 seeds
    torch.testing.assert_close(out["clean_latents"][:, :, 0], c0.latent[[0, 0, 1, 1], :, 0])
    torch.testing.assert_close(out["image_embeds"], c0.image_embeds[[0, 0, 1, 1]])
    assert seeds == [0, 1, 2, 3]
    with pytest.raises(LayoutError, match="^input 'controls' control 1 has a batch of 3 images but the start has 2"):
        layout_model_inputs(build_layout((c0, _control(1, b=3)), preset="1f-mc"), 1)


def test_sweep_gives_per_sample_indices():
    base = build_layout((_control(0),), preset="oichi")
    sweep = sweep_layout(base, "latent_window_size", [5, 9, 13])
    assert is_layout(sweep) and sweep.is_sweep and sweep.controls is base.controls  # the controls, held once
    out, seeds = layout_model_inputs(sweep, 1)
    assert seeds == [0, 0, 0]  # every value on the same seed
    assert out["latent_indices"].tolist() == [[5], [9], [13]]
    assert out["clean_latent_indices"].tolist() == [[0, 6], [0, 10], [0, 14]]
    assert out["clean_latent_2x_indices"].tolist() == [[7, 8], [11, 12], [15, 16]]
    assert out["clean_latent_4x_indices"][:, 0].tolist() == [9, 13, 17]
    t = sweep_layout(build_layout((_control(0), _control(1)), preset="kisekaeichi"), "target_index", [1, 4])
    assert [lay.target_index for lay in t.layouts] == [1, 4] and t.values == (1, 4)
    assert all(lay.clean_indices == [0, 10] for lay in t.layouts)
    with pytest.raises(LayoutError, match="^input 'layout' must be a single layout"):
        sweep_layout(t, "target_index", [2])
    with pytest.raises(LayoutError, match=r"^input 'values' has latent_window_size=65 out of range 1..64"):
        sweep_layout(base, "latent_window_size", [9, 65])


def test_sweep_batch_is_value_major_then_start_image_then_seed():
    c0 = _control(0, b=2)
    sweep = sweep_layout(build_layout((c0,), preset="oichi"), "target_index", [3, 7])
    out, seeds = layout_model_inputs(sweep, 3)  # 2 values x 2 start images x 3 seeds
    assert seeds == [0, 1, 2, 3, 4, 5] * 2
    assert out["latent_indices"][:, 0].tolist() == [3] * 6 + [7] * 6
    start_rows = [0, 0, 0, 1, 1, 1] * 2
    torch.testing.assert_close(out["clean_latents"][:, :, 0], c0.latent[start_rows, :, 0])
    torch.testing.assert_close(out["image_embeds"], c0.image_embeds[start_rows])
    # the same sample of each value is the plain layout's sample
    plain, _ = layout_model_inputs(build_layout((c0,), preset="oichi", target_index=7), 3)
    torch.testing.assert_close(out["clean_latents"][6:], plain["clean_latents"])
    assert out["clean_latent_indices"][6:].tolist() == [plain["clean_latent_indices"].tolist()] * 6


def test_core_takes_typed_options_and_names_the_input_without_a_node():
    lay = resolve_layout(2, preset="kisekaeichi", control_index=[0, 7], use_clean_latents_post=True,
                         siglip_source=Siglip(((1, 1.0),)))
    assert observed(lay) == (1, ["c0", "c1", "post"], [0, 7, 10], None, None) and lay.siglip.weights == ((1, 1.0),)
    assert lay == resolve_layout(2, LayoutOptions(preset="kisekaeichi", control_index=(0, 7),
                                                  use_clean_latents_post=True, siglip_source=Siglip(((1, 1.0),))))
    with pytest.raises(LayoutError, match=r"^input 'target_index' is 300; allowed range 0..255$"):
        resolve_layout(1, target_index=300)
    with pytest.raises(LayoutError, match=r"^input 'control_index' is '0;10'; expected a list of integers"):
        resolve_layout(1, control_index="0;10")
    with pytest.raises(LayoutError, match=r"^input 'use_clean_latents_2x' is 'off'; allowed: None"):
        resolve_layout(1, use_clean_latents_2x="off")
    with pytest.raises(LayoutError, match=r"^input 'siglip_source' is 'control 3' but only controls 0..1 are "):
        resolve_layout(2, siglip_source=Siglip(((3, 1.0),)))
    # the node layer adds its node id, and for its -1 knobs that -1 is allowed too
    with pytest.raises(LayoutError) as e:
        resolve_layout(1, latent_window_size=0)
    assert str(node_error("FramePackOneFrameLayout", e.value)) == (
        "FramePackOneFrameLayout: input 'latent_window_size' is 0; allowed range 1..64 or -1 (preset default)")
    assert not is_layout(lay)  # one resolved value is not a FRAMEPACK_LAYOUT; build_layout makes one
    with pytest.raises(LayoutError, match=r"^FramePackOneFrameLayout: input 'lora_settings.target_index' is 300; "
                                          r"allowed range 0..255$"):
        widgets(1, lora_settings={"target_index": 300}, preset="from LoRA")


def test_mask_to_latent_is_pil_lanczos_of_grey():
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(1, 40, 56, generator=g)
    got = mask_to_latent(mask, 5, 7)
    img = Image.fromarray((mask[0].numpy() * 255).round().astype(np.uint8), mode="L").resize((7, 5), Image.LANCZOS)
    expect = torch.from_numpy(np.array(img)).float() / 255
    assert got.shape == (1, 1, 1, 5, 7)
    torch.testing.assert_close(got[0, 0, 0], expect)


def test_refit_checks_every_control_before_any_vae_work():
    from framepack_oneframe.framepack_core.encode import fit_controls

    class CountingVAE:
        calls = 0

        def encode(self, pixels):
            CountingVAE.calls += 1
            return torch.zeros(1, 16, 1, pixels.shape[1] // 8, pixels.shape[2] // 8)

    vae = CountingVAE()
    start = Control(latent=torch.zeros(1, 16, 1, 8, 8), pixels=torch.zeros(1, 64, 64, 3), vae=vae)
    refittable = Control(latent=torch.zeros(1, 16, 1, 4, 4), pixels=torch.zeros(1, 32, 32, 3), vae=vae)
    hand_made = Control(latent=torch.zeros(1, 16, 1, 4, 4))  # another size and no image to re-fit
    with pytest.raises(ValueError, match=r"FramePackOneFrameLayout: input 'controls': control 2 has latent size "
                                         r"\(4, 4\) but the start has \(8, 8\) and it carries no image to re-fit"):
        fit_controls([start, refittable, hand_made], "FramePackOneFrameLayout")
    assert CountingVAE.calls == 0


def test_encode_refuses_a_vae_of_another_channel_count_before_encoding():
    from framepack_oneframe.framepack_core.encode import encode_control

    class SDVAE:  # what ComfyUI's VAE reports for an SD 1.x VAE
        latent_channels = 4
        calls = 0

        def encode(self, pixels):
            SDVAE.calls += 1
            return torch.zeros(1, 4, pixels.shape[1] // 8, pixels.shape[2] // 8)

    with pytest.raises(ValueError, match=r"FramePackEncodeImage: input 'vae' makes 4-channel latents; FramePack needs "
                                         r"the HunyuanVideo VAE"):
        encode_control(torch.rand(1, 64, 64, 3), SDVAE(), width=64, height=64)
    assert SDVAE.calls == 0
