"""FramePack's parts for ComfyUI's own sampling: the one-frame conditioning, and FramePack's sampler,
schedule, noise and shift as SAMPLER / SIGMAS / NOISE / MODEL for SamplerCustomAdvanced and KSampler."""
from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core import comfy_sampling
from ..framepack_core import sampler as fp_sampler
from ..framepack_core.comfy_model import require_framepack_model

Layout = io.Custom("FRAMEPACK_LAYOUT")


class FramePackOneFrameConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackOneFrameConditioning",
            display_name="FramePack One-Frame Conditioning",
            category="FramePack",
            description=(
                "Attaches the one-frame layout (clean latents, indices, SigLIP embedding) to positive and negative and "
                "makes the empty target latent, so ComfyUI's own KSampler / SamplerCustomAdvanced sample a FramePack "
                "model. For FramePack's sampler pick sampler framepack_unipc_bh1 and scheduler framepack; the "
                "distilled guidance is FluxGuidance's value (10 when not set)."
            ),
            inputs=[
                io.Conditioning.Input("positive", tooltip="The prompt (CLIPTextEncode, DualCLIPLoader hunyuan_video)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (used by the sampler when cfg > 1)."),
                Layout.Input("layout", tooltip="From FramePackOneFrameLayout (or FramePackLayoutSweep)."),
                io.Int.Input("batch_size", default=1, min=1, max=64,
                             tooltip="Seeds per start image (with FramePackNoise: seed, seed+1, ...)."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive"), io.Conditioning.Output(display_name="negative"),
                     io.Latent.Output(display_name="latent",
                                      tooltip="The empty target frame(s) (B, 16, 1, h, w) to sample.")],
        )

    @classmethod
    def execute(cls, positive, negative, layout, batch_size) -> io.NodeOutput:
        return io.NodeOutput(*comfy_sampling.one_frame_conditioning(positive, negative, layout, batch_size))


class FramePackUniPCSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackUniPCSampler",
            display_name="FramePack UniPC Sampler",
            category="FramePack/sampling",
            description="FramePack's flow-matching UniPC as a SAMPLER for SamplerCustomAdvanced (also listed in "
                        "KSampler as framepack_unipc_bh1 / framepack_unipc_bh2).",
            inputs=[io.Combo.Input("solver", options=list(fp_sampler.SOLVERS), default="unipc_bh1",
                                   tooltip="bh1 (FramePack's default) or bh2.")],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, solver) -> io.NodeOutput:
        return io.NodeOutput(comfy_sampling.unipc_ksampler(solver))


class FramePackScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackScheduler",
            display_name="FramePack Scheduler",
            category="FramePack/sampling",
            description="FramePack's sigma schedule: linear from 1 to 0, warped by the shift (0 = FramePack's "
                        "automatic shift from the latent's size, ~2.07 at 640x640).",
            inputs=[
                io.Latent.Input("latent", tooltip="The latent to sample (its size sets the automatic shift)."),
                io.Int.Input("steps", default=25, min=1, max=200, tooltip="Sampling steps."),
                io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="0 = automatic from the latent's size."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, latent, steps, shift) -> io.NodeOutput:
        h, w = comfy_sampling.latent_hw(latent, "FramePackScheduler")
        return io.NodeOutput(fp_sampler.sigma_schedule(steps, shift, h, w))


class FramePackNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackNoise",
            display_name="FramePack Noise",
            category="FramePack/sampling",
            description="musubi-tuner's noise: sample j drawn alone from a CPU generator seeded seed + j, so seed N "
                        "gives musubi's image for N at any batch size (ComfyUI's RandomNoise matches it at batch 1 "
                        "only).",
            inputs=[io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                                 tooltip="Seed of sample 0; sample j uses seed + j.")],
            outputs=[io.Noise.Output()],
        )

    @classmethod
    def execute(cls, noise_seed) -> io.NodeOutput:
        return io.NodeOutput(comfy_sampling.FramePackNoise(noise_seed))


class FramePackShift(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackShift",
            display_name="FramePack Shift",
            category="FramePack/sampling",
            description="Sets the FramePack model's sigma shift, which KSampler's 'framepack' scheduler (and ComfyUI's "
                        "other schedulers) use: 0 = FramePack's automatic shift for the latent's size, as "
                        "FramePackOneFrameSampler does (the model comes loaded with the 640x640 value, ~2.07).",
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model."),
                io.Latent.Input("latent", tooltip="The latent to sample (its size sets the automatic shift)."),
                io.Float.Input("shift", default=0.0, min=0.0, max=100.0, step=0.01,
                               tooltip="0 = automatic from the latent's size."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, latent, shift) -> io.NodeOutput:
        require_framepack_model(model, "FramePackShift")
        h, w = comfy_sampling.latent_hw(latent, "FramePackShift")
        return io.NodeOutput(comfy_sampling.with_shift(model, fp_sampler.effective_shift(shift, h, w)))


class FramePackCFGRescale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackCFGRescale",
            display_name="FramePack CFG Rescale",
            category="FramePack/sampling",
            description="FramePack's guidance_rescale for ComfyUI's samplers (cfg > 1): the guided prediction is "
                        "blended with itself rescaled to the positive prediction's standard deviation, as "
                        "FramePackOneFrameSampler's guidance_rescale does.",
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model."),
                io.Float.Input("guidance_rescale", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0 = plain CFG; 1 = fully rescaled."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def execute(cls, model, guidance_rescale) -> io.NodeOutput:
        return io.NodeOutput(comfy_sampling.with_cfg_rescale(model, guidance_rescale))


NODES = [FramePackOneFrameConditioning, FramePackUniPCSampler, FramePackScheduler, FramePackNoise, FramePackShift,
         FramePackCFGRescale]
