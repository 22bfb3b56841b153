"""One-frame LoRA training nodes: build a dataset, train (framepack_core.training), save the LoRA with its layout.

The trainer's outputs use ComfyUI's own training types (LORA_MODEL, LOSS_MAP), so ComfyUI's "Plot Loss
Graph", "Load LoRA Model" and "Save LoRA Weights" nodes take them too.
"""
from __future__ import annotations

from comfy_api.latest import io, ui

from ..framepack_core import training as fp_training
from ..framepack_core import training_data
from ..framepack_core.buckets import MAX_RESOLUTION, MIN_RESOLUTION
from ..framepack_core.encode import MASK_MODES

Layout = io.Custom("FRAMEPACK_LAYOUT")
Dataset = io.Custom("FRAMEPACK_DATASET")
LoraModel = io.Custom("LORA_MODEL")  # ComfyUI's training type: a dict of LoRA tensors
LossMap = io.Custom("LOSS_MAP")  # ComfyUI's training type: {"loss": [float, ...]}
Metadata = io.Custom("FRAMEPACK_LORA_METADATA")
LoraSettings = io.Custom("FRAMEPACK_LORA_SETTINGS")

_LAYOUT_TIP = ("From FramePackOneFrameLayout: the layout the LoRA is trained for (preset, indices, post, 2x/4x, "
               "SigLIP source, masks). The LoRA file records it, so preset 'from LoRA' gives it back.")


class FramePackOneFrameTrainingSample(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=training_data.SAMPLE_NODE,
            display_name="FramePack One-Frame Training Sample",
            category="FramePack/training",
            description=("One training sample from images in the graph: the layout node's output (which carries "
                         "this sample's start and controls) and the target image the LoRA should produce. Chain "
                         "several through 'previous'; the captions go to the trainer's 'positive' in the same order."),
            inputs=[
                Layout.Input("layout", tooltip=_LAYOUT_TIP + " Its start image and controls are this sample's."),
                io.Image.Input("target", tooltip="The image the model should produce for this sample; fitted to the "
                               "start image's size."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE (the one that encoded the controls)."),
                Dataset.Input("previous", optional=True, tooltip="Samples so far (another training sample or dataset "
                              "node); this sample is appended."),
            ],
            outputs=[Dataset.Output("dataset", tooltip="The samples so far, this one last.")],
        )

    @classmethod
    def execute(cls, layout, target, vae, previous=None) -> io.NodeOutput:
        return io.NodeOutput(training_data.sample_from_images(layout, target, vae, previous))


class FramePackOneFrameDatasetFolder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=training_data.FOLDER_NODE,
            display_name="FramePack One-Frame Dataset (folders)",
            category="FramePack/training",
            description=("A one-frame training set from folders, in musubi-tuner's conventions: target images in "
                         "image_directory with a .txt caption each, control images in control_directory named "
                         "<target name>_0, _1, ... (start first); a control's alpha channel is its mask. Every "
                         "image is fitted to FramePack's resolution buckets and encoded once (ComfyUI keeps the "
                         "result while the inputs stay the same). The captions come out as a list: encode them with "
                         "CLIPTextEncode and connect it to the trainer's 'positive'."),
            inputs=[
                io.String.Input("image_directory", default="framepack_train/images",
                                tooltip="Folder of target images (+ captions), absolute or under ComfyUI's input "
                                "folder."),
                io.String.Input("control_directory", default="framepack_train/controls",
                                tooltip="Folder of control images <name>_0.png (start), <name>_1.png, ... for each "
                                "target <name>; absolute or under ComfyUI's input folder."),
                Layout.Input("layout", tooltip=_LAYOUT_TIP + " Only its settings are used here; its pictures are not."),
                io.Vae.Input("vae", tooltip="The HunyuanVideo VAE."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="SigLIP (CLIPVisionLoader, sigclip_vision_patch14_384) for the image "
                                    "embedding of the layout's SigLIP source; FramePack was trained with it."),
                io.Int.Input("resolution", default=640, min=MIN_RESOLUTION, max=MAX_RESOLUTION, step=16,
                             tooltip="Bucket base size (musubi's dataset 'resolution'): each target is fitted to the "
                             "nearest bucket of about resolution^2 pixels, its controls to the same size."),
                io.String.Input("caption_extension", default=".txt", tooltip="Caption file extension."),
                io.Combo.Input("mask_mode", options=list(MASK_MODES), default=MASK_MODES[1],
                               tooltip="How a control's alpha is read: musubi keeps where alpha is opaque (1)."),
            ],
            outputs=[
                Dataset.Output("dataset", tooltip="The encoded samples, in file-name order."),
                io.String.Output("captions", is_output_list=True,
                                 tooltip="One caption per sample, in the same order (a list: CLIPTextEncode runs "
                                 "once per caption)."),
                io.String.Output("summary", tooltip="What was found and how it was fitted."),
            ],
        )

    @classmethod
    def execute(cls, image_directory, control_directory, layout, vae, resolution, caption_extension, mask_mode,
                clip_vision=None) -> io.NodeOutput:
        dataset, captions, summary = training_data.load_folder(
            image_directory, control_directory, layout, vae, clip_vision, resolution, caption_extension, mask_mode)
        return io.NodeOutput(dataset, captions, summary, ui=ui.PreviewText(summary))


class FramePackTrainOneFrameLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        d = fp_training.TrainingSettings()
        r = fp_training.RANGES
        return io.Schema(
            node_id=fp_training.NODE,
            display_name="FramePack Train One-Frame LoRA",
            category="FramePack/training",
            is_input_list=True,  # the captions arrive as a list, one CONDITIONING per sample
            description=("Trains a LoRA for the dataset's one-frame layout with musubi-tuner's objective (flow "
                         "matching on the one target frame, shifted sigmoid timesteps, distilled guidance), through "
                         "ComfyUI's sampling and trainable LoRA adapters. The MODEL output samples with the new LoRA "
                         "at once; FramePack Save One-Frame LoRA writes it with its layout."),
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model to train on (FramePackModelLoader)."),
                Dataset.Input("dataset", tooltip="From FramePack One-Frame Dataset (folders) or Training Sample."),
                io.Conditioning.Input("positive", tooltip="The captions: one CONDITIONING per sample in the dataset's "
                                      "order (CLIPTextEncode on the dataset's captions list), or one for all."),
                io.Int.Input("steps", default=d.steps, min=r["steps"][0], max=r["steps"][1],
                             tooltip="Optimizer steps, one sample each (musubi's guide: 500-800 for kisekaeichi, "
                             "about 1000 for 1f-mc)."),
                io.Float.Input("learning_rate", default=d.learning_rate, min=r["learning_rate"][0],
                               max=r["learning_rate"][1], step=1e-6, tooltip="Learning rate."),
                io.Int.Input("rank", default=d.rank, min=r["rank"][0], max=r["rank"][1],
                             tooltip="LoRA rank (musubi's network_dim)."),
                io.Float.Input("alpha", default=d.alpha, min=r["alpha"][0], max=r["alpha"][1], step=0.5,
                               tooltip="LoRA alpha (musubi's network_alpha); the LoRA is scaled by alpha / rank."),
                io.Float.Input("discrete_flow_shift", default=d.discrete_flow_shift,
                               min=r["discrete_flow_shift"][0], max=r["discrete_flow_shift"][1], step=0.1,
                               tooltip="Shift of the sampled noise levels (musubi's --discrete_flow_shift with "
                               "--timestep_sampling shift); higher trains more at high noise."),
                io.Float.Input("guidance", default=d.guidance, min=r["guidance"][0], max=r["guidance"][1], step=0.1,
                               tooltip="Distilled guidance the model sees while training (musubi's --guidance_scale)."),
                io.Int.Input("seed", default=d.seed, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seeds the LoRA's initialisation, the sample order, the noise and the noise "
                             "levels."),
                io.Combo.Input("optimizer", options=list(fp_training.OPTIMIZERS), default=d.optimizer,
                               tooltip="Optimizer (torch.optim)."),
                io.Boolean.Input("gradient_checkpointing", default=d.gradient_checkpointing,
                                 tooltip="Recompute each block's activations in the backward pass (ComfyUI's "
                                 "checkpointing): much less memory, about a third slower."),
            ],
            outputs=[
                io.Model.Output("trained_model", display_name="model", tooltip="The model with the trained LoRA applied."),
                LoraModel.Output("lora", tooltip="The LoRA's tensors (musubi / kohya lora_unet_... keys)."),
                Metadata.Output("metadata", tooltip="The training settings and layout the file will record."),
                LossMap.Output("loss_map", tooltip="Loss per step (ComfyUI's Plot Loss Graph draws it)."),
                io.Int.Output("steps_trained", display_name="steps", tooltip="Steps trained."),
            ],
        )

    @classmethod
    def execute(cls, model, dataset, positive, steps, learning_rate, rank, alpha, discrete_flow_shift, guidance,
                seed, optimizer, gradient_checkpointing) -> io.NodeOutput:
        # is_input_list: every input arrives as a list; the widgets and the model are single values.
        one = lambda v: v[0]  # noqa: E731
        settings = fp_training.TrainingSettings(
            steps=one(steps), learning_rate=one(learning_rate), rank=one(rank), alpha=one(alpha),
            discrete_flow_shift=one(discrete_flow_shift), guidance=one(guidance), seed=one(seed),
            optimizer=one(optimizer), gradient_checkpointing=one(gradient_checkpointing))
        merged = training_data.merge_datasets(dataset, fp_training.NODE)
        trained = fp_training.train_lora(one(model), merged, list(positive), settings)
        return io.NodeOutput(trained.model, trained.state_dict, trained.metadata, {"loss": trained.losses},
                             len(trained.losses))


class FramePackSaveOneFrameLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=fp_training.SAVE_NODE,
            display_name="FramePack Save One-Frame LoRA",
            category="FramePack/training",
            is_output_node=True,
            description=("Writes the trained LoRA into ComfyUI's loras folder as musubi-tuner writes one (lora_unet_ "
                         "keys, ss_* training keys), plus the layout it was trained with (fp_1f_* keys, also in "
                         "ss_datasets). Its lora_settings output, like the LoRA loaders', gives the layout back with "
                         "preset 'from LoRA'."),
            inputs=[
                LoraModel.Input("lora", tooltip="From FramePack Train One-Frame LoRA."),
                Metadata.Input("metadata", tooltip="From FramePack Train One-Frame LoRA."),
                io.String.Input("filename_prefix", default="framepack_1f/my_lora",
                                tooltip="File name under models/loras; _00001_.safetensors etc. is appended, an "
                                "existing file is never overwritten."),
            ],
            outputs=[
                io.String.Output("lora_name", tooltip="The saved file's name as the LoRA loaders list it."),
                LoraSettings.Output("lora_settings", tooltip="The layout the file records, for FramePackOneFrameLayout "
                                    "(preset 'from LoRA')."),
            ],
        )

    @classmethod
    def execute(cls, lora, metadata, filename_prefix) -> io.NodeOutput:
        name, settings, text = fp_training.save_lora(lora, metadata, filename_prefix)
        return io.NodeOutput(name, settings, ui=ui.PreviewText(text))


NODES = [FramePackOneFrameTrainingSample, FramePackOneFrameDatasetFolder, FramePackTrainOneFrameLoRA,
         FramePackSaveOneFrameLoRA]
