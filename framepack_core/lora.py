"""LoRA files for FramePack → ComfyUI weight patches.

How a LoRA reaches the model
----------------------------
A FramePack MODEL is a ComfyUI `ModelPatcher` whose weights are named
`diffusion_model.<diffusers key>` (e.g. `diffusion_model.transformer_blocks.0.attn.to_q.weight`).
This module only works out *which LoRA module belongs to which model weight* (a key map); ComfyUI's
own `comfy.lora.load_lora` then reads the tensors of each module (lora_up/lora_down/alpha,
lora_A/lora_B, LoHa `hada_*`, LoKr `lokr_*`, DoRA, diff…) into ComfyUI's weight adapters, and
`ModelPatcher.add_patches(patches, strength)` registers them. ComfyUI computes each patch in float32
when the weights are loaded, casts back to the weight dtype (stochastic rounding for fp8), and its
`unpatch_model` restores the saved original weights, so nothing is merged by hand here.

Names users bring, all matched separator-insensitively ('.' and '_' are ignored, so
`lora_unet_transformer_blocks_0_attn_to_q` and `transformer.transformer_blocks.0.attn.to_q` are the
same module), after trying the name as is and then without the prefixes `lora_unet_`,
`lora_transformer_`, `lycoris_`, `diffusion_model.`, `transformer.`, `base_model.model.`, …:

* musubi-tuner / kohya `lora_unet_<module path with '.' → '_'>` (scale alpha/rank, alpha absent → 1);
* diffusers / PEFT `transformer.<module>.lora_A.weight` / `lora_B.weight` (also `diffusion_model.`
  or no prefix; no alpha → scale 1);
* original HunyuanVideo names (`double_blocks.N.img_attn_qkv`, `single_blocks.N.linear1`, …, in
  Tencent's, diffusion-pipe's or ComfyUI's spelling). Where one original layer is several FramePack
  layers (fused q/k/v, single-block linear1 = q/k/v/mlp) the LoRA's *output-side* factor is cut
  into row blocks (`lora_up`/`lora_B`, LoHa `hada_w1_a`/`hada_w2_a`, LoKr `lokr_w1` when the
  Kronecker structure allows, DoRA scale) — an exact split, since the rows of up @ down are the rows
  of up times down. ComfyUI's own offset patches, `(key, (dim, start, size))`, narrow the *model*
  weight to a slice — the case of a fused model and a split LoRA — so they do not apply here.

The header (the training settings a LoRA file records) is read by `lora_metadata.py`.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

import comfy.lora
import comfy.utils
import comfy.weight_adapter as weight_adapter

from .architecture import COMPATIBLE_FAMILIES, guess_architecture
from .lora_metadata import read_settings

log = logging.getLogger(__name__)

MODEL_PREFIX = "diffusion_model."
STRENGTH_MIN, STRENGTH_MAX = -10.0, 10.0

# ---------------------------------------------------------------------------------------------
# LoRA key anatomy: "<module name>.<tensor suffix>"
# ---------------------------------------------------------------------------------------------

# Tensor suffixes ComfyUI's comfy.lora.load_lora / comfy.weight_adapter read (longest first).
_SUFFIXES = sorted([
    ".lora_up.weight", ".lora_down.weight", ".lora_mid.weight",
    ".lora_A.weight", ".lora_B.weight", ".lora_A.default.weight", ".lora_B.default.weight",
    ".lora.up.weight", ".lora.down.weight", "_lora.up.weight", "_lora.down.weight",
    ".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight", ".lora_A", ".lora_B",
    ".alpha", ".dora_scale", ".reshape_weight",
    ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2",
    ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
    ".diff", ".diff_b", ".set_weight", ".w_norm", ".b_norm",
    ".oft_blocks", ".oft_diag", ".rescale", ".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight",
], key=len, reverse=True)

# Suffixes whose first axis is the layer's output rows (cut when one LoRA layer feeds several
# FramePack layers). Everything else of the module (down factors, alpha, …) is shared.
_ROW_SUFFIXES = {
    ".lora_up.weight", ".lora_B.weight", ".lora_B.default.weight", ".lora.up.weight", "_lora.up.weight",
    ".lora_linear_layer.up.weight", ".lora_B", ".hada_w1_a", ".hada_w2_a", ".dora_scale",
    ".diff", ".diff_b", ".set_weight",
}

# Name prefixes trainers put in front of the module path (compared without separators).
_PREFIXES = ("loraunet", "loratransformer", "lycoris", "lora", "modeldiffusionmodel", "diffusionmodel",
             "basemodelmodel", "transformer", "unet", "model")


def _norm(name: str) -> str:
    return re.sub(r"[._]", "", name).lower()


def split_lora_key(key: str) -> tuple[str, str] | None:
    """'lora_unet_x_y.lora_up.weight' → ('lora_unet_x_y', '.lora_up.weight'); None if unknown."""
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], suffix
    return None


# ---------------------------------------------------------------------------------------------
# The model's layers under every name a LoRA may use
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where one LoRA module lands: a model weight, or row blocks of several (fused names)."""
    parts: tuple[tuple[str, int, int], ...]  # (model weight key, first row, rows); rows -1 = whole
    original: str = ""  # e.g. "HunyuanVideo double_blocks.N.img_attn_qkv" for the report

    @property
    def fused(self) -> bool:
        return len(self.parts) > 1


def _hunyuan_aliases(shapes: dict[str, torch.Size]) -> dict[str, Target]:
    """Original HunyuanVideo layer names → FramePack (diffusers) layers, for the blocks present."""
    aliases: dict[str, Target] = {}

    def w(name):
        key = f"{MODEL_PREFIX}{name}.weight"
        return key if key in shapes else None

    def rows(key):
        return int(shapes[key][0])

    def fused(names, label):
        keys = [w(n) for n in names]
        if any(k is None for k in keys):
            return None
        parts, start = [], 0
        for k in keys:
            parts.append((k, start, rows(k)))
            start += rows(k)
        return Target(tuple(parts), label)

    def single(name, label):
        k = w(name)
        return Target(((k, 0, -1),), label) if k else None

    dual = sorted({int(m.group(1)) for k in shapes for m in [re.match(rf"{MODEL_PREFIX}transformer_blocks\.(\d+)\.", k)] if m})
    singles = sorted({int(m.group(1)) for k in shapes
                      for m in [re.match(rf"{MODEL_PREFIX}single_transformer_blocks\.(\d+)\.", k)] if m})
    for i in dual:
        b = f"transformer_blocks.{i}"
        table = {
            ("img_attn_qkv",): fused([f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v"], "img_attn_qkv"),
            ("txt_attn_qkv",): fused([f"{b}.attn.add_q_proj", f"{b}.attn.add_k_proj", f"{b}.attn.add_v_proj"],
                                     "txt_attn_qkv"),
            ("img_attn_proj",): single(f"{b}.attn.to_out.0", "img_attn_proj"),
            ("txt_attn_proj",): single(f"{b}.attn.to_add_out", "txt_attn_proj"),
            ("img_mlp_fc1", "img_mlp_0"): single(f"{b}.ff.net.0.proj", "img_mlp.fc1"),
            ("img_mlp_fc2", "img_mlp_2"): single(f"{b}.ff.net.2", "img_mlp.fc2"),
            ("txt_mlp_fc1", "txt_mlp_0"): single(f"{b}.ff_context.net.0.proj", "txt_mlp.fc1"),
            ("txt_mlp_fc2", "txt_mlp_2"): single(f"{b}.ff_context.net.2", "txt_mlp.fc2"),
            ("img_mod_linear", "img_mod_lin"): single(f"{b}.norm1.linear", "img_mod"),
            ("txt_mod_linear", "txt_mod_lin"): single(f"{b}.norm1_context.linear", "txt_mod"),
        }
        for names, target in table.items():
            if target is not None:
                for n in names:
                    aliases[_norm(f"double_blocks.{i}.{n}")] = Target(target.parts, f"double_blocks.{i}.{target.original}")
    for i in singles:
        b = f"single_transformer_blocks.{i}"
        table = {
            ("linear1",): fused([f"{b}.attn.to_q", f"{b}.attn.to_k", f"{b}.attn.to_v", f"{b}.proj_mlp"], "linear1"),
            ("linear2",): single(f"{b}.proj_out", "linear2"),
            ("modulation_linear", "modulation_lin"): single(f"{b}.norm.linear", "modulation"),
        }
        for names, target in table.items():
            if target is not None:
                for n in names:
                    aliases[_norm(f"single_blocks.{i}.{n}")] = Target(target.parts, f"single_blocks.{i}.{target.original}")
    return aliases


def build_target_table(shapes: dict[str, torch.Size]) -> dict[str, Target]:
    """Normalised module name → Target, for every weight of the model plus HunyuanVideo aliases."""
    table: dict[str, Target] = {}
    ambiguous: set[str] = set()
    for key in shapes:
        if key.startswith(MODEL_PREFIX) and key.endswith(".weight"):
            n = _norm(key[len(MODEL_PREFIX):-len(".weight")])
            if n in table:
                ambiguous.add(n)
            table[n] = Target(((key, 0, -1),))
    for n in ambiguous:  # cannot happen with FramePack's names; never guess if it ever does
        del table[n]
    for n, target in _hunyuan_aliases(shapes).items():
        table.setdefault(n, target)
    return table


def find_target(module: str, table: dict[str, Target]) -> Target | None:
    """The Target of a LoRA module name: as is, else with trainer prefixes stripped (shortest first)."""
    frontier = [_norm(module)]
    for _ in range(4):  # at most a few stacked prefixes, e.g. "base_model.model.transformer."
        for n in frontier:
            if n in table:
                return table[n]
        frontier = [n[len(p):] for n in frontier for p in _PREFIXES if n.startswith(p) and len(n) > len(p)]
        if not frontier:
            return None
    return None


# ---------------------------------------------------------------------------------------------
# LoRA → patches
# ---------------------------------------------------------------------------------------------

@dataclass
class LoraReport:
    """What applying one LoRA did, for the node's `info` output and the log."""
    name: str
    strength: float = 1.0
    total_keys: int = 0
    patched: dict[str, int] = field(default_factory=dict)  # adapter kind → number of model weights
    modules: int = 0  # LoRA modules used
    unmatched: list[str] = field(default_factory=list)  # LoRA keys that reached no model weight
    shape_mismatch: list[str] = field(default_factory=list)
    fused: int = 0  # modules with HunyuanVideo fused names that were split
    family: str | None = None
    family_reason: str = ""
    naming: str = ""

    @property
    def weights_patched(self) -> int:
        return sum(self.patched.values())

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.patched.items())) or "nothing"
        lines = [f"{self.name} (strength {self.strength:g}): patched {self.weights_patched} weights from "
                 f"{self.modules} LoRA modules ({kinds}); names: {self.naming or 'unknown'}"]
        if self.fused:
            lines.append(f"  {self.fused} fused HunyuanVideo layers split onto FramePack's separate q/k/v/mlp weights")
        if self.family == "HunyuanVideo":
            lines.append(f"  note: this looks like a LoRA for HunyuanVideo ({self.family_reason}); FramePack is a "
                         "fine-tuned HunyuanVideo, so it applies, but it was not trained on FramePack")
        elif self.family and self.family != "FramePack":
            lines.append(f"  note: this looks like a LoRA for {self.family} ({self.family_reason})")
        if self.unmatched:
            shown = ", ".join(self.unmatched[:8]) + (" …" if len(self.unmatched) > 8 else "")
            lines.append(f"  WARNING: {len(self.unmatched)} of {self.total_keys} keys matched no FramePack weight: {shown}")
        if self.shape_mismatch:
            shown = ", ".join(self.shape_mismatch[:5]) + (" …" if len(self.shape_mismatch) > 5 else "")
            lines.append(f"  WARNING: {len(self.shape_mismatch)} modules skipped, sizes differ from the model: {shown}")
        return "\n".join(lines)


def _slice_module(module: str, tensors: dict[str, torch.Tensor], parts, total_rows: int) -> list[dict[str, torch.Tensor]]:
    """Cut one fused LoRA module into row blocks, one tensor dict (suffix → tensor) per part."""
    out = []
    for _, start, size in parts:
        sub = {}
        for suffix, t in tensors.items():
            if suffix in _ROW_SUFFIXES and t.ndim >= 1 and t.shape[0] == total_rows:
                sub[suffix] = t.narrow(0, start, size)
            elif suffix in (".lokr_w1", ".lokr_w1_a"):
                w2_rows = _lokr_w2_rows(tensors)
                if w2_rows is None or start % w2_rows or size % w2_rows:
                    return []  # the Kronecker product cannot be cut here
                sub[suffix] = t.narrow(0, start // w2_rows, size // w2_rows)
            else:
                sub[suffix] = t
        out.append(sub)
    return out


def _lokr_w2_rows(tensors) -> int | None:
    if ".lokr_w2" in tensors:
        return int(tensors[".lokr_w2"].shape[0])
    if ".lokr_w2_a" in tensors and ".lokr_t2" not in tensors:
        return int(tensors[".lokr_w2_a"].shape[0])
    return None


def _delta_shape(patch) -> tuple[int, int] | None:
    """(rows, numel of one row) of the weight change a ComfyUI patch makes, when knowable."""
    try:
        return _adapter_delta_shape(patch)
    except (AttributeError, IndexError, TypeError, ValueError):  # an adapter layout this code does not know
        return None


def _adapter_delta_shape(patch) -> tuple[int, int] | None:
    if isinstance(patch, weight_adapter.LoRAAdapter):
        up, down = patch.weights[0], patch.weights[1]
        if patch.weights[3] is not None or patch.weights[5] is not None:
            return None  # conv (mid) or reshape: not FramePack's Linear layers
        return int(up.shape[0]), int(math.prod(down.shape[1:]))
    if isinstance(patch, weight_adapter.LoHaAdapter):
        w1a, w1b = patch.weights[0], patch.weights[1]
        return (int(w1a.shape[0]), int(w1b.shape[1])) if patch.weights[5] is None else None
    if isinstance(patch, weight_adapter.LoKrAdapter):
        w1, w2, _, w1a, w1b, w2a, w2b, t2, _ = patch.weights
        s1 = tuple(w1.shape) if w1 is not None else (w1a.shape[0], w1b.shape[1])
        if t2 is not None:
            return None
        s2 = tuple(w2.shape) if w2 is not None else (w2a.shape[0], w2b.shape[1])
        if len(s1) != 2 or len(s2) != 2:
            return None
        return int(s1[0] * s2[0]), int(s1[1] * s2[1])
    if isinstance(patch, tuple) and len(patch) == 2 and patch[0] in ("diff", "set"):
        t = patch[1][0]
        return int(t.shape[0]), int(math.prod(t.shape[1:]))
    return None


def _kind(patch) -> str:
    if isinstance(patch, weight_adapter.WeightAdapterBase):
        return {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}.get(patch.name, patch.name)
    return patch[0] if isinstance(patch, tuple) else type(patch).__name__


def _naming(modules: list[str]) -> str:
    kinds = set()
    for m in modules:
        if m.startswith("lora_unet_"):
            kinds.add("musubi/kohya lora_unet_")
        elif m.startswith("transformer."):
            kinds.add("diffusers transformer.")
        elif m.startswith("diffusion_model."):
            kinds.add("diffusion_model.")
        elif m.startswith("lycoris_"):
            kinds.add("lycoris_")
        else:
            kinds.add("no prefix")
        if "double_blocks" in m or "single_blocks" in m:
            kinds.add("HunyuanVideo original layer names")
    return ", ".join(sorted(kinds))


def lora_to_patches(lora_sd: dict[str, torch.Tensor], model_shapes: dict[str, torch.Size], name: str = "LoRA",
                    metadata: dict[str, str] | None = None) -> tuple[dict[str, Any], LoraReport]:
    """Turn a LoRA state dict into {model weight key: ComfyUI patch} for `ModelPatcher.add_patches`.

    `model_shapes` maps the MODEL's weight keys (`diffusion_model.…`) to their shapes. Nothing is
    raised here: the report says what matched, and `check_family` turns "nothing applies" or "made
    for another model" into the user's error.
    """
    report = LoraReport(name=name, total_keys=len(lora_sd))
    arch = guess_architecture(lora_sd, metadata, {k: tuple(v.shape) for k, v in lora_sd.items()})
    report.family, report.family_reason = arch.family, arch.reason
    table = build_target_table(model_shapes)

    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in lora_sd.items():
        split = split_lora_key(key)
        if split is None:
            report.unmatched.append(key)
            continue
        modules.setdefault(split[0], {})[split[1]] = tensor

    to_load: dict[str, str] = {}  # name in `source` → model weight key (ComfyUI's key_map)
    source: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}  # name in `source` → LoRA module, for the report
    claimed: set[str] = set()
    for module, tensors in modules.items():
        target = find_target(module, table)
        if target is None:
            report.unmatched.extend(module + s for s in tensors)
            continue
        if not target.fused:
            pieces = [(module, tensors, target.parts[0][0])]
        else:
            total = sum(size for _, _, size in target.parts)
            subs = _slice_module(module, tensors, target.parts, total)
            if not subs:
                log.warning("FramePack LoRA %s: %s is a fused layer whose factors cannot be split; skipped", name, module)
                report.unmatched.extend(module + s for s in tensors)
                continue
            pieces = [(f"{module}#{i}", sub, part[0]) for i, (sub, part) in enumerate(zip(subs, target.parts))]
            report.fused += 1
        for virtual, sub, model_key in pieces:
            if model_key in claimed:
                log.warning("FramePack LoRA %s: two modules target %s; the later one (%s) wins", name, model_key, module)
            to_load[virtual] = model_key
            claimed.add(model_key)
            origin[virtual] = module
            source.update({virtual + s: t for s, t in sub.items()})

    patches = comfy.lora.load_lora(source, to_load, log_missing=False)

    used_modules = set()
    for virtual, model_key in to_load.items():
        module = origin[virtual]
        patch = patches.get(model_key)
        if patch is None:
            report.unmatched.extend(module + s for s in modules[module])
            continue
        expected = model_shapes[model_key]
        got = _delta_shape(patch)
        if got is not None and got != (int(expected[0]), int(math.prod(expected[1:]))):
            report.shape_mismatch.append(f"{module} {got[0]}x{got[1]} vs {model_key[len(MODEL_PREFIX):]} "
                                         f"{tuple(expected)}")
            del patches[model_key]
            continue
        used_modules.add(module)
        kind = _kind(patch)
        report.patched[kind] = report.patched.get(kind, 0) + 1
    report.modules = len(used_modules)
    report.unmatched = sorted(set(report.unmatched))
    report.naming = _naming(sorted(used_modules))
    return patches, report


def check_family(report: LoraReport, node: str, input_name: str) -> None:
    """Raise the 'this looks like a LoRA for X' error when the LoRA cannot be for FramePack."""
    looks = (f"this looks like a LoRA for {report.family} ({report.family_reason})" if report.family
             else f"this does not look like a FramePack LoRA ({report.family_reason})")
    if report.family and report.family not in COMPATIBLE_FAMILIES:
        raise ValueError(f"{node}: {input_name} '{report.name}' cannot be applied to FramePack: {looks}. "
                         "Use a LoRA trained for FramePack (or HunyuanVideo), e.g. with musubi-tuner's fpack_train_network.")
    if report.weights_patched == 0:
        detail = ""
        if report.shape_mismatch:
            detail = f" Its layer sizes differ from the model's ({report.shape_mismatch[0]})."
        example = ", ".join(report.unmatched[:3])
        raise ValueError(f"{node}: {input_name} '{report.name}': none of its {report.total_keys} keys matches a "
                         f"FramePack weight (e.g. {example}); {looks}.{detail} Accepted: musubi-tuner lora_unet_*, "
                         "diffusers/PEFT lora_A/lora_B (transformer./diffusion_model.), LoHa, LoKr, and HunyuanVideo "
                         "double_blocks/single_blocks names.")


def read_lora_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata (empty dict when none) of a LoRA file, via ComfyUI's loader."""
    sd, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    return sd, dict(metadata or {})


def model_weight_shapes(patcher) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in patcher.model.state_dict().items()}


def check_strength(strength: float, node: str, input_name: str = "strength") -> float:
    if not isinstance(strength, (int, float)) or not math.isfinite(strength) or not (STRENGTH_MIN <= strength <= STRENGTH_MAX):
        raise ValueError(f"{node}: input '{input_name}' is {strength!r}; allowed: a number from {STRENGTH_MIN:g} to "
                         f"{STRENGTH_MAX:g}")
    return float(strength)


@dataclass
class AppliedLora:
    report: LoraReport
    settings: dict
    header: str


def apply_lora(patcher, path: str, strength: float, name: str, node: str = "FramePackLoraLoader",
               input_name: str = "lora_name") -> AppliedLora:
    """Add one LoRA's patches to `patcher` (already cloned by the caller) at `strength`."""
    try:
        lora_sd, metadata = read_lora_file(path)
    except Exception as e:  # a truncated download, a renamed .ckpt, … — say which input and file
        raise ValueError(f"{node}: {input_name} '{name}': cannot read the LoRA file ({type(e).__name__}: {e}). "
                         "Expected a .safetensors LoRA (or a PyTorch state dict).") from e
    patches, report = lora_to_patches(lora_sd, model_weight_shapes(patcher), name=name, metadata=metadata)
    report.strength = strength
    check_family(report, node, input_name)
    if report.unmatched or report.shape_mismatch:
        log.warning("%s", report.summary())
    else:
        log.info("%s", report.summary())
    if strength != 0.0:
        added = patcher.add_patches(patches, strength)
        if len(added) != len(patches):
            raise RuntimeError(f"{node}: ModelPatcher accepted {len(added)} of {len(patches)} patches of '{name}'")
    settings, header = read_settings(metadata)
    return AppliedLora(report, settings, header)
