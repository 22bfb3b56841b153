"""Lever measured for the speed issue, not shipped in the pack: CUDA graphs for the FramePack
forward, captured per sampling run. bench_oneframe.py's `cuda_graph` section times it and
gpu_paths.py checks it replays the same velocity; bench/README.md says why no node offers it
(the H200 is not waiting on the host: 3 ms per bf16 forward saved, less than the capture costs
over 25 steps).

Why it was tried: with the blocks compiled, the host needs almost as long to issue one 640x640
forward (≈150 ms of Python, guards and ~2 000 launches) as the H200 needs to run it (≈185 ms), so
the GPU might wait in places. A CUDA graph replays the whole forward with one launch. Measured
(H200, 2026-12-04): bf16 189.0 -> 186.1 ms, fp8 150.2 -> 139.6 ms per forward, the velocity
bit-identical; the GPU was mostly not waiting.

How it plugs into ComfyUI:
* `use_cuda_graph(model_patcher)` adds an OUTER_SAMPLE wrapper (as ComfyUI's EasyCache and the
  pack's MagCache do) that gives each sampling run its own `GraphRun` in a copy of the model
  options, and a DIFFUSION_MODEL wrapper that asks that run for a graph;
* the first call with a new input signature (shapes, dtypes, non-tensor arguments) runs eagerly
  and returns its real result; the second one captures (the capture itself computes nothing, so
  that call replays right after capturing); every later call copies its inputs into the graph's
  static buffers and replays. Graphs are dropped at the end of the run, because ComfyUI may move or
  re-patch the weights between runs (a graph holds raw device addresses).
* no graph (plain eager calls, same results) when it would be wrong or impossible: weights not all
  resident on the GPU (low-VRAM partial loading, ComfyUI's Dynamic VRAM), MagCache or another
  DIFFUSION_MODEL wrapper that decides per step, a batch whose text masks differ, a CPU model.

The text mask is resolved before the graph: at batch 1 the model crops the prompt to its valid
tokens (a host sync, data-dependent shape), so the wrapper does that crop once per call with the
model's own function and hands the graph a mask-free context.
"""
from __future__ import annotations

import importlib
import logging

import torch

import comfy.model_patcher
import comfy.patcher_extension as pe

from _harness import PACK_NAME

MAGCACHE_RUN_KEY = importlib.import_module(f"{PACK_NAME}.framepack_core.magcache").RUN_KEY
_model = importlib.import_module(f"{PACK_NAME}.framepack_core.model")

__all__ = ["GraphRun", "LAST_RUN", "use_cuda_graph"]

WRAPPER_KEY = "framepack_cuda_graph"
RUN_KEY = "framepack_cuda_graph_run"
MAX_GRAPHS_PER_RUN = 4  # e.g. cond and uncond at different batch sizes
LAST_RUN: dict = {}  # what the last sampling run did: usable, captures, replays (the log line, for tests)


def crop_to_valid_text(context: torch.Tensor, context_mask: torch.Tensor, batch: int):
    """(context, context_mask) -> the same text with no mask where the forward would need none: at
    batch 1 the valid tokens (the model's own crop), in a batch whose masks are all ones the context
    as it is; otherwise unchanged."""
    valid = context_mask.to(context.device) > 0
    if valid.shape != context.shape[:2]:
        return context, context_mask  # the forward raises its own error
    if batch == 1 and context.shape[0] == 1:
        return _model._keep_valid_tokens(context, valid), None
    if bool(valid.all()):
        return context, None
    return context, context_mask


class _Graph:
    def __init__(self):
        self.seen = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_args: list = []
        self.static_kwargs: dict = {}
        self.out: torch.Tensor | None = None


def _signature(args, kwargs):
    """Hashable description of the call: tensor shapes/dtypes/devices and the other values."""
    def one(v):
        if torch.is_tensor(v):
            return ("T", tuple(v.shape), v.dtype, str(v.device))
        if v is None or isinstance(v, (bool, int, float, str)):
            return ("V", v)
        raise TypeError(type(v).__name__)
    return tuple(one(a) for a in args), tuple((k, one(v)) for k, v in sorted(kwargs.items()))


class GraphRun:
    """The graphs of one sampling run, keyed by call signature."""

    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.graphs: dict = {}
        self.usable: bool | None = None  # decided at the first call, once the model is loaded
        self.pool = None
        self.replays = 0
        self.captures = 0

    def _check_usable(self, diffusion_model, x) -> bool:
        if x.device.type != "cuda":
            return False
        is_dynamic = getattr(self.model_patcher, "is_dynamic", None)
        if callable(is_dynamic) and is_dynamic():
            logging.info("FramePack CUDA graph: off for this run (ComfyUI's Dynamic VRAM moves weights per call)")
            return False
        if getattr(self.model_patcher.model, "model_lowvram", False) or any(
                p.device.type != "cuda" for p in diffusion_model.parameters()):
            logging.info("FramePack CUDA graph: off for this run (weights partly in CPU memory, low-VRAM mode)")
            return False
        return True

    def __call__(self, executor, x, timestep, context, control, transformer_options, **kwargs):
        dm = executor.class_obj
        if self.usable is None:
            self.usable = self._check_usable(dm, x)
        other_wrappers = set(transformer_options.get("wrappers", {}).get(pe.WrappersMP.DIFFUSION_MODEL, {})) - {WRAPPER_KEY}
        if (not self.usable or other_wrappers or transformer_options.get(MAGCACHE_RUN_KEY) is not None
                or torch.is_grad_enabled()):
            return executor(x, timestep, context, control, transformer_options, **kwargs)
        context_mask = kwargs.pop("context_mask", None)
        if context_mask is not None:
            context, context_mask = crop_to_valid_text(context, context_mask, x.shape[0])
            if context_mask is not None:  # a batch with different prompt lengths: masked attention, eager
                return executor(x, timestep, context, control, transformer_options, context_mask=context_mask,
                                **kwargs)
        # everything on the model's device (index tensors may arrive on the CPU; the model moves them anyway)
        args = [torch.as_tensor(a, device=x.device) if isinstance(a, (torch.Tensor, float)) else a
                for a in (x, timestep, context, control)]
        kwargs = {k: v.to(x.device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
        try:
            key = _signature(args, kwargs)
        except TypeError:
            return executor(*args, transformer_options, **kwargs)
        g = self.graphs.get(key)
        if g is None:
            if len(self.graphs) >= MAX_GRAPHS_PER_RUN:
                return executor(*args, transformer_options, **kwargs)
            g = self.graphs[key] = _Graph()
        g.seen += 1
        if g.seen == 1:  # eager: compiles / autotunes / warms cuBLAS before any capture
            return executor(*args, transformer_options, **kwargs)
        if g.graph is None:
            self._capture(g, executor, args, transformer_options, kwargs)
        for static, new in zip(g.static_args, args):
            if torch.is_tensor(static):
                static.copy_(new)
        for name, static in g.static_kwargs.items():
            if torch.is_tensor(static):
                static.copy_(kwargs[name])
        g.graph.replay()
        self.replays += 1
        return g.out.clone()

    def _capture(self, g: _Graph, executor, args, transformer_options, kwargs):
        g.static_args = [a.clone() if torch.is_tensor(a) else a for a in args]
        g.static_kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        # one more run on a side stream, as torch.cuda.graphs recommends before capturing (it costs one
        # forward per run; not tried without it on the H200)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            executor(*g.static_args, transformer_options, **g.static_kwargs)
        torch.cuda.current_stream().wait_stream(side)
        g.graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(g.graph, pool=self.pool):
            g.out = executor(*g.static_args, transformer_options, **g.static_kwargs)
        self.captures += 1

    def close(self):
        self.graphs.clear()
        self.pool = None


def _diffusion_model_wrapper(executor, *args, **kwargs):
    x, timestep, context, control, transformer_options = args[:5]
    run = transformer_options.get(RUN_KEY)
    if run is None or len(args) > 5:
        return executor(*args, **kwargs)
    return run(executor, x, timestep, context, control, transformer_options, **kwargs)


def _outer_sample_wrapper(executor, *args, **kwargs):
    """A fresh GraphRun for this sampling run in a copy of the guider's model options (runs and
    graphs sharing the MODEL never share graphs); the graphs are freed when the run ends."""
    guider = executor.class_obj
    orig_options = guider.model_options
    options = comfy.model_patcher.create_model_options_clone(orig_options)
    run = GraphRun(guider.model_patcher)
    options["transformer_options"][RUN_KEY] = run
    guider.model_options = options
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = orig_options
        if run.usable:
            logging.info("FramePack CUDA graph: %d captured, %d replays", run.captures, run.replays)
        LAST_RUN.clear()
        LAST_RUN.update(usable=bool(run.usable), captures=run.captures, replays=run.replays)
        run.close()


def use_cuda_graph(model_patcher):
    """A clone of the MODEL whose forwards replay CUDA graphs within each sampling run."""
    m = model_patcher.clone()
    m.model_options.setdefault("transformer_options", {})
    m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
    m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, _diffusion_model_wrapper)
    return m
