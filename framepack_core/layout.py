"""The one-frame layout: which latent goes where on FramePack's time axis.

One-frame inference denoises a single latent frame at a chosen RoPE time index (the *target*) while
the transformer attends to "clean" context latents, each at its own index, at three compressions
(1x, 2x, 4x). Every way this pack offers to configure that -- the presets, the canonical musubi-tuner
options, FramePack-eichi's vocabulary, the kijai / PlusOne compatibility modes and a LoRA's training
settings -- resolves to one `OneFrameLayout` per value (`resolve_layout`). What travels between nodes
(`FRAMEPACK_LAYOUT`) is ONE type, `FramePackLayout`: the options it was resolved from, the controls it
places (held once), and one `OneFrameLayout` per value -- one for a plain layout, n > 1 for a sweep
(`sweep_layout`: the same options with `latent_window_size` or `target_index` taking each value).
The model's keyword inputs come from `layout_model_inputs(layout, batch_size)`; the layout node
prints `summary()`; the browser draws `OneFrameLayout.to_dict()` (served by the
`/framepack/layout_preview` route), so nobody re-implements the rules.

Reference semantics: `shared/spec/oneframe.md` sections 1-3. Short version of the canonical rules
(musubi-tuner, which one-frame LoRAs are trained against), with lws = latent_window_size:

1. target index = lws, or `target_index`;
2. 1x clean slots = the controls in order (an all-zero latent when there is none), each at index 0,
   plus -- unless the post is off -- one all-zero "post" latent at index 1 + lws;
3. a control's mask multiplies its latent;
4. `control_index` [a, b, c] overwrites the slot indices in order, as far as there are slots (it can
   overwrite the post's index too);
5. 2x group: two zero frames at [lws+2, lws+3]; 4x group: sixteen zero frames at lws+4 .. lws+19.

Controls are numbered as the layout node sees them: control 0 is the start image, control 1, 2, ...
the further images in the order of the control list.

The options are typed (`LayoutOptions`): None = the preset's value, bools for the toggles, a `Siglip`
for the image embedding, lists of ints for indices. The widget vocabulary (-1, "preset", "on"/"off",
"control N", "0;10", "mix" weights) and node ids belong to `nodes/layout_widgets.py`. A bad option
raises `LayoutError`, which names the input ("input 'target_index' is 300; allowed range 0..255");
the node layer adds its node id (`LayoutError.at`).

This module is torch (+ PIL for the mask filter) only; it never imports ComfyUI.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch

MAX_WINDOW = 64
MAX_INDEX = 255
MAX_CONTROLS = 16
PRESETS = ("oichi", "kisekaeichi", "1f-mc", "eichi", "kijai", "plusone", "from LoRA")
SWEEPABLE = ("latent_window_size", "target_index")

PRESET_DESCRIPTIONS = {
    "oichi": "basic edit (musubi-tuner default: start at 0, zero post at lws+1, target lws, 2x/4x on)",
    "kisekaeichi": "kisekaeichi (musubi recipe: target 1, control_index 0;10, no post, no 2x/4x)",
    "1f-mc": "1f-mc (musubi recipe: target 9, control_index 0;1, zero post at lws+1, no 2x/4x)",
    "eichi": "FramePack-eichi vocabulary (latent_index, history_index, target clamped to lws-1; toggles act)",
    "kijai": "compatibility: kijai ComfyUI-FramePackWrapper FramePackSingleFrameSampler",
    "plusone": "compatibility: tori29umai0123 ComfyUI-FramePackWrapper_PlusOne v2 single-frame sampler",
    "from LoRA": "the layout the connected LoRA was trained with (lora_settings)",
}


class LayoutError(ValueError):
    """Bad layout input: "input '<input>' <problem>", prefixed by the node id once the node layer adds it.

    `allowed_range` (lo, hi) is set for an integer out of its range, so the node layer can add what its
    widgets allow besides (-1 = the preset's value)."""
    # ComfyUI shows an error's type as "<module>.<Class>" (execution.full_type_name), and it imports the pack
    # under a module name made from its folder path, so "Show Report" would read
    # "/.../custom_nodes/framepack_oneframe.framepack_core.layout.LayoutError"; full_type_name gives
    # builtins' classes their bare name. (Such an exception cannot be pickled; ComfyUI never pickles one.)
    __module__ = "builtins"

    def __init__(self, input: str, problem: str, allowed_range: tuple[int, int] | None = None,
                 node: str | None = None):
        self.input, self.problem, self.allowed_range, self.node = input, problem, allowed_range, node
        text = f"input '{input}' {problem}"
        super().__init__(f"{node}: {text}" if node else text)

    def at(self, node: str, problem: str | None = None) -> "LayoutError":
        """The same error as node `node` reports it (optionally with the problem reworded)."""
        return LayoutError(self.input, self.problem if problem is None else problem, self.allowed_range, node)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


@dataclass
class Control:
    """One encoded image (`FRAMEPACK_CONTROL`).

    latent: (B, 16, 1, h, w) in model space (VAE latent x comfy.latent_formats.HunyuanVideo's scale_factor).
    mask: (B, 1, 1, h, w) in 0..1 at latent size, or None (no mask).
    image_embeds: (B, 729, 1152) SigLIP last_hidden_state, or None (no CLIP_VISION given).
    pixels: (B, H, W, 3) the fitted image, kept so the layout can re-fit a control of another size.
    vae: the ComfyUI VAE that encoded it (for re-fitting); None for hand-made controls.
    source_mask: the full-resolution mask (B, H, W) in 0..1 that produced `mask`, for re-fitting.
    mask_size_mismatch: ((mask h, w), (image h, w)) when the connected mask had another size than its
    image (each was fitted to the output size on its own, so they may not line up), else None; the
    layout node says so in its warnings.
    """

    latent: torch.Tensor
    mask: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    vae: Any = None
    source_mask: torch.Tensor | None = None
    mask_size_mismatch: tuple[tuple[int, int], tuple[int, int]] | None = None

    @property
    def batch(self) -> int:
        return int(self.latent.shape[0])

    @property
    def latent_hw(self) -> tuple[int, int]:
        return int(self.latent.shape[-2]), int(self.latent.shape[-1])


@dataclass(frozen=True)
class CleanSlot:
    """One 1x clean latent. kind: "control" (control number `control`), "zero" (musubi's stand-in
    when no control is given) or "post" (the all-zero clean latent post)."""

    kind: str
    index: int
    control: int | None = None
    mask: bool = False  # whether the control's mask multiplies it

    @property
    def label(self) -> str:
        if self.kind == "control":
            return "start" if self.control == 0 else f"control {self.control}"
        return "zero post" if self.kind == "post" else "zero"


@dataclass(frozen=True)
class Group:
    """The 2x or 4x clean group: all-zero frames at `indices` (empty when absent)."""

    indices: tuple[int, ...] = ()

    @property
    def present(self) -> bool:
        return len(self.indices) > 0

    @property
    def frames(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class Siglip:
    """Which SigLIP embedding the model sees: a weighted sum over controls ((control, weight), ...).
    One entry with weight 1 = that control's embedding; empty = no image embedding."""

    weights: tuple[tuple[int, float], ...] = ((0, 1.0),)

    @property
    def label(self) -> str:
        if not self.weights:
            return "none"
        if len(self.weights) == 1 and self.weights[0][1] == 1.0:
            c = self.weights[0][0]
            return "start" if c == 0 else f"control {c}"
        return " + ".join(f"{w:g}*{'start' if c == 0 else f'control {c}'}" for c, w in self.weights)


@dataclass
class OneFrameLayout:
    """One resolved one-frame layout (one value of a `FramePackLayout`); see the module docstring.

    `to_dict()` (JSON for the frontend's drawing and the preview route) has these fields:
      preset (str), description (str), num_controls (int: controls it was resolved for, start included),
      latent_window_size (int), target_index (int: RoPE time index of the one noisy frame),
      clean: list of {kind: "control"|"zero"|"post", control: int|null (0 = start), label: str,
             index: int, mask: bool (the control's mask multiplies it)} -- in the order they enter the
             model,
      clean_2x / clean_4x: {present: bool, indices: [int], frames: int} (zero frames),
      siglip: {label: str, weights: [[control, weight], ...]} (empty weights = no image embedding),
      warnings: [str] (legal but unusual choices, clamps, ignored inputs),
      summary: str (the same text as `summary()`).
    """

    preset: str
    latent_window_size: int
    target_index: int
    clean: tuple[CleanSlot, ...]
    clean_2x: Group
    clean_4x: Group
    siglip: Siglip
    num_controls: int
    warnings: list[str] = field(default_factory=list)

    # -- views ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "description": PRESET_DESCRIPTIONS.get(self.preset, ""),
            "num_controls": self.num_controls,
            "latent_window_size": self.latent_window_size,
            "target_index": self.target_index,
            "clean": [
                {"kind": s.kind, "control": s.control, "label": s.label, "index": s.index, "mask": s.mask}
                for s in self.clean
            ],
            "clean_2x": {"present": self.clean_2x.present, "indices": list(self.clean_2x.indices),
                         "frames": self.clean_2x.frames},
            "clean_4x": {"present": self.clean_4x.present, "indices": list(self.clean_4x.indices),
                         "frames": self.clean_4x.frames},
            "siglip": {"label": self.siglip.label, "weights": [[c, w] for c, w in self.siglip.weights]},
            "warnings": list(self.warnings),
            "summary": self.summary(),
        }

    @property
    def clean_indices(self) -> list[int]:
        return [s.index for s in self.clean]

    def summary(self) -> str:
        def group(g: Group) -> str:
            if not g.present:
                return "off"
            return f"{g.frames} zero frames at [{g.indices[0]}..{g.indices[-1]}]"

        slots = ", ".join(f"{s.label}{' (masked)' if s.mask else ''} @ {s.index}" for s in self.clean)
        lines = [
            f"preset: {self.preset} -- {PRESET_DESCRIPTIONS.get(self.preset, '')}",
            f"controls: {self.num_controls} (start + {max(self.num_controls - 1, 0)})",
            f"latent_window_size: {self.latent_window_size}",
            f"target index: {self.target_index}",
            f"clean 1x indices: {self.clean_indices}  [{slots}]",
            f"clean 2x: {group(self.clean_2x)}",
            f"clean 4x: {group(self.clean_4x)}",
            f"SigLIP image embedding: {self.siglip.label}",
        ]
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass(frozen=True)
class LayoutOptions:
    """What `resolve_layout` resolves, typed. None (or an empty control_index) = the preset's value."""

    preset: str = "oichi"
    latent_window_size: int | None = None
    target_index: int | None = None
    control_index: tuple[int, ...] = ()  # indices of the 1x clean slots, in order
    latent_index: int | None = None  # eichi vocabulary: the start image's index
    history_index: int | None = None  # eichi / kijai vocabulary: control 1's index
    use_clean_latents_post: bool | None = None
    use_clean_latents_2x: bool | None = None
    use_clean_latents_4x: bool | None = None
    siglip_source: Siglip | None = None
    lora_settings: dict | None = None  # FRAMEPACK_LORA_SETTINGS, used by preset "from LoRA"


# ComfyUI imports this pack under a module name made from its folder path ("/…/custom_nodes/
# framepack_oneframe" with '.' → '_x_'), while tests, bench/ and scripts/ import it as
# `framepack_oneframe`: two copies of this module, each with its own classes, so `isinstance` fails
# for a layout made by the other copy. A FRAMEPACK_LAYOUT is therefore recognised by ONE field
# checked by value, `kind`; the version in it refuses a layout of another (older or newer) shape
# instead of misreading it.
LAYOUT_KIND = "framepack_oneframe.layout/2"


@dataclass(frozen=True, eq=False)  # identity: its controls hold tensors, which have no plain equality
class FramePackLayout:
    """`FRAMEPACK_LAYOUT`: the resolved layout for each value, the options and the controls, held once.

    A plain layout has one value (`vary` None); a sweep (`sweep_layout`) has one `OneFrameLayout` per
    value of `vary` ("latent_window_size" or "target_index"), `values` in the same order. All of them
    place the same latents (only indices differ), so they run as one batch.
    """

    options: LayoutOptions
    layouts: tuple[OneFrameLayout, ...]
    vary: str | None = None
    values: tuple[int, ...] = ()
    controls: tuple[Control, ...] | None = None  # set by the layout node; not part of to_dict()
    kind: ClassVar[str] = LAYOUT_KIND

    @property
    def is_sweep(self) -> bool:
        return self.vary is not None

    def summary(self) -> str:
        if not self.is_sweep:
            return self.layouts[0].summary()
        head = f"sweep over {self.vary}: {list(self.values)} ({len(self.layouts)} layouts in one batch)"
        return head + "\n\n" + "\n\n".join(f"[{self.vary}={v}]\n{lay.summary()}"
                                          for v, lay in zip(self.values, self.layouts))


def is_layout(obj) -> bool:
    """Whether `obj` is a FRAMEPACK_LAYOUT (from either copy of this module; see LAYOUT_KIND)."""
    return getattr(obj, "kind", None) == LAYOUT_KIND


# ------------------------------------------------------------------------------------------------
# Checks (typed values; the node layer parses widget text into them)
# ------------------------------------------------------------------------------------------------


def check_int(name: str, value, lo: int, hi: int) -> int:
    """`value` must be an int in lo..hi (bools are not ints here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LayoutError(name, f"is {value!r}; allowed range {lo}..{hi}", allowed_range=(lo, hi))
    return value


# The integer options and their ranges, in the order they are checked.
KNOB_RANGES = {"latent_window_size": (1, MAX_WINDOW), "target_index": (0, MAX_INDEX),
               "latent_index": (0, MAX_INDEX), "history_index": (0, MAX_INDEX)}


def check_preset(preset) -> str:
    if preset not in PRESETS:
        raise LayoutError("preset", f"is {preset!r}; allowed: {', '.join(PRESETS)}")
    return preset


def check_num_controls(num_controls) -> int:
    if not isinstance(num_controls, int) or not 0 <= num_controls <= MAX_CONTROLS:
        raise LayoutError("controls", f"has {num_controls} controls; allowed 0..{MAX_CONTROLS} (start included; "
                                      "0 = no picture yet, as in the preview, which places one zero latent)")
    return num_controls


def _check_optional_int(name: str, value, lo: int, hi: int) -> int | None:
    return None if value is None else check_int(name, value, lo, hi)


def check_indices(name: str, values: Sequence[int], shown=None) -> list[int]:
    """Every entry an integer in 0..MAX_INDEX; `shown` is what the message quotes (default: the values)."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise LayoutError(name, f"is {values!r}; expected a list of integers 0..{MAX_INDEX}")
    out = []
    for v in values:
        if not isinstance(v, int) or isinstance(v, bool):
            raise LayoutError(name, f"has {v!r}, not an integer 0..{MAX_INDEX} (got {values!r})")
        if not 0 <= v <= MAX_INDEX:
            raise LayoutError(name, f"has index {v} out of range 0..{MAX_INDEX} "
                                    f"(got {list(values) if shown is None else shown!r})")
        out.append(v)
    return out


def _check_toggle(name: str, value) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise LayoutError(name, f"is {value!r}; allowed: None (the preset's), True, False")
    return value


def _check_siglip(siglip: Siglip | None, num_controls: int) -> Siglip | None:
    if siglip is None:
        return None
    if not isinstance(getattr(siglip, "weights", None), tuple):
        raise LayoutError("siglip_source", f"is {siglip!r}; expected a Siglip (or None for the preset's)")
    for c, _ in siglip.weights:
        if not 0 <= c < num_controls:
            raise LayoutError("siglip_source", f"is {siglip.label!r} but only controls 0..{num_controls - 1} are "
                                               f"connected (0 = start)")
    return Siglip(tuple(siglip.weights))


# ------------------------------------------------------------------------------------------------
# Builders
# ------------------------------------------------------------------------------------------------


def group_2x(lws: int) -> Group:
    return Group((lws + 2, lws + 3))


def group_4x(lws: int) -> Group:
    return Group(tuple(range(lws + 4, lws + 20)))


def canonical_slots(num_controls: int, lws: int, post: bool) -> list[CleanSlot]:
    """Spec section 1 steps 2-4: controls (or one zero latent) at index 0, then the zero post at 1+lws."""
    slots = [CleanSlot("control", 0, control=i, mask=True) for i in range(num_controls)]
    if not slots:
        slots = [CleanSlot("zero", 0)]
    if post:
        slots.append(CleanSlot("post", 1 + lws))
    return slots


def overwrite_indices(slots: list[CleanSlot], indices: Sequence[int], warnings: list[str],
                      name: str = "control_index") -> list[CleanSlot]:
    """Spec section 1 step 6: overwrite slot indices in order, as far as there are slots."""
    out = list(slots)
    for i, idx in enumerate(indices[: len(out)]):
        out[i] = dataclasses.replace(out[i], index=int(idx))
    if len(indices) > len(out):
        warnings.append(f"{name} has {len(indices)} values but there are only {len(out)} clean slots; "
                        f"{list(indices[len(out):])} ignored")
    return out


def _slot_of_control(slots: list[CleanSlot], control: int) -> int | None:
    for i, s in enumerate(slots):
        if s.kind == "control" and s.control == control:
            return i
    return None


def _set_control_index(slots, control, index, name, warnings):
    pos = _slot_of_control(slots, control)
    if pos is None:
        what = "start image" if control == 0 else f"control {control}"
        warnings.append(f"{name}={index} given but the layout places no {what}; ignored")
        return slots
    slots = list(slots)
    slots[pos] = dataclasses.replace(slots[pos], index=index)
    return slots


def _check_common(layout: OneFrameLayout, causal: bool) -> None:
    """Warnings for legal but unusual layouts (never changes the layout)."""
    w = layout.warnings
    lws = layout.latent_window_size
    t = layout.target_index
    idx1 = [s.index for s in layout.clean]
    seen: dict[int, str] = {}
    for s in layout.clean:
        if s.index in seen:
            w.append(f"clean slots '{seen[s.index]}' and '{s.label}' share index {s.index}")
        else:
            seen[s.index] = s.label
    if t in idx1:
        w.append(f"target index {t} equals a clean 1x index ({seen[t]}): the noisy frame sits on a context frame")
    for name, g in (("2x", layout.clean_2x), ("4x", layout.clean_4x)):
        hit = sorted(set(g.indices) & set(idx1))
        if hit:
            w.append(f"clean 1x index {hit} falls inside the {name} group's indices "
                     f"[{g.indices[0]}..{g.indices[-1]}]")
        if t in g.indices:
            w.append(f"target index {t} falls inside the {name} group's indices")
    if causal:  # kisekaeichi-style reference (eichi / kijai vocabulary, or history_index set)
        pos = _slot_of_control(list(layout.clean), 1)
        if pos is not None:
            h = layout.clean[pos].index
            if t > h:
                w.append(f"target index {t} is above the reference's index {h}: the guide's causal constraint is "
                         f"target_index <= history_index (the reference then lies in the target's past)")
    if t > lws + 1 and t > 40:
        w.append(f"target index {t} is far beyond the window (lws={lws}); musubi reports results stable up to ~40")


# Preset defaults of the canonical family (lws is the widget's, 9 by default): target (None = lws),
# control_index overwriting the slot indices in order, and whether the post / 2x / 4x groups are present.
CANONICAL_PRESETS = {
    "oichi": dict(target=None, control_index=[], post=True, g2x=True, g4x=True),
    "kisekaeichi": dict(target=1, control_index=[0, 10], post=False, g2x=False, g4x=False),
    "1f-mc": dict(target=9, control_index=[0, 1], post=True, g2x=False, g4x=False),
}
EXPECTED_CONTROLS = {"kisekaeichi": 2, "1f-mc": 2}


def settings_only_count(preset: str) -> int:
    """How many pictures a layout without pictures (the layout node with no start image, a layout of
    settings for training) is resolved and drawn for: what the preset expects, else the start alone."""
    return EXPECTED_CONTROLS.get(preset, 1)

EICHI_DEFAULTS = dict(target=1, latent_index=0, history_index=13, post=True, g2x=True, g4x=True)
KIJAI_DEFAULTS = dict(target=1, history_index=13, reference_weight=0.3)
PLUSONE_DEFAULTS = dict(target=5, control_index=[0, 10])


def resolve_layout(num_controls: int, options: LayoutOptions | None = None, **fields) -> OneFrameLayout:
    """Options -> the resolved one-frame layout for `num_controls` controls (start included).

    Pass a `LayoutOptions`, or its fields as keywords (`resolve_layout(2, preset="kisekaeichi",
    target_index=4)`). None / an empty control_index keep the preset's value; anything else overrides
    the preset (the summary shows the resolved values). Raises LayoutError naming the input.
    """
    if options is None:
        try:
            options = LayoutOptions(**fields)
        except TypeError as e:
            raise TypeError(f"resolve_layout: {e}") from None
    elif fields:
        raise TypeError("resolve_layout: give a LayoutOptions or its fields, not both")
    preset = check_preset(options.preset)
    check_num_controls(num_controls)
    latent_window_size, target_index, latent_index, history_index = (
        _check_optional_int(name, getattr(options, name), *KNOB_RANGES[name]) for name in KNOB_RANGES)
    ci = check_indices("control_index", options.control_index)
    post_t = _check_toggle("use_clean_latents_post", options.use_clean_latents_post)
    t2x = _check_toggle("use_clean_latents_2x", options.use_clean_latents_2x)
    t4x = _check_toggle("use_clean_latents_4x", options.use_clean_latents_4x)
    siglip = _check_siglip(options.siglip_source, max(num_controls, 1))
    lora_settings = options.lora_settings

    warnings: list[str] = []
    n = num_controls
    lws = 9 if latent_window_size is None else latent_window_size
    pick = lambda knob, default: default if knob is None else knob  # noqa: E731

    if lora_settings is not None and preset != "from LoRA":
        warnings.append(f"lora_settings are connected but preset is '{preset}': they are not applied "
                        f"(choose preset 'from LoRA' to use the LoRA's training layout)")

    if preset in CANONICAL_PRESETS or preset == "from LoRA":
        if preset == "from LoRA":
            d = _lora_defaults(lora_settings, warnings)
            if latent_window_size is None:
                lws = d.pop("lws")
            else:
                d.pop("lws")
        else:
            d = dict(CANONICAL_PRESETS[preset])
            need = EXPECTED_CONTROLS.get(preset)
            if need is not None and n != need:
                warnings.append(f"preset '{preset}' expects {need} controls (start + reference) but {n} are "
                                f"connected")
        post, g2x, g4x = pick(post_t, d["post"]), pick(t2x, d["g2x"]), pick(t4x, d["g4x"])
        target = d["target"] if target_index is None else target_index
        target = lws if target is None else target
        slots = canonical_slots(n, lws, post)
        # A LoRA's clean indices are applied like musubi's control_index (in order, as far as there are
        # slots): the training recipes [0] / [0, 1] / [0, 10] + no_post then give the trained layout.
        name = "the LoRA's clean_indices" if preset == "from LoRA" else f"{preset} control_index"
        slots = overwrite_indices(slots, d["control_index"], warnings, name)
        slots = overwrite_indices(slots, ci, warnings)
        if latent_index is not None:
            slots = _set_control_index(slots, 0, latent_index, "latent_index", warnings)
        if history_index is not None:
            slots = _set_control_index(slots, 1, history_index, "history_index", warnings)
        if "masked_controls" in d:
            slots = [dataclasses.replace(s, mask=s.kind == "control" and s.control in d["masked_controls"])
                     for s in slots]
        default_siglip = d.get("siglip", Siglip(((0, 1.0),)))

    elif preset == "eichi":
        d = EICHI_DEFAULTS
        post, g2x, g4x = pick(post_t, d["post"]), pick(t2x, d["g2x"]), pick(t4x, d["g4x"])
        target = d["target"] if target_index is None else target_index
        if target > lws - 1:
            warnings.append(f"target_index {target} clamped to {lws - 1} (eichi allows 0..latent_window_size-1)")
            target = lws - 1
        li = d["latent_index"] if latent_index is None else latent_index
        hi = d["history_index"] if history_index is None else history_index
        slots = [CleanSlot("control", li, control=0, mask=True)] if n >= 1 else [CleanSlot("zero", li)]
        if n >= 2:
            slots.append(CleanSlot("control", hi, control=1, mask=True))
        elif history_index is not None:
            warnings.append("history_index given but no reference control is connected; ignored")
        if n > 2:
            warnings.append(f"eichi uses the start image and one reference; controls 2..{n - 1} are ignored")
        if post:
            slots.append(CleanSlot("post", 1 + lws))
        slots = overwrite_indices(slots, ci, warnings)
        default_siglip = Siglip(((0, 1.0),))

    elif preset == "kijai":
        d = KIJAI_DEFAULTS
        kise = n >= 2
        post, g2x, g4x = pick(post_t, False), pick(t2x, False), pick(t4x, False)
        for name, val in (("use_clean_latents_post", post_t), ("use_clean_latents_2x", t2x),
                          ("use_clean_latents_4x", t4x)):
            if val:
                warnings.append(f"{name}=on departs from kijai's sampler (which never adds it)")
        if kise:
            target = d["target"] if target_index is None else target_index
            if target > 8:
                warnings.append(f"target_index {target} is outside kijai's range 0..8")
            hi = d["history_index"] if history_index is None else history_index
            if hi > 16:
                warnings.append(f"history_index {hi} is outside kijai's range 0..16")
            # kijai's reference_mask branch is broken: the reference's mask never applies there.
            slots = [CleanSlot("control", 0, control=0, mask=True), CleanSlot("control", hi, control=1, mask=False)]
            if n > 2:
                warnings.append(f"kijai uses the start image and one reference; controls 2..{n - 1} are ignored")
            w_ref = d["reference_weight"]
            default_siglip = Siglip(((0, 1.0 - w_ref), (1, w_ref)))
        else:
            target = lws - 1 if target_index is None else target_index
            if target_index is not None:
                warnings.append("target_index given: kijai's normal mode always uses latent_window_size-1")
            if history_index is not None:
                warnings.append("history_index given but no reference control is connected; ignored")
            slots = canonical_slots(n, lws, post=False)
            default_siglip = Siglip(((0, 1.0),))
        if post:
            slots.append(CleanSlot("post", 1 + lws))
        if latent_index is not None:
            slots = _set_control_index(slots, 0, latent_index, "latent_index", warnings)
        slots = overwrite_indices(slots, ci, warnings)
        if latent_window_size is not None and (lws > 33 or lws < 1):
            warnings.append(f"latent_window_size {lws} is outside kijai's range 1..33")

    else:  # plusone
        d = PLUSONE_DEFAULTS
        kise = n >= 2
        g2x, g4x = pick(t2x, False), pick(t4x, False)
        for name, val in (("use_clean_latents_2x", t2x), ("use_clean_latents_4x", t4x)):
            if val:
                warnings.append(f"{name}=on departs from PlusOne's sampler (which never adds it)")
        if latent_window_size is not None and lws > 33:
            warnings.append(f"latent_window_size {lws} is outside PlusOne's range 1..33")
        if kise:
            post = pick(post_t, True)
            if post_t is False:
                warnings.append("use_clean_latents_post=off departs from PlusOne (which always adds the zero post)")
            target = d["target"] if target_index is None else target_index
            if target > 16:
                warnings.append(f"target_index {target} is outside PlusOne's range 0..16")
            if n > 9:
                warnings.append(f"PlusOne takes at most 8 references; {n - 1} are connected")
            slots = canonical_slots(n, lws, post)
            slots = overwrite_indices(slots, d["control_index"] if not ci else ci, warnings)
            default_siglip = Siglip(((1, 1.0),))  # PlusOne feeds the first reference's embedding
        else:
            post = pick(post_t, False)
            target = lws - 1 if target_index is None else target_index
            if target_index is not None:
                warnings.append("target_index given: PlusOne's normal mode always uses latent_window_size-1")
            slots = canonical_slots(n, lws, post)
            slots = overwrite_indices(slots, ci, warnings)
            default_siglip = Siglip(((0, 1.0),))
        if latent_index is not None:
            slots = _set_control_index(slots, 0, latent_index, "latent_index", warnings)
        if history_index is not None:
            slots = _set_control_index(slots, 1, history_index, "history_index", warnings)

    if n == 0:
        warnings.append("no control connected: the start slot is an all-zero latent")
    layout = OneFrameLayout(
        preset=preset, latent_window_size=lws, target_index=target, clean=tuple(slots),
        clean_2x=group_2x(lws) if g2x else Group(), clean_4x=group_4x(lws) if g4x else Group(),
        siglip=siglip if siglip is not None else default_siglip, num_controls=n, warnings=warnings,
    )
    for c, _ in layout.siglip.weights:
        if c >= max(n, 1):
            warnings.append(f"SigLIP source control {c} is not connected; the start image's embedding is used")
            layout.siglip = Siglip(((0, 1.0),))
            break
    _check_common(layout, causal=preset in ("eichi", "kijai") or history_index is not None)
    return layout


def _lora_defaults(settings: dict | None, warnings: list[str]) -> dict:
    """FRAMEPACK_LORA_SETTINGS (a plain dict; any key may be missing) -> canonical preset defaults."""
    if settings is None:
        raise LayoutError("lora_settings", "is not connected but preset is 'from LoRA': connect the LoRA "
                                           "loader's settings output or pick another preset")
    if not isinstance(settings, dict):
        raise LayoutError("lora_settings", f"must be a dict of LoRA training settings, got {type(settings).__name__}")
    defaults = {"latent_window_size": 9, "target_index": None, "clean_indices": [0], "no_post": False,
                "no_2x": False, "no_4x": False}
    missing = [k for k in defaults if settings.get(k) is None]
    if missing:
        warnings.append(f"LoRA settings have no {', '.join(missing)}; using musubi-tuner's defaults for them")
    lws = settings.get("latent_window_size") or 9
    check_int("lora_settings.latent_window_size", int(lws), 1, MAX_WINDOW)
    target = settings.get("target_index")
    if target is not None:
        check_int("lora_settings.target_index", int(target), 0, MAX_INDEX)
    clean = check_indices("lora_settings.clean_indices", [int(v) for v in settings.get("clean_indices") or [0]])
    out = dict(lws=int(lws), target=None if target is None else int(target), control_index=clean,
               post=not bool(settings.get("no_post", False)), g2x=not bool(settings.get("no_2x", False)),
               g4x=not bool(settings.get("no_4x", False)))
    # Written by this pack's trainer (older LoRAs lack them: the canonical start embedding, masks applied).
    if settings.get("siglip") is not None:
        try:
            out["siglip"] = Siglip(tuple((int(c), float(w)) for c, w in settings["siglip"]))
        except (TypeError, ValueError):
            raise LayoutError("lora_settings.siglip", f"must be [[control, weight], ...], got {settings['siglip']!r}")
    if settings.get("masked_controls") is not None:
        out["masked_controls"] = [int(c) for c in settings["masked_controls"]]
    return out


def lora_settings_of(layout) -> dict:
    """A resolved OneFrameLayout -> FRAMEPACK_LORA_SETTINGS (lora_metadata.read_settings' dict) from which
    preset "from LoRA" resolves the same layout.

    clean_indices holds the controls' indices (musubi's fp_1f_clean_indices); the zero post's index is
    appended only where it is not musubi's 1 + latent_window_size, since the indices overwrite the slots
    in order (controls, then the post).
    """
    controls = [s for s in layout.clean if s.kind != "post"]
    post = [s for s in layout.clean if s.kind == "post"]
    indices = [s.index for s in controls]
    if post and post[0].index != 1 + layout.latent_window_size:
        indices.append(post[0].index)
    return {
        "latent_window_size": layout.latent_window_size,
        "target_index": layout.target_index,
        "clean_indices": indices,
        "no_post": not post,
        "no_2x": not layout.clean_2x.present,
        "no_4x": not layout.clean_4x.present,
        "siglip": [[c, w] for c, w in layout.siglip.weights],
        "masked_controls": [s.control for s in controls if s.kind == "control" and s.mask],
    }


def attach_controls(options: LayoutOptions, layout: OneFrameLayout, controls: Sequence[Control],
                    fit_warnings: Sequence[str] = ()) -> FramePackLayout:
    """The layout node's output: `layout` (resolved from `options` for these controls) carrying the
    controls, with the warnings only the controls can tell: re-fits, a SigLIP source without an
    embedding, masks the preset leaves unapplied."""
    if layout.num_controls != len(controls):
        raise ValueError(f"attach_controls: the layout was resolved for {layout.num_controls} controls, "
                         f"{len(controls)} given")
    warnings = list(fit_warnings) + list(layout.warnings)
    for c, _ in layout.siglip.weights:
        if controls[c].image_embeds is None:
            warnings.append(f"SigLIP source {'start' if c == 0 else f'control {c}'} has no embedding (no CLIP vision "
                            f"connected to its FramePackEncodeImage): the model runs without image tokens, which "
                            f"FramePack was not trained for")
            break
    for s in layout.clean:
        if s.kind == "control" and not s.mask and controls[s.control].mask is not None:
            warnings.append(f"{s.label}'s mask is not applied (as in {layout.preset})")
    return FramePackLayout(options=options, layouts=(dataclasses.replace(layout, warnings=warnings),),
                           controls=tuple(controls))


def build_layout(controls: Sequence[Control], options: LayoutOptions | None = None, **fields) -> FramePackLayout:
    """Resolve for `controls` (already fitted to one size) and attach them: a FRAMEPACK_LAYOUT in one call."""
    options = options if options is not None else LayoutOptions(**fields)
    check_controls(controls)
    return attach_controls(options, resolve_layout(len(controls), options), controls)


def sweep_layout(layout: FramePackLayout, vary: str, values: Sequence[int]) -> FramePackLayout:
    """`layout` re-resolved once per value of `vary` (latent_window_size or target_index), same controls."""
    if vary not in SWEEPABLE:
        raise LayoutError("vary", f"is {vary!r}; allowed: {', '.join(SWEEPABLE)}")
    if not values:
        raise LayoutError("values", "is empty: give a list such as \"5,9,13\"")
    if not is_layout(layout) or layout.is_sweep:
        raise LayoutError("layout", "must be a single layout (not a sweep) to sweep")
    lo, hi = (1, MAX_WINDOW) if vary == "latent_window_size" else (0, MAX_INDEX)
    layouts = []
    for v in values:
        if not lo <= int(v) <= hi:
            raise LayoutError("values", f"has {vary}={v} out of range {lo}..{hi}")
        options = dataclasses.replace(layout.options, **{vary: int(v)})
        layouts.append(resolve_layout(layout.layouts[0].num_controls, options))
    return FramePackLayout(options=layout.options, layouts=tuple(layouts), vary=vary,
                           values=tuple(int(v) for v in values), controls=layout.controls)


# ------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------


def mask_to_latent(mask: torch.Tensor, latent_h: int, latent_w: int) -> torch.Tensor:
    """(B, H, W) mask in 0..1 -> (B, 1, 1, h, w), as musubi does it (spec section 1 step 5):
    grey 8-bit image (PIL mode "L"), resized to the latent size with PIL's LANCZOS filter, / 255."""
    import numpy as np
    from PIL import Image

    out = []
    for m in mask.detach().float().cpu().clamp(0, 1):
        img = Image.fromarray(np.round(m.numpy() * 255.0).astype(np.uint8), mode="L")
        img = img.resize((latent_w, latent_h), Image.LANCZOS)
        out.append(torch.from_numpy(np.array(img)).float() / 255.0)
    return torch.stack(out)[:, None, None]


# ------------------------------------------------------------------------------------------------
# Model inputs
# ------------------------------------------------------------------------------------------------


def _rows(t: torch.Tensor, rows: list[int]) -> torch.Tensor:
    if t.shape[0] == 1:
        return t.expand(len(rows), *t.shape[1:])
    return t[rows]


def check_control_batches(controls: Sequence[Control]) -> int:
    """Every control must have batch 1 or the start's batch; returns the start batch."""
    if not controls or controls[0] is None:
        raise LayoutError("start", "is missing: connect a FramePackEncodeImage output as the start image")
    b = controls[0].batch
    for i, c in enumerate(controls[1:], 1):
        if c.batch not in (1, b):
            raise LayoutError("controls", f"control {i} has a batch of {c.batch} images but the start has {b}; "
                                          f"use one image or as many as the start")
    return b


def check_controls(controls: Sequence[Control]) -> int:
    """Controls must share latent size and have batch 1 or the start's batch; returns the start batch."""
    b = check_control_batches(controls)
    hw = controls[0].latent_hw
    for i, c in enumerate(controls[1:], 1):
        if c.latent_hw != hw:
            raise LayoutError("controls", f"control {i} has latent size {c.latent_hw} but the start has {hw}; "
                                          f"fit it to the start's size first")
    return b


def layout_model_inputs(layout: FramePackLayout, batch_size: int, device=None,
                        dtype: torch.dtype = torch.float32) -> tuple[dict, list[int]]:
    """The transformer's keyword inputs for `layout` (spec section 1) and each sample's seed offset.

    `layout_model_inputs(layout, batch_size, device=None, dtype=torch.float32) -> (inputs, seed_offsets)`.
    The batch is values x start-image batch x batch_size samples, ordered value-major, then start
    image, then seed; `seed_offsets[j] = j % (start batch x batch_size)`, so every value of a sweep
    repeats the same seeds. `inputs` holds latent_indices, clean_latents, clean_latent_indices,
    clean_latents_2x, clean_latent_2x_indices, clean_latents_4x, clean_latent_4x_indices and
    image_embeds; index tensors are (B, k) per sample for a layout of several values, 1-D (shared)
    for one; a group that is absent is None.
    """
    if not is_layout(layout):
        raise TypeError(f"layout_model_inputs needs a FRAMEPACK_LAYOUT (FramePackLayout), got {type(layout).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; allowed: 1 or more")
    controls = layout.controls
    if not controls:
        raise ValueError("layout_model_inputs: the layout carries no controls (attach_controls / build_layout)")
    per = check_controls(controls) * batch_size
    total = len(layout.layouts) * per
    per_sample = [layout.layouts[j // per] for j in range(total)]
    rows = [(j % per) // batch_size for j in range(total)]
    inputs = _model_inputs(per_sample, len(layout.layouts) > 1, controls, rows, device, dtype)
    return inputs, [j % per for j in range(total)]


def _model_inputs(layouts: list[OneFrameLayout], per_sample: bool, controls: Sequence[Control], rows: list[int],
                  device, dtype: torch.dtype) -> dict:
    """The keyword inputs for one layout per sample (`per_sample`: (B, k) indices; else all share layouts[0])."""
    first = layouts[0]
    for lay in layouts[1:]:
        same = ([s.kind for s in lay.clean] == [s.kind for s in first.clean]
                and [s.control for s in lay.clean] == [s.control for s in first.clean]
                and lay.clean_2x.frames == first.clean_2x.frames and lay.clean_4x.frames == first.clean_4x.frames)
        if not same:
            raise ValueError("layouts batched together must place the same latents (only indices may differ)")
    batch = len(rows)
    h, w = controls[0].latent_hw
    device = device if device is not None else controls[0].latent.device
    zeros = lambda k: torch.zeros(batch, 16, k, h, w, device=device, dtype=dtype)  # noqa: E731

    def idx(values_per_layout: list[list[int]]):
        if per_sample:
            return torch.tensor(values_per_layout, dtype=torch.long, device=device)
        return torch.tensor(values_per_layout[0], dtype=torch.long, device=device)

    frames = []
    for slot in first.clean:
        if slot.kind == "control" and slot.control < len(controls):
            c = controls[slot.control]
            lat = _rows(c.latent, rows).to(device=device, dtype=dtype)
            if slot.mask and c.mask is not None:
                lat = lat * _rows(c.mask, rows).to(device=device, dtype=dtype)
            frames.append(lat)
        else:
            frames.append(zeros(1))
    out = {
        "latent_indices": idx([[lay.target_index] for lay in layouts]),
        "clean_latents": torch.cat(frames, dim=2),
        "clean_latent_indices": idx([lay.clean_indices for lay in layouts]),
        "clean_latents_2x": None, "clean_latent_2x_indices": None,
        "clean_latents_4x": None, "clean_latent_4x_indices": None,
    }
    if first.clean_2x.present:
        out["clean_latents_2x"] = zeros(first.clean_2x.frames)
        out["clean_latent_2x_indices"] = idx([list(lay.clean_2x.indices) for lay in layouts])
    if first.clean_4x.present:
        out["clean_latents_4x"] = zeros(first.clean_4x.frames)
        out["clean_latent_4x_indices"] = idx([list(lay.clean_4x.indices) for lay in layouts])
    out["image_embeds"] = siglip_embeds(first.siglip, controls, rows, device, dtype)
    return out


def siglip_embeds(siglip: Siglip, controls: Sequence[Control], rows: Sequence[int], device=None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """The weighted SigLIP embedding per sample, or None (no weights, or no embedding encoded)."""
    total = None
    for c, weight in siglip.weights:
        emb = controls[c].image_embeds if c < len(controls) else None
        if emb is None:
            return None
        e = _rows(emb, list(rows)).to(device=device, dtype=torch.float32) * weight
        total = e if total is None else total + e
    return None if total is None else total.to(dtype)
