"""Test-only ComfyUI nodes, loaded from the scratch custom_nodes/ folder during tests.

Never shipped with the pack. They exist because the real text encoder (LLaVA-Llama-3, 8B) cannot
be made small: `FPTestConditioning` emits exactly the structure ComfyUI's `CLIPTextEncode`
produces for a `hunyuan_video` CLIP: [[cond (1, n, 4096), {"pooled_output": (1, 768)}]], with an
"attention_mask" entry only when some tokens are padding (ComfyUI drops an all-ones mask).
`FPTestTextConditioning` is the same for a linked text (CLIPTextEncode fed by a captions list):
as many tokens as words, seeded by the text (scripts/workflow_api.py's rule for CLIPTextEncode).
`FPTestCapture` is an output node that reports a value's type and shape in its UI output.
`FPTestOutputs` is the output node the test harness (tests/conftest.py `run_graph`) wires to the
outputs a test asks for: it keeps each value in `FPTestOutputs.captured`, so tests read results
through a node of their own instead of the executor's private caches, which change between
ComfyUI versions.
"""
import zlib

import torch


class FPTestConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
                "tokens": ("INT", {"default": 7, "min": 1, "max": 256}),
                "padding": ("INT", {"default": 0, "min": 0, "max": 256}),
                "dim": ("INT", {"default": 4096, "min": 1, "max": 8192}),
                "pooled_dim": ("INT", {"default": 768, "min": 1, "max": 8192}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, seed, tokens, padding, dim, pooled_dim):
        g = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, tokens + padding, dim, generator=g)
        pooled = torch.randn(1, pooled_dim, generator=g)
        extra = {"pooled_output": pooled}
        if padding:
            cond[:, tokens:] = torch.randn(1, padding, dim, generator=g) * 100.0
            mask = torch.zeros(1, tokens + padding, dtype=torch.long)
            mask[:, :tokens] = 1
            extra["attention_mask"] = mask
        return ([[cond, extra]],)


class FPTestTextConditioning:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"
    CATEGORY = "testing"

    def make(self, text):
        tokens = max(1, min(256, len(text.split()) or 1))
        return FPTestConditioning().make(zlib.crc32(text.encode()) % 2**20, tokens, 0, 4096, 768)


class FPTestCapture:
    """Accepts any value; the test reads it back from the executor's output cache."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*", {})}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    RETURN_TYPES = ()
    FUNCTION = "capture"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def capture(self, value):
        shape = None
        if isinstance(value, dict) and "samples" in value:
            shape = list(value["samples"].shape)
        elif isinstance(value, torch.Tensor):
            shape = list(value.shape)
        return {"ui": {"shape": [shape], "type": [type(value).__name__]}}


class FPTestOutputs:
    """Keeps the values wired into it under `key` (the harness reads them after the run)."""

    captured: dict = {}

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"key": ("STRING", {"default": ""}), "value": ("*", {})}}

    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True

    @classmethod
    def IS_CHANGED(cls, key, value):
        return float("nan")  # never equal: run every time, or a cached run would capture nothing

    # Whole lists in, so that a list output (OUTPUT_IS_LIST) arrives as one value, not one call per item.
    INPUT_IS_LIST = True
    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True
    CATEGORY = "testing"

    def keep(self, key, value):
        FPTestOutputs.captured[key[0]] = value[0] if len(value) == 1 else value
        return {}


NODE_CLASS_MAPPINGS = {"FPTestConditioning": FPTestConditioning, "FPTestTextConditioning": FPTestTextConditioning,
                       "FPTestCapture": FPTestCapture, "FPTestOutputs": FPTestOutputs}
