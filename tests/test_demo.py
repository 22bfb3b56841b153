"""The README's demo command, run as a user would: a real ComfyUI server, random-weight models,
the kisekaeichi example workflow through the HTTP API, an output image on disk."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def _get(url: str, timeout: float = 30.0):
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body


def test_demo_ui_serves_the_adapted_templates_until_ctrl_c(tmp_path):
    """`demo.py --ui`: the real server, the pack's templates adapted to the test conditioning node, until SIGINT."""
    import json
    import signal
    import socket
    import threading
    import urllib.error
    import urllib.request

    sys.path.insert(0, str(REPO / "scripts"))
    from workflow_api import ui_to_api

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --resolution 128: the templates' encoders at the smallest bucket, so one of them runs quickly here
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "demo.py"), "--ui", "--port", str(port),
                             "--resolution", "128"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env())
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        url = None
        while url is None and time.time() < deadline and proc.poll() is None:
            found = re.search(r"is running at (http://\S+)", "".join(lines))
            url = found and found.group(1)
            time.sleep(0.2)
        assert url == f"http://127.0.0.1:{port}", "".join(lines)[-4000:]
        assert "Ctrl-C" in "".join(lines)

        info = _get(f"{url}/object_info")
        assert "FPTestConditioning" in info and "FramePackOneFrameLayout" in info
        templates = _get(f"{url}/api/workflow_templates")
        names = {p.stem for p in (REPO / "example_workflows").glob("*.json")}  # every shipped example
        assert len(names) >= 5
        assert set(templates.get("framepack_oneframe", [])) == names, templates
        for name in names:
            workflow = _get(f"{url}/api/workflow_templates/framepack_oneframe/{name}.json")
            types = [n["type"] for n in workflow["nodes"]]
            assert "DualCLIPLoader" not in types and "CLIPTextEncode" not in types, (name, types)
            # each prompt and negative prompt, or the training template's captions (a linked text)
            expected = {"FPTestTextConditioning": 1} if "train" in name else {"FPTestConditioning": 2}
            assert {t: types.count(t) for t in expected} == expected, (name, types)
            assert len(_get(f"{url}/api/workflow_templates/framepack_oneframe/{name}.jpg")) > 1000
        # an adapted template runs as served (converted the way the front end does)
        prompt = ui_to_api(_get(f"{url}/api/workflow_templates/framepack_oneframe/framepack_kisekaeichi.json"), info)
        req = urllib.request.Request(f"{url}/prompt", data=json.dumps({"prompt": prompt}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            prompt_id = json.loads(r.read())["prompt_id"]
        entry = {}
        while time.time() < deadline + 300 and not entry.get("status", {}).get("completed"):
            entry = _get(f"{url}/history/{prompt_id}").get(prompt_id) or {}
            if entry.get("status", {}).get("status_str") == "error":
                break
            time.sleep(0.5)
        assert entry["status"]["status_str"] == "success", json.dumps(entry.get("status"))[:3000]

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0, "".join(lines)[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    out = "".join(lines)
    assert "stopping ComfyUI" in out
    with pytest.raises(urllib.error.URLError):  # the server is gone with it
        _get(f"{url}/system_stats", timeout=5)
    log_path = Path(re.search(r"ComfyUI's log: (\S+)\)", out).group(1))
    assert not log_path.parent.exists()  # the scratch ComfyUI folder went too
