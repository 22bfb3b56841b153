"""The README's demo command, run as a user would: a real ComfyUI server, random-weight models,
the kisekaeichi example workflow through the HTTP API, an output image on disk."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_demo_command_makes_an_image(tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "demo_framepack_kisekaeichi_00001_.png"  # the name this run's ComfyUI gives its image
    earlier.write_bytes(b"an earlier run's image")
    t0 = time.time()
    # --resolution 128: a small FramePack bucket keeps the real-size VAE quick on 2 CPU cores
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--resolution", "128"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=_env())
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "RANDOM-WEIGHT" in log and "noise" in log  # it says plainly what random weights give
    paths = re.findall(r"output image: (.+)", proc.stdout)
    assert len(paths) == 1, log[-3000:]
    image = Path(paths[0].strip())
    assert image.parent == out and image.name.startswith("demo_framepack_kisekaeichi")
    assert image != earlier and earlier.read_bytes() == b"an earlier run's image"  # never overwritten
    with Image.open(image) as img:
        w, h = img.size  # the 128 bucket nearest to the square demo pictures
        assert img.mode == "RGB" and w % 16 == 0 and h % 16 == 0 and 0.7 * 128**2 < w * h < 1.3 * 128**2, img.size
        assert len(set(img.tobytes()[i:i + 3] for i in range(0, w * h * 3, 3))) > 50  # decoded noise, not a flat fill
    print(f"demo: {time.time() - t0:.1f}s")


def test_demo_refuses_a_missing_models_folder(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--models", str(tmp_path / "nope"),
                           "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode != 0 and "not a folder" in proc.stdout + proc.stderr


def _env():
    import os

    return dict(os.environ, PYTHONUNBUFFERED="1")


def test_demo_never_overwrites_an_earlier_image(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    from demo import unused_path

    first = tmp_path / "demo_framepack_kisekaeichi_00001_.png"
    assert unused_path(first) == first
    first.write_bytes(b"earlier")
    second = unused_path(first)
    assert second == tmp_path / "demo_framepack_kisekaeichi_00001_-2.png"
    second.write_bytes(b"earlier too")
    assert unused_path(first).name == "demo_framepack_kisekaeichi_00001_-3.png"

