"""The example workflows through a real ComfyUI server (`main.py`) on the GPU, with random-weight models.

    python bench/comfy_server_gpu.py --comfy-dir /path/to/ComfyUI --out result.json [--front-end-root DIR]

For each ComfyUI version this answers what the pack's MODEL gets from ComfyUI's memory management
there: the model patcher ComfyUI's loader factory gave it (the loader logs "managed by
<class>"), ComfyUI's own Dynamic VRAM log lines (a current ComfyUI's main.py swaps
`CoreModelPatcher` for `ModelPatcherDynamic` when comfy-aimdo works), and that each workflow runs
to an image, with its time. The models are the demo's (scripts/random_models.py: real-size
HunyuanVideo VAE / SigLIP / CLIP-L, a tiny FramePack; the test text-conditioning node replaces
the 8 B text encoder), so times are the pipeline's overhead, not FramePack's compute (see
bench_oneframe.py for that). `--front-end-root` serves a folder instead of the frontend package
(a machine without the package; nothing here uses the UI).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import demo  # noqa: E402
from comfy_env import add_comfy_to_path, find_comfy_dir  # noqa: E402
from comfy_server import ComfyServer, prepare_base_dir  # noqa: E402

LOG_LINES = re.compile(r"DynamicVRAM|[Dd]ynamic VRAM|aimdo|managed by|ComfyUI version|pytorch version|Device:|"
                       r"Training|Traceback|Error|saved",
                       re.IGNORECASE)


def insert_torch_compile(prompt: dict) -> None:
    """Route the sampler's MODEL through ComfyUI's TorchCompileModel (which, under Dynamic VRAM, asks the
    model's loader for a classic patcher: the pack's `cached_patcher_init`)."""
    sampler_types = {"KSampler", "KSamplerAdvanced", "CFGGuider", "BasicGuider", "FramePackOneFrameSampler"}
    samplers = [n for n in prompt.values() if n["class_type"] in sampler_types and isinstance(n["inputs"].get("model"), list)]
    if not samplers:
        raise SystemExit("no sampler with a linked model input to compile in front of")
    prompt["torch_compile"] = {"class_type": "TorchCompileModel",
                               "inputs": {"model": samplers[0]["inputs"]["model"], "backend": "inductor"}}
    for node in samplers:
        node["inputs"]["model"] = ["torch_compile", 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--comfy-dir", default=None)
    parser.add_argument("--workflows", default="framepack_kisekaeichi,framepack_kisekaeichi_ksampler",
                        help="example workflow names; NAME+compile runs NAME with ComfyUI's TorchCompileModel node "
                             "in front of its sampler")
    parser.add_argument("--resolution", type=int, default=640)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--train-steps", type=int, default=20, help="FramePackTrainOneFrameLoRA steps (training template)")
    parser.add_argument("--no-checkpointing", action="store_true", help="train without gradient checkpointing")
    parser.add_argument("--front-end-root", default=None)
    parser.add_argument("--comfy-args", default="", help="extra main.py flags, e.g. --disable-dynamic-vram")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    comfy_dir = find_comfy_dir(args.comfy_dir)
    scratch = Path(tempfile.mkdtemp(prefix="framepack-gpu-server-"))
    models = prepare_base_dir(scratch, test_nodes=True)
    add_comfy_to_path(comfy_dir)
    import random_models

    random_models.install(models)
    demo.make_demo_images(scratch / "input")
    extra = (["--front-end-root", args.front_end_root] if args.front_end_root else []) + args.comfy_args.split()
    result = {"comfy_dir": str(comfy_dir), "resolution": args.resolution, "steps": args.steps, "runs": {}}
    with ComfyServer(scratch, cpu=False, comfy_dir=comfy_dir, extra_args=extra, timeout=600) as server:
        info = server.get("/object_info")
        for name in [w for w in args.workflows.split(",") if w]:
            base, compiled = name.removesuffix("+compile"), name.endswith("+compile")
            if not (demo.WORKFLOWS / f"{base}.json").is_file():
                result["runs"][name] = {"error": "no such example workflow"}
                continue
            prompt = demo.build_prompt(demo.load_workflow(base), info, True, args.resolution, args.steps,
                                       prefix=f"gpu_{base}")
            if compiled:
                insert_torch_compile(prompt)
            demo.set_inputs(prompt, "KSampler", steps=args.steps)
            demo.set_inputs(prompt, "FramePackTrainOneFrameLoRA", steps=args.train_steps,
                            gradient_checkpointing=not args.no_checkpointing)
            times = []
            for _ in range(2):  # the first run includes loading the models
                t = time.perf_counter()
                try:
                    entry = server.run(prompt)
                except RuntimeError as e:  # keep what the server says, traceback included
                    result["runs"][name] = {"error": str(e)[:3000], "server_log_tail": server.log()[-8000:]}
                    break
                times.append(time.perf_counter() - t)
                prompt = json.loads(json.dumps(prompt))
                for node in prompt.values():  # another seed, so ComfyUI's cache does not skip the sampler
                    for key in ("seed", "noise_seed"):
                        if key in node["inputs"] and isinstance(node["inputs"][key], int):
                            node["inputs"][key] += 1
            else:
                result["runs"][name] = {"seconds": times, "images": len(demo.output_images(entry))}
        log = server.log()
    result["log_lines"] = [line for line in log.splitlines() if LOG_LINES.search(line)]
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
