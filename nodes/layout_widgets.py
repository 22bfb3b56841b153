"""The layout node's widget vocabulary -> framepack_core.layout's typed options, and node-named errors.

Shared by the layout nodes (nodes/layout.py) and the preview route (nodes/web_routes.py), so the
drawing and the node parse the same way. The vocabulary: integer knobs at -1 = the preset's value;
`control_index` text "0;10" (';' or ','; empty = the preset's); toggles "preset" / "on" / "off";
`siglip_source` "preset", "start", "control N", "mix" (weights in `siglip_mix`, start first) or
"none"; the sweep's `values` "5,9,13". Everything else -- the rules, the range checks on typed
values -- is framepack_core.layout's; its LayoutError names the input and `node_error` adds the node
id (and, for the -1 knobs, that -1 is allowed too).
"""
from __future__ import annotations

import re

from ..framepack_core.layout import (
    KNOB_RANGES,
    MAX_CONTROLS,
    MAX_INDEX,
    LayoutError,
    LayoutOptions,
    OneFrameLayout,
    Siglip,
    check_indices,
    check_int,
    check_num_controls,
    check_preset,
    resolve_layout,
)

NODE = "FramePackOneFrameLayout"
SWEEP_NODE = "FramePackLayoutSweep"
TOGGLE_CHOICES = ("preset", "on", "off")
SIGLIP_CHOICES = ("preset", "start") + tuple(f"control {i}" for i in range(1, MAX_CONTROLS)) + ("mix", "none")
DEFAULT_KNOBS = tuple(KNOB_RANGES)  # the integer widgets, where -1 = the preset's value
TOGGLES = ("use_clean_latents_post", "use_clean_latents_2x", "use_clean_latents_4x")
WIDGETS = ("preset", "latent_window_size", "target_index", "control_index", "latent_index", "history_index",
           *TOGGLES, "siglip_source", "siglip_mix")


def node_error(node: str, error: LayoutError) -> LayoutError:
    """A core LayoutError as node `node` reports it: "<node>: input '<name>' ..."."""
    problem = error.problem
    if error.allowed_range is not None and error.input in DEFAULT_KNOBS:
        problem += " or -1 (preset default)"
    return error.at(node, problem)


def parse_index_list(text: str | None, name: str = "control_index") -> list[int]:
    """"0;10" (';' or ',' separated, spaces allowed) -> [0, 10]; "" / None -> []."""
    if text is None or not str(text).strip():
        return []
    values = []
    for part in re.split(r"[;,]", str(text).strip()):
        p = part.strip()
        if not re.fullmatch(r"[+-]?\d+", p):
            raise LayoutError(name, f"is malformed: {text!r}. Expected integers 0..{MAX_INDEX} separated "
                                    f"by ';' (or ','), e.g. \"0;10\"")
        values.append(int(p))
    return check_indices(name, values, shown=text)


def parse_toggle(name: str, value) -> bool | None:
    """'preset' -> None (the preset decides), 'on'/True -> True, 'off'/False -> False."""
    if value is None or value == "preset":
        return None
    if value is True or value == "on":
        return True
    if value is False or value == "off":
        return False
    raise LayoutError(name, f"is {value!r}; allowed: {', '.join(TOGGLE_CHOICES)}")


def parse_siglip(source, mix, num_controls: int) -> Siglip | None:
    """siglip_source / siglip_mix widgets -> Siglip (None = the preset decides). Whether a chosen control
    is connected is the core's check; the number of mix weights is checked here (it is about the text)."""
    if source in (None, "", "preset"):
        return None
    if source == "start":
        return Siglip(((0, 1.0),))
    if source == "none":
        return Siglip(())
    m = re.fullmatch(r"control (\d+)", str(source))
    if m:
        return Siglip(((int(m.group(1)), 1.0),))
    if source == "mix":
        text = (mix or "").strip()
        try:
            weights = [float(w) for w in re.split(r"[;,]", text) if w.strip()]
        except ValueError:
            raise LayoutError("siglip_mix", f"is malformed: {mix!r}. Expected one weight per control, start first, "
                                            f"e.g. \"0.7,0.3\"") from None
        if not weights:
            raise LayoutError("siglip_mix", "is empty but siglip_source is 'mix': give one weight per control, "
                                            "start first, e.g. \"0.7,0.3\"")
        if len(weights) > num_controls:
            raise LayoutError("siglip_mix", f"has {len(weights)} weights but only {num_controls} controls are "
                                            f"connected (start first)")
        return Siglip(tuple((i, w) for i, w in enumerate(weights) if w != 0.0))
    raise LayoutError("siglip_source", f"is {source!r}; allowed: preset, start, control N, mix, none")


def options_from_widgets(values: dict, num_controls: int, lora_settings: dict | None = None) -> LayoutOptions:
    """The layout node's widget values (missing or None = the widget's default; unknown keys ignored)
    -> LayoutOptions. Raises LayoutError without a node id."""
    v = {k: values[k] for k in WIDGETS if k in values and values[k] is not None}
    # The core checks these again; checking them first here keeps the order of the checks (the first
    # bad input is the one reported) what it is in resolve_layout, before the text is parsed.
    preset = check_preset(v.get("preset", "oichi"))
    check_num_controls(num_controls)
    knobs = {k: (None if v.get(k, -1) == -1 else check_int(k, v[k], *KNOB_RANGES[k])) for k in DEFAULT_KNOBS}
    return LayoutOptions(
        preset=preset,
        control_index=tuple(parse_index_list(v.get("control_index", ""))),
        **knobs,
        **{k: parse_toggle(k, v.get(k, "preset")) for k in TOGGLES},
        siglip_source=parse_siglip(v.get("siglip_source", "preset"), v.get("siglip_mix", ""), max(num_controls, 1)),
        lora_settings=lora_settings,
    )


def resolve_widgets(values: dict, num_controls: int, lora_settings: dict | None = None, node: str = NODE
                    ) -> tuple[LayoutOptions, OneFrameLayout]:
    """Widget values -> (options, resolved layout); errors as node `node` reports them."""
    try:
        options = options_from_widgets(values, num_controls, lora_settings)
        return options, resolve_layout(num_controls, options)
    except LayoutError as e:
        raise node_error(node, e) from None


def layout_from_widgets(values: dict, num_controls: int, lora_settings: dict | None = None,
                        node: str = NODE) -> OneFrameLayout:
    """The preview route's entry: the layout node's widget values -> the layout the node resolves."""
    return resolve_widgets(values, num_controls, lora_settings, node)[1]


def parse_sweep_values(text: str) -> list[int]:
    """The sweep's values text "5,9,13" (',' or ';') -> [5, 9, 13]."""
    text = (text or "").strip()
    if not text or not re.fullmatch(r"\s*[+-]?\d+(\s*[;,]\s*[+-]?\d+)*\s*", text):
        raise LayoutError("values", f"is malformed: {text!r}. Expected integers separated by ',' e.g. \"5,9,13\"")
    return [int(p) for p in re.split(r"[;,]", text)]
