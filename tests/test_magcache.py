"""FramePack MagCache (framepack_core/magcache.py, node FramePackMagCache) through ComfyUI's real engine.

The skip rule is checked against musubi-tuner's description on its own; the node on the tiny model's
'calm' variant (test_comfy_sampling.calm_model), counting the block stack's runs with a forward hook on
the first transformer block, i.e. the work really done, not the cache's own bookkeeping.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from conftest import GraphError
from framepack_oneframe.framepack_core import magcache
from test_comfy_sampling import _transformer_class, calm_model, pack_graph, rel_err  # noqa: F401  (fixtures)
from test_oneframe_graph import fp_models, images, latent  # noqa: F401  (fixtures)

STEPS = 20


# ------------------------------------------------------------------------------------------------
# The rule, without a model
# ------------------------------------------------------------------------------------------------


def _musubi_nearest(ratios, steps):
    """musubi-tuner's interpolation as it reads there (numpy), the reference for fit_ratios."""
    if steps == 1:
        return [ratios[-1]]
    scale = (len(ratios) - 1) / (steps - 1)
    return list(np.array(ratios)[np.round(np.arange(steps) * scale).astype(int)])


@pytest.mark.parametrize("steps", [1, 2, 7, 20, 25, 49, 50, 51, 99])
def test_fit_ratios_is_musubis_nearest_interpolation(steps):
    assert magcache.fit_ratios(magcache.DEFAULT_RATIOS, steps) == _musubi_nearest(magcache.DEFAULT_RATIOS, steps)
    short = [1.0, 1.1, 1.2, 0.9, 0.8]  # 4 / (n - 1) lands on halves for some n: both round them to even
    assert magcache.fit_ratios(short, steps) == _musubi_nearest(short, steps)


def _skips(settings, steps):
    rule = magcache.SkipRule(settings, steps)
    return [rule.skip(i) for i in range(steps)]


def test_skip_rule_keeps_retention_last_step_and_k():
    rnd = random.Random(0)
    for _ in range(300):
        steps = rnd.randint(2, 60)
        s = magcache.MagCacheSettings(threshold=rnd.uniform(0, 1.5), k=rnd.randint(1, 8),
                                      retention_ratio=rnd.uniform(0, 0.6),
                                      ratios=tuple(rnd.uniform(0.8, 1.2) for _ in range(rnd.randint(2, 60))))
        skips = _skips(s, steps)
        first = max(int(s.retention_ratio * steps), 1)
        assert not any(skips[:first]) and not skips[-1]
        run = longest = 0
        for skip in skips:
            run = run + 1 if skip else 0
            longest = max(longest, run)
        assert longest <= s.k


def test_skip_rule_accumulates_as_musubi_describes():
    # ratios 1.1 from step 1 on: a candidate step multiplies 1.1 into the product and adds |1 - product|
    s = magcache.MagCacheSettings(threshold=0.35, k=6, retention_ratio=0.2, ratios=(1.0,) + (1.1,) * 9)
    # steps 0, 1 keep (int(0.2 * 10) = 2); step 2 err 0.1 skip, step 3 err 0.1 + 0.21 = 0.31 skip, step 4
    # err 0.31 + 0.331 > 0.35: runs and restarts; 5, 6 skip; 7 runs; 8 skips; 9 is the last step
    assert _skips(s, 10) == [False, False, True, True, False, True, True, False, True, False]
    assert _skips(magcache.MagCacheSettings(threshold=0.35, k=1, ratios=s.ratios), 10) == \
        [False, False, True, False, True, False, True, False, True, False]
    # threshold 0 never skips, even where a ratio is exactly 1 (musubi's <= would skip there)
    assert not any(_skips(magcache.MagCacheSettings(threshold=0.0, ratios=(1.0,) * 10), 10))
    assert not any(_skips(magcache.MagCacheSettings(threshold=2.0, calibration=True), 25))


@pytest.mark.parametrize("text, position", [("1.0,abc", "'abc' at position 2"), ("1.0,,1.1", "'' at position 2"),
                                            ("1.0,-0.5", "'-0.5' at position 2"), ("nan", "'nan' at position 1"),
                                            ("1.0;1.1", "'1.0;1.1' at position 1"), ("1, 0", "'0' at position 2")])
def test_parse_ratios_rejects_bad_text(text, position):
    with pytest.raises(ValueError, match=f"FramePackMagCache: input 'ratios' has {position}; expected a comma list"):
        magcache.parse_ratios(text, "FramePackMagCache")


def test_parse_ratios_reads_what_calibration_prints():
    assert magcache.parse_ratios("", "N") is None and magcache.parse_ratios("  \n", "N") is None
    text = magcache.format_ratios([1.0, 1.26562, 0.97266])
    assert text == "1.00000,1.26562,0.97266"
    assert magcache.parse_ratios(text, "N") == (1.0, 1.26562, 0.97266)
    assert magcache.parse_ratios(" 1.0,\n 1.1 ,", "N") == (1.0, 1.1)  # spaces, line breaks, a trailing comma


def test_settings_check_names_the_input():
    with pytest.raises(ValueError, match=r"FramePackMagCache: input 'K' is 0; allowed range 1\.\.100"):
        magcache.MagCacheSettings(k=0).check("FramePackMagCache")
    with pytest.raises(ValueError, match=r"input 'retention_ratio' is 1\.5; allowed range 0\.0\.\.1\.0"):
        magcache.MagCacheSettings(retention_ratio=1.5).check("FramePackMagCache")


# ------------------------------------------------------------------------------------------------
# The node, through ComfyUI's engine
# ------------------------------------------------------------------------------------------------


class BlockRuns:
    """Per model call (transformer `_forward`), whether the block stack ran: a forward hook on the first block."""

    def __init__(self, cls, monkeypatch):
        self.calls = 0
        self.ran: list[int] = []  # the call indices at which the first block ran
        self.handles = []
        hooked = set()
        forward = cls._forward

        def spy(model, *args, **kwargs):
            if id(model) not in hooked:
                hooked.add(id(model))
                self.handles.append(model.transformer_blocks[0].register_forward_hook(
                    lambda *_: self.ran.append(self.calls - 1)))
            self.calls += 1
            return forward(model, *args, **kwargs)

        monkeypatch.setattr(cls, "_forward", spy)

    def reset(self):
        self.calls, self.ran = 0, []

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.fixture
def block_runs(run_graph, fp_models, images, monkeypatch):
    runs = BlockRuns(_transformer_class(run_graph, fp_models, images), monkeypatch)
    yield runs
    runs.remove()


def _graph(fp_models, calm_model, cache=None, cfg=1.0, seed=11):
    p = pack_graph(fp_models, "kisekaeichi", "fp_ref.png", cfg=cfg, steps=STEPS, seed=seed)
    p["model"]["inputs"]["model_name"] = calm_model
    if cache is not None:
        inputs = dict(threshold=0.24, K=6, retention_ratio=0.2, calibration=False, ratios="")
        inputs.update(cache)
        p["cache"] = {"class_type": "FramePackMagCache", "inputs": {"model": ["model", 0], **inputs}}
        p["sampler"]["inputs"]["model"] = ["cache", 0]
    return p


def _run(run_graph, block_runs, prompt):
    block_runs.reset()
    out = latent(run_graph, prompt)
    return out, list(block_runs.ran), block_runs.calls


def test_threshold_zero_changes_nothing(run_graph, fp_models, images, calm_model, block_runs):
    base, ran, calls = _run(run_graph, block_runs, _graph(fp_models, calm_model))
    assert calls == STEPS and ran == list(range(STEPS))
    cached, ran, calls = _run(run_graph, block_runs, _graph(fp_models, calm_model, dict(threshold=0.0)))
    assert torch.equal(cached, base)
    assert calls == STEPS and ran == list(range(STEPS))


def test_large_threshold_skips_the_block_stack_within_k_and_retention(run_graph, fp_models, images, calm_model,
                                                                      block_runs):
    base, _, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model))
    knobs = dict(threshold=1.0, K=3, retention_ratio=0.3)
    cached, ran, calls = _run(run_graph, block_runs, _graph(fp_models, calm_model, knobs))
    skipped = [i for i in range(STEPS) if i not in ran]
    err = rel_err(cached, base)
    print(f"MagCache threshold 1.0 K 3: block stack at {len(ran)} of {calls} model calls, skipped {skipped}, "
          f"relative latent error {err:.3f}")
    assert calls == STEPS  # every step still calls the model (embeddings + output head) ...
    assert len(ran) <= STEPS - 6  # ... but the block stack ran at far fewer
    # musubi's rule with the default ratios fitted to 20 steps decides which
    rule = magcache.SkipRule(magcache.MagCacheSettings(threshold=1.0, k=3, retention_ratio=0.3), STEPS)
    assert skipped == [i for i in range(STEPS) if rule.skip(i)]
    assert all(i in ran for i in range(int(0.3 * STEPS))) and STEPS - 1 in ran
    assert all(any(i + j in ran for j in range(4)) for i in range(STEPS - 3))  # never 4 skips in a row
    assert torch.isfinite(cached).all() and 0 < err < 0.5, err
    # K 1 skips at most every other step; musubi's defaults (0.24, K 6, 0.2) skip too
    _, ran1, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model, dict(threshold=1.0, K=1)))
    assert all(i in ran1 or i + 1 in ran1 for i in range(STEPS - 1))
    _, ran_default, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model, {}))
    assert len(ran_default) < STEPS


def test_cond_and_uncond_skip_together_batched_or_split(run_graph, fp_models, images, calm_model, block_runs,
                                                       monkeypatch):
    """cfg > 1: ComfyUI batches cond + uncond into one forward, or runs them apart when memory looks short.
    One decision per step, one residual per cond: both give the same image and the same skipped steps."""
    knobs = dict(threshold=1.0, K=3)
    base, _, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model, cfg=2.5))
    batched, ran_b, calls_b = _run(run_graph, block_runs, _graph(fp_models, calm_model, knobs, cfg=2.5))
    assert calls_b == STEPS and len(ran_b) < STEPS
    model_cls = type(run_graph(_graph(fp_models, calm_model), outputs_of=["model"])["model"][0].model)
    monkeypatch.setattr(model_cls, "memory_required", lambda self, *a, **k: float("inf"))  # split the batch
    split, ran_s, calls_s = _run(run_graph, block_runs, _graph(fp_models, calm_model, knobs, cfg=2.5, seed=11))
    assert calls_s == 2 * STEPS
    assert sorted({i // 2 for i in ran_s}) == ran_b and len(ran_s) == 2 * len(ran_b)
    assert rel_err(split, batched) <= 1e-5
    assert torch.isfinite(batched).all() and rel_err(batched, base) > 0


def test_calibration_measures_one_ratio_per_step_and_they_feed_back(run_graph, fp_models, images, calm_model,
                                                                  block_runs, monkeypatch):
    from server import PromptServer

    shown = []
    monkeypatch.setattr(PromptServer.instance, "send_progress_text", lambda text, node_id, sid=None:
                        shown.append((node_id, text)))
    base, _, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model))
    calibrated, ran, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model, dict(calibration=True,
                                                                                       threshold=2.0)))
    assert torch.equal(calibrated, base) and ran == list(range(STEPS))  # calibration skips nothing
    assert len(shown) == 1 and shown[0][0] == "cache"
    text = shown[0][1].splitlines()[-1]
    ratios = magcache.parse_ratios(text, "test")
    assert len(ratios) == STEPS and ratios[0] == 1.0  # 1, then one ratio per step after the first
    assert all(0.2 < r < 5 for r in ratios) and len(set(ratios[1:])) > 1
    # the same model, seed and steps measure the same ratios again (the node re-runs: calibration toggled)
    _run(run_graph, block_runs, _graph(fp_models, calm_model, dict(calibration=True, threshold=1.5)))
    assert shown[1][1] == shown[0][1]
    # fed back, they drive the skips exactly as the rule says for them
    knobs = dict(threshold=0.3, K=3, ratios=text)
    cached, ran, _ = _run(run_graph, block_runs, _graph(fp_models, calm_model, knobs))
    rule = magcache.SkipRule(magcache.MagCacheSettings(threshold=0.3, k=3, ratios=ratios), STEPS)
    assert [i for i in range(STEPS) if i not in ran] == [i for i in range(STEPS) if rule.skip(i)]
    assert torch.isfinite(cached).all()
    assert len(shown) == 2  # no calibration, nothing shown


@pytest.mark.parametrize("ratios, message", [
    ("1.0,1.1,x", "FramePackMagCache: input 'ratios' has 'x' at position 3; expected a comma list of positive numbers"),
    ("1.0 1.1", "FramePackMagCache: input 'ratios' has '1.0 1.1' at position 1"),
])
def test_bad_ratios_stop_before_sampling(run_graph, fp_models, images, calm_model, block_runs, ratios, message):
    block_runs.reset()
    with pytest.raises(GraphError, match=message):
        run_graph(_graph(fp_models, calm_model, dict(ratios=ratios)), outputs_of=["sampler"])
    assert block_runs.calls == 0  # raised by the node, before any model call


def test_bench_magcache_section_runs_on_cpu(tmp_path):
    """bench/bench_oneframe.py's magcache section (the GPU measurement) at its CPU smoke size, so it cannot rot."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "bench_oneframe.py"
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(script), "--cpu-smoke", "--sections", "magcache", "--layouts",
                           "kisekaeichi", "--out", str(out)], cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    rows = json.loads(out.read_text())["magcache"]
    for weights in ("random", "calm"):
        none, cal = rows[f"{weights} / none"], rows[f"{weights} / calibration"]
        assert none["model_calls"] == none["block_stack_runs"] == 25
        assert cal["block_stack_runs"] == 25 and cal["final_latent_rel_err"] == 0
        assert len(magcache.parse_ratios(cal["ratios"], "test")) == 25
        for label in ("default ratios 0.24 K6", "calibrated ratios 0.12 K3"):
            row = rows[f"{weights} / {label}"]
            assert row["model_calls"] == 25 and row["block_stack_runs"] < 25
            assert 0 < row["final_latent_rel_err"] < 1
