"""FramePackModelLoader: a FramePack checkpoint from models/diffusion_models as a ComfyUI MODEL."""
from comfy_api.latest import io

from ..framepack_core import loader


class FramePackModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="FramePackModelLoader",
            display_name="Load FramePack Model",
            category="FramePack",
            description=(
                "Loads a FramePack transformer (FramePackI2V_HY or FramePack-F1) from models/diffusion_models: "
                "a single .safetensors file (bf16, fp16, fp32 or fp8) or a diffusers folder with sharded "
                "weights. The weights are memory-mapped, not copied; ComfyUI moves them to the GPU when sampling."
            ),
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=loader.list_checkpoints(),
                    tooltip="FramePack weights under models/diffusion_models: a .safetensors file "
                    "(e.g. FramePackI2V_HY_bf16.safetensors) or a diffusers folder (e.g. FramePackI2V_HY).",
                ),
                io.Combo.Input(
                    "weight_dtype",
                    options=list(loader.WEIGHT_DTYPES),
                    default="default",
                    tooltip="Dtype the weights are kept in. default: as stored in the file. fp8_e4m3fn / fp8_e5m2 "
                    "halve the memory of a bf16 file (norms and biases stay bf16); the layers compute in bf16 "
                    "(fp32 on devices without bf16) either way. fp8_e4m3fn_fast: fp8 weights multiplied with the GPU's fp8 "
                    "matmuls (H100/H200/RTX 40xx), with fp8's larger error; measured on an H100: 1.3x faster than bf16 "
                    "with compiled blocks, about bf16's speed uncompiled; elsewhere the same as fp8_e4m3fn.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The FramePack model, for the FramePack LoRA and sampler nodes.")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_name, weight_dtype):
        # Reload when the file or folder is replaced under the same name.
        return (model_name, weight_dtype, loader.checkpoint_stamp(model_name))

    @classmethod
    def execute(cls, model_name, weight_dtype) -> io.NodeOutput:
        return io.NodeOutput(loader.load_framepack(model_name, weight_dtype))


NODES = [FramePackModelLoader]
