"""What a LoRA file's safetensors header says about its training: the one-frame settings and a summary.

What musubi-tuner writes (read in kohya-ss/musubi-tuner at 30c658c, 2026-06-24, and its history
back to the first one-frame commits of May 2025): `training/trainer_base.py` `NetworkTrainer.train`
builds `metadata` (before the 2026-04 refactor the same code sat in `hv_train_network.py`):
ss_session_id (ss_ss_session_id before 2025-08-30), ss_training_started_at, ss_output_name,
ss_learning_rate, ss_num_train_items, ss_num_batches_per_epoch, ss_num_epochs,
ss_gradient_checkpointing(_cpu_offload), ss_gradient_accumulation_steps, ss_max_train_steps,
ss_lr_warmup_steps, ss_lr_scheduler, ss_base_model_version ("framepack"), ss_network_module,
ss_network_dim, ss_network_alpha, ss_network_dropout, ss_mixed_precision, ss_seed,
ss_training_comment, ss_optimizer, ss_max_grad_norm, ss_fp8_base, ss_full_fp16, ss_full_bf16,
ss_weighting_scheme, ss_logit_mean, ss_logit_std, ss_mode_scale, ss_guidance_scale,
ss_timestep_sampling, ss_sigmoid_scale, ss_discrete_flow_shift, ss_datasets, ss_network_args (only
with --network_args), ss_sd_model_name, ss_vae_name, and at each save ss_training_finished_at,
ss_steps, ss_epoch (all values str()). `ss_datasets` is json.dumps of each dataset's `get_metadata()`
(`dataset/image_video_dataset.py`): resolution [w, h], caption_extension, batch_size_per_device,
num_repeats, enable_bucket, bucket_no_upscale, image_directory / image_jsonl_file /
control_directory (base names), has_control (+ frame settings for video datasets).
`utils/sai_model_spec.py` `build_metadata` adds modelspec.* (architecture "framepack/lora",
implementation, title, date, resolution = --metadata_reso or "1280x720", optional
author/description/license/tags), `networks/lora.py` `save_weights` adds sshs_model_hash /
sshs_legacy_hash. --no_metadata keeps only ss_base_model_version, ss_network_module/dim/alpha/args.

musubi records nowhere the dataset's one-frame settings (`fp_1f_target_index`,
`fp_1f_clean_indices`, `fp_1f_no_post`, `fp_latent_window_size`) or the cache flags
`--one_frame_no_2x/_4x`. `read_settings` returns what can be known, in this order (the first
place that records a setting wins):

1. structured keys at the header's top level: `fp_1f_target_index`, `fp_1f_clean_indices`,
   `fp_1f_no_post`, `fp_1f_no_2x` / `one_frame_no_2x`, `fp_1f_no_4x` / `one_frame_no_4x`,
   `fp_latent_window_size`, and two this pack adds so that a layout is recorded whole:
   `fp_1f_siglip_source` (the layout summary's label: "start", "control 1", "none",
   "0.7*start + 0.3*control 1") and `fp_1f_masked_controls` (the controls whose mask multiplies their
   latent, e.g. "[0, 1]") (safetensors metadata values are strings: "1", "[0, 10]", "true");
2. the same keys inside the `ss_datasets` entries (the JSON list of dataset dicts, where LoRA
   inspectors look for a dataset's settings), and inside the per-subset dicts an entry may hold
   under `subsets` or `datasets` (kohya sd-scripts nests them so), in order. A LoRA trained by
   this pack writes both 1 and 2;
3. musubi's own spellings written by a person into a free-text field (`ss_training_comment`,
   `modelspec.description`, `modelspec.usage_hint`, …): `target_index=1,control_index=0;10,
   no_post,no_2x,no_4x` (the --one_frame_inference option) or `fp_1f_target_index = 1` …;
4. `resolution` from the first `ss_datasets` entry that has one.

This module reads only the header (JSON and text); it needs neither torch nor ComfyUI.
"""
from __future__ import annotations

import json
import re

from safetensors import safe_open


SETTINGS_KEYS = ("target_index", "clean_indices", "no_post", "no_2x", "no_4x", "latent_window_size", "siglip",
                 "masked_controls", "resolution")
_FREE_TEXT_FIELDS = ("ss_training_comment", "modelspec.usage_hint", "modelspec.description", "modelspec.tags",
                     "modelspec.trigger_phrase", "ss_output_name", "modelspec.title")


def _as_bool(v) -> bool | None:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off", "none", ""):
        return False
    return None


def _int_list(v) -> list[int] | None:
    if isinstance(v, (list, tuple)):
        try:
            return [int(x) for x in v]
        except (TypeError, ValueError):
            return None
    found = re.findall(r"-?\d+", str(v))
    return [int(x) for x in found] or None


# Structured keys -> settings key. The no_2x / no_4x flags have two spellings: musubi's cache options
# (--one_frame_no_2x / --one_frame_no_4x, args names one_frame_no_*) and the fp_1f_ dataset spelling.
_STRUCTURED_INT = {"fp_1f_target_index": "target_index", "fp_latent_window_size": "latent_window_size"}
_STRUCTURED_BOOL = {"fp_1f_no_post": "no_post", "one_frame_no_2x": "no_2x", "fp_1f_no_2x": "no_2x",
                    "one_frame_no_4x": "no_4x", "fp_1f_no_4x": "no_4x"}
# Where a dataset entry nests its per-subset dicts (kohya sd-scripts: "subsets"; a list of datasets: "datasets").
_NESTED = ("subsets", "datasets")


def _as_int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    text = str(v).strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else None


def _from_structured(d: dict) -> dict:
    """fp_1f_* / fp_latent_window_size keys (musubi's dataset-config names) in one dict; values may be
    JSON values (inside ss_datasets) or their str() (at the header's top level). Unreadable values are skipped."""
    out = {}
    for key, name in _STRUCTURED_INT.items():
        if d.get(key) is not None and _as_int(d[key]) is not None:
            out[name] = _as_int(d[key])
    if d.get("fp_1f_clean_indices") is not None:
        indices = _int_list(d["fp_1f_clean_indices"])
        if indices is not None:
            out["clean_indices"] = indices
    for key, name in _STRUCTURED_BOOL.items():
        if d.get(key) is not None and _as_bool(d[key]) is not None:
            out[name] = _as_bool(d[key])
    if d.get("fp_1f_siglip_source") is not None:
        weights = parse_siglip_label(d["fp_1f_siglip_source"])
        if weights is not None:
            out["siglip"] = weights
    if d.get("fp_1f_masked_controls") is not None:
        masked = _int_list(d["fp_1f_masked_controls"])
        out["masked_controls"] = masked or []
    return out


def parse_siglip_label(text) -> list[list] | None:
    """`fp_1f_siglip_source` -> [[control, weight], ...]; the spelling is the layout summary's SigLIP label:
    "start", "control 2", "none" or "0.7*start + 0.3*control 1". None when unreadable."""
    text = str(text).strip().lower()
    if text == "none":
        return []
    weights = []
    for term in text.split("+"):
        m = re.fullmatch(r"\s*(?:([0-9.eE+-]+)\s*\*\s*)?(start|control\s+(\d+))\s*", term)
        if not m:
            return None
        weights.append([0 if m.group(2) == "start" else int(m.group(3)), float(m.group(1) or 1.0)])
    return weights


def header_from_settings(settings: dict) -> dict[str, str]:
    """The header keys that record one-frame `settings` (read_settings' dict, without resolution): what
    `read_settings` reads back into the same dict. Values are JSON text, as safetensors headers hold strings."""
    names = {"target_index": "fp_1f_target_index", "clean_indices": "fp_1f_clean_indices",
             "no_post": "fp_1f_no_post", "no_2x": "fp_1f_no_2x", "no_4x": "fp_1f_no_4x",
             "latent_window_size": "fp_latent_window_size", "masked_controls": "fp_1f_masked_controls"}
    out = {names[k]: json.dumps(v) for k, v in settings.items() if k in names}
    if "siglip" in settings:
        w = settings["siglip"]
        out["fp_1f_siglip_source"] = "none" if not w else " + ".join(
            ("" if len(w) == 1 and float(wt) == 1.0 else f"{float(wt):g}*") + ("start" if c == 0 else f"control {c}")
            for c, wt in w)
    return out


def _dataset_entries(raw) -> list[dict]:
    """The `ss_datasets` JSON as a list of dataset dicts (a single dict is one dataset)."""
    if not raw:
        return []
    try:
        datasets = json.loads(raw)
    except (TypeError, ValueError):
        return []
    if isinstance(datasets, dict):
        datasets = [datasets]
    return [d for d in datasets if isinstance(d, dict)] if isinstance(datasets, list) else []


def _walk(entry: dict, path: str):
    """(path, dict) for a dataset entry and every dict nested under its `subsets` / `datasets`, depth first."""
    yield path, entry
    for key in _NESTED:
        children = entry.get(key)
        if isinstance(children, list):
            for i, child in enumerate(children):
                if isinstance(child, dict):
                    yield from _walk(child, f"{path}.{key}[{i}]")


def _from_text(text: str) -> dict:
    """musubi's spellings in free text: `target_index=1,control_index=0;10,no_post,no_2x,no_4x`
    (the --one_frame_inference option) or dataset-config lines `fp_1f_target_index = 1` …"""
    out: dict = {}
    m = re.search(r"fp_1f_target_index\s*[=:]\s*(\d+)", text) or re.search(r"(?<![\w])target_index\s*[=:]\s*(\d+)", text)
    if m:
        out["target_index"] = int(m.group(1))
    m = (re.search(r"fp_1f_clean_indices\s*[=:]\s*\[([\d\s,]*)\]", text)
         or re.search(r"(?<![\w])control_index\s*[=:]\s*(\d+(?:\s*;\s*\d+)*)", text)
         or re.search(r"(?<![\w])clean_indices\s*[=:]\s*\[?([\d\s,;]*)\]?", text))
    if m and _int_list(m.group(1)):
        out["clean_indices"] = _int_list(m.group(1))
    m = re.search(r"fp_1f_no_post\s*[=:]\s*(\w+)", text)
    if m and _as_bool(m.group(1)) is not None:
        out["no_post"] = _as_bool(m.group(1))
    elif re.search(r"(?<![\w])no_post(?![\w])", text):
        out["no_post"] = True
    for flag in ("no_2x", "no_4x"):
        if re.search(rf"(?<![\w]){flag}(?![\w])", text):
            out[flag] = True
    m = re.search(r"(?:fp_)?latent_window_size\s*[=:]\s*(\d+)", text)
    if m:
        out["latent_window_size"] = int(m.group(1))
    if re.search(r"(?<![\w])(target_index|control_index)\s*=", text):
        # musubi's --one_frame_inference string: a flag it does not list is off
        for flag in ("no_post", "no_2x", "no_4x"):
            out.setdefault(flag, False)
    return out


def read_header(path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (empty dict when it has none), without reading a tensor."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def read_settings(metadata: dict[str, str]) -> tuple[dict, str]:
    """(FRAMEPACK_LORA_SETTINGS dict, a plain description of what the header holds).

    The dict holds only keys in SETTINGS_KEYS that the header really records: `target_index` int,
    `clean_indices` list[int], `no_post`/`no_2x`/`no_4x` bool, `latent_window_size` int,
    `resolution` [width, height] (musubi's dataset `resolution`, the bucket base size).
    """
    metadata = metadata or {}
    settings: dict = {}
    found: list[str] = []
    conflicts: list[str] = []

    datasets = _dataset_entries(metadata.get("ss_datasets"))

    # Top level first, then every dataset entry and subset in order; the first place that records a key wins.
    places = [("the header's top level", metadata)] + [
        (where, d) for i, entry in enumerate(datasets) for where, d in _walk(entry, f"ss_datasets[{i}]")]
    structured: dict = {}
    first_at: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    for where, d in places:
        for k, v in _from_structured(d).items():
            if k not in structured:
                structured[k], first_at[k] = v, where
                sources.setdefault(where, []).append(k)
            elif structured[k] != v:
                conflicts.append(f"{where} says {k}={v!r} but {first_at[k]} says {structured[k]!r}; "
                                 f"using {structured[k]!r}")
    if structured:
        settings.update(structured)
        found.append("one-frame settings from fp_1f_* keys (" + "; ".join(
            f"{', '.join(sorted(keys))} at {where}" for where, keys in sources.items()) + ")")

    for fld in _FREE_TEXT_FIELDS:
        text = metadata.get(fld)
        if not text:
            continue
        parsed = {k: v for k, v in _from_text(text).items() if k not in settings}
        if parsed:
            settings.update(parsed)
            found.append(f"{', '.join(sorted(parsed))} from the text of {fld}")

    resolutions = []
    for d in datasets:
        r = _int_list(d.get("resolution")) if d.get("resolution") is not None else None
        if r:
            resolutions.append([r[0], r[0]] if len(r) == 1 else r[:2])
    if resolutions:
        settings["resolution"] = resolutions[0]
        extra = f" ({len(resolutions)} datasets: {resolutions})" if len({tuple(r) for r in resolutions}) > 1 else ""
        found.append(f"resolution {resolutions[0][0]}x{resolutions[0][1]} (w x h) from ss_datasets{extra}")

    return settings, describe_header(metadata, datasets, found, conflicts)


def describe_header(metadata: dict[str, str], datasets: list[dict], found: list[str],
                    conflicts: list[str] = ()) -> str:
    if not metadata:
        return "header: no metadata (the LoRA records no training settings)"
    lines = []
    trainer = ("musubi-tuner" if "ss_base_model_version" in metadata and "ss_network_module" in metadata
               and "networks." in metadata.get("ss_network_module", "") else None)
    arch = metadata.get("modelspec.architecture") or metadata.get("ss_base_model_version")
    bits = [f"architecture {arch}" if arch else None, f"trainer {trainer}" if trainer else None,
            f"module {metadata['ss_network_module']}" if "ss_network_module" in metadata else None,
            f"dim {metadata['ss_network_dim']}" if "ss_network_dim" in metadata else None,
            f"alpha {metadata['ss_network_alpha']}" if "ss_network_alpha" in metadata else None,
            f"base {metadata['ss_sd_model_name']}" if "ss_sd_model_name" in metadata else None,
            f"{metadata['ss_steps']} steps" if "ss_steps" in metadata else None]
    lines.append("header: " + ", ".join(b for b in bits if b))
    for d in datasets:
        kind = "video dataset" if "frame_extraction" in d or "target_frames" in d else "image dataset"
        parts = [kind, f"resolution {d.get('resolution')}"]
        if "has_control" in d:
            control = _as_bool(d["has_control"])
            parts.append("control images yes (one-frame edit training such as kisekaeichi / 1f-mc; how many "
                         "and at which indices is not recorded)" if control and kind == "image dataset"
                         else f"control images {'yes' if control else 'no'}")
        if "num_repeats" in d:
            parts.append(f"repeats {d['num_repeats']}")
        lines.append("  dataset: " + ", ".join(parts))
    if found:
        lines.append("  recovered: " + "; ".join(found))
    for c in conflicts:
        lines.append("  WARNING: " + c)
    if not any(k in " ".join(found) for k in ("target_index", "clean_indices", "no_post")):
        lines.append("  one-frame settings (target index, clean indices, no_post) are not in the header: "
                     "musubi-tuner does not record them; use the values the LoRA's author publishes")
    for fld in ("ss_training_comment", "modelspec.description", "modelspec.usage_hint"):
        if metadata.get(fld) and metadata[fld] != "None":
            lines.append(f"  {fld}: {metadata[fld][:300]}")
    return "\n".join(lines)


def merge_settings(entries: list[tuple[str, dict]]) -> tuple[dict, list[str]]:
    """Settings of a stack: the layout keys of the first LoRA that records any (a layout is one
    LoRA's recipe, never a mix), the resolution of that LoRA or else of the first that has one.
    Later LoRAs with different values are reported as conflicts."""
    layout_keys = [k for k in SETTINGS_KEYS if k != "resolution"]
    warnings: list[str] = []
    chosen = next(((n, s) for n, s in entries if any(k in s for k in layout_keys)), None)
    merged = {k: v for k, v in chosen[1].items() if k in layout_keys} if chosen else {}
    source = {k: chosen[0] for k in merged} if chosen else {}
    with_res = next(((n, s) for n, s in ([chosen] if chosen else []) + entries if "resolution" in s), None)
    if with_res:
        merged["resolution"], source["resolution"] = with_res[1]["resolution"], with_res[0]
    for name, settings in entries:
        for k, v in settings.items():
            if k in merged and source[k] != name and merged[k] != v:
                warnings.append(f"{name} says {k}={v!r} but {source[k]} says {merged[k]!r}; using {source[k]}'s")
    return merged, warnings
