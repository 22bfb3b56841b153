"""LoRA nodes: apply FramePack LoRAs through ComfyUI's ModelPatcher and expose what their header says."""
from __future__ import annotations

import logging
import os

import folder_paths
from comfy_api.latest import io

from ..framepack_core import lora as fp_lora
from ..framepack_core import lora_metadata
from ..framepack_core.comfy_model import require_framepack_model

LoraSettings = io.Custom("FRAMEPACK_LORA_SETTINGS")
STACK_SLOTS = 5
NONE = "None"

_SETTINGS_TOOLTIP = ("The one-frame settings this LoRA's file header records (target index, clean indices, no_post, "
                     "latent window size, training resolution; only what is really there). Connect it to "
                     "FramePackOneFrameLayout's lora_settings and pick preset 'from LoRA'.")
_INFO_TOOLTIP = ("What happened: how many weights each LoRA patched, keys that matched nothing, and what the "
                 "file's header holds.")


def _lora_names() -> list[str]:
    return folder_paths.get_filename_list("loras")


def _apply(model, lora_name: str, strength: float, node: str, input_name: str) -> fp_lora.AppliedLora:
    path = folder_paths.get_full_path_or_raise("loras", lora_name)
    return fp_lora.apply_lora(model, path, strength, lora_name, node=node, input_name=input_name)


def _file_stamp(lora_name: str):
    """Re-run when a LoRA file is replaced under the same name (ComfyUI caches by input values)."""
    path = folder_paths.get_full_path("loras", lora_name) if lora_name not in (None, NONE) else None
    try:
        stat = os.stat(path) if path else None
        return (lora_name, stat.st_mtime_ns, stat.st_size) if stat else (lora_name,)
    except OSError:
        return (lora_name,)


class FramePackLoraLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackLoraLoader",
            display_name="FramePack LoRA Loader",
            category="FramePack",
            description="Applies one LoRA to a FramePack model (musubi-tuner, diffusers/PEFT, LoHa, LoKr or "
                        "HunyuanVideo-named files). Chain several; removing one restores the base weights exactly.",
            inputs=[
                io.Model.Input("model", tooltip="A FramePack MODEL (from FramePackModelLoader or another LoRA node)."),
                io.Combo.Input("lora_name", options=_lora_names(),
                               tooltip="A LoRA file from ComfyUI's models/loras folder (sub-folders allowed)."),
                io.Float.Input("strength", default=1.0, min=fp_lora.STRENGTH_MIN, max=fp_lora.STRENGTH_MAX, step=0.01,
                               tooltip="How strongly the LoRA changes the model: W + strength·ΔW. 0 = off, "
                                       "negative values push the other way."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The model with this LoRA added (the input is unchanged)."),
                LoraSettings.Output(display_name="lora_settings", tooltip=_SETTINGS_TOOLTIP),
                io.String.Output(display_name="info", tooltip=_INFO_TOOLTIP),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, lora_name=None, **_):
        return _file_stamp(lora_name)

    @classmethod
    def execute(cls, model, lora_name: str, strength: float) -> io.NodeOutput:
        node = "FramePackLoraLoader"
        require_framepack_model(model, node)
        strength = fp_lora.check_strength(strength, node)
        patched = model.clone()
        applied = _apply(patched, lora_name, strength, node, "lora_name")
        info = applied.report.summary() + "\n" + applied.header
        return io.NodeOutput(patched, applied.settings, info)


def _stack_inputs() -> list:
    inputs = [io.Model.Input("model", tooltip="A FramePack MODEL (from FramePackModelLoader or another LoRA node).")]
    for i in range(1, STACK_SLOTS + 1):
        inputs += [
            io.Combo.Input(f"lora_name_{i}", options=[NONE] + _lora_names(), default=NONE,
                           tooltip=f"LoRA #{i} from models/loras, or None for an empty slot."),
            io.Float.Input(f"strength_{i}", default=1.0, min=fp_lora.STRENGTH_MIN, max=fp_lora.STRENGTH_MAX,
                           step=0.01, tooltip=f"Strength of LoRA #{i} (W + strength·ΔW)."),
            io.Boolean.Input(f"enabled_{i}", default=True, tooltip=f"Switch LoRA #{i} on or off without losing its settings."),
        ]
    return inputs


class FramePackLoraStack(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackLoraStack",
            display_name="FramePack LoRA Stack",
            category="FramePack",
            description=f"Applies up to {STACK_SLOTS} LoRAs to a FramePack model, each with its own strength and "
                        "on/off switch. LoRAs add up; the settings output is the one-frame recipe of the first enabled "
                        "LoRA whose header records one (never a mix of several LoRAs' recipes).",
            inputs=_stack_inputs(),
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The model with the enabled LoRAs added."),
                LoraSettings.Output(display_name="lora_settings", tooltip=_SETTINGS_TOOLTIP),
                io.String.Output(display_name="info", tooltip=_INFO_TOOLTIP),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, **slots):
        return tuple(_file_stamp(slots.get(f"lora_name_{i}")) for i in range(1, STACK_SLOTS + 1))

    @classmethod
    def execute(cls, model, **slots) -> io.NodeOutput:
        node = "FramePackLoraStack"
        require_framepack_model(model, node)
        chosen = []
        for i in range(1, STACK_SLOTS + 1):
            name = slots.get(f"lora_name_{i}", NONE)
            if name in (None, NONE) or not slots.get(f"enabled_{i}", True):
                continue
            chosen.append((i, name, fp_lora.check_strength(slots.get(f"strength_{i}", 1.0), node, f"strength_{i}")))
        patched = model.clone()
        lines, entries = [], []
        for i, name, strength in chosen:
            applied = _apply(patched, name, strength, node, f"lora_name_{i}")
            lines += [f"#{i} " + applied.report.summary(), applied.header]
            entries.append((name, applied.settings))
        settings, conflicts = lora_metadata.merge_settings(entries)
        for c in conflicts:
            logging.warning("%s: settings conflict: %s", node, c)
            lines.append("WARNING settings conflict: " + c)
        if not chosen:
            lines.append("no LoRA enabled; the model is unchanged")
        return io.NodeOutput(patched, settings, "\n".join(lines))


NODES = [FramePackLoraLoader, FramePackLoraStack]
