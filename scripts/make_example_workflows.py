"""(Re)build example_workflows/*.json and their .jpg thumbnails in the real ComfyUI frontend.

    .venv/bin/python scripts/make_example_workflows.py

The graphs are described below (which nodes, which widget values, which links); the browser
script tests/browser/build_workflows.mjs creates them in the frontend served by a real ComfyUI
with this pack, so the saved JSON is exactly the frontend's own format, and screenshots each one
(with random-weight models and synthetic input pictures in place, so the loaders show file names
and the LoadImage nodes show a picture). Only ComfyUI's own nodes and this pack's are used.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_env import add_comfy_to_path  # noqa: E402
from comfy_server import REPO_ROOT, ComfyServer, prepare_base_dir  # noqa: E402
from demo import TRAIN_CONTROLS, TRAIN_IMAGES, make_demo_images  # noqa: E402

OUT = REPO_ROOT / "example_workflows"
DOCS = REPO_ROOT / "docs" / "images"
BROWSER = REPO_ROOT / "tests" / "browser"
# Columns (left to right): loaders and prompts | pictures | encoders | note, control list, layout |
# sampling. Compact enough to open readable on a 1600x1000 window (tests/test_browser.py).
COL0 = 300
LAYOUT_WIDTH = 520

# Where each standard file comes from: the frontend's missing-models dialog offers these downloads
# (node properties.models) when a template is opened without the file in place.
HF = "https://huggingface.co"
HY_REPACK = f"{HF}/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files"
MODEL_LINKS = {  # file name -> (models folder, URL of the folder holding it)
    "FramePackI2V_HY_bf16.safetensors": ("diffusion_models", f"{HF}/Kijai/HunyuanVideo_comfy/resolve/main"),
    "clip_l.safetensors": ("text_encoders", f"{HY_REPACK}/text_encoders"),
    "llava_llama3_fp16.safetensors": ("text_encoders", f"{HY_REPACK}/text_encoders"),
    "hunyuan_video_vae_bf16.safetensors": ("vae", f"{HY_REPACK}/vae"),
    "sigclip_vision_patch14_384.safetensors": ("clip_vision", f"{HF}/Comfy-Org/sigclip_vision_384/resolve/main"),
}

# the files every template needs (README "Model files"), for the thumbnails' "Needs" line
MODELS = "FramePackI2V_HY_bf16, clip_l + llava_llama3_fp16, hunyuan_video_vae_bf16, sigclip_vision_patch14_384"
NEGATIVE = ""
SAMPLER = {"steps": 25, "distilled_guidance": 10.0, "cfg": 1.0, "seed": 42, "control_after_generate": "fixed"}


def _loaders(lora: bool = False) -> tuple[list, list]:
    nodes = [
        {"key": "model", "type": "FramePackModelLoader", "col": 0, "width": COL0,
         "widgets": {"model_name": "FramePackI2V_HY_bf16.safetensors"}},
        {"key": "clip", "type": "DualCLIPLoader", "col": 0, "width": COL0,
         "widgets": {"clip_name1": "clip_l.safetensors", "clip_name2": "llava_llama3_fp16.safetensors",
                     "type": "hunyuan_video"}},
        {"key": "vae", "type": "VAELoader", "col": 0, "width": COL0, "widgets": {"vae_name": "hunyuan_video_vae_bf16.safetensors"}},
        {"key": "clip_vision", "type": "CLIPVisionLoader", "col": 0, "width": COL0,
         "widgets": {"clip_name": "sigclip_vision_patch14_384.safetensors"}},
    ]
    links = [["clip", 0, "pos", "clip"], ["clip", 0, "neg", "clip"]]
    if lora:
        nodes.insert(1, {"key": "lora", "type": "FramePackLoraStack", "col": 4, "row": -1,
                         "widgets": {"lora_name_1": "kisekaeichi_lora.safetensors", "strength_1": 1.0}})
        links += [["model", 0, "lora", "model"], ["lora", 0, "sampler", "model"]]
    else:
        links += [["model", 0, "sampler", "model"]]
    return nodes, links


def _encode(key: str, image: str, title: str, mask: bool) -> tuple[list, list]:
    nodes = [
        {"key": f"{key}_image", "type": "LoadImage", "col": 1, "title": title, "widgets": {"image": image}},
        {"key": key, "type": "FramePackEncodeImage", "col": 2, "title": f"Encode {title.lower()}"},
    ]
    links = [[f"{key}_image", 0, key, "image"], ["vae", 0, key, "vae"], ["clip_vision", 0, key, "clip_vision"]]
    if mask:
        links.append([f"{key}_image", 1, key, "mask"])
    return nodes, links


def _text_and_sampler(prompt: str, prefix: str) -> tuple[list, list]:
    nodes = [
        {"key": "pos", "type": "CLIPTextEncode", "col": 0, "width": COL0, "title": "Prompt", "widgets": {"text": prompt}},
        {"key": "neg", "type": "CLIPTextEncode", "col": 0, "width": COL0, "title": "Negative prompt (unused at cfg 1)",
         "widgets": {"text": NEGATIVE}},
        {"key": "sampler", "type": "FramePackOneFrameSampler", "col": 4, "widgets": dict(SAMPLER)},
        {"key": "decode", "type": "VAEDecode", "col": 4},
        {"key": "save", "type": "SaveImage", "col": 4, "widgets": {"filename_prefix": prefix}},
    ]
    links = [["pos", 0, "sampler", "positive"], ["neg", 0, "sampler", "negative"], ["layout", 0, "sampler", "layout"],
             ["sampler", 0, "decode", "samples"], ["vae", 0, "decode", "vae"], ["decode", 0, "save", "images"]]
    return nodes, links


def _note(text: str) -> dict:
    return {"key": "note", "type": "Note", "col": 3, "row": -1, "widgets": {"text": text}, "width": LAYOUT_WIDTH}


def oichi() -> dict:
    n1, l1 = _loaders()
    n2, l2 = _encode("start", "framepack_start.png", "Start image", mask=False)
    n3, l3 = _text_and_sampler("The person raises both hands and smiles.", "framepack_oichi")
    layout = {"key": "layout", "type": "FramePackOneFrameLayout", "col": 3, "row": 1, "widgets": {"preset": "oichi"},
              "width": LAYOUT_WIDTH}
    note = _note("oichi: one-frame edit of the start image, driven by the prompt.\n"
                 "Preset oichi = musubi-tuner's default layout: start at index 0, zero post at 10, "
                 "target 9 (raise target_index towards ~40 for a bigger change), 2x/4x groups on.\n"
                 "25 steps, distilled guidance 10, cfg 1.")
    return {"name": "framepack_oichi", "title": "FramePack oichi",
            "description": "Edit one picture by a prompt: one-frame inference.",
            "needs": f"Needs: your start image · {MODELS}", "nodes": n1 + n2 + [layout, note] + n3,
            "links": l1 + l2 + l3 + [["start", 0, "layout", "start"]]}


def kisekaeichi(lora: bool = False) -> dict:
    n1, l1 = _loaders(lora)
    n2, l2 = _encode("start", "framepack_start.png", "Start image", mask=True)
    n3, l3 = _encode("ref", "framepack_reference.png", "Reference image", mask=True)
    name = "framepack_kisekaeichi_lora_stack" if lora else "framepack_kisekaeichi"
    n4, l4 = _text_and_sampler("The woman is wearing the outfit from the reference image.", name)
    layout = {"key": "layout", "type": "FramePackOneFrameLayout", "col": 3, "row": 1,
              "widgets": {"preset": "kisekaeichi"}, "width": LAYOUT_WIDTH}
    controls = {"key": "controls", "type": "FramePackControlList", "col": 3}
    text = ("kisekaeichi: the start image wearing the reference image's outfit.\n"
            "Masks: paint them in ComfyUI's mask editor (right-click a Load Image node > Open in MaskEditor); "
            "painted areas are HIDDEN from the model. On the start image paint the clothes to replace; on the "
            "reference image paint everything except the outfit. No mask = the whole image is shown.\n"
            "Preset kisekaeichi = musubi recipe: target 1, clean latents start @ 0 and reference @ 10, "
            "no post, no 2x/4x. target_index 9-13 changes more.")
    if lora:
        text += ("\nLoRA: put your kisekaeichi LoRA(s) in models/loras and pick them in the stack. The layout must "
                 "match the LoRA's training settings: this preset is the musubi kisekaeichi recipe. If the LoRA's "
                 "file header records its settings, you can instead connect the stack's lora_settings output to "
                 "the layout node and pick preset 'from LoRA'.")
    about = (("kisekaeichi + LoRA stack", "The outfit swap with your kisekaeichi LoRA(s) from models/loras.")
             if lora else ("FramePack kisekaeichi", "Dress the start image in the reference image's outfit."))
    return {"name": name, "title": about[0], "description": about[1],
            "needs": f"Needs: start + reference image{', a LoRA' if lora else ''} · {MODELS}",
            "nodes": n1 + n2 + n3 + [controls, layout, _note(text)] + n4,
            "links": l1 + l2 + l3 + l4 + [["start", 0, "layout", "start"], ["ref", 0, "controls", "control"],
                                          ["controls", 0, "layout", "controls"]]}


def kisekaeichi_ksampler() -> dict:
    """kisekaeichi through ComfyUI's stock KSampler: the pack's sampler taken apart into ComfyUI's parts."""
    d = kisekaeichi()
    name = "framepack_kisekaeichi_ksampler"
    nodes = [n for n in d["nodes"] if n["key"] not in ("sampler", "note", "save", "decode")]
    links = [l for l in d["links"] if "sampler" not in (l[0], l[2])]
    nodes += [
        {"key": "cond", "type": "FramePackOneFrameConditioning", "col": 4},
        {"key": "gpos", "type": "FluxGuidance", "col": 4, "title": "Distilled guidance (positive)",
         "widgets": {"guidance": SAMPLER["distilled_guidance"]}},
        {"key": "gneg", "type": "FluxGuidance", "col": 4, "title": "Distilled guidance (negative)",
         "widgets": {"guidance": SAMPLER["distilled_guidance"]}},
        {"key": "shift", "type": "FramePackShift", "col": 4},
        {"key": "sampler", "type": "KSampler", "col": 4,
         "widgets": {"seed": SAMPLER["seed"], "control_after_generate": "fixed", "steps": SAMPLER["steps"],
                     "cfg": SAMPLER["cfg"], "sampler_name": "framepack_unipc_bh1", "scheduler": "framepack",
                     "denoise": 1.0}},
        {"key": "decode", "type": "VAEDecode", "col": 4},
        {"key": "save", "type": "SaveImage", "col": 4, "widgets": {"filename_prefix": name}},
        _note("kisekaeichi through ComfyUI's stock KSampler: the same image as the FramePack One-Frame "
              "Sampler gives for the same seed.\n"
              "FramePack One-Frame Conditioning puts the layout (target index, clean latents) into the "
              "conditioning and gives the empty latent; FluxGuidance sets the distilled guidance (10); "
              "FramePack Shift sets the schedule's shift from the image size; KSampler runs FramePack's "
              "UniPC (sampler framepack_unipc_bh1) on FramePack's schedule (scheduler framepack).\n"
              "So ComfyUI's own tools plug in here: EasyCache, RescaleCFG, TorchCompileModel ..."),
    ]
    links += [["pos", 0, "cond", "positive"], ["neg", 0, "cond", "negative"], ["layout", 0, "cond", "layout"],
              ["cond", 0, "gpos", "conditioning"], ["cond", 1, "gneg", "conditioning"],
              ["model", 0, "shift", "model"], ["cond", 2, "shift", "latent"],
              ["shift", 0, "sampler", "model"], ["gpos", 0, "sampler", "positive"], ["gneg", 0, "sampler", "negative"],
              ["cond", 2, "sampler", "latent_image"],
              ["sampler", 0, "decode", "samples"], ["vae", 0, "decode", "vae"], ["decode", 0, "save", "images"]]
    return {**d, "name": name, "title": "kisekaeichi via KSampler",
            "description": "The outfit swap through ComfyUI's stock KSampler: the same image, ComfyUI's tools plug in.",
            "nodes": nodes, "links": links}


def one_frame_mc() -> dict:
    n1, l1 = _loaders()
    n2, l2 = _encode("bg", "framepack_background.png", "Background image", mask=False)
    n3, l3 = _encode("char", "framepack_character.png", "Character image", mask=False)
    n4, l4 = _text_and_sampler("The character stands in the scene of the background image.", "framepack_1f_mc")
    layout = {"key": "layout", "type": "FramePackOneFrameLayout", "col": 3, "row": 1, "widgets": {"preset": "1f-mc"},
              "width": LAYOUT_WIDTH}
    controls = {"key": "controls", "type": "FramePackControlList", "col": 3}
    note = _note("1f-mc: several conditions in one frame (here a background and a character).\n"
                 "Preset 1f-mc = musubi recipe: background (start) @ 0, character @ 1, zero post @ 10, target 9, "
                 "no 2x/4x. Usually used with a LoRA trained for 1f-mc.")
    return {"name": "framepack_1f_mc", "title": "FramePack 1f-mc",
            "description": "Put the character image into the background image's scene.",
            "needs": f"Needs: background + character image, a 1f-mc LoRA · {MODELS}", "nodes": n1 + n2 + n3 + [controls, layout, note] + n4,
            "links": l1 + l2 + l3 + l4 + [["bg", 0, "layout", "start"], ["char", 0, "controls", "control"],
                                          ["controls", 0, "layout", "controls"]]}


def train_kisekaeichi() -> dict:
    """Train a kisekaeichi LoRA from folders; the file records its layout (preset 'from LoRA' gives it back)."""
    n1, l1 = _loaders()
    l1 = [l for l in l1 if l[2] not in ("neg", "sampler")]
    name = "framepack_train_kisekaeichi_lora"
    nodes = n1 + [
        {"key": "data", "type": "FramePackOneFrameDatasetFolder", "col": 1,
         "widgets": {"image_directory": TRAIN_IMAGES, "control_directory": TRAIN_CONTROLS, "resolution": 640}},
        {"key": "pos", "type": "CLIPTextEncode", "col": 2, "width": COL0, "title": "Captions (one per sample)"},
        {"key": "layout", "type": "FramePackOneFrameLayout", "col": 3, "row": 1, "widgets": {"preset": "kisekaeichi"},
         "width": LAYOUT_WIDTH},
        _note("Train a kisekaeichi LoRA. Dataset (musubi-tuner's folders, under ComfyUI's input folder): "
              f"{TRAIN_IMAGES}/NAME.png = the target (the start wearing the outfit) + NAME.txt = its caption; "
              f"{TRAIN_CONTROLS}/NAME_0.png = the start image, NAME_1.png = the reference, transparent where the "
              "model must not look.\n"
              "The layout node (no start image: settings only) says how samples are laid out; the saved file "
              "records it. Later: FramePack LoRA Loader > lora_settings > a layout node with preset 'from LoRA'.\n"
              "800 steps at 640x640: see the README for the time and memory on your GPU."),
        {"key": "train", "type": "FramePackTrainOneFrameLoRA", "col": 4,
         "widgets": {"control_after_generate": "fixed"}},  # one seed, one LoRA: a rerun trains the same
        {"key": "save", "type": "FramePackSaveOneFrameLoRA", "col": 4,
         "widgets": {"filename_prefix": "framepack_1f/kisekaeichi_lora"}},
        {"key": "loss", "type": "LossGraphNode", "col": 4, "widgets": {"filename_prefix": "framepack_1f_loss"}},
    ]
    links = l1 + [["layout", 0, "data", "layout"], ["vae", 0, "data", "vae"], ["clip_vision", 0, "data", "clip_vision"],
                  ["data", 1, "pos", "text"], ["model", 0, "train", "model"], ["data", 0, "train", "dataset"],
                  ["pos", 0, "train", "positive"], ["train", 1, "save", "lora"], ["train", 2, "save", "metadata"],
                  ["train", 3, "loss", "loss"]]
    return {"name": name, "title": "Train a kisekaeichi LoRA",
            "description": "Train a one-frame LoRA from folders; the file records its layout.",
            "needs": f"Needs: your dataset folders · {MODELS}", "nodes": nodes, "links": links}


def add_model_links(workflow: dict) -> dict:
    """Give every loader that names a standard file its download link (properties.models)."""
    for node in workflow["nodes"]:
        models = [{"name": v, "url": f"{MODEL_LINKS[v][1]}/{v}", "directory": MODEL_LINKS[v][0]}
                  for v in node.get("widgets_values") or [] if isinstance(v, str) and v in MODEL_LINKS]
        if models:
            node.setdefault("properties", {})["models"] = models
    return workflow


def write_workflow(path: Path, workflow: dict) -> None:
    path.write_text(json.dumps(workflow, indent=2, ensure_ascii=False) + "\n")  # as the frontend writes it


def specs() -> list[dict]:
    return [oichi(), kisekaeichi(), one_frame_mc(), kisekaeichi(lora=True), kisekaeichi_ksampler(), train_kisekaeichi()]


def main() -> int:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="fp1f-build-") as tmp:
        base = Path(tmp)
        models = prepare_base_dir(base, test_nodes=False)
        add_comfy_to_path()
        import random_models

        random_models.install(models)
        make_demo_images(base / "input")
        spec_path = base / "spec.json"
        spec_path.write_text(json.dumps({"workflows": specs()}))
        with ComfyServer(base) as server:
            subprocess.run(["node", str(BROWSER / "build_workflows.mjs"), str(spec_path), server.url, str(base / "out")],
                           check=True, cwd=BROWSER)
            for wf in specs():
                name = wf["name"]
                workflow = json.loads((base / "out" / f"{name}.json").read_text())
                write_workflow(OUT / f"{name}.json", add_model_links(workflow))
                # the template browser's card: title, what it does and needs, the layout drawing
                Image.open(base / "out" / f"{name}-thumb.png").convert("RGB").save(OUT / f"{name}.jpg", quality=90)
                print(f"wrote {OUT / name}.json and .jpg")
            # README "Your first hour": the templates just written, as the server now serves them
            subprocess.run(["node", str(BROWSER / "first_hour.mjs"), server.url, str(base / "out")], check=True, cwd=BROWSER)
        # the README's pictures: the kisekaeichi workflow, a close-up of its layout node, the first hour
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / "out" / "framepack_kisekaeichi.png", DOCS / "framepack_kisekaeichi.png")
        shutil.copyfile(base / "out" / "framepack_kisekaeichi-layout.png", DOCS / "kisekaeichi_layout_node.png")
        for picture in ("first_hour_templates", "first_hour_missing_models", "first_hour_error"):
            shutil.copyfile(base / "out" / f"{picture}.png", DOCS / f"{picture}.png")
        print(f"wrote {DOCS}/framepack_kisekaeichi.png, kisekaeichi_layout_node.png and first_hour_*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
