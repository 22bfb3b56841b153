"""Tiny LoRA files for the tiny FramePack model, in every format users bring, plus their exact ΔW.

Each writer returns the LoRA state dict; `expected_delta` recomputes, independently of ComfyUI,
the change each LoRA makes to each model weight at strength 1 (float64), so the tests can check
W' = W + strength · ΔW. Headers are built the way musubi-tuner builds them (see `musubi_header`).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import save as save_bytes
from safetensors.torch import save_file

# Linear layers musubi-tuner's FramePack LoRA targets: every Linear of the dual and single blocks
# whose name has no "norm" (networks/lora_framepack.py excludes r".*(norm).*").
DUAL_LINEARS = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj",
                "attn.to_out.0", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                "ff_context.net.2"]
SINGLE_LINEARS = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp", "proj_out"]


def target_modules(shapes: dict[str, torch.Size]) -> list[str]:
    """Diffusers module paths (no prefix) musubi would train, for the blocks present in `shapes`."""
    out = []
    for key in sorted(shapes):
        for prefix, names in (("transformer_blocks.", DUAL_LINEARS), ("single_transformer_blocks.", SINGLE_LINEARS)):
            if key.startswith(prefix) and key.endswith(".weight"):
                module = key[:-len(".weight")]
                if module.split(".", 2)[2] in names:
                    out.append(module)
    return out


def _randn(g, *shape):
    return torch.randn(*shape, generator=g) * 0.5


def lora_factors(shapes, modules, rank, seed, kind):
    """{module: dict of factor tensors} for kind 'lora' (up, down), 'loha', 'lokr'."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in modules:
        rows, cols = shapes[m + ".weight"]
        if kind == "lora":
            out[m] = {"up": _randn(g, rows, rank), "down": _randn(g, rank, cols)}
        elif kind == "loha":
            out[m] = {"w1_a": _randn(g, rows, rank), "w1_b": _randn(g, rank, cols),
                      "w2_a": _randn(g, rows, rank), "w2_b": _randn(g, rank, cols)}
        elif kind == "lokr":  # w1 full (f x f), w2 low-rank: LyCORIS' usual layout for Linear layers
            f = 4 if rows % 4 == 0 and cols % 4 == 0 else 1
            out[m] = {"w1": _randn(g, f, f), "w2_a": _randn(g, rows // f, rank), "w2_b": _randn(g, rank, cols // f)}
        else:
            raise ValueError(kind)
    return out


def delta(f: dict, kind: str, alpha: float | None, rank: int) -> torch.Tensor:
    """ΔW at strength 1, float64, by the formulas of each format."""
    f = {k: v.double() for k, v in f.items()}
    scale = 1.0 if alpha is None else alpha / rank
    if kind == "lora":
        return f["up"] @ f["down"] * scale
    if kind == "loha":
        return (f["w1_a"] @ f["w1_b"]) * (f["w2_a"] @ f["w2_b"]) * scale
    if kind == "lokr":
        return torch.kron(f["w1"], f["w2_a"] @ f["w2_b"]) * scale
    raise ValueError(kind)


def musubi_name(module: str) -> str:
    return "lora_unet_" + module.replace(".", "_")


def write_lora(factors, kind, alpha, naming="musubi", dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    """State dict in one naming: 'musubi' (lora_unet_…, lora_down/lora_up), 'transformer' /
    'diffusion_model' / 'bare' (diffusers/PEFT lora_A/lora_B; LoHa/LoKr keep hada_/lokr_ names)."""
    sd = {}
    for m, f in factors.items():
        base = musubi_name(m) if naming == "musubi" else (m if naming == "bare" else f"{naming}.{m}")
        if kind == "lora":
            if naming == "musubi":
                sd[f"{base}.lora_up.weight"], sd[f"{base}.lora_down.weight"] = f["up"], f["down"]
            else:
                sd[f"{base}.lora_B.weight"], sd[f"{base}.lora_A.weight"] = f["up"], f["down"]
        elif kind == "loha":
            for k in ("w1_a", "w1_b", "w2_a", "w2_b"):
                sd[f"{base}.hada_{k}"] = f[k]
        else:
            for k in ("w1", "w2_a", "w2_b"):
                sd[f"{base}.lokr_{k}"] = f[k]
        if alpha is not None:
            sd[f"{base}.alpha"] = torch.tensor(float(alpha))
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


def exact(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The factors as stored (after the dtype cast), so expected ΔW uses exactly the file's numbers."""
    return {k: v.float() for k, v in sd.items()}


# --------------------------------------------------------------------------------------------
# Original HunyuanVideo (fused) names
# --------------------------------------------------------------------------------------------

def hunyuan_fused_lora(shapes, rank, seed, naming="musubi", dtype=torch.float32):
    """A LoRA on HunyuanVideo's fused layers of block 0: img_attn_qkv, txt_attn_qkv, img_attn_proj,
    img_mlp.fc1, img_mod, single linear1 (q|k|v|mlp), linear2, modulation.

    Returns (state dict, {model key: ΔW float64}) with the rows of each fused ΔW assigned to the
    separate FramePack weights by hand.
    """
    g = torch.Generator().manual_seed(seed)
    H = shapes["transformer_blocks.0.attn.to_q.weight"][0]
    M = shapes["single_transformer_blocks.0.proj_mlp.weight"][0]
    d = "transformer_blocks.0."
    s = "single_transformer_blocks.0."
    layers = {  # original name → ([(model module, rows)], in features)
        "double_blocks.0.img_attn_qkv": ([(d + "attn.to_q", H), (d + "attn.to_k", H), (d + "attn.to_v", H)], H),
        "double_blocks.0.txt_attn_qkv": ([(d + "attn.add_q_proj", H), (d + "attn.add_k_proj", H),
                                          (d + "attn.add_v_proj", H)], H),
        "double_blocks.0.img_attn_proj": ([(d + "attn.to_out.0", H)], H),
        "double_blocks.0.img_mlp.fc1": ([(d + "ff.net.0.proj", M)], H),
        "double_blocks.0.img_mod.linear": ([(d + "norm1.linear", 6 * H)], H),
        "single_blocks.0.linear1": ([(s + "attn.to_q", H), (s + "attn.to_k", H), (s + "attn.to_v", H),
                                     (s + "proj_mlp", M)], H),
        "single_blocks.0.linear2": ([(s + "proj_out", H)], H + M),
        "single_blocks.0.modulation.linear": ([(s + "norm.linear", 3 * H)], H),
    }
    sd, expected = {}, {}
    alpha = rank / 2
    for name, (parts, cols) in layers.items():
        rows = sum(r for _, r in parts)
        up, down = _randn(g, rows, rank).to(dtype), _randn(g, rank, cols).to(dtype)
        if naming == "musubi":
            base = "lora_unet_" + name.replace(".", "_")
            sd[f"{base}.lora_up.weight"], sd[f"{base}.lora_down.weight"] = up, down
            sd[f"{base}.alpha"] = torch.tensor(alpha)
            full = up.double() @ down.double() * (alpha / rank)
        else:  # diffusion-pipe / ComfyUI spelling with PEFT factors, no alpha
            base = "diffusion_model." + name.replace("img_attn_qkv", "img_attn.qkv").replace(
                "txt_attn_qkv", "txt_attn.qkv").replace("img_attn_proj", "img_attn.proj")
            sd[f"{base}.lora_B.weight"], sd[f"{base}.lora_A.weight"] = up, down
            full = up.double() @ down.double()
        start = 0
        for module, r in parts:
            expected[module + ".weight"] = full[start:start + r]
            start += r
    return sd, expected


# --------------------------------------------------------------------------------------------
# LoRAs for other models (for the "this looks like a LoRA for X" errors)
# --------------------------------------------------------------------------------------------

def _kohya_lora(seed: int, rows: int, modules_and_cols, rank: int) -> dict[str, torch.Tensor]:
    """lora_down / lora_up / alpha triples for kohya-named modules of another model."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, cols in modules_and_cols:
        sd[f"{name}.lora_down.weight"] = _randn(g, rank, cols)
        sd[f"{name}.lora_up.weight"] = _randn(g, rows, rank)
        sd[f"{name}.alpha"] = torch.tensor(float(rank))
    return sd


def sdxl_lora(rank=4):
    return _kohya_lora(1, 640, (("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 2048),
                                ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 1280)), rank)


def sd15_lora(rank=4):
    """kohya SD 1.5 naming (diffusers UNet module paths); cross-attention reads 768-wide CLIP text."""
    return _kohya_lora(4, 320, (("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 768),
                                ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 320)), rank)


def wan_lora(rank=4):
    g = torch.Generator().manual_seed(2)
    sd = {}
    for i in range(2):
        for m in ("self_attn.q", "cross_attn.k", "ffn.0"):
            sd[f"diffusion_model.blocks.{i}.{m}.lora_A.weight"] = _randn(g, rank, 64)
            sd[f"diffusion_model.blocks.{i}.{m}.lora_B.weight"] = _randn(g, 64, rank)
    return sd


def flux_lora(rank=2, hidden=32):
    """kohya sd-scripts Flux naming: the same double_blocks/single_blocks words as HunyuanVideo."""
    g = torch.Generator().manual_seed(3)
    sd = {}
    for i in (0, 18):
        n = f"lora_unet_double_blocks_{i}_img_attn_qkv"
        sd[f"{n}.lora_down.weight"], sd[f"{n}.lora_up.weight"] = _randn(g, rank, hidden), _randn(g, 3 * hidden, rank)
    for i in (0, 37):
        n = f"lora_unet_single_blocks_{i}_linear1"
        sd[f"{n}.lora_down.weight"], sd[f"{n}.lora_up.weight"] = _randn(g, rank, hidden), _randn(g, 7 * hidden, rank)
    return sd


# --------------------------------------------------------------------------------------------
# Headers as musubi-tuner writes them
# --------------------------------------------------------------------------------------------

def musubi_header(sd: dict[str, torch.Tensor], *, dim=4, alpha=2, output_name="kisekaeichi_lora",
                  resolution=(960, 544), has_control=True, training_comment=None, description=None,
                  no_metadata=False) -> dict[str, str]:
    """The safetensors header of a musubi-tuner FramePack one-frame LoRA, built as its code builds it
    (training/trainer_base.py NetworkTrainer.train → metadata dict, every value str(); ss_datasets =
    json.dumps([dataset.get_metadata()]); utils/sai_model_spec.py build_metadata → modelspec.*;
    networks/lora.py save_weights → sshs_model_hash / sshs_legacy_hash, computed the same way). No key
    records the dataset's fp_1f_* one-frame settings or fp_latent_window_size."""
    started = time.time() - 3600
    dataset = {  # ImageDataset.get_metadata() (BaseDataset keys + image/control directory base names)
        "resolution": list(resolution), "caption_extension": ".txt", "batch_size_per_device": 1, "num_repeats": 10,
        "enable_bucket": True, "bucket_no_upscale": False, "image_directory": "train_images",
    }
    if has_control:
        dataset["control_directory"] = "train_controls"
    dataset["has_control"] = has_control
    meta = {
        "ss_session_id": 1234567890, "ss_training_started_at": started, "ss_output_name": output_name,
        "ss_learning_rate": 0.0002, "ss_num_train_items": 20, "ss_num_batches_per_epoch": 20, "ss_num_epochs": 10,
        "ss_gradient_checkpointing": True, "ss_gradient_checkpointing_cpu_offload": False,
        "ss_gradient_accumulation_steps": 1, "ss_max_train_steps": 200, "ss_lr_warmup_steps": 0,
        "ss_lr_scheduler": "constant", "ss_base_model_version": "framepack",
        "ss_network_module": "networks.lora_framepack", "ss_network_dim": dim, "ss_network_alpha": alpha,
        "ss_network_dropout": None, "ss_mixed_precision": "bf16", "ss_seed": 42, "ss_training_comment": training_comment,
        "ss_optimizer": "torch.optim.adamw.AdamW8bit", "ss_max_grad_norm": 1.0, "ss_fp8_base": True,
        "ss_full_fp16": False, "ss_full_bf16": False, "ss_weighting_scheme": "none", "ss_logit_mean": 0.0,
        "ss_logit_std": 1.0, "ss_mode_scale": 1.29, "ss_guidance_scale": 10.0, "ss_timestep_sampling": "shift",
        "ss_sigmoid_scale": 1.0, "ss_discrete_flow_shift": 3.0,
        "ss_datasets": json.dumps([dataset]),
        "ss_sd_model_name": "diffusion_pytorch_model-00001-of-00003.safetensors",
        "ss_vae_name": "diffusion_pytorch_model.safetensors",
    }
    meta = {k: str(v) for k, v in meta.items()}
    meta["ss_training_finished_at"] = str(time.time())  # set at each save
    meta["ss_steps"] = "200"
    meta["ss_epoch"] = "10"
    if no_metadata:  # --no_metadata saves only SS_METADATA_MINIMUM_KEYS (+ modelspec.* and hashes below)
        meta = {k: meta[k] for k in ("ss_base_model_version", "ss_network_module", "ss_network_dim",
                                     "ss_network_alpha") if k in meta}
    spec = {
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "framepack/lora",
        "modelspec.implementation": "https://github.com/lllyasviel/FramePack", "modelspec.title": output_name,
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S"), "modelspec.resolution": "1280x720",
    }
    if description is not None:
        spec["modelspec.description"] = description
    meta.update(spec)
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = _addnet_hashes(sd, meta)
    return meta


def _addnet_hashes(sd, meta) -> tuple[str, str]:
    """The two hashes musubi stores for sd-webui-additional-networks: sha256 of the tensor bytes of
    the file as saved with only the ss_* metadata, and the old sha256[:8] of bytes 1 MiB..1 MiB+64 KiB."""
    blob = save_bytes({k: v.contiguous() for k, v in sd.items()}, {k: v for k, v in meta.items() if k.startswith("ss_")})
    header_len = int.from_bytes(blob[:8], "little")
    return (hashlib.sha256(blob[8 + header_len:]).hexdigest(),
            hashlib.sha256(blob[0x100000:0x110000]).hexdigest()[:8])


def save(path: Path, sd: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=metadata)
    return path
