"""One-frame inference on the real ComfyUI server: repeated runs keep memory flat, interrupts leave it ready.

The FramePack file here is wider than the other tests' (about 40 MB in float32), so that a leaked
model, patched copy or latent per run would show in the server's resident memory.
"""
from __future__ import annotations

import time

import pytest

from test_oneframe_graph import fp_models, graph, images  # noqa: F401  (same graph and fixtures as in-process)

BIG = "fp_server_test.safetensors"
CONFIG = dict(
    in_channels=16, out_channels=16, num_attention_heads=4, attention_head_dim=64, num_layers=2,
    num_single_layers=2, num_refiner_layers=1, mlp_ratio=4.0, patch_size=2, patch_size_t=1, qk_norm="rms_norm",
    guidance_embeds=True, text_embed_dim=4096, pooled_projection_dim=768, rope_theta=256.0,
    rope_axes_dim=(16, 24, 24), image_condition_type=None, has_image_proj=True, image_proj_dim=1152,
    has_clean_x_embedder=True,
)


@pytest.fixture(scope="module")
def server_models(fp_models, models_dir, images):
    from tiny_framepack import save_single_file

    path = models_dir / "diffusion_models" / BIG
    if not path.exists():
        save_single_file(path, seed=7, config=CONFIG)
    return dict(fp_models, diffusion_models=BIG)


def _ok(entry):
    return entry.get("status", {}).get("status_str") == "success"


def test_twenty_runs_keep_server_memory_flat(comfy_server, server_models):
    first = comfy_server.run(graph(server_models, seed=0, steps=3))
    assert _ok(first), first.get("status")
    rss = []
    for seed in range(1, 21):
        entry = comfy_server.run(graph(server_models, seed=seed, steps=3))
        assert _ok(entry), entry.get("status")
        rss.append(comfy_server.rss_bytes())
    growth = (rss[-1] - rss[0]) / 2**20
    print(f"server RSS after run 2: {rss[0] / 2**20:.0f} MiB, after run 21: {rss[-1] / 2**20:.0f} MiB "
          f"(growth {growth:.1f} MiB)")
    assert growth < 30, [round(r / 2**20) for r in rss]


def test_interrupt_during_sampling_leaves_server_ready(comfy_server, server_models):
    prompt_id = comfy_server.queue(graph(server_models, seed=100, steps=200))
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until it runs
        running = comfy_server.get("/queue")["queue_running"]
        if any(item[1] == prompt_id for item in running):
            break
        time.sleep(0.05)
    time.sleep(1.0)  # inside the sampler's loop by now (every other node's output is cached)
    t0 = time.time()
    comfy_server.post("/interrupt", {})
    entry = comfy_server.wait(prompt_id, timeout=120)
    stopped_after = time.time() - t0
    messages = [m[0] for m in entry.get("status", {}).get("messages", [])]
    assert "execution_interrupted" in messages, entry.get("status")
    assert stopped_after < 5, stopped_after
    after = comfy_server.run(graph(server_models, seed=101, steps=3))
    assert _ok(after), after.get("status")
