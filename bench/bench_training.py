"""One-frame LoRA training on the full-size model: seconds per step and peak GPU memory.

    python bench/bench_training.py --out bench/results/$(date +%F)-training.json [--steps 10]

The released architecture (12.87 B parameters) with seeded random bf16 weights made on the GPU,
a two-sample kisekaeichi dataset at 640x640 (random latents and SigLIP embeddings: the VAE and the
image encoder are not part of a training step), a 512-token caption, rank 32. For each base (bf16;
fp8 e4m3fn weights cast to bf16 per layer, what FramePackModelLoader's fp8 options give) with and
without gradient checkpointing, it runs `framepack_core.training.train_lora` -- the trainer node's
code path, ComfyUI's guider and LoRA adapters included -- and reports the median time of the steps
after the first two, the peak allocated memory, and minutes for the step counts of musubi's guide.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _harness as H  # noqa: E402
from bench_oneframe import Results, _core, build_ours, fp8_state_dict, log, sampler_objects  # noqa: E402

GUIDE_STEPS = {"kisekaeichi (500 steps)": 500, "kisekaeichi (800 steps)": 800, "1f-mc (1000 steps)": 1000}


def dataset_and_captions(n: int = 2, hw: int = 80):
    data = _core("training_data")
    samples, captions = [], []
    for i in range(n):
        cond, layout, controls = sampler_objects("kisekaeichi", seed=10 + i, hw=hw)
        target = torch.randn(1, 16, 1, hw, hw, generator=torch.Generator().manual_seed(100 + i))
        samples.append(data.TrainingSample(layout=layout, target=target, name=f"random {i}"))
        captions.append(cond)
    return data.OneFrameDataset(tuple(samples), ({"graph_samples": n},)), captions


def run_case(patcher, checkpointing: bool, steps: int, hw: int) -> dict:
    training = _core("training")
    dataset, captions = dataset_and_captions(hw=hw)
    stamps = []
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    settings = training.TrainingSettings(steps=steps, gradient_checkpointing=checkpointing)
    trained = training.train_lora(patcher, dataset, captions, settings, on_step=lambda loss: stamps.append(
        time.perf_counter()))  # the loss's .item() has synchronised
    total = time.perf_counter() - t0
    per_step = [b - a for a, b in zip(stamps, stamps[1:])][1:]  # drop the first steps (allocation, autotune)
    s = statistics.median(per_step)
    out = {"s_per_step": round(s, 4), "steps_timed": len(per_step), "first_step_s": round(stamps[0] - t0, 2),
           "total_s": round(total, 2),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
           "losses": [round(v, 4) for v in trained.losses],
           "minutes": {k: round(v * s / 60, 1) for k, v in GUIDE_STEPS.items()},
           "lora_tensors": len(trained.state_dict)}
    del trained
    return out


def sdpa_backends(choice: str):
    import contextlib

    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"no_cudnn": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
              "flash": [SDPBackend.FLASH_ATTENTION], "efficient": [SDPBackend.EFFICIENT_ATTENTION],
              "math": [SDPBackend.MATH]}.get(choice)
    return contextlib.nullcontext() if chosen is None else sdpa_kernel(chosen)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cases", default="bf16_ckpt,bf16,fp8_ckpt,fp8", help="bf16 cases before fp8 ones: the fp8 "
                    "weights replace the bf16 ones, so that an fp8 case's peak holds no bf16 copy")
    ap.add_argument("--sdpa", default="default", choices=["default", "no_cudnn", "flash", "efficient", "math"],
                    help="restrict torch's SDPA backends further (default: what train_lora allows, torch's choice "
                    "less cuDNN)")
    ap.add_argument("--smoke", action="store_true", help="CPU check of this script: 1 + 1 blocks, 128x128, 3 steps")
    args = ap.parse_args(argv)
    H.boot_comfy(["--cpu"] if args.smoke else [])
    import comfy.model_management as mm
    import comfy.ops

    R = Results(Path(args.out))
    R.put("gpu", H.gpu_info() if torch.cuda.is_available() else "cpu")
    R.put("sdpa", args.sdpa)
    config = dict(H.FULL_CONFIG, num_layers=1, num_single_layers=1) if args.smoke else None
    hw, steps = (16, 3) if args.smoke else (80, args.steps)
    sd = H.random_state_dict(config, device="cpu" if args.smoke else "cuda")
    failed = []
    for case in args.cases.split(","):
        log("---", case)
        patcher = None
        try:
            if case.startswith("fp8"):
                if "proj_out.weight" in sd and sd["transformer_blocks.0.attn.to_q.weight"].dtype != torch.float8_e4m3fn:
                    sd8 = fp8_state_dict(sd)
                    sd.clear()
                    sd.update(sd8)
                    del sd8
                patcher = build_ours(sd, operations=comfy.ops.manual_cast, weight_dtype=torch.float8_e4m3fn,
                                     compute_dtype=torch.bfloat16)
            else:
                patcher = build_ours(sd)
            with sdpa_backends(args.sdpa):
                R.put(case, run_case(patcher, case.endswith("_ckpt"), steps, hw))
            log(case, R.data[case])
        except torch.OutOfMemoryError:
            R.put(case, {"error": "out of memory", "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
        except Exception:
            failed.append(case)
            R.put(f"error_{case}", traceback.format_exc()[-3000:])
            log(traceback.format_exc())
        patcher = None
        mm.unload_all_models()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
