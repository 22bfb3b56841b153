"""The one-frame layout: which latent goes where on FramePack's time axis.

One-frame inference denoises a single latent frame at a chosen RoPE time index (the *target*) while
the transformer attends to "clean" context latents, each at its own index, at three compressions
(1x, 2x, 4x). Every way this pack offers to configure that -- the presets, the canonical musubi-tuner
options, FramePack-eichi's vocabulary, the kijai / PlusOne compatibility modes and a LoRA's training
settings -- resolves to ONE object, `OneFrameLayout`. The sampler turns it into the transformer's
keyword inputs with `layout_model_inputs`; the layout node prints `summary()`; the browser draws
`to_dict()` (served by the `/framepack/layout_preview` route), so nobody re-implements the rules.

Reference semantics: `shared/spec/oneframe.md` sections 1-3. Short version of the canonical rules
(musubi-tuner, which one-frame LoRAs are trained against), with lws = latent_window_size:

1. target index = lws, or `target_index`;
2. 1x clean slots = the controls in order (an all-zero latent when there is none), each at index 0,
   plus -- unless the post is off -- one all-zero "post" latent at index 1 + lws;
3. a control's mask multiplies its latent;
4. `control_index` "a;b;c" overwrites the slot indices in order, as far as there are slots (it can
   overwrite the post's index too);
5. 2x group: two zero frames at [lws+2, lws+3]; 4x group: sixteen zero frames at lws+4 .. lws+19.

Controls are numbered as the layout node sees them: control 0 is the start image, control 1, 2, ...
the further images in the order of the control list.

This module is torch (+ PIL for the mask filter) only; it never imports ComfyUI.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

NODE = "FramePackOneFrameLayout"
MAX_WINDOW = 64
MAX_INDEX = 255

PRESETS = ("oichi", "kisekaeichi", "1f-mc", "eichi", "kijai", "plusone", "from LoRA")
TOGGLE_CHOICES = ("preset", "on", "off")
MAX_CONTROLS = 16
SIGLIP_CHOICES = ("preset", "start") + tuple(f"control {i}" for i in range(1, MAX_CONTROLS)) + ("mix", "none")

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
    """Bad layout input; the message names the node, the input and the allowed range or format."""


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
    """

    latent: torch.Tensor
    mask: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    vae: Any = None
    source_mask: torch.Tensor | None = None

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
    """The resolved one-frame layout (`FRAMEPACK_LAYOUT`); see the module docstring for the rules.

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
    options: dict = field(default_factory=dict)  # the resolve_layout arguments (for the sweep)
    controls: tuple[Control, ...] | None = None  # set by the layout node; not part of to_dict()

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

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.summary()


@dataclass
class LayoutSweep:
    """Several layouts run as one batch (the sweep node); `values` are the varied input's values."""

    layouts: list[OneFrameLayout]
    vary: str
    values: list[int]

    @property
    def controls(self) -> tuple[Control, ...] | None:
        """The controls every layout of the sweep places (the layout node's)."""
        return self.layouts[0].controls if self.layouts else None

    def summary(self) -> str:
        head = f"sweep over {self.vary}: {self.values} ({len(self.layouts)} layouts in one batch)"
        return head + "\n\n" + "\n\n".join(f"[{self.vary}={v}]\n{lay.summary()}"
                                          for v, lay in zip(self.values, self.layouts))


# ------------------------------------------------------------------------------------------------
# Parsing and checks
# ------------------------------------------------------------------------------------------------


def _err(node: str, name: str, msg: str) -> LayoutError:
    return LayoutError(f"{node}: input '{name}' {msg}")


def parse_index_list(text: str | Sequence[int] | None, name: str = "control_index", node: str = NODE) -> list[int]:
    """Parse "0;10" (';' or ',' separated, spaces allowed) into [0, 10]; "" / None -> [].

    Every entry must be an integer in 0..MAX_INDEX; anything else is a LayoutError naming `name`.
    """
    if text is None:
        return []
    if not isinstance(text, str):
        values = [int(v) for v in text]
    else:
        stripped = text.strip()
        if not stripped:
            return []
        parts = re.split(r"[;,]", stripped)
        values = []
        for part in parts:
            p = part.strip()
            if not re.fullmatch(r"[+-]?\d+", p):
                raise _err(node, name, f"is malformed: {text!r}. Expected integers 0..{MAX_INDEX} separated "
                                       f"by ';' (or ','), e.g. \"0;10\"")
            values.append(int(p))
    for v in values:
        if not 0 <= v <= MAX_INDEX:
            raise _err(node, name, f"has index {v} out of range 0..{MAX_INDEX} (got {text!r})")
    return values


def _check_int(node: str, name: str, value: int, lo: int, hi: int, allow_default: bool = True) -> None:
    if allow_default and value == -1:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        extra = " or -1 (preset default)" if allow_default else ""
        raise _err(node, name, f"is {value!r}; allowed range {lo}..{hi}{extra}")


def _toggle(node: str, name: str, value: str | bool | None) -> bool | None:
    """'preset' -> None (preset decides), 'on'/True -> True, 'off'/False -> False."""
    if value is None or value == "preset":
        return None
    if value is True or value == "on":
        return True
    if value is False or value == "off":
        return False
    raise _err(node, name, f"is {value!r}; allowed: {', '.join(TOGGLE_CHOICES)}")


def parse_siglip(node: str, source: str, mix: str, num_controls: int) -> Siglip | None:
    """siglip_source widget -> Siglip (None = the preset decides)."""
    if source in (None, "", "preset"):
        return None
    if source == "start":
        return Siglip(((0, 1.0),))
    if source == "none":
        return Siglip(())
    m = re.fullmatch(r"control (\d+)", source)
    if m:
        c = int(m.group(1))
        if c >= num_controls:
            raise _err(node, "siglip_source", f"is {source!r} but only controls 0..{num_controls - 1} are connected "
                                              f"(0 = start)")
        return Siglip(((c, 1.0),))
    if source == "mix":
        text = (mix or "").strip()
        try:
            weights = [float(w) for w in re.split(r"[;,]", text) if w.strip()]
        except ValueError:
            raise _err(node, "siglip_mix", f"is malformed: {mix!r}. Expected one weight per control, start first, "
                                           f"e.g. \"0.7,0.3\"") from None
        if not weights:
            raise _err(node, "siglip_mix", "is empty but siglip_source is 'mix': give one weight per control, "
                                           "start first, e.g. \"0.7,0.3\"")
        if len(weights) > num_controls:
            raise _err(node, "siglip_mix", f"has {len(weights)} weights but only {num_controls} controls are "
                                           f"connected (start first)")
        return Siglip(tuple((i, w) for i, w in enumerate(weights) if w != 0.0))
    raise _err(node, "siglip_source", f"is {source!r}; allowed: preset, start, control N, mix, none")


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

EICHI_DEFAULTS = dict(target=1, latent_index=0, history_index=13, post=True, g2x=True, g4x=True)
KIJAI_DEFAULTS = dict(target=1, history_index=13, reference_weight=0.3)
PLUSONE_DEFAULTS = dict(target=5, control_index=[0, 10])


def resolve_layout(
    num_controls: int,
    preset: str = "oichi",
    latent_window_size: int = -1,
    target_index: int = -1,
    control_index: str = "",
    latent_index: int = -1,
    history_index: int = -1,
    use_clean_latents_post: str = "preset",
    use_clean_latents_2x: str = "preset",
    use_clean_latents_4x: str = "preset",
    siglip_source: str = "preset",
    siglip_mix: str = "",
    lora_settings: dict | None = None,
    node: str = NODE,
) -> OneFrameLayout:
    """The layout node's widgets -> OneFrameLayout.

    Integer knobs at -1, an empty control_index and toggles at "preset" mean "the preset's default";
    any other value overrides the preset (the summary shows the resolved values). `num_controls`
    counts the start image (control 0) and every further control.
    """
    options = dict(preset=preset, latent_window_size=latent_window_size, target_index=target_index,
                   control_index=control_index, latent_index=latent_index, history_index=history_index,
                   use_clean_latents_post=use_clean_latents_post, use_clean_latents_2x=use_clean_latents_2x,
                   use_clean_latents_4x=use_clean_latents_4x, siglip_source=siglip_source, siglip_mix=siglip_mix,
                   lora_settings=lora_settings)
    if preset not in PRESETS:
        raise _err(node, "preset", f"is {preset!r}; allowed: {', '.join(PRESETS)}")
    if not 0 <= num_controls <= MAX_CONTROLS:
        raise _err(node, "controls", f"has {num_controls} controls; allowed 0..{MAX_CONTROLS} (start included; "
                   "0 = no picture yet, as in the preview, which places one zero latent)")
    _check_int(node, "latent_window_size", latent_window_size, 1, MAX_WINDOW)
    _check_int(node, "target_index", target_index, 0, MAX_INDEX)
    _check_int(node, "latent_index", latent_index, 0, MAX_INDEX)
    _check_int(node, "history_index", history_index, 0, MAX_INDEX)
    ci = parse_index_list(control_index, "control_index", node)
    post_t = _toggle(node, "use_clean_latents_post", use_clean_latents_post)
    t2x = _toggle(node, "use_clean_latents_2x", use_clean_latents_2x)
    t4x = _toggle(node, "use_clean_latents_4x", use_clean_latents_4x)
    siglip = parse_siglip(node, siglip_source, siglip_mix, max(num_controls, 1))

    warnings: list[str] = []
    n = num_controls
    lws = 9 if latent_window_size == -1 else latent_window_size
    pick = lambda knob, default: default if knob is None else knob  # noqa: E731

    if lora_settings is not None and preset != "from LoRA":
        warnings.append(f"lora_settings are connected but preset is '{preset}': they are not applied "
                        f"(choose preset 'from LoRA' to use the LoRA's training layout)")

    if preset in CANONICAL_PRESETS or preset == "from LoRA":
        if preset == "from LoRA":
            d = _lora_defaults(lora_settings, n, warnings, node)
            if latent_window_size == -1:
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
        target = d["target"] if target_index == -1 else target_index
        target = lws if target is None else target
        slots = canonical_slots(n, lws, post)
        # A LoRA's clean indices are applied like musubi's control_index (in order, as far as there are
        # slots): the training recipes [0] / [0, 1] / [0, 10] + no_post then give the trained layout.
        name = "the LoRA's clean_indices" if preset == "from LoRA" else f"{preset} control_index"
        slots = overwrite_indices(slots, d["control_index"], warnings, name)
        slots = overwrite_indices(slots, ci, warnings)
        if latent_index != -1:
            slots = _set_control_index(slots, 0, latent_index, "latent_index", warnings)
        if history_index != -1:
            slots = _set_control_index(slots, 1, history_index, "history_index", warnings)
        default_siglip = Siglip(((0, 1.0),))

    elif preset == "eichi":
        d = EICHI_DEFAULTS
        post, g2x, g4x = pick(post_t, d["post"]), pick(t2x, d["g2x"]), pick(t4x, d["g4x"])
        target = d["target"] if target_index == -1 else target_index
        if target > lws - 1:
            warnings.append(f"target_index {target} clamped to {lws - 1} (eichi allows 0..latent_window_size-1)")
            target = lws - 1
        li = d["latent_index"] if latent_index == -1 else latent_index
        hi = d["history_index"] if history_index == -1 else history_index
        slots = [CleanSlot("control", li, control=0, mask=True)] if n >= 1 else [CleanSlot("zero", li)]
        if n >= 2:
            slots.append(CleanSlot("control", hi, control=1, mask=True))
        elif history_index != -1:
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
            target = d["target"] if target_index == -1 else target_index
            if target > 8:
                warnings.append(f"target_index {target} is outside kijai's range 0..8")
            hi = d["history_index"] if history_index == -1 else history_index
            if hi > 16:
                warnings.append(f"history_index {hi} is outside kijai's range 0..16")
            # kijai's reference_mask branch is broken: the reference's mask never applies there.
            slots = [CleanSlot("control", 0, control=0, mask=True), CleanSlot("control", hi, control=1, mask=False)]
            if n > 2:
                warnings.append(f"kijai uses the start image and one reference; controls 2..{n - 1} are ignored")
            w_ref = d["reference_weight"]
            default_siglip = Siglip(((0, 1.0 - w_ref), (1, w_ref)))
        else:
            target = lws - 1 if target_index == -1 else target_index
            if target_index != -1:
                warnings.append("target_index given: kijai's normal mode always uses latent_window_size-1")
            if history_index != -1:
                warnings.append("history_index given but no reference control is connected; ignored")
            slots = canonical_slots(n, lws, post=False)
            default_siglip = Siglip(((0, 1.0),))
        if post:
            slots.append(CleanSlot("post", 1 + lws))
        if latent_index != -1:
            slots = _set_control_index(slots, 0, latent_index, "latent_index", warnings)
        slots = overwrite_indices(slots, ci, warnings)
        if latent_window_size != -1 and (lws > 33 or lws < 1):
            warnings.append(f"latent_window_size {lws} is outside kijai's range 1..33")

    else:  # plusone
        d = PLUSONE_DEFAULTS
        kise = n >= 2
        g2x, g4x = pick(t2x, False), pick(t4x, False)
        for name, val in (("use_clean_latents_2x", t2x), ("use_clean_latents_4x", t4x)):
            if val:
                warnings.append(f"{name}=on departs from PlusOne's sampler (which never adds it)")
        if latent_window_size != -1 and lws > 33:
            warnings.append(f"latent_window_size {lws} is outside PlusOne's range 1..33")
        if kise:
            post = pick(post_t, True)
            if post_t is False:
                warnings.append("use_clean_latents_post=off departs from PlusOne (which always adds the zero post)")
            target = d["target"] if target_index == -1 else target_index
            if target > 16:
                warnings.append(f"target_index {target} is outside PlusOne's range 0..16")
            if n > 9:
                warnings.append(f"PlusOne takes at most 8 references; {n - 1} are connected")
            slots = canonical_slots(n, lws, post)
            slots = overwrite_indices(slots, d["control_index"] if not ci else ci, warnings)
            default_siglip = Siglip(((1, 1.0),))  # PlusOne feeds the first reference's embedding
        else:
            post = pick(post_t, False)
            target = lws - 1 if target_index == -1 else target_index
            if target_index != -1:
                warnings.append("target_index given: PlusOne's normal mode always uses latent_window_size-1")
            slots = canonical_slots(n, lws, post)
            slots = overwrite_indices(slots, ci, warnings)
            default_siglip = Siglip(((0, 1.0),))
        if latent_index != -1:
            slots = _set_control_index(slots, 0, latent_index, "latent_index", warnings)
        if history_index != -1:
            slots = _set_control_index(slots, 1, history_index, "history_index", warnings)

    if n == 0:
        warnings.append("no control connected: the start slot is an all-zero latent")
    layout = OneFrameLayout(
        preset=preset, latent_window_size=lws, target_index=target, clean=tuple(slots),
        clean_2x=group_2x(lws) if g2x else Group(), clean_4x=group_4x(lws) if g4x else Group(),
        siglip=siglip if siglip is not None else default_siglip, num_controls=n, warnings=warnings,
        options=options,
    )
    for c, _ in layout.siglip.weights:
        if c >= max(n, 1):
            warnings.append(f"SigLIP source control {c} is not connected; the start image's embedding is used")
            layout.siglip = Siglip(((0, 1.0),))
            break
    _check_common(layout, causal=preset in ("eichi", "kijai") or history_index != -1)
    return layout


def _lora_defaults(settings: dict | None, n: int, warnings: list[str], node: str) -> dict:
    """FRAMEPACK_LORA_SETTINGS (a plain dict; any key may be missing) -> canonical preset defaults."""
    if settings is None:
        raise _err(node, "lora_settings", "is not connected but preset is 'from LoRA': connect the LoRA "
                                          "loader's settings output or pick another preset")
    if not isinstance(settings, dict):
        raise _err(node, "lora_settings", f"must be a dict of LoRA training settings, got {type(settings).__name__}")
    defaults = {"latent_window_size": 9, "target_index": None, "clean_indices": [0], "no_post": False,
                "no_2x": False, "no_4x": False}
    missing = [k for k in defaults if settings.get(k) is None]
    if missing:
        warnings.append(f"LoRA settings have no {', '.join(missing)}; using musubi-tuner's defaults for them")
    lws = settings.get("latent_window_size") or 9
    _check_int(node, "lora_settings.latent_window_size", int(lws), 1, MAX_WINDOW, allow_default=False)
    target = settings.get("target_index")
    if target is not None:
        _check_int(node, "lora_settings.target_index", int(target), 0, MAX_INDEX, allow_default=False)
    clean = parse_index_list(settings.get("clean_indices") or [0], "lora_settings.clean_indices", node)
    return dict(lws=int(lws), target=None if target is None else int(target), control_index=clean,
                post=not bool(settings.get("no_post", False)), g2x=not bool(settings.get("no_2x", False)),
                g4x=not bool(settings.get("no_4x", False)))


WIDGETS = ("preset", "latent_window_size", "target_index", "control_index", "latent_index", "history_index",
           "use_clean_latents_post", "use_clean_latents_2x", "use_clean_latents_4x", "siglip_source", "siglip_mix")


def layout_from_widgets(values: dict, num_controls: int, lora_settings: dict | None = None) -> OneFrameLayout:
    """The preview route's entry: the layout node's widget values (unknown keys ignored) -> layout."""
    kwargs = {k: values[k] for k in WIDGETS if k in values and values[k] is not None}
    return resolve_layout(num_controls, lora_settings=lora_settings, **kwargs)


def sweep_layouts(layout: OneFrameLayout, vary: str, values: Sequence[int], node: str = "FramePackLayoutSweep"
                  ) -> LayoutSweep:
    """Re-resolve `layout`'s options once per value of `vary` (latent_window_size or target_index)."""
    if vary not in ("latent_window_size", "target_index"):
        raise _err(node, "vary", f"is {vary!r}; allowed: latent_window_size, target_index")
    if not values:
        raise _err(node, "values", "is empty: give a list such as \"5,9,13\"")
    if not layout.options:
        raise _err(node, "layout", "was not made by FramePackOneFrameLayout (it has no options to vary)")
    layouts = []
    for v in values:
        opts = dict(layout.options)
        opts[vary] = int(v)
        lo, hi = (1, MAX_WINDOW) if vary == "latent_window_size" else (0, MAX_INDEX)
        if not lo <= int(v) <= hi:
            raise _err(node, "values", f"has {vary}={v} out of range {lo}..{hi}")
        layouts.append(dataclasses.replace(resolve_layout(layout.num_controls, node=node, **opts),
                                           controls=layout.controls))
    return LayoutSweep(layouts=layouts, vary=vary, values=[int(v) for v in values])


def parse_sweep_values(text: str, node: str = "FramePackLayoutSweep") -> list[int]:
    text = (text or "").strip()
    if not text or not re.fullmatch(r"\s*[+-]?\d+(\s*[;,]\s*[+-]?\d+)*\s*", text):
        raise _err(node, "values", f"is malformed: {text!r}. Expected integers separated by ',' e.g. \"5,9,13\"")
    return [int(p) for p in re.split(r"[;,]", text)]


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


def check_control_batches(controls: Sequence[Control], node: str = NODE) -> int:
    """Every control must have batch 1 or the start's batch; returns the start batch."""
    if not controls or controls[0] is None:
        raise _err(node, "start", "is missing: connect a FramePackEncodeImage output as the start image")
    b = controls[0].batch
    for i, c in enumerate(controls[1:], 1):
        if c.batch not in (1, b):
            raise _err(node, "controls", f"control {i} has a batch of {c.batch} images but the start has {b}; "
                                         f"use one image or as many as the start")
    return b


def check_controls(controls: Sequence[Control], node: str = NODE) -> int:
    """Controls must share latent size and have batch 1 or the start's batch; returns the start batch."""
    b = check_control_batches(controls, node)
    hw = controls[0].latent_hw
    for i, c in enumerate(controls[1:], 1):
        if c.latent_hw != hw:
            raise _err(node, "controls", f"control {i} has latent size {c.latent_hw} but the start has {hw}; "
                                         f"fit it to the start's size first")
    return b


def attach_controls(layout: OneFrameLayout, controls: Sequence[Control], fit_warnings: Sequence[str] = ()
                    ) -> OneFrameLayout:
    """`layout` carrying `controls` (the layout node's output), with the warnings only the controls
    can tell: re-fits, a SigLIP source without an embedding, masks the preset leaves unapplied."""
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
    return dataclasses.replace(layout, controls=tuple(controls), warnings=warnings)


def layout_controls(layout) -> tuple[Control, ...] | None:
    """The controls a layout or a sweep carries from the layout node; None for anything else
    (duck-typed like `as_layout_list`)."""
    if hasattr(layout, "layouts") or (hasattr(layout, "clean") and hasattr(layout, "target_index")):
        return getattr(layout, "controls", None)
    return None


def as_layout_list(layout) -> list[OneFrameLayout]:
    """A layout, a sweep or a sequence of layouts -> list of layouts.

    Duck-typed on purpose: ComfyUI may load this package under a second module name, whose
    classes are not the ones a caller imported.
    """
    if hasattr(layout, "layouts"):
        return list(layout.layouts)
    if hasattr(layout, "clean") and hasattr(layout, "target_index"):
        return [layout]
    return list(layout)


def layout_model_inputs(layout: OneFrameLayout | LayoutSweep | Sequence[OneFrameLayout],
                        controls: Sequence[Control], batch: int, rows: Sequence[int] | None = None,
                        device=None, dtype: torch.dtype = torch.float32) -> dict:
    """The transformer's keyword inputs for a batch of `batch` samples (spec section 1).

    `layout` is one layout (shared by the batch) or one per sample (a sweep): then indices are
    (B, k) per sample. `rows[j]` says which image of a control's batch sample j uses (default: all
    samples share image 0 when controls have batch 1, else j * start_batch // batch).
    Returns latent_indices, clean_latents, clean_latent_indices, clean_latents_2x,
    clean_latent_2x_indices, clean_latents_4x, clean_latent_4x_indices and image_embeds.
    """
    layouts = as_layout_list(layout)
    per_sample = len(layouts) > 1
    if per_sample and len(layouts) != batch:
        raise ValueError(f"{len(layouts)} layouts for a batch of {batch}")
    first = layouts[0]
    for lay in layouts[1:]:
        same = ([s.kind for s in lay.clean] == [s.kind for s in first.clean]
                and [s.control for s in lay.clean] == [s.control for s in first.clean]
                and lay.clean_2x.frames == first.clean_2x.frames and lay.clean_4x.frames == first.clean_4x.frames)
        if not same:
            raise ValueError("layouts batched together must place the same latents (only indices may differ)")
    if controls:
        start_batch = check_controls(controls)
        h, w = controls[0].latent_hw
        ref = controls[0].latent
    else:
        raise ValueError("layout_model_inputs needs at least the start control")
    if rows is None:
        rows = [j * start_batch // batch for j in range(batch)]
    rows = list(rows)
    device = device if device is not None else ref.device
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
