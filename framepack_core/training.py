"""One-frame LoRA training: musubi-tuner's one-frame objective, run by ComfyUI's own machinery.

A training sample is what one-frame inference sees plus the answer: a FRAMEPACK_LAYOUT carrying the
sample's controls (the same layout object the sampler takes, so training and inference agree by
construction), the caption's CONDITIONING and the target frame's latent. `train_lora` fits a LoRA so
that the model, given the sample's layout and caption, predicts the flow towards the target.

What ComfyUI provides, reused as it is:
* the guider (`comfy.samplers.CFGGuider`, cfg 1): it loads the model, turns every sample's
  conditioning into the transformer's inputs (`FramePackModel.extra_conds`) and then calls
  `OneFrameTrainSampler.sample` -- the way ComfyUI's `TrainLoraNode` drives its `TrainSampler`;
* the trainable adapters: `comfy.weight_adapter`'s `LoraDiff`, attached with
  `ModelPatcher.add_weight_wrapper`, so the LoRA acts through ComfyUI's weight casting (bf16, fp8
  and low-VRAM bases alike) and the returned MODEL samples with it at once;
* gradient checkpointing: `comfy_extras.nodes_train`'s per-block patch;
* interruption, the UI progress bar, and the LOSS_MAP its "Plot Loss Graph" node draws.

What is musubi-tuner's (kohya-ss/musubi-tuner `fpack_train_network.py` / `hv_train_network.py`,
read 2026-12), and why this is not ComfyUI's `TrainLoraNode`, whose sampler draws sigma uniformly,
takes the loss on the denoised latent, trains every layer (norms and biases included) and saves keys
musubi cannot read:
* sigma = shift(sigmoid(N(0, 1))) ("--timestep_sampling shift", `discrete_flow_shift`), the noisy
  latent (1 - sigma) x0 + sigma noise, and the loss MSE(v_pred, noise - x0) on the velocity;
* the distilled guidance the model sees during training (musubi's `--guidance_scale`);
* LoRA on the Linear layers of the dual and single blocks except the norms' (`lora_unet_...` keys),
  lora_down initialised like nn.Linear, lora_up at zero, scale alpha / rank.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import torch

import comfy.samplers

from .layout import lora_settings_of
from .training_data import OneFrameDataset, TrainingError, dataset_layout

NODE = "FramePackTrainOneFrameLoRA"
OPTIMIZERS = ("AdamW", "Adam", "SGD")
# The LoRA's layers: musubi's FramePack network targets the Linear layers inside these blocks.
TARGET_BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")
KOHYA_PREFIX = "lora_unet_"


@dataclass(frozen=True)
class TrainingSettings:
    """What the training node exposes. musubi's one-frame guide gives no settings of its own ("currently
    unknown"); the defaults are its FramePack training command's (docs/framepack.md): lr 2e-4, dim 32,
    alpha 1 (not given there, so musubi's default), --timestep_sampling shift, --discrete_flow_shift 3.0,
    --guidance_scale left at 1.0, seed 42, gradient checkpointing, max_grad_norm 1.0."""

    steps: int = 800
    learning_rate: float = 2e-4
    rank: int = 32
    alpha: float = 1.0
    discrete_flow_shift: float = 3.0
    guidance: float = 1.0  # distilled guidance while training (musubi's --guidance_scale; inference uses 10)
    sigmoid_scale: float = 1.0
    seed: int = 42
    optimizer: str = "AdamW"
    gradient_checkpointing: bool = True
    max_grad_norm: float = 1.0


RANGES = {"steps": (1, 100_000), "learning_rate": (1e-7, 1.0), "rank": (1, 256), "alpha": (1e-3, 1024.0),
          "discrete_flow_shift": (0.01, 100.0), "guidance": (0.0, 100.0), "sigmoid_scale": (0.01, 100.0),
          "max_grad_norm": (0.0, 1e6)}


def check_settings(settings: TrainingSettings, node: str = NODE) -> TrainingSettings:
    for name, (lo, hi) in RANGES.items():
        value = getattr(settings, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (lo <= value <= hi):
            raise TrainingError(f"{node}: input '{name}' is {value!r}; allowed range {lo:g}..{hi:g}")
    if settings.optimizer not in OPTIMIZERS:
        raise TrainingError(f"{node}: input 'optimizer' is {settings.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    return settings


# ------------------------------------------------------------------------------------------------
# The objective
# ------------------------------------------------------------------------------------------------


def shift_sigmas(generator: torch.Generator, n: int, shift: float, sigmoid_scale: float = 1.0) -> torch.Tensor:
    """musubi's "--timestep_sampling shift": t = sigmoid(scale * N(0, 1)), then FramePack's flow shift
    t' = t * s / (1 + (s - 1) * t). (n,) float32 in (0, 1)."""
    t = torch.sigmoid(sigmoid_scale * torch.randn(n, generator=generator))
    return (t * shift) / (1 + (shift - 1) * t)


def lora_targets(diffusion_model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, Linear) for every layer musubi's FramePack LoRA trains, in module order."""
    out = []
    for name, m in diffusion_model.named_modules():
        # musubi excludes every module whose path contains "norm" (the AdaLN modulation linears)
        if isinstance(m, torch.nn.Linear) and name.startswith(TARGET_BLOCKS) and "norm" not in name:
            out.append((name, m))
    return out


def kohya_name(module: str) -> str:
    return KOHYA_PREFIX + module.replace(".", "_")


def _new_adapter(linear: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator):
    """ComfyUI's trainable LoRA (LoraDiff) initialised as musubi initialises a LoRA module: lora_down like
    nn.Linear's weight (kaiming uniform, a = sqrt 5), lora_up zero, so training starts from the base model."""
    from comfy.weight_adapter.lora import LoraDiff

    out_dim, in_dim = linear.weight.shape
    bound = 1.0 / math.sqrt(in_dim)  # what kaiming_uniform_(a=sqrt(5)) gives for a (rank, in_dim) matrix
    down = (torch.rand(rank, in_dim, generator=generator) * 2 - 1) * bound
    up = torch.zeros(out_dim, rank)
    return LoraDiff((up, down, float(alpha), None, None, None))


@dataclass
class TrainedLora:
    model: object  # the MODEL with the trained LoRA attached
    state_dict: dict  # LORA_MODEL: musubi / kohya keys
    metadata: dict  # ss_* / fp_* header entries (strings)
    losses: list


class OneFrameTrainSampler(comfy.samplers.Sampler):
    """The training loop, as a ComfyUI Sampler: the guider has loaded the model and processed each sample's
    conditioning (model_wrap.conds["positive"], one entry per sample); each step picks one sample and
    takes one optimizer step on musubi's one-frame objective."""

    def __init__(self, targets, settings: TrainingSettings, params, on_loss):
        self.targets, self.settings, self.params, self.on_loss = targets, settings, params, on_loss

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        import comfy.model_management
        import comfy.utils

        s = self.settings
        conds = list(model_wrap.conds["positive"])
        gen = torch.Generator().manual_seed(s.seed)
        optimizer = getattr(torch.optim, s.optimizer)(self.params, lr=s.learning_rate)
        device = latent_image.device
        pbar = comfy.utils.ProgressBar(s.steps)
        order: list[int] = []
        try:
            for step in range(s.steps):
                comfy.model_management.throw_exception_if_processing_interrupted()
                if not order:  # musubi walks the dataset in a fresh random order every epoch
                    order = torch.randperm(len(conds), generator=gen).tolist()
                i = order.pop(0)
                x0 = self.targets[i].to(device=device, dtype=torch.float32)
                eps = torch.randn(x0.shape, generator=gen).to(device)
                sigma = shift_sigmas(gen, 1, s.discrete_flow_shift, s.sigmoid_scale).to(device)
                xt = (1.0 - sigma) * x0 + sigma * eps
                # musubi feeds the model timestep t * 1000 + 1 for the latent noised at t; ComfyUI's model
                # timestep is sigma * 1000, so the model is called at sigma + 1/1000.
                model_sigma = sigma + 1e-3
                model_wrap.conds["positive"] = [conds[i]]
                # The guider returns the denoised latent x - model_sigma * v; the loss is musubi's, on v.
                denoised = model_wrap(xt, model_sigma, **extra_args)
                v_pred = (xt - denoised.float()) / model_sigma
                loss = torch.nn.functional.mse_loss(v_pred, eps - x0)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(self.params, s.max_grad_norm if s.max_grad_norm > 0 else math.inf)
                if not torch.isfinite(norm):  # stop rather than train every later step on NaN
                    raise TrainingError(f"{NODE}: the gradient is not finite at step {step + 1} (loss "
                                        f"{float(loss):.4g}); lower learning_rate or check the dataset")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                self.on_loss(float(loss.detach()))
                pbar.update(1)
        finally:
            model_wrap.conds["positive"] = conds
        return latent_image


def _classic_patcher(model, node: str):
    """`model` itself, or, under ComfyUI's Dynamic VRAM, a classic `ModelPatcher` of the same file.

    Measured on ComfyUI 0.28.0 (H200, 2026-12-04): through `ModelPatcherDynamic` the LoRA adapters never reach
    autograd (the loss has no gradient); the classic patcher trains. ComfyUI takes the same way out for what its
    Dynamic VRAM patcher cannot do (hooks, TorchCompileModel): `get_non_dynamic_delegate()` / `clone(disable_dynamic=
    True)`, which reloads the weights through the loader's `cached_patcher_init` (ours registers it) and keeps the
    patches already on the model (a stacked LoRA stays under the one being trained). The delegate holds its own copy
    of the weights in RAM for as long as the input model lives, as it does for hooks."""
    if not getattr(model, "is_dynamic", lambda: False)():
        return model
    if getattr(model, "cached_patcher_init", None) is None:
        raise TrainingError(f"{node}: input 'model' is managed by ComfyUI's Dynamic VRAM and its loader cannot reload "
                            f"it as a classic model (no cached_patcher_init): load it with FramePack's model loader, "
                            f"or start ComfyUI with --disable-dynamic-vram to train")
    logging.info("%s: the model is under Dynamic VRAM; training a classic-patcher copy of it "
                 "(ComfyUI's non-dynamic delegate)", node)
    return model.get_non_dynamic_delegate()


def train_lora(model, dataset: OneFrameDataset, captions: list, settings: TrainingSettings,
               node: str = NODE, on_step=None) -> TrainedLora:
    """Train a LoRA on `dataset` (captions[i]: the CONDITIONING of sample i, or one for all).
    `on_step(loss)` is called after each optimizer step (the benchmark times steps with it)."""
    import comfy.model_management
    import node_helpers

    from .comfy_model import require_framepack_model
    from .comfy_sampling import one_frame_conditioning

    check_settings(settings, node)
    require_framepack_model(model, node)
    model = _classic_patcher(model, node)
    layout = dataset_layout(dataset, node)
    n = len(dataset.samples)
    if len(captions) == 1 and n > 1:
        captions = captions * n
    if len(captions) != n:
        raise TrainingError(f"{node}: input 'positive' has {len(captions)} conditionings for {n} samples; give one "
                            f"per sample (in the dataset's order) or one for all")

    positive, targets = [], []
    for sample, caption in zip(dataset.samples, captions):
        cond, _, _ = one_frame_conditioning(caption, caption, sample.layout, 1, node)
        cond = node_helpers.conditioning_set_values(cond, {"guidance": float(settings.guidance)})
        positive.append(cond[0])
        targets.append(sample.target)

    started_at = time.time()
    patcher = model.clone()
    diffusion_model = patcher.model.diffusion_model
    targets_lin = lora_targets(diffusion_model)
    gen = torch.Generator().manual_seed(settings.seed)
    adapters = {}
    with torch.inference_mode(False):
        _normal_tensors(diffusion_model)
        for name, linear in targets_lin:
            adapter = _new_adapter(linear, settings.rank, settings.alpha, gen)
            adapter.requires_grad_(True)
            adapter.alpha.requires_grad_(False)
            patcher.add_weight_wrapper(f"diffusion_model.{name}.weight", adapter)
            adapters[name] = adapter
        params = [p for a in adapters.values() for p in (a.lora_up.weight, a.lora_down.weight)]
        losses: list[float] = []
        guider = comfy.samplers.CFGGuider(patcher)
        guider.set_conds(positive, positive)
        guider.set_cfg(1.0)  # one pass per step: the negative is never evaluated
        def on_loss(loss: float) -> None:
            losses.append(loss)
            if on_step is not None:
                on_step(loss)

        sampler = OneFrameTrainSampler(targets, settings, params, on_loss)
        checkpointed = _checkpoint_blocks(diffusion_model) if settings.gradient_checkpointing else []
        try:
            with torch.enable_grad(), _training_attention():
                comfy.model_management.load_models_gpu([patcher], memory_required=1e20, force_full_load=True)
                first = targets[0]
                guider.sample(torch.zeros_like(first), torch.zeros_like(first), sampler,
                              torch.tensor([1.0, 0.0]), seed=settings.seed)
        finally:
            _uncheckpoint(checkpointed)
        for a in adapters.values():
            a.requires_grad_(False)
    state_dict = {}
    for name, a in adapters.items():
        key = kohya_name(name)
        # float32, as musubi saves without --save_precision (alpha too, a 0-dim tensor)
        state_dict[f"{key}.lora_down.weight"] = a.lora_down.weight.detach().float().cpu().contiguous()
        state_dict[f"{key}.lora_up.weight"] = a.lora_up.weight.detach().float().cpu().contiguous()
        state_dict[f"{key}.alpha"] = torch.tensor(float(settings.alpha), dtype=torch.float32)
    return TrainedLora(model=patcher, state_dict=state_dict,
                       metadata=training_metadata(settings, dataset, layout, len(losses), started_at,
                                                  _dtype_name(patcher.model.compute_dtype())),
                       losses=losses)


def _normal_tensors(module: torch.nn.Module) -> None:
    """Replace inference tensors among `module`'s parameters and buffers by normal copies (same values).

    ComfyUI runs nodes under torch.inference_mode, so a model loaded by a loader node holds inference
    tensors, which autograd refuses to use in a recorded op on the GPU ("Inference tensors do not track
    version counter", measured through main.py on the H200). ComfyUI's own ops make the same copy
    (comfy/ops.py `_quantized_apply`). One tensor at a time, so the peak grows by one tensor."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None and p.is_inference():
                m._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
        for name, b in list(m._buffers.items()):
            if b is not None and b.is_inference():
                m._buffers[name] = b.clone()


def _training_attention():
    """torch's SDPA without its cuDNN backend while training: on the H200 (torch 2.11, cuDNN 9.19) cuDNN's
    attention backward gave NaN gradients from the first step on, and once an illegal memory access
    (bench/README.md, 2026-12-04); the flash / memory-efficient kernels train normally. Inference keeps torch's
    choice."""
    import contextlib

    if not torch.cuda.is_available():
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "no"}.get(dtype, str(dtype))


def _checkpoint_blocks(diffusion_model) -> list:
    """ComfyUI's gradient checkpointing (TrainLoraNode's): each top-level module and block recomputes its
    activations in the backward pass instead of keeping them."""
    from comfy_extras.nodes_train import find_all_highest_child_module_with_forward, patch

    modules = find_all_highest_child_module_with_forward(diffusion_model)
    for m in modules:
        patch(m)
    return modules


def _uncheckpoint(modules) -> None:
    from comfy_extras.nodes_train import unpatch

    for m in modules:
        unpatch(m)


# ------------------------------------------------------------------------------------------------
# The file's header
# ------------------------------------------------------------------------------------------------


def training_metadata(settings: TrainingSettings, dataset: OneFrameDataset, layout, steps_done: int,
                      started_at: float, model_dtype: str = "bf16") -> dict[str, str]:
    """The header: musubi-tuner's ss_* training keys as its trainer writes them (every value str(),
    `trainer_base.py` `_run_training_loop`), and the layout as fp_* keys, at the top level and inside each
    ss_datasets entry (where LoRA inspectors look for a dataset's settings)."""
    import json
    import random

    from .lora_metadata import header_from_settings

    fp = header_from_settings(lora_settings_of(layout))
    h, w = (int(v) * 8 for v in dataset.samples[0].target.shape[-2:])
    in_entry = {k: (v if k == "fp_1f_siglip_source" else json.loads(v)) for k, v in fp.items()}
    datasets = [{"resolution": [w, h], "batch_size_per_device": 1, "num_repeats": 1, "enable_bucket": True,
                 "bucket_no_upscale": False, "has_control": True, **source, **in_entry} for source in dataset.sources]
    n = len(dataset.samples)
    values = {
        "ss_session_id": random.randint(0, 2**32), "ss_training_started_at": started_at,
        "ss_learning_rate": settings.learning_rate, "ss_num_train_items": n, "ss_num_batches_per_epoch": n,
        "ss_num_epochs": math.ceil(steps_done / n), "ss_gradient_checkpointing": settings.gradient_checkpointing,
        "ss_gradient_checkpointing_cpu_offload": False, "ss_gradient_accumulation_steps": 1,
        "ss_max_train_steps": settings.steps, "ss_lr_warmup_steps": 0, "ss_lr_scheduler": "constant",
        "ss_base_model_version": "framepack", "ss_network_module": "networks.lora_framepack",
        "ss_network_dim": settings.rank, "ss_network_alpha": float(settings.alpha), "ss_network_dropout": None,
        "ss_mixed_precision": model_dtype, "ss_seed": settings.seed,
        "ss_training_comment": "one-frame LoRA trained in ComfyUI (framepack_oneframe); the fp_1f_* keys hold its "
                               "layout",
        "ss_optimizer": f"torch.optim.{settings.optimizer}", "ss_max_grad_norm": settings.max_grad_norm,
        "ss_fp8_base": False, "ss_full_fp16": False, "ss_full_bf16": False, "ss_weighting_scheme": "none",
        "ss_logit_mean": 0.0, "ss_logit_std": 1.0, "ss_mode_scale": 1.29, "ss_guidance_scale": float(settings.guidance),
        "ss_timestep_sampling": "shift", "ss_sigmoid_scale": float(settings.sigmoid_scale),
        "ss_discrete_flow_shift": float(settings.discrete_flow_shift), "ss_datasets": json.dumps(datasets),
        "ss_training_finished_at": time.time(), "ss_steps": steps_done, "ss_epoch": math.ceil(steps_done / n),
    }
    return {**{k: str(v) for k, v in values.items()}, **fp}


def addnet_hashes(state_dict: dict, metadata: dict) -> tuple[str, str]:
    """musubi's sshs_model_hash / sshs_legacy_hash (`precalculate_safetensors_hashes`): sha256 of the tensor
    bytes of the file as saved with only its ss_* metadata, and sha256[:8] of bytes 1 MiB .. 1 MiB + 64 KiB."""
    import hashlib

    from safetensors.torch import save

    blob = save(state_dict, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header:]).hexdigest(), hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8]


SAVE_NODE = "FramePackSaveOneFrameLoRA"


def save_lora(state_dict: dict, metadata: dict, filename_prefix: str, node: str = SAVE_NODE) -> tuple[str, dict, str]:
    """Write the LoRA under ComfyUI's first loras folder; returns (name as the loaders list it, its
    FRAMEPACK_LORA_SETTINGS read back from the written header, a description)."""
    import folder_paths
    from safetensors.torch import save_file

    from .lora_metadata import read_header, read_settings

    if not isinstance(state_dict, dict) or not state_dict or not all(
            isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TrainingError(f"{node}: input 'lora' must be the LORA_MODEL of FramePack Train One-Frame LoRA")
    if not isinstance(metadata, dict) or "fp_1f_target_index" not in metadata:
        raise TrainingError(f"{node}: input 'metadata' must come from FramePack Train One-Frame LoRA")
    prefix = (filename_prefix or "").strip().replace("\\", "/")
    if not prefix or prefix.startswith("/") or ".." in prefix.split("/"):
        raise TrainingError(f"{node}: input 'filename_prefix' is {filename_prefix!r}; give a relative name such as "
                            f"framepack_1f/my_lora (no '..', not absolute)")
    root = folder_paths.get_folder_paths("loras")[0]
    folder, base = os.path.split(os.path.join(root, prefix))
    os.makedirs(folder, exist_ok=True)
    counter = 1
    while os.path.exists(os.path.join(folder, f"{base}_{counter:05}_.safetensors")):
        counter += 1
    path = os.path.join(folder, f"{base}_{counter:05}_.safetensors")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    meta = dict(metadata)
    meta["ss_output_name"] = base
    meta.update({"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "framepack/lora",
                 "modelspec.implementation": "https://github.com/lllyasviel/FramePack", "modelspec.title": base,
                 "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S")})
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = addnet_hashes(tensors, meta)
    partial = path + ".partial"  # never leave a half-written LoRA under a name the loaders list
    try:
        save_file(tensors, partial, metadata=meta)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    settings, description = read_settings(read_header(path))
    name = os.path.relpath(path, root).replace(os.sep, "/")
    return name, settings, f"saved {name} ({len(tensors) // 3} LoRA modules) in {root}\n{description}"
