"""The FramePack one-frame demo: run the kisekaeichi example workflow in a real ComfyUI server.

    .venv/bin/python scripts/demo.py                       # random weights: proves the pipeline, gives noise
    .venv/bin/python scripts/demo.py --models /path/to/ComfyUI/models --start me.png --reference outfit.png
    .venv/bin/python scripts/demo.py --ui                  # the same server, left running for a browser

What it does, step by step:
1. makes a scratch ComfyUI folder with this pack in custom_nodes/;
2. models: with no --models (and no FRAMEPACK_MODELS_DIR), it puts RANDOM-WEIGHT model files under
   the standard names in a scratch models folder (real-size HunyuanVideo VAE, SigLIP and CLIP-L,
   a tiny FramePack; made once and cached). Random weights give a noise image: the run proves the
   whole pipeline works, not that it makes pictures. The 8 B LLaVA-Llama-3 text encoder cannot be
   faked small, so in this mode the workflow's DualCLIPLoader + CLIPTextEncode are swapped for a
   test node that emits random text conditioning of the same structure.
   With --models DIR (a ComfyUI models folder holding the real files, see README), it runs the same
   workflow for real, with the real text encoder, on the GPU ComfyUI finds;
3. starts ComfyUI (`main.py`), converts the example workflow (UI format, what the template browser
   loads) to an API prompt using the server's /object_info, queues it over HTTP, waits;
4. copies the output image to --out (never over an earlier one) and prints where it is.

With --ui it runs nothing itself: it serves the example workflows in ComfyUI's template browser
(adapted like the run: the test conditioning node in place of the text encoder when the weights are
random, the CPU resolution), prints the URL and keeps the server up until Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comfy_env import add_comfy_to_path, find_comfy_dir  # noqa: E402
from comfy_server import PACK_NAME, REPO_ROOT, ComfyServer, prepare_base_dir  # noqa: E402
from workflow_api import set_widget, swap_text_encoder, swap_text_encoder_ui, ui_to_api  # noqa: E402

WORKFLOWS = REPO_ROOT / "example_workflows"
CPU_RANDOM_RESOLUTION = 320
# The input images the example workflows' LoadImage nodes name.
INPUT_IMAGES = ("framepack_start.png", "framepack_reference.png", "framepack_background.png",
                "framepack_character.png")
# The training template's dataset folders, under ComfyUI's input folder.
TRAIN_IMAGES, TRAIN_CONTROLS = "framepack_train/images", "framepack_train/controls"


def make_demo_images(input_dir: Path, size: int = 512) -> None:
    """Simple synthetic pictures under the names the examples use (for random-weight runs).

    The kisekaeichi pair carries masks the way ComfyUI's mask editor stores them, in the alpha
    channel (transparent = painted = hidden from the model with FramePackEncodeImage's default
    mask_mode): the start image hides its "clothes" (the area to replace), the reference image
    hides everything but the "outfit".
    """
    from PIL import Image, ImageDraw

    input_dir.mkdir(parents=True, exist_ok=True)

    def picture(bg, fg, shape):
        img = Image.new("RGBA", (size, size))
        draw = ImageDraw.Draw(img)
        for y in range(size):  # a soft vertical gradient so the picture is not flat
            draw.line([(0, y), (size, y)], fill=tuple(int(c * (0.7 + 0.3 * y / size)) for c in bg) + (255,))
        getattr(draw, shape)((size // 4, size // 6, 3 * size // 4, 5 * size // 6), fill=fg + (255,))
        return img, draw

    start, draw = picture((70, 110, 160), (235, 200, 160), "ellipse")
    draw.rectangle((size // 4, size // 2, 3 * size // 4, 5 * size // 6), fill=(60, 60, 60, 0))  # clothes: hidden
    start.save(input_dir / "framepack_start.png")
    ref, draw = picture((230, 230, 225), (200, 40, 60), "rectangle")
    alpha = Image.new("L", (size, size), 0)  # only the outfit is visible
    ImageDraw.Draw(alpha).rectangle((size // 4, size // 6, 3 * size // 4, 5 * size // 6), fill=255)
    ref.putalpha(alpha)
    ref.save(input_dir / "framepack_reference.png")
    picture((90, 160, 90), (120, 180, 230), "rectangle")[0].save(input_dir / "framepack_background.png")
    picture((240, 240, 240), (60, 60, 200), "ellipse")[0].save(input_dir / "framepack_character.png")
    # The training template's dataset (musubi's folder conventions): for each sample a start image,
    # a reference outfit (alpha = what the model sees), the target (the start wearing the outfit) and
    # its caption.
    images, controls = input_dir / TRAIN_IMAGES, input_dir / TRAIN_CONTROLS
    images.mkdir(parents=True, exist_ok=True)
    controls.mkdir(parents=True, exist_ok=True)
    for stem, skin, outfit in (("sample_a", (235, 200, 160), (200, 40, 60)), ("sample_b", (190, 150, 120), (40, 90, 200))):
        person, draw = picture((70, 110, 160), skin, "ellipse")
        person.save(controls / f"{stem}_0.png")
        draw.rectangle((size // 4, size // 2, 3 * size // 4, 5 * size // 6), fill=outfit + (255,))
        person.save(images / f"{stem}.png")
        ref = picture((230, 230, 225), outfit, "rectangle")[0]
        ref.putalpha(alpha)
        ref.save(controls / f"{stem}_1.png")
        (images / f"{stem}.txt").write_text("The person is wearing the outfit from the reference image.\n")


def workflow_images(workflow: dict) -> list[str]:
    """The file names the workflow's LoadImage nodes pick, in node order (start first, then the reference)."""
    loads = sorted((n for n in workflow["nodes"] if n["type"] == "LoadImage"), key=lambda n: n["id"])
    return [n["widgets_values"][0] for n in loads]


def place_user_images(input_dir: Path, workflow: dict, start: str | None, reference: str | None) -> None:
    """Save the user's pictures under the names the workflow's LoadImage nodes use."""
    from PIL import Image

    for src, name in zip((start, reference), workflow_images(workflow)):
        if src:
            Image.open(src).save(input_dir / name)  # any format PIL reads; alpha (a painted mask) kept


def load_workflow(name: str) -> dict:
    path = WORKFLOWS / f"{name}.json"
    if not path.is_file():
        names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
        raise SystemExit(f"no example workflow {name!r}; there are: {', '.join(names)}")
    return json.loads(path.read_text())


def set_inputs(prompt: dict, class_type: str, **values) -> None:
    """Override widget values of every node of one type (e.g. a smaller resolution for CPU runs)."""
    for node in prompt.values():
        if node["class_type"] == class_type:
            for k, v in values.items():
                if k not in node["inputs"]:
                    raise SystemExit(f"{class_type} has no input {k!r}")
                node["inputs"][k] = v


def build_prompt(workflow: dict, object_info: dict, random_weights: bool, resolution: int | None,
                 steps: int | None, prefix: str) -> dict:
    prompt = ui_to_api(workflow, object_info)
    if random_weights:
        prompt = swap_text_encoder(prompt)
    if resolution:
        set_inputs(prompt, "FramePackEncodeImage", resolution=resolution)
    if steps:
        set_inputs(prompt, "FramePackOneFrameSampler", steps=steps)
    set_inputs(prompt, "SaveImage", filename_prefix=prefix)
    return prompt


def unused_path(path: Path) -> Path:
    """`path`, or if that exists the first free `<stem>-2<suffix>`, `-3`, ...: a demo run never overwrites
    an earlier image (each run's ComfyUI has a fresh output folder, so its file names repeat)."""
    candidate, n = path, 2
    while candidate.exists():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate


def output_images(history_entry: dict) -> list[dict]:
    return [img for out in history_entry.get("outputs", {}).values() for img in out.get("images", [])
            if img.get("type") == "output"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", default=os.environ.get("FRAMEPACK_MODELS_DIR"),
                        help="a ComfyUI models folder with the real model files (env FRAMEPACK_MODELS_DIR); "
                             "default: random-weight files in a scratch folder")
    parser.add_argument("--workflow", default="framepack_kisekaeichi", help="example workflow name (example_workflows/)")
    parser.add_argument("--start", help="start image, the workflow's first Load Image (default: a synthetic picture)")
    parser.add_argument("--reference", help="the second picture (kisekaeichi: the outfit; 1f-mc: the character); "
                        "default: a synthetic picture")
    parser.add_argument("--out", default=str(REPO_ROOT / "demo_output"), help="where the output image goes")
    parser.add_argument("--resolution", type=int, default=None,
                        help="override FramePackEncodeImage's bucket resolution (default: as in the workflow, 640; "
                             f"{CPU_RANDOM_RESOLUTION} for random weights on a CPU)")
    parser.add_argument("--steps", type=int, default=None, help="override the sampler's steps")
    parser.add_argument("--cache-dir", default=None, help="where the random-weight files are made once")
    parser.add_argument("--comfy-dir", default=None, help="a ComfyUI checkout to run (default: the set-up's)")
    parser.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU even if a GPU is there")
    parser.add_argument("--keep", action="store_true", help="keep the scratch ComfyUI folder (log, outputs)")
    parser.add_argument("--ui", action="store_true",
                        help="serve the example workflows to a browser and keep ComfyUI running until Ctrl-C "
                        "(runs nothing itself)")
    parser.add_argument("--port", type=int, default=8188, help="with --ui: the server's port (default 8188)")
    parser.add_argument("--listen", default="127.0.0.1",
                        help="with --ui: the address to listen on (default 127.0.0.1, this machine only; "
                        "0.0.0.0 lets other machines in)")
    args = parser.parse_args(argv)

    random_weights = not args.models
    workflow = load_workflow(args.workflow)
    if args.reference and len(workflow_images(workflow)) < 2:
        raise SystemExit(f"--reference: {args.workflow} loads only one image (the start); drop --reference")
    scratch = Path(tempfile.mkdtemp(prefix="framepack-demo-"))
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        if random_weights:
            print("No real models given (--models / FRAMEPACK_MODELS_DIR): using RANDOM-WEIGHT models.\n"
                  "  The output will be noise. This run shows the whole pipeline works inside ComfyUI;\n"
                  "  point --models at a ComfyUI models folder with the real files to get a real picture.")
            models = prepare_base_dir(scratch, test_nodes=True)
            add_comfy_to_path(args.comfy_dir)
            import random_models

            random_models.install(models, args.cache_dir)
        else:
            models = Path(args.models).expanduser().resolve()
            if not models.is_dir():
                raise SystemExit(f"--models {models}: not a folder (give the ComfyUI 'models' folder)")
            prepare_base_dir(scratch, test_nodes=False, models_dir=models)
            print(f"Real models from {models}")
        make_demo_images(scratch / "input")
        place_user_images(scratch / "input", workflow, args.start, args.reference)

        cpu = args.cpu or random_weights or not _has_gpu()
        if cpu and random_weights and args.resolution is None:
            # the real-size VAE needs minutes (and ~20 GB) for a 640x640 frame on a small CPU
            args.resolution = CPU_RANDOM_RESOLUTION
            print(f"  (CPU run: resolution {CPU_RANDOM_RESOLUTION} instead of the workflow's 640 to keep it quick; "
                  "--resolution 640 for full size)")
        print(f"starting ComfyUI ({find_comfy_dir(args.comfy_dir)}) on the {'CPU' if cpu else 'GPU'} ...")
        if args.ui:
            return serve_ui(scratch, args, cpu, random_weights)
        with ComfyServer(scratch, cpu=cpu, comfy_dir=args.comfy_dir) as server:
            prompt = build_prompt(workflow, server.get("/object_info"), random_weights, args.resolution, args.steps,
                                  prefix=f"demo_{args.workflow}")
            print(f"running {args.workflow} through {server.url}/prompt ...")
            try:
                entry = server.run(prompt)
            except Exception:
                print(server.log()[-3000:], file=sys.stderr)
                raise
        images = output_images(entry)
        if not images:
            raise SystemExit(f"the workflow finished without an output image: {json.dumps(entry)[:2000]}")
        saved = []
        for img in images:
            src = scratch / "output" / img.get("subfolder", "") / img["filename"]
            dst = unused_path(out_dir / img["filename"])
            shutil.copyfile(src, dst)
            saved.append(dst)
    finally:
        if args.keep:
            print(f"scratch ComfyUI folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    for path in saved:
        print(f"output image: {path}")
    note = " (random weights: expect noise)" if random_weights else ""
    print(f"done in {time.time() - t0:.0f}s{note}")
    return 0


def link_pack_for_ui(base: Path) -> Path:
    """custom_nodes/framepack_oneframe as a folder of links to this checkout's files, with its own (empty)
    example_workflows/; returns that folder.

    ComfyUI's template browser lists <custom node folder>/example_workflows/*.json under the folder's
    name (app/custom_node_manager.py: the list is globbed per request, the folder served as
    /api/workflow_templates/<name> when it exists at start-up). So the adapted workflows appear in
    the pack's own place, and the originals, which need the real text encoder, do not."""
    pack = base / "custom_nodes" / PACK_NAME
    if pack.is_symlink():
        pack.unlink()
    pack.mkdir(exist_ok=True)
    for entry in REPO_ROOT.iterdir():
        if entry.name.startswith(".") or entry.name in ("example_workflows", "demo_output"):
            continue
        (pack / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (pack / "example_workflows").mkdir(exist_ok=True)
    return pack / "example_workflows"


def adapt_workflow(workflow: dict, object_info: dict, random_weights: bool, resolution: int | None,
                   steps: int | None) -> dict:
    """An example workflow (UI format) as the demo runs it: the text encoder swapped for the test node
    when the weights are random, and the resolution / steps overrides."""
    if random_weights:
        workflow = swap_text_encoder_ui(workflow)
    for node in workflow["nodes"]:
        if resolution and node["type"] == "FramePackEncodeImage":
            set_widget(node, "resolution", resolution, object_info)
        if steps and node["type"] == "FramePackOneFrameSampler":
            set_widget(node, "steps", steps, object_info)
    return workflow


def serve_ui(scratch: Path, args, cpu: bool, random_weights: bool) -> int:
    """Start ComfyUI with the adapted example workflows as the pack's templates; run until Ctrl-C."""
    import signal

    def interrupt(*_):
        raise KeyboardInterrupt

    templates = link_pack_for_ui(scratch)
    # `kill` (SIGTERM) stops it as cleanly as Ctrl-C: the server is stopped and the scratch folder removed
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # also when started from a shell that ignores SIGINT (`&`)
    try:
        with ComfyServer(scratch, cpu=cpu, comfy_dir=args.comfy_dir, port=args.port, listen=args.listen) as server:
            info = server.get("/object_info")
            names = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
            for name in names:
                workflow = adapt_workflow(load_workflow(name), info, random_weights, args.resolution, args.steps)
                (templates / f"{name}.json").write_text(json.dumps(workflow, indent=1))
                thumb = WORKFLOWS / f"{name}.jpg"
                if thumb.is_file():  # a copy: ComfyUI's static routes do not follow links out of their folder
                    shutil.copyfile(thumb, templates / thumb.name)
            what = ("random weights: a run gives a noise image and proves the pipeline; the prompts are random "
                    "conditioning from a test node, not a text encoder" if random_weights else f"models: {args.models}")
            print(f"\nComfyUI with the FramePack one-frame pack is running at {server.url}\n"
                  f"  Open it in a browser, then Workflow > Browse Templates > {PACK_NAME}: {', '.join(names)}.\n"
                  f"  ({what}; ComfyUI's log: {server.log_path})\n"
                  f"  Press Ctrl-C to stop it.", flush=True)
            while server.proc.poll() is None:
                time.sleep(0.5)
            print(server.log()[-3000:], file=sys.stderr)
            raise SystemExit(f"ComfyUI stopped on its own (exit code {server.proc.returncode}); its log is above")
    except KeyboardInterrupt:
        print("stopping ComfyUI ...", flush=True)
    return 0


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
