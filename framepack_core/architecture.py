"""Which model a set of tensor names belongs to: the one guesser behind the loader's "this is a
Stable Diffusion UNet" and the LoRA nodes' "this looks like a LoRA for Wan".

`guess_architecture(keys, metadata=None, shapes=None)` takes either a checkpoint's weight keys
(prefix already stripped: `double_blocks.0.img_attn.qkv.weight`) or a LoRA's keys
(`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`, `transformer.blocks.0.ffn.0.lora_A.weight`).
The patterns are separator-insensitive ('.' or '_') so one rule covers both spellings; the few rules
that test exact weight names (the FramePack / diffusers embedders) only ever match a checkpoint.
A LoRA's header (`modelspec.architecture`, `ss_base_model_version`) is trusted first.

The answer is an `Architecture`: `family` (e.g. "FramePack", "HunyuanVideo", "SDXL"; None when unknown),
`description` (the loader's wording, "a Flux transformer (double_blocks/single_blocks keys)") and
`reason` (the LoRA nodes' wording, "its keys are blocks.N.self_attn/cross_attn/ffn (Wan 2.x)").

Plain Python (re only); it never imports torch or ComfyUI.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

# Families whose layers FramePack shares by design (FramePack is a fine-tuned HunyuanVideo).
COMPATIBLE_FAMILIES = frozenset({"FramePack", "HunyuanVideo"})

_HEADER_NAMES = [  # (substring of modelspec.architecture / ss_base_model_version, family)
    ("framepack", "FramePack"), ("hunyuan-video-1.5", "HunyuanVideo 1.5"), ("hunyuan_video_1_5", "HunyuanVideo 1.5"),
    ("hunyuan-video", "HunyuanVideo"), ("hunyuan_video", "HunyuanVideo"), ("wan", "Wan"),
    ("flux", "Flux"), ("qwen", "Qwen-Image"), ("stable-diffusion-xl", "SDXL"), ("sdxl", "SDXL"),
    ("stable-diffusion-v1", "SD 1.x"), ("sd_v1", "SD 1.x"), ("stable-diffusion-v2", "SD 2.x"), ("sd_v2", "SD 2.x"),
    ("stable-diffusion-3", "SD3"), ("sd3", "SD3"), ("z-image", "Z-Image"), ("z_image", "Z-Image"),
    ("kandinsky", "Kandinsky 5"), ("hidream", "HiDream"), ("ltx", "LTX-Video"), ("mochi", "Mochi"),
    ("lumina", "Lumina"), ("chroma", "Chroma"), ("auraflow", "AuraFlow"), ("pixart", "PixArt"),
]
_UNET_TEXT_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class Architecture:
    family: str | None
    description: str
    reason: str

    @property
    def is_framepack(self) -> bool:
        return self.family == "FramePack"


def _from_header(metadata: Mapping[str, str]) -> Architecture | None:
    for field_name in ("modelspec.architecture", "ss_base_model_version"):
        value = metadata.get(field_name) or ""
        for needle, family in _HEADER_NAMES:
            if needle in value.lower():
                return Architecture(family, f"a {family} model (its header says {field_name}={value!r})",
                                    f"its header says {field_name}={value!r}")
    return None


def _unet_family(shapes: Mapping[str, Sequence[int]]) -> str:
    """SD 1.x / 2.x / SDXL from the text width the UNet's cross-attention reads (768 / 1024 / 2048):
    the input width of attn2.to_k / to_v, a checkpoint's weight or a LoRA's down factor."""
    widths = {int(shape[1]) for key, shape in shapes.items()
              if re.search(r"attn2[._]to_[kv](\.lora_down)?\.weight$", key) and len(shape) == 2}
    found = sorted(_UNET_TEXT_WIDTHS[w] for w in widths if w in _UNET_TEXT_WIDTHS)
    return " / ".join(found) if found else "SD 1.x / SD 2.x / SDXL"


def guess_architecture(keys: Iterable[str], metadata: Mapping[str, str] | None = None,
                       shapes: Mapping[str, Sequence[int]] | None = None) -> Architecture:
    """The model `keys` (checkpoint weight keys or LoRA keys) belong to; see the module docstring."""
    if metadata:
        found = _from_header(metadata)
        if found:
            return found
    names = set(keys)
    joined = "\n".join(sorted(names))

    def has(pattern: str) -> bool:
        return re.search(pattern, joined, re.MULTILINE) is not None

    def starts(*prefixes: str) -> bool:
        return any(k.startswith(prefixes) for k in names)

    def max_index(pattern: str) -> int | None:
        found = [int(m) for m in re.findall(pattern, joined)]
        return max(found) if found else None

    # A FramePack checkpoint: HunyuanVideo's diffusers layers plus FramePack's own embedders.
    if {"x_embedder.proj.weight", "clean_x_embedder.proj.weight"} <= names and starts("image_projection."):
        return Architecture("FramePack", "a FramePack transformer",
                            "it has FramePack's clean_x_embedder and image_projection")
    if has(r"^lora_te2_"):
        return Architecture("SDXL", "a Stable Diffusion XL LoRA (lora_te2_* keys)",
                            "it has lora_te2_* (second SDXL text encoder) keys")
    if starts("input_blocks.", "down_blocks.", "conv_in.") or has(
            r"^lora_unet_(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)"):
        if starts("label_emb.", "add_embedding."):
            return Architecture("SDXL", "a Stable Diffusion XL UNet (input_blocks/label_emb keys)",
                                "it has label_emb/add_embedding keys (an SDXL UNet)")
        return Architecture(_unet_family(shapes or {}), "a Stable Diffusion UNet (input_blocks/down_blocks keys)",
                            "its keys are lora_unet_down_blocks_/input_blocks_… (a UNet)")
    if (has(r"(^|\.|_)blocks[._]\d+[._](self_attn|cross_attn)[._]") or has(r"(^|\.|_)blocks[._]\d+[._]ffn[._]")
            or (starts("blocks.") and starts("patch_embedding."))):
        return Architecture("Wan", "a Wan video transformer (blocks/patch_embedding keys)",
                            "its keys are blocks.N.self_attn/cross_attn/ffn (Wan 2.x)")
    if has(r"transformer_blocks[._]\d+[._](img_mlp|txt_mlp|img_mod|txt_mod)"):
        return Architecture("Qwen-Image", "a Qwen-Image transformer (transformer_blocks.N.img_mlp/txt_mlp keys)",
                            "its keys are transformer_blocks.N.img_mlp/txt_mlp (Qwen-Image)")
    if has(r"double_blocks[._]\d+") or has(r"single_blocks[._]\d+"):
        hunyuan = Architecture(
            "HunyuanVideo", "a HunyuanVideo transformer in ComfyUI/original format (double_blocks/txt_in keys), "
            "not the FramePack packed model",
            "it uses HunyuanVideo's original names (double_blocks/single_blocks, txt_in refiner)")
        flux = Architecture("Flux", "a Flux transformer (double_blocks/single_blocks keys)",
                            "its double_blocks/single_blocks stop at 18/37 (Flux.1 has 19 + 38 blocks; "
                            "HunyuanVideo 20 + 40)")
        # HunyuanVideo's text input has a token refiner and sub-embedders, its image input a patch conv
        # (img_in.proj); Flux's txt_in / img_in are plain linear layers.
        if has(r"individual_token_refiner|(^|[._])img_in[._]proj|(^|[._])txt_in[._](input_embedder|t_embedder|c_embedder)"):
            return hunyuan
        d = max_index(r"double_blocks[._](\d+)[._]")
        s = max_index(r"single_blocks[._](\d+)[._]")
        if d == 18 and s in (None, 37) or s == 37 and d in (None, 18):
            return flux
        if has(r"(^|[._])img_in[._](weight|lora)"):
            return Architecture("Flux", flux.description, "its img_in is a plain linear layer (Flux)")
        return Architecture("HunyuanVideo", hunyuan.description,
                            "it uses HunyuanVideo's original names (double_blocks/single_blocks)")
    if starts("context_embedder.token_refiner.") and not has(r"lora") or "x_embedder.proj.weight" in names:
        missing = [name for name in ("clean_x_embedder", "image_projection") if not starts(name + ".")]
        return Architecture(
            "HunyuanVideo", f"a HunyuanVideo transformer in diffusers format without FramePack's "
            f"{' and '.join(missing)} (HunyuanVideoTransformer3DModel, not the FramePack packed model)",
            "it is a diffusers HunyuanVideo transformer without FramePack's embedders")
    if starts("transformer_blocks.") and ("x_embedder.weight" in names or "context_embedder.weight" in names):
        return Architecture("Flux", "a Flux or SD3 transformer in diffusers format (x_embedder/context_embedder "
                            "are plain linear layers)", "its x_embedder/context_embedder are plain linear layers")
    if has(r"transformer_blocks[._]\d+") or has(r"single_transformer_blocks[._]\d+"):
        d = max_index(r"(?<!single)(?<!single_)transformer_blocks[._](\d+)[._]")
        s = max_index(r"single_transformer_blocks[._](\d+)[._]")
        if d == 18 and s == 37:
            return Architecture("Flux", "a Flux transformer in diffusers format (19 + 38 blocks)",
                                "its transformer_blocks/single_transformer_blocks stop at 18/37 (Flux.1; "
                                "FramePack has 20 + 40)")
        return Architecture("FramePack", "a FramePack transformer",
                            "its keys use FramePack's (diffusers HunyuanVideo) layer names")
    if starts("encoder.", "decoder."):
        return Architecture(None, "a VAE or text encoder (encoder/decoder keys)", "its keys are encoder/decoder keys")
    sample = ", ".join(sorted(names)[:3]) or "no tensors"
    return Architecture(None, f"an unrecognised model (keys like {sample})",
                        "its key names are not ones this pack recognises")
