"""FramePack FlashAttention-4: the model's attention through the optional flash-attn-4 package
(framepack_core/attention_fa4.py), plugged into ComfyUI's attention-override hook."""
from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core import attention_fa4
from ..framepack_core.comfy_model import require_framepack_model

NODE = "FramePackFlashAttention4"


class FramePackFlashAttention4(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="FramePack FlashAttention-4",
            category="FramePack/model",
            description=(
                "Runs the transformer's attention with FlashAttention-4 (NVIDIA Hopper / Blackwell, bf16 or fp16; "
                "needs `pip install flash-attn-4` in ComfyUI's Python). Same image up to bf16 rounding; on an "
                "H200 a 640x640 forward is about 3 % faster (see the pack's bench/README.md). Calls it cannot "
                "take (masked text batches, float32, CPU) use ComfyUI's attention as before."
            ),
            inputs=[io.Model.Input("model", tooltip="The FramePack model (before or after LoRA nodes, "
                                                    "TorchCompileModel or a step cache).")],
            outputs=[io.Model.Output(tooltip="The same model, attention through FlashAttention-4.")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        require_framepack_model(model, NODE)
        err = attention_fa4.fa4_import_error()
        if err is not None:
            raise RuntimeError(f"{NODE}: FlashAttention-4 is not usable in this Python (install it with "
                               f"`pip install flash-attn-4`; it needs an NVIDIA Hopper or Blackwell GPU): {err}")
        return io.NodeOutput(attention_fa4.use_fa4(model))


NODES = [FramePackFlashAttention4]
