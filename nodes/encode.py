"""FramePackEncodeImage (an image -> one FRAMEPACK_CONTROL) and FramePackControlList (chain them)."""
from __future__ import annotations

from comfy_api.latest import io

from ..framepack_core import encode as fp_encode
from ..framepack_core.buckets import MAX_RESOLUTION, MIN_RESOLUTION

Control = io.Custom("FRAMEPACK_CONTROL")
Controls = io.Custom("FRAMEPACK_CONTROLS")


class FramePackEncodeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackEncodeImage",
            display_name="FramePack Encode Image",
            category="FramePack",
            description=(
                "Encodes one image (or a batch) for one-frame inference: fits it to the output size (FramePack's "
                "resolution buckets, or an explicit width x height: resize to cover + center crop), VAE-encodes it "
                "as a one-frame video, turns its mask into a latent-size multiplier and, with a CLIP vision "
                "model, computes the SigLIP image embedding."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The image. An RGBA image's alpha channel is its mask (opaque = the "
                               "model sees it) unless a mask is connected."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (hunyuan_video_vae_bf16.safetensors via Load VAE)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="SigLIP (sigclip_vision_patch14_384.safetensors via Load CLIP Vision). "
                                    "Needed for the image that feeds the model's image embedding (the start, "
                                    "usually)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Which area of this image the model may see; it multiplies the latent "
                              "(0 = hidden). Resized to the latent with LANCZOS as musubi-tuner does. See mask_mode "
                              "for which value means 'keep'."),
                io.Combo.Input("mask_mode", options=list(fp_encode.MASK_MODES), default=fp_encode.MASK_MODES[0],
                               tooltip="Load Image's MASK output is 1 - alpha (transparent = 1), so with an RGBA "
                               "file loaded through Load Image the kept area is where the mask is 0: the default. "
                               "Choose 'keep where mask is 1' for masks that are 1 on the area to keep (e.g. "
                               "from a segmentation node)."),
                io.Int.Input("resolution", default=640, min=MIN_RESOLUTION, max=MAX_RESOLUTION, step=16,
                             tooltip="Base resolution of FramePack's buckets: the output is about resolution x "
                             "resolution pixels with the image's aspect ratio (640 = FramePack's default)."),
                io.Int.Input("width", default=0, min=0, max=4096, step=16,
                             tooltip="Explicit output width in pixels (multiple of 16); 0 = use the bucket. Needs "
                             "height too."),
                io.Int.Input("height", default=0, min=0, max=4096, step=16,
                             tooltip="Explicit output height in pixels (multiple of 16); 0 = use the bucket. Needs "
                             "width too."),
            ],
            outputs=[Control.Output("control", display_name="control",
                                    tooltip="The encoded image: scaled latent, latent-size mask, SigLIP embedding and "
                                    "the fitted pixels.")],
        )

    @classmethod
    def execute(cls, image, vae, clip_vision=None, mask=None, mask_mode=fp_encode.MASK_MODES[0], resolution=640,
                width=0, height=0) -> io.NodeOutput:
        return io.NodeOutput(fp_encode.encode_control(image, vae, clip_vision, mask, resolution, width, height,
                                                      mask_mode))


class FramePackControlList(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="FramePackControlList",
            display_name="FramePack Control List",
            category="FramePack",
            description="Appends a control (an encoded image) to a list of further controls for the layout node. "
                        "Chain one node per image: the first node's control is control 1, the next control 2, ...",
            inputs=[
                Control.Input("control", tooltip="The encoded image to append (FramePackEncodeImage)."),
                Controls.Input("previous", optional=True,
                               tooltip="The list so far (another FramePackControlList); empty if not connected."),
            ],
            outputs=[Controls.Output("controls", display_name="controls",
                                     tooltip="The list of further controls, in order.")],
        )

    @classmethod
    def execute(cls, control, previous=None) -> io.NodeOutput:
        return io.NodeOutput(tuple(previous or ()) + (control,))


NODES = [FramePackEncodeImage, FramePackControlList]
