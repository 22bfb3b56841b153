"""MagCache for the FramePack transformer: musubi-tuner's FramePack step cache as a ComfyUI model patch.

MagCache (Ma et al., "Magnitude-aware Cache") skips the transformer's block stack at some sampling
steps and reuses the residual the stack added at the last step it ran (image tokens out minus image
tokens in). Whether a step may be skipped depends only on a per-step table of "magnitude ratios"
(how much the residual's norm changed from the previous step, measured once on a model): the
ratios are multiplied up since the last computed step, each step adds |1 - product| to an
accumulated error, and the step is skipped while that error stays within `threshold` and at most
`k` steps in a row are skipped. The first `retention_ratio` of the steps and the last step always
run. This is musubi-tuner's rule (`fpack_generate_video.py --magcache_*`,
`frame_pack/hunyuan_video_packed_inference.py`), with the same defaults (threshold 0.24, K 6,
retention 0.2) and the same default ratios; the code here is written from that description.

Where the pieces live:

* `MagCacheSettings` (the node's knobs, validated) and `parse_ratios` (the node's `ratios` text);
* `SkipRule`: the decision per step index;
* `MagCacheRun`: one sampling run's state (the rule, one cached residual per cond, calibration
  statistics). `FramePackTransformer._forward` asks it, around the block stack only, through
  `transformer_options[RUN_KEY]`; with no run there the forward is unchanged;
* `apply_magcache`: clones a MODEL and adds an OUTER_SAMPLE wrapper (as ComfyUI's EasyCache does)
  that makes a fresh `MagCacheRun` per sampling run and reports calibration at its end.

Step index: musubi-tuner counts forwards (so its cfg > 1, two forwards per step, drifts); here it is the
position of the current sigma (`transformer_options["sigmas"]`) in the run's schedule.

cond / uncond (cfg > 1): ComfyUI may run them in one batch or, when memory is short, in separate
forwards. The skip rule depends on the step index and the ratios only, so it is decided once per
step and shared by every cond of that step (cond and uncond are skipped or computed together, so
CFG never mixes a fresh prediction with a stale one); the residual is cached per cond (ComfyUI's
`uuids`), so the batch may be split differently from step to step.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

import comfy.model_patcher
import comfy.patcher_extension

SETTINGS_KEY = "framepack_magcache"  # model_options["transformer_options"]: the node's MagCacheSettings
RUN_KEY = "framepack_magcache_run"  # the same dict during a sampling run: that run's MagCacheRun
REPORT_KEY = "framepack_magcache_report"  # ... and who hears the calibration result
WRAPPER_KEY = "framepack_magcache"

# musubi-tuner's default magnitude ratios (`--magcache_mag_ratios 0`), which it takes from MagCache's
# HunyuanVideo calibration: 50 steps, index i = ratio of step i's residual norm to step i-1's.
DEFAULT_RATIOS = (
    1.0, 1.06971, 1.29073, 1.11245, 1.09596, 1.05233, 1.01415, 1.05672, 1.00848, 1.03632,
    1.02974, 1.00984, 1.03028, 1.00681, 1.06614, 1.05022, 1.02592, 1.01776, 1.02985, 1.00726,
    1.03727, 1.01502, 1.00992, 1.03371, 0.9976, 1.02742, 1.0093, 1.01869, 1.00815, 1.01461,
    1.01152, 1.03082, 1.0061, 1.02162, 1.01999, 0.99063, 1.01186, 1.0217, 0.99947, 1.01711,
    0.9904, 1.00258, 1.00878, 0.97039, 0.97686, 0.94315, 0.97728, 0.91154, 0.86139, 0.76592,
)

# field -> (the node's input name, allowed range)
LIMITS = {"threshold": ("threshold", 0.0, 2.0), "k": ("K", 1, 100), "retention_ratio": ("retention_ratio", 0.0, 1.0)}


@dataclass(frozen=True)
class MagCacheSettings:
    """The knobs (musubi-tuner's names in brackets).

    threshold [--magcache_threshold]: the accumulated error up to which steps are skipped; 0 = never skip.
    k [--magcache_k]: at most this many steps skipped in a row.
    retention_ratio [--magcache_retention_ratio]: this fraction of the first steps always runs (at least one).
    ratios [--magcache_mag_ratios]: the per-step magnitude ratios; None = DEFAULT_RATIOS.
    calibration [--magcache_calibration]: skip nothing and measure the ratios of this model instead.
    """

    threshold: float = 0.24
    k: int = 6
    retention_ratio: float = 0.2
    ratios: tuple[float, ...] | None = None
    calibration: bool = False

    def check(self, node: str) -> "MagCacheSettings":
        """Raise a ValueError naming `node`, the input and the allowed range; return self."""
        for field, (name, lo, hi) in LIMITS.items():
            value = getattr(self, field)
            ok = isinstance(value, int) if field == "k" else isinstance(value, (int, float)) and math.isfinite(value)
            if not (ok and lo <= value <= hi):
                raise ValueError(f"{node}: input '{name}' is {value!r}; allowed range {lo}..{hi}")
        if self.ratios is not None and not (self.ratios and all(math.isfinite(r) and r > 0 for r in self.ratios)):
            raise ValueError(f"{node}: input 'ratios' must be positive numbers, got {list(self.ratios)}")
        return self


def parse_ratios(text: str, node: str) -> tuple[float, ...] | None:
    """The `ratios` input: a comma list of positive numbers (calibration prints one); empty = the default ratios."""
    text = (text or "").strip()
    if not text:
        return None
    items = [item.strip() for item in text.split(",")]
    if len(items) > 1 and not items[-1]:
        items.pop()  # a trailing comma
    values = []
    for i, item in enumerate(items):
        try:
            v = float(item)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{node}: input 'ratios' has {item!r} at position {i + 1}; expected a comma list of "
                             f"positive numbers such as '1.00000,1.06971,1.29073' (what calibration prints), or "
                             f"empty for the default ratios")
        values.append(v)
    return tuple(values)


def fit_ratios(ratios: Sequence[float], steps: int) -> list[float]:
    """`ratios` for `steps` steps. musubi-tuner, when the lengths differ, picks for step i the entry nearest to
    i * (len - 1) / (steps - 1), rounding halves to even (numpy's round), and for one step the last entry."""
    ratios = list(ratios)
    if steps == len(ratios):
        return ratios
    if steps == 1:
        return [ratios[-1]]
    scale = (len(ratios) - 1) / (steps - 1)
    return [ratios[round(i * scale)] for i in range(steps)]  # Python's round also rounds halves to even


class SkipRule:
    """musubi-tuner's decision, step by step: steps [max(int(retention * steps), 1), steps - 1) may skip.

    A candidate step multiplies its ratio into the accumulated ratio and adds |1 - accumulated ratio| to the
    accumulated error; it is skipped while that error is <= threshold and at most k steps have accumulated,
    otherwise it runs and the three accumulators restart (1, 0, 0). Decisions are made once per step index, in
    order, and remembered, so every cond of a step gets the same answer.
    """

    def __init__(self, settings: MagCacheSettings, steps: int):
        self.settings = settings
        self.steps = steps
        self.ratios = fit_ratios(settings.ratios or DEFAULT_RATIOS, steps)
        self.first_candidate = max(int(settings.retention_ratio * steps), 1)
        self.decisions: list[bool] = []
        self._ratio, self._err, self._run = 1.0, 0.0, 0

    def skip(self, step: int) -> bool:
        while len(self.decisions) <= step:
            self.decisions.append(self._decide(len(self.decisions)))
        return self.decisions[step]

    def _decide(self, step: int) -> bool:
        s = self.settings
        if s.calibration or s.threshold <= 0 or not self.first_candidate <= step < self.steps - 1:
            return False
        self._ratio *= self.ratios[step]
        self._err += abs(1.0 - self._ratio)
        self._run += 1
        if self._err <= s.threshold and self._run <= s.k:
            return True
        self._ratio, self._err, self._run = 1.0, 0.0, 0
        return False


def format_ratios(ratios: Sequence[float]) -> str:
    """As musubi-tuner prints them for --magcache_mag_ratios (and the `ratios` input reads them)."""
    return ",".join(f"{r:.5f}" for r in ratios)


class MagCacheRun:
    """One sampling run: which steps skip, the cached block-stack residual per cond, calibration statistics."""

    def __init__(self, settings: MagCacheSettings, sigmas: torch.Tensor):
        self.settings = settings
        self.sigmas = [float(s) for s in sigmas]
        self.steps = len(self.sigmas) - 1
        self.rule = SkipRule(settings, self.steps)
        self.residuals: dict = {}  # cond uuid -> (rows, image tokens, D) residual of its last computed step
        self.skipped: set[int] = set()
        # calibration: step -> per-token norm ratios / cosine distances to the previous step, all conds
        self._ratios: dict[int, list[torch.Tensor]] = {}
        self._cos: dict[int, list[torch.Tensor]] = {}

    def step_index(self, transformer_options: dict) -> int | None:
        """The index of the current sigma in the run's schedule; None when it is not one of its steps
        (a sampler evaluating between steps, or a call outside sampling): then the cache stays out."""
        sigma = transformer_options.get("sigmas")
        if sigma is None or self.steps < 1:
            return None
        sigma = float(sigma.reshape(-1)[0])
        i = min(range(self.steps), key=lambda j: abs(self.sigmas[j] - sigma))
        return i if math.isclose(self.sigmas[i], sigma, rel_tol=1e-4, abs_tol=1e-6) else None

    @staticmethod
    def _conds(transformer_options: dict, batch: int) -> list:
        uuids = transformer_options.get("uuids") or [None]
        return list(uuids) if batch % len(uuids) == 0 else [None]

    def reuse(self, img: torch.Tensor, transformer_options: dict) -> torch.Tensor | None:
        """The image tokens after the block stack, from the cache, when this step skips; else None."""
        step = self.step_index(transformer_options)
        if step is None or not self.rule.skip(step):
            return None
        cached = [self.residuals.get(u) for u in self._conds(transformer_options, img.shape[0])]
        if any(r is None for r in cached):
            return None  # a cond that has not run yet (or another batch split) computes this step
        residual = torch.cat(cached) if len(cached) > 1 else cached[0]
        if residual.shape != img.shape:
            return None
        self.skipped.add(step)
        return img + residual

    def record(self, img_in: torch.Tensor, img_out: torch.Tensor, transformer_options: dict) -> None:
        """Keep the residual of a computed step per cond; in calibration, measure it against the previous one."""
        step = self.step_index(transformer_options)
        if step is None:
            return
        residual = img_out - img_in
        conds = self._conds(transformer_options, residual.shape[0])
        for cond, part in zip(conds, residual.chunk(len(conds))):
            prev = self.residuals.get(cond)
            if self.settings.calibration and step >= 1 and prev is not None and prev.shape == part.shape:
                cur, old = part.float(), prev.float()
                self._ratios.setdefault(step, []).append((cur.norm(dim=-1) / old.norm(dim=-1)).flatten())
                self._cos.setdefault(step, []).append(
                    (1 - torch.nn.functional.cosine_similarity(cur, old, dim=-1, eps=1e-8)).flatten())
            self.residuals[cond] = part

    def calibration(self) -> dict | None:
        """musubi-tuner's calibration output: per step after the first, the mean and std of the per-token
        ratio of residual norms (this step's / the previous step's) and the mean cosine distance; `ratios`
        = 1 followed by the means, one entry per step, ready for the `ratios` input. None if not measured.
        Norms are taken in float32 (musubi-tuner takes them in the compute dtype, so its printed ratios are
        bf16-rounded), over every image token (clean context and noisy) of every cond, as musubi-tuner does
        over its image tokens."""
        if not self.settings.calibration or not self._ratios:
            return None
        steps = sorted(self._ratios)
        per_step = [torch.cat(self._ratios[s]) for s in steps]
        result = dict(
            steps=steps,
            norm_ratio=[float(r.mean()) for r in per_step],
            norm_std=[float(r.std()) if r.numel() > 1 else 0.0 for r in per_step],
            cos_dis=[float(torch.cat(self._cos[s]).mean()) for s in steps],
        )
        complete = steps == list(range(1, self.steps))
        result["ratios"] = [1.0] + [round(r, 5) for r in result["norm_ratio"]] if complete else None
        return result


def _outer_sample_wrapper(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: a fresh MagCacheRun for this run in a copy of the guider's model options (so
    runs, and other graphs sharing the MODEL, never share state), removed and reported at the end."""
    guider = executor.class_obj
    orig_options = guider.model_options
    options = comfy.model_patcher.create_model_options_clone(orig_options)
    topts = options["transformer_options"]
    settings: MagCacheSettings = topts[SETTINGS_KEY]
    sigmas = args[3] if len(args) > 3 else kwargs["sigmas"]
    run = MagCacheRun(settings, sigmas)
    topts[RUN_KEY] = run
    guider.model_options = options
    mode = "calibration (no skipping)" if settings.calibration else (
        f"threshold {settings.threshold}, K {settings.k}, retention {settings.retention_ratio}, "
        f"{'given' if settings.ratios else 'default'} ratios")
    logging.info("FramePack MagCache: %s, %d steps", mode, run.steps)
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = orig_options
        if not settings.calibration:
            logging.info("FramePack MagCache: skipped the block stack at %d of %d steps %s", len(run.skipped),
                         run.steps, sorted(run.skipped))
        report = topts.get(REPORT_KEY)
        result = run.calibration()
        if report is not None and result is not None:
            report(result)
        run.residuals.clear()


def apply_magcache(model_patcher, settings: MagCacheSettings,
                   report: Callable[[dict], None] | None = None):
    """A clone of the MODEL with MagCache. `report(result)` receives `MagCacheRun.calibration()` at the end
    of each calibration run (the node logs it and shows it on itself)."""
    m = model_patcher.clone()
    topts = m.model_options.setdefault("transformer_options", {})
    topts[SETTINGS_KEY] = settings
    if report is not None:
        topts[REPORT_KEY] = report
    m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, _outer_sample_wrapper)
    return m
