"""One-frame training sets: samples built from the graph's images or from folders, encoded once.

A sample is one-frame inference plus its answer: a FRAMEPACK_LAYOUT carrying the sample's controls
(start first, masks and SigLIP as the layout node sets them) and the target frame's latent at the
start's size. Captions travel beside the dataset as CONDITIONING (ComfyUI's CLIPTextEncode makes
them), one per sample in the dataset's order.

Folders follow musubi-tuner's image-dataset conventions (`dataset/datasources.py`
`ImageDirectoryDatasource`, read 2026-12): targets in `image_directory`, each with a caption
`<name><caption_extension>` beside it; its controls in `control_directory`, named `<name>.<ext>`
(first) or `<name>_<k>.<ext>` in the order of k; a control's alpha channel is its mask (multiplied
into its latent, as musubi does when it caches). Unlike musubi, each control is fitted to the
target's size by FramePack's own buckets (`buckets.py`), the sizes inference uses.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .buckets import output_size
from .encode import MASK_MODES, encode_control
from .layout import FramePackLayout, attach_controls, is_layout, lora_settings_of, resolve_layout

SAMPLE_NODE = "FramePackOneFrameTrainingSample"
FOLDER_NODE = "FramePackOneFrameDatasetFolder"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class TrainingError(ValueError):
    """Bad training input (a dataset, a setting): the message names the node and the input."""
    # bare class name in ComfyUI's error report: see LayoutError in layout.py
    __module__ = "builtins"


@dataclass(frozen=True, eq=False)
class TrainingSample:
    """`layout`: a FRAMEPACK_LAYOUT carrying this sample's controls; `target`: (1, 16, 1, h, w) the target
    frame in model space, at the start's latent size; `name`: how errors and the summary call it."""

    layout: FramePackLayout
    target: torch.Tensor
    name: str


# A FRAMEPACK_DATASET is recognised by value, for the reason LAYOUT_KIND gives in layout.py.
DATASET_KIND = "framepack_oneframe.dataset/1"


@dataclass(frozen=True, eq=False)
class OneFrameDataset:
    """`FRAMEPACK_DATASET`: the samples in order, and where they came from (for the LoRA's ss_datasets)."""

    samples: tuple[TrainingSample, ...]
    sources: tuple[dict, ...]  # {"image_directory": ..., "control_directory": ...} or {"graph_samples": n}
    kind = DATASET_KIND


def is_dataset(obj) -> bool:
    return getattr(obj, "kind", None) == DATASET_KIND


def merge_datasets(datasets, node: str) -> OneFrameDataset:
    """Several FRAMEPACK_DATASET values (a list input) as one, in order."""
    datasets = [d for d in (datasets or []) if d is not None]
    bad = [type(d).__name__ for d in datasets if not is_dataset(d)]
    if not datasets or bad:
        raise TrainingError(f"{node}: input 'dataset' must come from FramePackOneFrameDatasetFolder or "
                            f"FramePackOneFrameTrainingSample" + (f" (got {', '.join(bad)})" if bad else ""))
    sources: list[dict] = []
    for x in (x for d in datasets for x in d.sources):
        if sources and "graph_samples" in x and "graph_samples" in sources[-1]:  # one entry for a chain of samples
            sources[-1] = {"graph_samples": sources[-1]["graph_samples"] + x["graph_samples"]}
        else:
            sources.append(dict(x))
    return OneFrameDataset(tuple(s for d in datasets for s in d.samples), tuple(sources))


def dataset_layout(dataset: OneFrameDataset, node: str):
    """The one OneFrameLayout every sample has (a LoRA records one layout); raises when they differ."""
    if not dataset.samples:
        raise TrainingError(f"{node}: input 'dataset' has no samples")
    first = dataset.samples[0]
    ref = lora_settings_of(first.layout.layouts[0])
    for s in dataset.samples[1:]:
        other = lora_settings_of(s.layout.layouts[0])
        if other != ref:
            diff = ", ".join(f"{k} {other[k]!r} vs {ref[k]!r}" for k in ref if other[k] != ref[k])
            raise TrainingError(f"{node}: input 'dataset': sample '{s.name}' has another layout than '{first.name}' "
                                f"({diff}); a LoRA is trained for one layout")
    return first.layout.layouts[0]


# ------------------------------------------------------------------------------------------------
# Samples from the graph
# ------------------------------------------------------------------------------------------------


def _check_layout(layout, node: str, need_controls: bool) -> FramePackLayout:
    if not is_layout(layout) or (need_controls and not layout.controls):
        raise TrainingError(f"{node}: input 'layout' must come from FramePackOneFrameLayout")
    if layout.is_sweep:
        raise TrainingError(f"{node}: input 'layout' is a sweep over {layout.vary}; a LoRA is trained for one "
                            f"layout: connect FramePackOneFrameLayout directly")
    return layout


def sample_from_images(layout, target: torch.Tensor, vae, previous=None, node: str = SAMPLE_NODE) -> OneFrameDataset:
    """`previous` + one sample: the layout node's output (its controls are the sample's) and the target IMAGE."""
    layout = _check_layout(layout, node, need_controls=True)
    if previous is not None and not is_dataset(previous):
        raise TrainingError(f"{node}: input 'previous' must be a FRAMEPACK_DATASET, got {type(previous).__name__}")
    if not isinstance(target, torch.Tensor) or target.ndim != 4 or target.shape[0] != 1:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise TrainingError(f"{node}: input 'target' must be one IMAGE (1, H, W, 3), got {shape}")
    start = layout.controls[0]
    if start.batch != 1:
        raise TrainingError(f"{node}: input 'layout': its start image is a batch of {start.batch}; one sample takes "
                            f"one start image")
    h, w = start.latent_hw
    latent = encode_control(target[..., :3], vae, width=w * 8, height=h * 8, node=node).latent
    n = len(previous.samples) if previous is not None else 0
    sample = TrainingSample(layout=layout, target=latent, name=f"graph sample {n}")
    own = OneFrameDataset((sample,), ({"graph_samples": 1},))
    return own if previous is None else merge_datasets([previous, own], node)


# ------------------------------------------------------------------------------------------------
# Samples from folders
# ------------------------------------------------------------------------------------------------


def _resolve_dir(path: str, name: str, node: str) -> str:
    import folder_paths

    path = (path or "").strip()
    if not path:
        raise TrainingError(f"{node}: input '{name}' is empty: give a folder (absolute or under ComfyUI's input "
                            f"folder)")
    full = path if os.path.isabs(path) else os.path.join(folder_paths.get_input_directory(), path)
    if not os.path.isdir(full):
        raise TrainingError(f"{node}: input '{name}': folder {full!r} does not exist")
    return full


def _images_in(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))


def match_controls(targets: list[str], controls: list[str], node: str) -> dict[str, list[str]]:
    """musubi's matching: a control belongs to target stem S when its name is `S.<ext>` or `S_<k>.<ext>`; longer
    stems claim their files first; per target the exact name comes first, then `_<k>` by integer k."""
    pool = set(controls)
    out: dict[str, list[str]] = {}
    for t in sorted(targets, key=lambda f: -len(os.path.splitext(f)[0])):
        stem = os.path.splitext(t)[0]
        mine = [c for c in pool if os.path.splitext(c)[0] == stem or c.startswith(stem + "_")]
        pool -= set(mine)

        def order(c):
            rest = os.path.splitext(c)[0][len(stem):]
            if not rest:
                return -1
            if not re.fullmatch(r"_\d+", rest):
                raise TrainingError(f"{node}: control image {c!r} does not name a control number: name controls of "
                                    f"{t!r} {stem}_0, {stem}_1, ...")
            return int(rest[1:])

        out[t] = sorted(mine, key=order)
    return out


def _load_rgba(path: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(1, H, W, 3) float image and its (1, H, W) alpha (None when the file has none)."""
    with Image.open(path) as img:
        has_alpha = img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info)
        arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr)[None]
    return (t[..., :3], t[..., 3]) if has_alpha else (t, None)


def load_folder(image_directory: str, control_directory: str, layout, vae, clip_vision=None, resolution: int = 640,
                caption_extension: str = ".txt", mask_mode: str = MASK_MODES[1],
                node: str = FOLDER_NODE) -> tuple[OneFrameDataset, list[str], str]:
    """(dataset, captions, summary) for the folders, with the layout's settings applied to each sample.

    Everything is checked (folders, captions, control counts, sizes) before the first image is encoded.
    """
    layout = _check_layout(layout, node, need_controls=False)
    if mask_mode not in MASK_MODES:
        raise TrainingError(f"{node}: input 'mask_mode' is {mask_mode!r}; allowed: {', '.join(MASK_MODES)}")
    image_dir = _resolve_dir(image_directory, "image_directory", node)
    control_dir = _resolve_dir(control_directory, "control_directory", node)
    targets = _images_in(image_dir)
    if not targets:
        raise TrainingError(f"{node}: input 'image_directory': no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                            f"{image_dir!r}")
    controls = match_controls(targets, _images_in(control_dir), node)
    # A layout with pictures says how many images a sample has; a layout of settings only takes what the
    # folder holds, the same number for every target.
    want = layout.layouts[0].num_controls if layout.controls else len(controls[targets[0]])
    captions, problems, sizes = [], [], {}
    for t in targets:
        try:
            with Image.open(os.path.join(image_dir, t)) as img:
                sizes[t] = output_size(img.height, img.width, resolution, node=node)
        except (OSError, ValueError) as e:
            problems.append(f"{t}: cannot be read or fitted to a bucket ({e})")
        cap = os.path.join(image_dir, os.path.splitext(t)[0] + caption_extension)
        text = open(cap, encoding="utf-8").read().strip() if os.path.isfile(cap) else ""
        if not text:
            problems.append(f"{t}: no caption ({os.path.basename(cap)} is missing or empty)")
        captions.append(text)
        if len(controls[t]) < max(want, 1) or (not layout.controls and len(controls[t]) != want):
            problems.append(f"{t}: {len(controls[t])} control image(s) in the control folder, "
                            f"{max(want, 1)} expected (start + {max(want, 1) - 1}, as "
                            f"{'the layout places' if layout.controls else 'the first target has'}); name them "
                            f"{os.path.splitext(t)[0]}_0, _1, ...")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        raise TrainingError(f"{node}: {len(problems)} problem(s) in the dataset: {shown}")

    samples, lines = [], []
    for t in targets:
        image, _ = _load_rgba(os.path.join(image_dir, t))  # musubi drops a target's alpha
        H, W = sizes[t]
        target = encode_control(image, vae, width=W, height=H, node=node).latent
        encoded = []
        for c in controls[t][:want]:
            pixels, alpha = _load_rgba(os.path.join(control_dir, c))
            encoded.append(encode_control(pixels, vae, clip_vision, alpha, width=W, height=H, mask_mode=mask_mode,
                                          node=node))
        one = attach_controls(layout.options, resolve_layout(len(encoded), layout.options), encoded)
        samples.append(TrainingSample(layout=one, target=target, name=t))
        masks = sum(c.mask is not None for c in encoded)
        lines.append(f"{t}: {W}x{H}, controls {', '.join(controls[t][:want])}" + (f" ({masks} with alpha mask)"
                                                                                  if masks else ""))
    source = {"image_directory": os.path.basename(os.path.normpath(image_dir)),
              "control_directory": os.path.basename(os.path.normpath(control_dir)),
              "caption_extension": caption_extension, "resolution": resolution}
    summary = f"{len(samples)} samples from {image_dir}\n" + "\n".join(lines)
    return OneFrameDataset(tuple(samples), (source,)), captions, summary
