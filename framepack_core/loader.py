"""Reading FramePack weight files into a ComfyUI MODEL.

`load_framepack(name_or_path, weight_dtype)` returns ComfyUI's `CoreModelPatcher` (`ModelPatcher` on 0.3.75) around a
`FramePackModel` (see `comfy_model.py`). It accepts what users have in `models/diffusion_models/`:

* a single `.safetensors` file (`FramePackI2V_HY_bf16.safetensors`, `..._fp8_e4m3fn.safetensors`,
  F1 variants), with diffusers key names, optionally prefixed by `model.diffusion_model.`,
  `diffusion_model.` or `transformer.`;
* a diffusers folder (`lllyasviel/FramePackI2V_HY`): sharded safetensors, the
  `*.safetensors.index.json` that maps keys to shards, and `config.json`.

How it reads, and why:

1. Everything is checked from the safetensors headers first (the file exists, is not truncated,
   holds float tensors of a supported dtype, is FramePack and not another model, has every
   tensor the configuration needs with the right shape). Any problem raises `FramePackLoadError`
   ("FramePackModelLoader: <file>: <problem>; expected ...") before a single weight is read, so
   nothing is left half-loaded and nothing has gone near the GPU.
2. The configuration comes from the tensor shapes (`model.infer_config`); a diffusers folder's
   `config.json` supplies what shapes cannot tell (the RoPE axis split).
3. The network is built on the `meta` device (no memory), then each parameter is assigned the
   tensor that `safetensors.safe_open` returns. That tensor is a view of the memory-mapped file,
   so with `weight_dtype="default"` the loaded model costs no memory beyond the file's own pages
   (one copy of the weights, never two; ComfyUI copies them to the GPU when it loads the model).
   A cast (`weight_dtype` other than default, or a scaled fp8 file) makes one new tensor per
   weight while the file stays mapped. (As with any memory map, overwriting the file in place
   while ComfyUI holds the model is unsafe; replacing it with a new file, as downloads do, is fine.)

Dtypes: files may hold float32, float16, bfloat16, float8_e4m3fn and float8_e5m2 tensors (mixed,
like the released fp8 file whose norms and biases are bf16). `weight_dtype`:

* "default": keep each tensor's file dtype;
* "bf16" / "fp16" / "fp32": every tensor in that dtype;
* "fp8_e4m3fn" / "fp8_e5m2": weights of 2 or more dimensions in fp8, except those with "norm" in
  their key; 1-D tensors (biases, norm scales) and norm weights keep their file dtype (bf16 in the
  released files). This is how the released fp8 file was made.

The compute dtype follows ComfyUI (`comfy.model_management.unet_manual_cast`): bf16 where the
device supports it, else fp32; fp16 and fp8 weights are always cast to it when a layer runs
(`comfy.ops.manual_cast`), as are mixed-dtype files.

Scaled fp8 files (ComfyUI's format: a `scaled_fp8` marker and a `<layer>.scale_weight` per fp8
weight) are dequantized on load: weight × scale_weight, stored as bf16 under "default" or in the
requested `weight_dtype` (so a scaled file takes twice its size in memory under "default"; pick
"fp8_e4m3fn" to re-quantize without the scale). `scale_input` keys only matter to fp8 matrix
multiplication and are ignored.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

import comfy.model_management
import comfy.model_patcher
import comfy.ops
import folder_paths

from .architecture import guess_architecture
from .comfy_model import FramePackModelConfig
from .model import infer_config

NODE_NAME = "FramePackModelLoader"
MODEL_FOLDER = "diffusion_models"

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
    # fp8_e4m3fn weights multiplied by Hopper/Ada fp8 matmuls (ComfyUI's fp8_ops, torch._scaled_mm)
    # instead of being cast up to bf16 first; the same as ComfyUI's UNETLoader "fp8_e4m3fn_fast".
    # Where the device has no fp8 compute (CPU, older GPUs) it behaves like fp8_e4m3fn.
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
}
FAST_FP8_WEIGHT_DTYPES = ("fp8_e4m3fn_fast",)
FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)

# safetensors header dtype names -> torch dtypes this loader accepts.
FILE_DTYPES: dict[str, torch.dtype] = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}

# Tried in this order; the first one that every weight key starts with is removed.
KEY_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "transformer.")
# In a file that mixes a diffusion model with other parts (a full checkpoint), only keys under one
# of these prefixes are the diffusion model.
DIFFUSION_MODEL_PREFIXES = ("model.diffusion_model.", "diffusion_model.")

SCALED_FP8_MARKER = "scaled_fp8"
SCALE_WEIGHT_SUFFIX = ".scale_weight"
SCALE_INPUT_SUFFIX = ".scale_input"

EXPECTED_FILES = (
    "a FramePack transformer (FramePackI2V_HY or FramePack-F1, diffusers key names) as a single "
    ".safetensors file or a diffusers folder with *.safetensors.index.json, under models/diffusion_models"
)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


class FramePackLoadError(ValueError):
    """A checkpoint the FramePack loader cannot load; the message names the file and the problem."""
    # bare class name in ComfyUI's error report: see LayoutError in layout.py
    __module__ = "builtins"

    def __init__(self, file, problem: str, expected: str = EXPECTED_FILES):
        self.file = str(file)
        self.problem = problem
        super().__init__(f"{NODE_NAME}: {file}: {problem}; expected {expected}")


@dataclass(frozen=True)
class TensorRecord:
    """One tensor as a safetensors header describes it (nothing read yet)."""

    file: Path
    file_key: str  # the key inside the file, prefix included
    dtype: torch.dtype
    shape: tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Finding checkpoints
# --------------------------------------------------------------------------------------------


def _is_safetensors_name(name: str) -> bool:
    return name.lower().endswith((".safetensors", ".sft"))


def _diffusers_folders(root: str) -> list[str]:
    """Sub-folders of `root` (relative, '/'-separated) that hold a *.safetensors.index.json."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        if any(f.endswith(".safetensors.index.json") for f in filenames):
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                found.append(rel.replace(os.sep, "/"))
            dirnames[:] = []  # the shards below are part of this checkpoint
        dirnames.sort()
    return found


def list_checkpoints() -> list[str]:
    """Names under ComfyUI's `diffusion_models` folders that `load_framepack` can load.

    Single `.safetensors` files and diffusers folders; the shards inside a diffusers folder are
    listed once, as the folder.
    """
    folders = set()
    for root in folder_paths.get_folder_paths(MODEL_FOLDER):
        if os.path.isdir(root):
            folders.update(_diffusers_folders(root))
    files = []
    for name in folder_paths.get_filename_list(MODEL_FOLDER):
        norm = name.replace(os.sep, "/")
        if _is_safetensors_name(norm) and not any(norm.startswith(folder + "/") for folder in folders):
            files.append(name)
    return sorted(files + sorted(folders), key=str.lower)


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """The file or folder a checkpoint name (as `list_checkpoints` gives it) or a path refers to."""
    path = Path(name_or_path)
    if path.is_absolute():
        if path.exists():
            return path
    else:
        for root in folder_paths.get_folder_paths(MODEL_FOLDER):
            candidate = Path(root) / path
            if candidate.exists():
                return candidate
    roots = ", ".join(folder_paths.get_folder_paths(MODEL_FOLDER))
    raise FramePackLoadError(name_or_path, f"not found (looked in {roots})")


def checkpoint_stamp(name_or_path: str | os.PathLike) -> list[tuple[str, int, int]] | None:
    """(file name, mtime ns, size) of each weight file of a checkpoint, None if it cannot be found:
    changes when a file or folder is replaced under the same name (ComfyUI caches by input values)."""
    try:
        path = resolve_checkpoint(name_or_path)
        files = sorted(path.glob("*.safetensors*")) if path.is_dir() else [path]
        return [(f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files]
    except (ValueError, OSError):
        return None


# --------------------------------------------------------------------------------------------
# Headers: everything checked before any weight is read
# --------------------------------------------------------------------------------------------


def read_safetensors_header(path: Path) -> dict[str, TensorRecord]:
    """The tensors a safetensors file holds, checked against the file's size and the dtypes allowed."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FramePackLoadError(path, f"the file is {size} bytes, too short to be a safetensors file")
            header_len = int.from_bytes(head, "little")
            if header_len > min(size - 8, _MAX_HEADER_BYTES):
                raise FramePackLoadError(
                    path, f"truncated or not a safetensors file: its header claims {header_len} bytes "
                    f"but the file has {size} bytes")
            raw = f.read(header_len)
    except OSError as e:
        raise FramePackLoadError(path, f"cannot be read ({e.strerror or e})") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError):
        raise FramePackLoadError(path, "not a safetensors file (its header is not valid JSON)") from None
    header.pop("__metadata__", None)

    data_bytes = size - 8 - header_len
    records = {}
    needed = 0
    unsupported = {}
    for key, info in header.items():
        try:
            dtype_name = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FramePackLoadError(path, f"not a safetensors file (bad header entry for {key!r})") from None
        needed = max(needed, end)
        if dtype_name not in FILE_DTYPES:
            unsupported.setdefault(dtype_name, key)
            continue
        records[key] = TensorRecord(path, key, FILE_DTYPES[dtype_name], shape)
    if needed > data_bytes:
        raise FramePackLoadError(
            path, f"truncated: the header describes {needed} bytes of tensor data but only {data_bytes} are in "
            f"the file ({size} bytes; an interrupted download?)",
            expected="the complete file (download it again)")
    if unsupported:
        found = ", ".join(f"{name} (e.g. {key!r})" for name, key in sorted(unsupported.items()))
        raise FramePackLoadError(
            path, f"unsupported tensor dtype {found}",
            expected="float32, float16, bfloat16, float8_e4m3fn or float8_e5m2 tensors "
            "(int8/int4 quantized and float64 files are not supported)")
    return records


def _checkpoint_files(path: Path) -> tuple[list[Path], dict | None]:
    """The safetensors files of a checkpoint and its diffusers config.json (if any)."""
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if not indexes:
            raise FramePackLoadError(path, "a folder without a *.safetensors.index.json (not a diffusers model folder)")
        index_path = next((p for p in indexes if p.name.startswith("diffusion_pytorch_model")), indexes[0])
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
            shard_names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise FramePackLoadError(index_path, "not a valid safetensors index (no weight_map)") from None
        files = []
        for name in shard_names:
            shard = path / name
            if not shard.is_file():
                raise FramePackLoadError(
                    shard, f"missing: {index_path.name} lists this shard but it is not in the folder",
                    expected=f"all {len(shard_names)} shards named in {index_path.name}")
            files.append(shard)
        config_path = path / "config.json"
    else:
        if not _is_safetensors_name(path.name):
            raise FramePackLoadError(
                path, f"unsupported file type {path.suffix!r} (pickled .ckpt/.pt/.bin files are not loaded)",
                expected="a .safetensors file")
        files = [path]
        config_path = path.parent / "config.json" if path.name == "diffusion_pytorch_model.safetensors" else None
    config = None
    if config_path is not None and config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (OSError, ValueError):
            logging.warning("%s: %s is not valid JSON; ignoring it", NODE_NAME, config_path)
    return files, config


def _split_prefix(keys: list[str]) -> tuple[str, list[str]]:
    """The prefix to strip from the weight keys, and the keys that are not part of the model."""
    for prefix in KEY_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix, []
    for prefix in DIFFUSION_MODEL_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return prefix, [k for k in keys if not k.startswith(prefix)]
    return "", []


@dataclass
class CheckpointPlan:
    """What will be loaded, worked out from the headers alone."""

    path: Path
    tensors: dict[str, TensorRecord]  # model key (prefix stripped) -> where it is in the files
    scales: dict[str, TensorRecord]  # model weight key -> its scale_weight tensor
    config_json: dict | None


def inspect_checkpoint(path: Path) -> CheckpointPlan:
    """Check a checkpoint's files and keys without reading any weight; raise FramePackLoadError on a problem."""
    files, config_json = _checkpoint_files(path)
    records: dict[str, TensorRecord] = {}
    for file in files:
        records.update(read_safetensors_header(file))

    scale_weights = {k[: -len(SCALE_WEIGHT_SUFFIX)]: r for k, r in records.items() if k.endswith(SCALE_WEIGHT_SUFFIX)}
    weights = {
        k: r for k, r in records.items()
        if k != SCALED_FP8_MARKER and not k.endswith((SCALE_WEIGHT_SUFFIX, SCALE_INPUT_SUFFIX))
    }
    prefix, others = _split_prefix(sorted(weights))
    if others:
        logging.info("%s: %s: ignoring %d tensors outside %r", NODE_NAME, path, len(others), prefix)
    tensors = {k[len(prefix):]: r for k, r in weights.items() if k.startswith(prefix)}
    arch = guess_architecture(tensors)
    if not arch.is_framepack:
        raise FramePackLoadError(path, f"this is {arch.description}")

    scales = {}
    for layer, record in scale_weights.items():
        key = layer[len(prefix):] + ".weight"
        if layer.startswith(prefix) and key in tensors:
            if record.shape not in ((), (1,)):
                raise FramePackLoadError(
                    path, f"{record.file_key} has shape {list(record.shape)}",
                    expected="one scale per weight (ComfyUI's scaled fp8 format)")
            scales[key] = record
    return CheckpointPlan(path, tensors, scales, config_json)


# --------------------------------------------------------------------------------------------
# Dtypes
# --------------------------------------------------------------------------------------------


def target_dtype(key: str, stored: torch.dtype, shape: tuple[int, ...], weight_dtype: torch.dtype | None,
                 scaled: bool = False) -> torch.dtype:
    """The dtype the tensor `key` is kept in after loading."""
    if weight_dtype in FP8_DTYPES:
        if len(shape) >= 2 and "norm" not in key:
            return weight_dtype
        # Norms and biases stay as they are in the file (bf16 in the released files), never fp8.
        return torch.bfloat16 if stored in FP8_DTYPES else stored
    if weight_dtype is not None:
        return weight_dtype
    return torch.bfloat16 if scaled else stored


def _parse_weight_dtype(weight_dtype: str) -> torch.dtype | None:
    if weight_dtype not in WEIGHT_DTYPES:
        raise FramePackLoadError(
            f"weight_dtype {weight_dtype!r}", "not a supported weight dtype",
            expected="one of " + ", ".join(WEIGHT_DTYPES))
    return WEIGHT_DTYPES[weight_dtype]


def _storage_and_compute_dtypes(dtypes: dict[torch.dtype, int], load_device) -> tuple[torch.dtype, torch.dtype | None, bool]:
    """(weight dtype for ComfyUI, manual-cast compute dtype or None, whether the dtypes are mixed)."""
    storage = max(dtypes, key=dtypes.get)  # the dtype of most parameters
    supported = FramePackModelConfig.supported_inference_dtypes
    if storage in supported:
        compute = comfy.model_management.unet_manual_cast(storage, load_device, supported)
    else:
        # fp16 / fp8 weights: compute in the best supported dtype of the device (bf16, else fp32).
        compute = comfy.model_management.unet_manual_cast(None, load_device, supported)
    return storage, compute, len(dtypes) > 1


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _check_keys(path: Path, expected: dict[str, tuple[int, ...]], tensors: dict[str, TensorRecord]) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k]) != tensors[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} tensors with the wrong shape (e.g. {k}: {list(tensors[k].shape)} "
                        f"in the file, {list(expected[k])} for this configuration)")
    if problems:
        raise FramePackLoadError(path, "incomplete or inconsistent FramePack checkpoint: " + "; ".join(problems))


def _read_tensor(handle, record: TensorRecord, dtype: torch.dtype, scale: torch.Tensor | None) -> torch.Tensor:
    tensor = handle.get_tensor(record.file_key)  # a view of the memory-mapped file
    if scale is not None:
        tensor = tensor.to(torch.float32) * scale.to(torch.float32)
    if tensor.dtype == dtype:
        return tensor
    if dtype in FP8_DTYPES:
        # fp8 has no inf: clamp to its range instead of turning outliers into NaN.
        if tensor.dtype in FP8_DTYPES:
            tensor = tensor.to(torch.bfloat16)
        limit = torch.finfo(dtype).max
        tensor = tensor.clamp(-limit, limit)
    return tensor.to(dtype)


def load_framepack(name_or_path: str | os.PathLike, weight_dtype: str = "default", disable_dynamic: bool = False):
    """Load a FramePack checkpoint (a name from `list_checkpoints()` or a path) as a ComfyUI MODEL.

    Returns a `CoreModelPatcher` / `ModelPatcher` whose `.model` is a `FramePackModel`, weights on the CPU (the file's
    memory map under "default"), ready for `comfy.model_management.load_models_gpu`. `disable_dynamic` asks for the
    classic `ModelPatcher` even where ComfyUI's Dynamic VRAM is on (ComfyUI's own loaders take the same flag).
    Raises `FramePackLoadError` for a bad file or `weight_dtype` before reading any weight.
    """
    requested = _parse_weight_dtype(weight_dtype)
    path = resolve_checkpoint(name_or_path)
    plan = inspect_checkpoint(path)

    shapes = {k: r.shape for k, r in plan.tensors.items()}
    try:
        config = infer_config(shapes, plan.config_json)
    except (KeyError, ValueError, IndexError, TypeError) as e:
        raise FramePackLoadError(path, f"cannot work out the FramePack configuration ({e})") from None

    targets = {
        k: target_dtype(k, r.dtype, r.shape, requested, scaled=k in plan.scales) for k, r in plan.tensors.items()
    }
    counts: dict[torch.dtype, int] = {}
    for k, r in plan.tensors.items():
        n = 1
        for d in r.shape:
            n *= d
        counts[targets[k]] = counts.get(targets[k], 0) + n
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    storage, compute, mixed = _storage_and_compute_dtypes(counts, load_device)

    model_config = FramePackModelConfig.from_config(config)
    model_config.set_inference_dtype(storage, compute)
    if weight_dtype in FAST_FP8_WEIGHT_DTYPES:
        # BaseModel reads this when it picks the layer family (comfy.ops.pick_operations).
        model_config.optimizations["fp8"] = True
    if mixed and compute is None:
        # Same compute dtype as the bulk of the weights, but some layers hold another dtype:
        # the manual-cast layers cast those when they run.
        model_config.manual_cast_dtype = storage
        model_config.custom_operations = comfy.ops.manual_cast
    model = model_config.get_model({}, "", device=torch.device("meta"))
    diffusion_model = model.diffusion_model
    expected = {k: tuple(v.shape) for k, v in diffusion_model.state_dict().items()}
    _check_keys(path, expected, plan.tensors)

    # Every check passed: read the weights, file by file, tensor by tensor.
    by_file: dict[Path, list[str]] = {}
    for k, r in plan.tensors.items():
        by_file.setdefault(r.file, []).append(k)
    state_dict = {}
    try:
        for file, keys in by_file.items():
            scale_handles = {}
            with safe_open(str(file), framework="pt", device="cpu") as handle:
                for k in keys:
                    scale = None
                    if k in plan.scales:
                        s = plan.scales[k]
                        if s.file == file:
                            scale = handle.get_tensor(s.file_key)
                        else:
                            if s.file not in scale_handles:
                                scale_handles[s.file] = safe_open(str(s.file), framework="pt", device="cpu")
                            scale = scale_handles[s.file].get_tensor(s.file_key)
                    state_dict[k] = _read_tensor(handle, plan.tensors[k], targets[k], scale)
            scale_handles.clear()
    except (OSError, RuntimeError) as e:
        raise FramePackLoadError(path, f"reading the weights failed ({e})") from None

    diffusion_model.load_state_dict(state_dict, strict=True, assign=True)
    del state_dict
    left = [n for n, t in list(diffusion_model.named_parameters()) + list(diffusion_model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{NODE_NAME}: internal error: {', '.join(left[:5])} not loaded (still on the meta device)")
    if hasattr(comfy.model_management, "archive_model_dtypes"):
        # Newer ComfyUI records each parameter's dtype at construction; ours changed on assignment.
        comfy.model_management.archive_model_dtypes(diffusion_model)
    model.device = torch.device("cpu")
    logging.info("%s: loaded %s: %s weights, compute dtype %s, %s", NODE_NAME, path, storage,
                 compute or storage, config)
    # ComfyUI's loaders build `CoreModelPatcher`, which a current ComfyUI's main.py swaps for its Dynamic
    # VRAM patcher at start-up (looked up here, at call time, for that reason); 0.3.75 has only ModelPatcher.
    patcher_class = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    if disable_dynamic:
        patcher_class = comfy.model_patcher.ModelPatcher
    patcher = patcher_class(model, load_device=load_device, offload_device=offload_device)
    # The factory ComfyUI calls (with disable_dynamic=True) when a Dynamic VRAM model needs a classic
    # patcher: `clone(disable_dynamic=True)` in TorchCompileModel, hooks, multi-GPU, and our trainer.
    # comfy.sd.load_diffusion_model registers itself the same way.
    patcher.cached_patcher_init = (load_framepack, (str(path), weight_dtype))
    logging.info("%s: managed by %s on %s", NODE_NAME, type(patcher).__name__, load_device)
    return patcher
