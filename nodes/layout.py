"""FramePackOneFrameLayout (the configurator) and FramePackLayoutSweep (several layouts in one batch)."""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..framepack_core import layout as fp_layout
from ..framepack_core.encode import fit_controls
from . import layout_widgets as widgets

Control = io.Custom("FRAMEPACK_CONTROL")
Controls = io.Custom("FRAMEPACK_CONTROLS")
Layout = io.Custom("FRAMEPACK_LAYOUT")
LoraSettings = io.Custom("FRAMEPACK_LORA_SETTINGS")

_TOGGLE_TIP = ("preset = what the preset does; on / off = force it (unlike FramePack-eichi, the toggle really "
               "acts).")


class FramePackOneFrameLayout(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        presets = "; ".join(f"{k}: {v}" for k, v in fp_layout.PRESET_DESCRIPTIONS.items())
        return io.Schema(
            node_id="FramePackOneFrameLayout",
            display_name="FramePack One-Frame Layout",
            category="FramePack",
            description=(
                "Decides where every latent goes on FramePack's time axis for one-frame inference: the noisy "
                "target's index, the 1x clean latents (controls, zero post) with their indices and masks, the "
                "2x/4x groups and which image feeds SigLIP. Every knob at -1 / empty / 'preset' keeps the "
                "preset's value; the summary shows what is resolved. Controls of another size than the start are "
                "re-fitted to it."
            ),
            inputs=[
                Control.Input("start", optional=True,
                              tooltip="The start image (control 0), from FramePackEncodeImage. Leave it unconnected "
                              "for a layout of settings only, which the training dataset nodes apply to each "
                              "sample (the sampler needs a start image)."),
                Controls.Input("controls", optional=True,
                               tooltip="Further images (control 1, 2, ...) from a FramePackControlList chain: the "
                               "reference for kisekaeichi, the second condition for 1f-mc."),
                io.Combo.Input("preset", options=list(fp_layout.PRESETS), default="oichi",
                               tooltip="Starting point. " + presets),
                io.Int.Input("latent_window_size", default=-1, min=-1, max=fp_layout.MAX_WINDOW,
                             tooltip="lws (1..64; -1 = preset, 9). Moves the default target (lws), the zero post "
                             "(lws+1) and the 2x (lws+2, lws+3) / 4x (lws+4..lws+19) groups."),
                io.Int.Input("target_index", default=-1, min=-1, max=fp_layout.MAX_INDEX,
                             tooltip="RoPE time index of the frame being generated (-1 = preset). Canonical "
                             "default lws; kisekaeichi 1; eichi clamps to lws-1 and says so."),
                io.String.Input("control_index", default="",
                                tooltip="Indices of the 1x clean latents in order, e.g. \"0;10\" (';' or ','). "
                                "Overwrites the slots in order as far as there are slots, the zero post's "
                                "included. Empty = preset."),
                io.Int.Input("latent_index", default=-1, min=-1, max=fp_layout.MAX_INDEX,
                             tooltip="eichi vocabulary: index of the start image's clean latent (-1 = preset, 0)."),
                io.Int.Input("history_index", default=-1, min=-1, max=fp_layout.MAX_INDEX,
                             tooltip="eichi / kijai vocabulary: index of the reference (control 1) clean latent "
                             "(-1 = preset; eichi and kijai use 13)."),
                io.Combo.Input("use_clean_latents_post", options=list(widgets.TOGGLE_CHOICES), default="preset",
                               tooltip="The all-zero clean latent post at lws+1. " + _TOGGLE_TIP),
                io.Combo.Input("use_clean_latents_2x", options=list(widgets.TOGGLE_CHOICES), default="preset",
                               tooltip="Two zero frames at 2x compression, indices lws+2, lws+3. " + _TOGGLE_TIP),
                io.Combo.Input("use_clean_latents_4x", options=list(widgets.TOGGLE_CHOICES), default="preset",
                               tooltip="Sixteen zero frames at 4x compression, indices lws+4..lws+19. "
                               + _TOGGLE_TIP),
                io.Combo.Input("siglip_source", options=list(widgets.SIGLIP_CHOICES), default="preset",
                               tooltip="Which image's SigLIP embedding the model sees: preset (start; kijai mixes "
                               "0.7 start + 0.3 reference; PlusOne uses the first reference), start, control N, "
                               "mix (weights in siglip_mix) or none."),
                io.String.Input("siglip_mix", default="0.7,0.3",
                                tooltip="With siglip_source = mix: one weight per control, start first, e.g. "
                                "\"0.7,0.3\"."),
                LoraSettings.Input("lora_settings", optional=True,
                                   tooltip="A LoRA's training settings (FramePack LoRA Loader); applied with preset "
                                   "'from LoRA'."),
            ],
            outputs=[
                Layout.Output("layout", display_name="layout",
                              tooltip="The resolved layout with its controls, for the sampler."),
                io.String.Output("summary", display_name="summary", tooltip="What goes where, and any warnings."),
            ],
        )

    @classmethod
    def execute(cls, preset, latent_window_size, target_index, control_index, latent_index, history_index,
                use_clean_latents_post, use_clean_latents_2x, use_clean_latents_4x, siglip_source,
                siglip_mix="0.7,0.3", start=None, controls=None, lora_settings=None) -> io.NodeOutput:
        node = widgets.NODE
        if start is None and controls:
            raise fp_layout.LayoutError("start", "is not connected but 'controls' is: the start image is control 0; "
                                        "connect it too", node=node)
        given = [start] + list(controls or ()) if start is not None else []
        # Without pictures: the layout for the number of images the preset expects (settings only).
        count = len(given) or fp_layout.settings_only_count(preset)
        # Knobs first (pure checks), then the controls (re-fitting may run the VAE).
        options, resolved = widgets.resolve_widgets(
            dict(preset=preset, latent_window_size=latent_window_size, target_index=target_index,
                 control_index=control_index, latent_index=latent_index, history_index=history_index,
                 use_clean_latents_post=use_clean_latents_post, use_clean_latents_2x=use_clean_latents_2x,
                 use_clean_latents_4x=use_clean_latents_4x, siglip_source=siglip_source, siglip_mix=siglip_mix),
            count, lora_settings, node)
        if not given:
            layout = fp_layout.FramePackLayout(options=options, layouts=(resolved,), controls=())
            text = (resolved.summary() + f"\n(no start image: the settings for {count} image(s), as the training "
                    f"dataset nodes apply them to each sample; the sampler needs a start image)")
            return io.NodeOutput(layout, text, ui={**ui.PreviewText(text).as_dict(), "framepack_warnings": []})
        fitted, fit_warnings = fit_controls(given, node)
        layout = fp_layout.attach_controls(options, resolved, fitted, fit_warnings)
        text = layout.summary()
        # The drawing (js/framepack_layout.js) resolves the widgets through the preview route, which cannot
        # know the pictures' sizes; it shows these from the last run.
        return io.NodeOutput(layout, text, ui={**ui.PreviewText(text).as_dict(), "framepack_warnings": fit_warnings})


class FramePackLayoutSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackLayoutSweep",
            display_name="FramePack Layout Sweep",
            category="FramePack",
            description="FramePack-eichi's 'RoPE batch': the layout repeated for several values of "
                        "latent_window_size or target_index, run by the sampler as ONE batch (value by value, "
                        "batch_size seeds each).",
            inputs=[
                Layout.Input("layout", tooltip="A layout from FramePackOneFrameLayout."),
                io.Combo.Input("vary", options=list(fp_layout.SWEEPABLE), default="latent_window_size",
                               tooltip="Which input takes each value (the other knobs keep the layout's settings)."),
                io.String.Input("values", default="5,9,13",
                                tooltip="The values, separated by ',' e.g. \"5,9,13\"."),
            ],
            outputs=[
                Layout.Output("sweep", display_name="layout",
                              tooltip="The layouts, for the sampler (one image per value and seed)."),
                io.String.Output("summary", display_name="summary", tooltip="Every resolved layout."),
            ],
        )

    @classmethod
    def execute(cls, layout, vary, values) -> io.NodeOutput:
        node = widgets.SWEEP_NODE
        if not fp_layout.is_layout(layout) or layout.is_sweep:
            raise ValueError(f"{node}: input 'layout' must come from FramePackOneFrameLayout (not another sweep)")
        try:
            sweep = fp_layout.sweep_layout(layout, vary, widgets.parse_sweep_values(values))
        except fp_layout.LayoutError as e:
            raise widgets.node_error(node, e) from None
        text = sweep.summary()
        return io.NodeOutput(sweep, text, ui=ui.PreviewText(text))


NODES = [FramePackOneFrameLayout, FramePackLayoutSweep]
