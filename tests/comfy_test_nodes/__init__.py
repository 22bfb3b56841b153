"""Test-only ComfyUI nodes, loaded from the scratch custom_nodes/ folder during tests.

Never shipped with the pack. They exist because the real text encoder (LLaVA-Llama-3, 8B) cannot
be made small: `FPTestConditioning` emits exactly the structure ComfyUI's `CLIPTextEncode`
produces for a `hunyuan_video` CLIP: [[cond (1, n, 4096), {"pooled_output": (1, 768)}]], with an
"attention_mask" entry only when some tokens are padding (ComfyUI drops an all-ones mask).
`FPTestCapture` is an output node that lets a test ask the executor for any upstream value.
"""
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


NODE_CLASS_MAPPINGS = {"FPTestConditioning": FPTestConditioning, "FPTestCapture": FPTestCapture}
