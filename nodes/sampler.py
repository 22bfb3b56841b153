"""FramePackOneFrameSampler: one denoised frame per sample, as a LATENT that VAEDecode turns into the image.

A thin composition of the pack's ComfyUI sampling parts (framepack_core.comfy_sampling), the way
ComfyUI's KSampler node composes `common_ksampler`.
"""
from __future__ import annotations

import latent_preview
from comfy_api.latest import io

from ..framepack_core import comfy_sampling
from ..framepack_core import sampler as fp_sampler
from ..framepack_core.comfy_model import require_framepack_model

Layout = io.Custom("FRAMEPACK_LAYOUT")
NODE = "FramePackOneFrameSampler"


class FramePackOneFrameSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="FramePack One-Frame Sampler",
            category="FramePack",
            description=(
                "Generates one frame with FramePack at the layout's target index: FramePack's own sampler "
                "(flow-matching UniPC, distilled guidance, optional real CFG) run through ComfyUI's sampling, so "
                "model patches, CFG tools and step caches apply. Sample j of the batch uses seed + j, so seed N "
                "gives the same image as musubi-tuner with seed N. The same as FramePackOneFrameConditioning + "
                "KSampler (sampler framepack_unipc_bh1, scheduler framepack)."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model (FramePackModelLoader, optionally with LoRAs)."),
                io.Conditioning.Input("positive", tooltip="The prompt: CLIPTextEncode with a DualCLIPLoader of type "
                                      "hunyuan_video (llava_llama3 + clip_l)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt; only used when cfg is not 1."),
                Layout.Input("layout", tooltip="From FramePackOneFrameLayout (or FramePackLayoutSweep)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; sample j of the batch uses seed + j (CPU generator, as "
                             "musubi-tuner and FramePack)."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Sampling steps (model evaluations)."),
                io.Float.Input("distilled_guidance", default=fp_sampler.DEFAULT_DISTILLED_GUIDANCE, min=0.0,
                               max=100.0, step=0.1,
                               tooltip="FramePack's embedded (distilled) guidance scale; 10 is FramePack's default."),
                io.Float.Input("cfg", default=1.0, min=1.0, max=100.0, step=0.1,
                               tooltip="Real classifier-free guidance; 1 = off (no negative pass, twice as fast)."),
                io.Float.Input("guidance_rescale", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="With cfg > 1: rescale the guided prediction toward the positive's standard "
                               "deviation (0 = off)."),
                io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="Sigma schedule shift; 0 = automatic from the resolution (640x640 -> ~2.07)."),
                io.Combo.Input("solver", options=list(fp_sampler.SOLVERS), default="unipc_bh1",
                               tooltip="Flow-matching UniPC variant: bh1 (FramePack's default) or bh2."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Seeds per start image in one pass (seed, seed+1, ...)."),
            ],
            outputs=[io.Latent.Output(tooltip="The generated frame(s) (B, 16, 1, h, w); decode with VAE Decode and "
                                      "the HunyuanVideo VAE.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, layout, seed, steps, distilled_guidance, cfg, guidance_rescale,
                shift, solver, batch_size) -> io.NodeOutput:
        require_framepack_model(model, NODE)  # before prepare_callback reads the model's latent format
        callback = latent_preview.prepare_callback(model, steps)
        return io.NodeOutput(comfy_sampling.sample_one_frame(
            model, positive, negative, layout, seed, steps, distilled_guidance, cfg, guidance_rescale, shift, solver,
            batch_size, callback=callback))


NODES = [FramePackOneFrameSampler]
