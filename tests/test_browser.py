"""The users' side in a real browser: example workflows, the live layout drawing, and running them.

A real ComfyUI server (the `comfy_server` fixture) with the pack, random-weight model files under
the standard names (scripts/random_models.py: real-size HunyuanVideo VAE, SigLIP, CLIP-L; a tiny
FramePack and LoRA) and synthetic input pictures; Debian's headless Chromium driven by
playwright-core (tests/browser/check_workflows.mjs) loads every example workflow from the
template list, checks the layout drawing, and converts each workflow with the frontend's own
graphToPrompt(); then each converted workflow is queued over HTTP and must produce an image.

Screenshots go to $FRAMEPACK_BROWSER_SHOTS or a fresh temp folder (printed).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BROWSER_DIR = REPO / "tests" / "browser"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
EXAMPLES = ("framepack_oichi", "framepack_kisekaeichi", "framepack_1f_mc", "framepack_kisekaeichi_lora_stack",
            "framepack_kisekaeichi_ksampler", "framepack_train_kisekaeichi_lora")
TRAINING = "framepack_train_kisekaeichi_lora"  # the one template that trains instead of making an image
# FramePackEncodeImage's bucket resolution for the CPU runs (its minimum): the real-size VAE takes ~10 s per
# 320x320 frame on 2 CPU cores; the layout/sampler code is the same at any size.
CPU_RESOLUTION = 128

sys.path.insert(0, str(REPO / "scripts"))
import random_models  # noqa: E402
from comfy_server import PACK_NAME as PACK  # noqa: E402  (the pack's folder name under custom_nodes/)
from demo import make_demo_images  # noqa: E402
from workflow_api import swap_text_encoder, ui_to_api  # noqa: E402


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} missing (Debian's chromium; scripts/setup.sh installs it as root)"
    if shutil.which("node") is None:
        return "node missing"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "tests/browser/node_modules missing (scripts/setup.sh runs npm install there)"
    return None


needs_browser = pytest.mark.skipif(_browser_missing() is not None, reason=_browser_missing() or "")


@pytest.fixture(scope="module")
def served(comfy_server, models_dir, comfy_base_dir):
    """The server with random-weight models and the example input pictures in place."""
    random_models.install(models_dir)
    make_demo_images(comfy_base_dir / "input")
    return comfy_server


@pytest.fixture(scope="module")
def shots_dir() -> Path:
    path = Path(os.environ.get("FRAMEPACK_BROWSER_SHOTS") or tempfile.mkdtemp(prefix="fp1f-browser-shots-"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def browser_results(served, shots_dir):
    t0 = time.time()
    proc = subprocess.run(["node", str(BROWSER_DIR / "check_workflows.mjs"), served.url, str(shots_dir)],
                          cwd=BROWSER_DIR, capture_output=True, text=True, timeout=600)
    results_path = shots_dir / "results.json"
    assert results_path.exists(), f"browser script wrote no results (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    results = json.loads(results_path.read_text())
    print(f"browser part: {time.time() - t0:.1f}s")
    assert not results.get("fatal"), results["fatal"] + "\n" + "\n".join(results.get("pageErrors", []))
    return results


def _layout_from_widgets(widgets: dict, num_controls: int | None) -> dict:
    """What the Python code resolves for the widgets; num_controls None: the node has no start image."""
    from framepack_oneframe.framepack_core.layout import settings_only_count
    from framepack_oneframe.nodes.layout_widgets import layout_from_widgets

    if num_controls is None:
        num_controls = settings_only_count(widgets["preset"])
    return layout_from_widgets(widgets, num_controls).to_dict()


# --------------------------------------------------------------------------------------------
# the preview route (no browser needed)
# --------------------------------------------------------------------------------------------


def test_layout_preview_route_answers_the_python_layout(comfy_server):
    for widgets, n in (({"preset": "kisekaeichi"}, 2), ({"preset": "oichi", "target_index": 20}, 1),
                       ({"preset": "1f-mc", "use_clean_latents_2x": "on"}, 2)):
        got = comfy_server.post("/framepack/layout_preview", {"widgets": widgets, "num_controls": n})
        assert got == json.loads(json.dumps(_layout_from_widgets(widgets, n)))
    kis = comfy_server.post("/framepack/layout_preview", {"widgets": {"preset": "kisekaeichi"}, "num_controls": 2})
    assert kis["target_index"] == 1 and [c["index"] for c in kis["clean"]] == [0, 10]


def test_layout_preview_route_errors_are_json(comfy_server):
    # the fixture's post() raises conftest.GraphError (an AssertionError) carrying the JSON body
    with pytest.raises(AssertionError) as e:
        comfy_server.post("/framepack/layout_preview", {"widgets": {"preset": "oichi", "target_index": 999},
                                                        "num_controls": 1})
    assert "HTTP 400" in str(e.value) and "target_index" in e.value.details["error"]
    with pytest.raises(AssertionError) as e:
        comfy_server.post("/framepack/layout_preview", {"widgets": {"preset": "no such preset"}, "num_controls": 1})
    assert "preset" in e.value.details["error"]


def test_templates_and_thumbnails_are_served(comfy_server):
    """ComfyUI serves the pack's example_workflows/ as templates: each workflow and its thumbnail."""
    import urllib.request

    assert set(comfy_server.get("/api/workflow_templates")[PACK]) == set(EXAMPLES)
    for name in EXAMPLES:
        with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{PACK}/{name}.jpg") as r:
            assert r.status == 200 and r.headers.get_content_type() == "image/jpeg"
            assert r.read() == (REPO / "example_workflows" / f"{name}.jpg").read_bytes()
    from PIL import Image

    # the thumbnails are cards (title, what it does and needs, the layout drawing), not UI screenshots
    assert {Image.open(REPO / "example_workflows" / f"{n}.jpg").size for n in EXAMPLES} == {(640, 640)}


# --------------------------------------------------------------------------------------------
# the browser
# --------------------------------------------------------------------------------------------


@pytest.mark.browser
@needs_browser
def test_every_example_loads_from_the_template_list(browser_results):
    listed = set(browser_results["templates"].get("framepack_oneframe", []))
    assert listed == set(EXAMPLES), browser_results["templates"]
    for name in EXAMPLES:
        r = browser_results["workflows"][name]
        assert r["status"] == 200
        assert r["missing"] == [], f"{name}: node types unknown to the frontend: {r['missing']}"
        assert r["loadedCount"] == r["nodeCount"] > 5
        assert (REPO / "example_workflows" / f"{name}.jpg").is_file(), f"{name} has no thumbnail"
        # the loaders carry download links: the frontend offers the one standard file the test
        # folder lacks (the 8 B text encoder), with its folder, and not the files that are there
        # (frontend 1.3x writes "text_encoders / llava...", 1.45 lists "text_encoders (1)" then the file)
        dialog = r["missingModelsDialog"] or ""
        assert re.search(r"text_encoders( / |\s*\(1\)\s*)llava_llama3_fp16\.safetensors", dialog), f"{name}: {dialog!r}"
        assert "FramePackI2V_HY_bf16.safetensors" not in dialog and "clip_l" not in dialog, f"{name}: {dialog!r}"
    # our extension threw nothing (the frontend's own blocked registry look-ups are not ours)
    ours = [f.name for f in (REPO / "js").glob("*.js")]
    errors = [e for e in browser_results["pageErrors"]
              if any(name in e for name in ours) or (e.startswith("pageerror") and "framepack" in e.lower())]
    assert not errors, errors


@pytest.mark.browser
@needs_browser
def test_layout_drawing_follows_the_widgets(browser_results, served):
    from PIL import Image, ImageChops

    checked = 0
    for name in EXAMPLES:
        layouts = browser_results["workflows"][name]["layouts"]
        assert len(layouts) == 1, f"{name}: expected one FramePackOneFrameLayout node"
        for lay in layouts:
            before, after = lay["before"], lay["after"]
            assert before["error"] is None and before["layout"], f"{name}: no layout drawn: {before}"
            # the drawing shows what the Python code resolves for the node's widgets and controls
            req = before["request"]
            assert before["layout"] == json.loads(json.dumps(_layout_from_widgets(req["widgets"], req["num_controls"])))
            # after the widget change the drawn state holds the new value, as the route answers it
            assert after["request"]["widgets"][lay["change"]] == lay["newValue"]
            assert after["layout"][lay["change"]] == lay["newValue"]
            assert after["layout"] == served.post("/framepack/layout_preview", after["request"])
            # and the drawing on the node changed (only the drawing: the widget's own text changed too)
            a, b = Image.open(lay["shotBefore"]).convert("RGB"), Image.open(lay["shotAfter"]).convert("RGB")
            top = int(lay["drawTop"]) + 2
            assert a.size[0] == b.size[0] and 300 < top < a.size[1] - 100, (a.size, b.size, top)
            box = (0, top, a.size[0], min(a.size[1], b.size[1]))
            diff = ImageChops.difference(a.crop(box), b.crop(box)).getbbox()
            assert diff is not None, f"{name}: the layout drawing did not change"
            # a real mouse click on the widget's increment arrow: value +1, redrawn from the route
            assert lay["clickedValue"] == lay["widgets"][lay["change"]] + 1
            assert lay["clicked"]["error"] is None and lay["clicked"]["layout"][lay["change"]] == lay["clickedValue"]
            checked += 1
    assert checked == len(EXAMPLES)
    # unplugging the control list from the layout node redraws it for the start image alone
    for name in ("framepack_kisekaeichi", "framepack_1f_mc", "framepack_kisekaeichi_lora_stack",
                 "framepack_kisekaeichi_ksampler"):
        lay = browser_results["workflows"][name]["layouts"][0]
        assert lay["before"]["request"]["num_controls"] == 2
        unplugged = lay["unplugged"]
        assert unplugged["layout"]["num_controls"] == 1
        assert [c["control"] for c in unplugged["layout"]["clean"] if c["kind"] == "control"] == [0]
    kis = browser_results["workflows"]["framepack_kisekaeichi"]["layouts"][0]["before"]
    assert kis["request"]["num_controls"] == 2  # the control chain was counted in the browser
    assert [c["index"] for c in kis["layout"]["clean"]] == [0, 10] and kis["layout"]["target_index"] == 1


def _comfy_version() -> tuple[int, ...]:
    from conftest import COMFY_DIR

    text = (COMFY_DIR / "comfyui_version.py").read_text()
    return tuple(int(x) for x in re.search(r'__version__ = "([\d.]+)"', text).group(1).split("."))


@pytest.mark.browser
@needs_browser
def test_layout_drawing_with_the_vue_node_renderer(browser_results):
    """Current frontends' Vue node renderer paints our custom widget only when asked (triggerDraw)."""
    vue = browser_results["vue"]
    # 0.28's frontend (1.45) has the renderer; 0.3.75's (1.3x) has an early one behind the same setting
    assert vue["supported"] or _comfy_version() < (0, 28), vue
    if not vue["supported"]:
        return
    assert vue["vueNodes"] > 5
    # the picture shows the current state, before and after a widget change
    assert vue["before"]["error"] is None and vue["before"]["layout"]["target_index"] == 1
    assert vue["after"]["layout"]["target_index"] == vue["newValue"] == 4
    assert vue["after"]["layout"] == json.loads(json.dumps(_layout_from_widgets(vue["after"]["request"]["widgets"],
                                                          vue["after"]["request"]["num_controls"])))
    assert Path(vue["shot"]).is_file()


@pytest.mark.browser
@needs_browser
def test_python_converter_matches_the_frontend(browser_results, served):
    info = served.get("/object_info")
    for name in EXAMPLES:
        workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
        ours = ui_to_api(workflow, info)
        theirs = {k: {"class_type": v["class_type"], "inputs": v["inputs"]}
                  for k, v in browser_results["workflows"][name]["api"].items()}
        assert ours == theirs, name


def _overlapping(rects: list[tuple[str, list[float]]]) -> list[tuple[str, str]]:
    """Pairs of named rectangles [x, y, w, h] whose insides intersect (touching edges do not count)."""
    return [(na, nb) for k, (na, a) in enumerate(rects) for nb, b in rects[k + 1:]
            if a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]]


@pytest.mark.browser
@needs_browser
def test_templates_open_readable(browser_results):
    """Opened as the template browser opens it, on a 1600x1000 window, each example shows the whole
    graph at a zoom where the frontend still draws text, with no node over another and the Note's
    text in its box."""
    for name in EXAMPLES:
        o = browser_results["workflows"][name]["open"]
        # both frontends hide node text below scale MinFontSizeForLOD / (NODE_TEXT_SIZE 14 * sqrt(dpr))
        # (LGraphCanvas.updateLowQualityThreshold); the check runs at the default setting, 8
        assert o["minFontSizeForLOD"] == 8, o
        assert o["threshold"] == pytest.approx(8 / (14 * o["dpr"] ** 0.5)), o
        assert o["scale"] >= o["threshold"] and not o["lowQuality"], f"{name} opens at zoom {o['scale']:.3f}: {o}"
        # the whole graph inside the canvas
        (ox, oy), s = o["offset"], o["scale"]
        cw, ch = o["canvas"][2], o["canvas"][3]
        for n in o["rects"]:
            x, y, w, h = n["rect"]
            assert 0 <= (x + ox) * s and (x + w + ox) * s <= cw and 0 <= (y + oy) * s and (y + h + oy) * s <= ch, \
                f"{name}: {n['type']} {n['rect']} is off screen at {o['offset']}, {s}"
        assert _overlapping([(f"{n['type']}#{n['id']}", n["rect"]) for n in o["rects"]]) == [], name
        assert o["notes"], name
        for note in o["notes"]:
            assert 0 < note["clientHeight"] and note["scrollHeight"] <= note["clientHeight"], f"{name}: Note text cut: {note}"


@pytest.mark.browser
@needs_browser
def test_every_title_is_drawn_whole(browser_results, served):
    """Each node of the pack, added alone to an empty canvas, and each node of every template as it
    opens, has its whole title drawn: the frontends cut a title that does not fit its node's width
    ("FramePack Contr..."), and a node sized only by its sockets was cut that way."""
    object_info = served.get("/object_info", timeout=120)
    pack_types = {t for t, d in object_info.items() if d.get("python_module") == f"custom_nodes.{PACK}"}
    assert len(pack_types) > 10, sorted(object_info)[:20]
    fresh = browser_results["freshNodes"]
    assert set(fresh["types"]) == pack_types
    assert {n["type"] for n in fresh["nodes"]} == pack_types
    assert [n for n in fresh["nodes"] if not n["whole"]] == []
    for name in EXAMPLES:
        titles = browser_results["workflows"][name]["open"]["titles"]
        assert len(titles) == browser_results["workflows"][name]["nodeCount"], name
        assert [t for t in titles if not t["whole"]] == [], name


@pytest.mark.browser
@needs_browser
def test_layout_labels_never_overlap(browser_results):
    """The drawing's text (header, row names, box labels, axis ticks, legend, warnings, errors) never
    runs together, for targets up to 255 with clean latents at 0 and 10, and stays inside the node."""
    swept = set()
    for name in EXAMPLES:
        for lay in browser_results["workflows"][name]["layouts"]:
            for drawn in lay["labels"] + [lay["error"]]:
                boxes = drawn["labelBoxes"]
                assert boxes, drawn
                for b in boxes:
                    assert 0 <= b["x"] and b["x"] + b["w"] <= drawn["width"], f"{name}: {b} outside the node"
                pairs = _overlapping([(b["text"], [b["x"], b["y"], b["w"], b["h"]]) for b in boxes])
                assert pairs == [], f"{name} at {drawn['value']['target_index']}: {pairs}"
                if not drawn["error"]:  # the target's index is always named on the axis
                    assert str(drawn["value"]["target_index"]) in [b["text"] for b in boxes], (name, drawn["value"])
            swept |= {d["value"]["target_index"] for d in lay["labels"]}
            assert "target_index" in lay["error"]["error"], lay["error"]
    assert {0, 9, 10, 11, 100, 250, 255} <= swept, swept


@pytest.mark.browser
@needs_browser
def test_a_growing_layout_node_covers_no_neighbour(browser_results):
    """After the target sweep (target 255 adds a warning line) and an out-of-range target (a red error),
    the layout node has grown with its messages, into free space: it covers no other node."""
    for name in EXAMPLES:
        r = browser_results["workflows"][name]
        lay = r["layouts"][0]
        before = {n["id"]: n["rect"] for n in r["open"]["rects"]}[lay["id"]]
        after = {n["id"]: n["rect"] for n in lay["errorRects"]}[lay["id"]]
        assert after[3] > before[3], f"{name}: the messages did not grow the node ({before} -> {after})"
        assert _overlapping([(f"{n['type']}#{n['id']}", n["rect"]) for n in lay["errorRects"]]) == [], name


@pytest.mark.browser
@needs_browser
def test_template_browser_shows_the_cards(browser_results):
    """The template browser, opened on the pack, shows each example's card (its thumbnail) at a size
    where its title and drawing can be read."""
    tb = browser_results["templateBrowser"]
    assert "error" not in tb and tb["closed"], tb
    assert set(tb["names"]) == set(EXAMPLES), tb
    # only this pack's category is open: its cards are the 640x640 thumbnails, shown large enough
    assert len(tb["images"]) == len(EXAMPLES), tb
    for card in tb["images"]:
        assert card["naturalWidth"] == 640 and card["shownWidth"] >= 150, card


def _queue_example(browser_results, served, name, **node_inputs):
    """Queue the frontend's own conversion of example `name` (test text encoder, CPU size, `node_inputs`
    {class_type: {input: value}} set); its history entry once it succeeded."""
    prompt = swap_text_encoder(browser_results["workflows"][name]["api"])
    assert "DualCLIPLoader" not in {n["class_type"] for n in prompt.values()}
    for node in prompt.values():
        if node["class_type"] in ("FramePackEncodeImage", "FramePackOneFrameDatasetFolder"):
            node["inputs"]["resolution"] = CPU_RESOLUTION
        node["inputs"].update(node_inputs.get(node["class_type"], {}))
    entry = served.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[:4000]
    return entry


def _run_example(browser_results, served, comfy_base_dir, name):
    """The image example `name` makes (see _queue_example)."""
    from PIL import Image

    t0 = time.time()
    entry = _queue_example(browser_results, served, name)
    images = [i for out in entry["outputs"].values() for i in out.get("images", []) if i["type"] == "output"]
    assert len(images) == 1, entry["outputs"]
    img = Image.open(comfy_base_dir / "output" / images[0]["subfolder"] / images[0]["filename"])
    print(f"{name}: ran in {time.time() - t0:.1f}s -> {images[0]['filename']} {img.size}")
    return img


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("name", [n for n in EXAMPLES if n != TRAINING])
def test_example_runs_to_an_image(browser_results, served, comfy_base_dir, name):
    w, h = _run_example(browser_results, served, comfy_base_dir, name).size
    assert w % 16 == 0 and h % 16 == 0 and 0.5 * CPU_RESOLUTION**2 < w * h < 2 * CPU_RESOLUTION**2, (w, h)


@pytest.mark.browser
@needs_browser
def test_training_example_saves_a_lora_that_carries_its_layout(browser_results, served, comfy_base_dir, models_dir):
    """The training template as the frontend converts it, on the demo dataset (a few steps): a LoRA file in
    models/loras whose header gives back the template's kisekaeichi layout, and ComfyUI's loss graph."""
    from framepack_oneframe.framepack_core import lora_metadata

    before = set((models_dir / "loras").rglob("*.safetensors"))
    entry = _queue_example(browser_results, served, TRAINING, FramePackTrainOneFrameLoRA={"steps": 3})
    (new,) = set((models_dir / "loras").rglob("*.safetensors")) - before
    settings, _ = lora_metadata.read_settings(lora_metadata.read_header(new))
    assert {k: settings[k] for k in ("target_index", "clean_indices", "no_post", "no_2x", "no_4x")} == {
        "target_index": 1, "clean_indices": [0, 10], "no_post": True, "no_2x": True, "no_4x": True}
    previews = [i for out in entry["outputs"].values() for i in out.get("images", [])]
    assert previews, entry["outputs"]  # the loss graph


@pytest.mark.browser
@needs_browser
def test_ksampler_example_gives_the_pack_samplers_image(browser_results, served, comfy_base_dir):
    """The stock-KSampler template and the FramePack One-Frame Sampler template: one image for one seed."""
    import numpy as np

    ours = np.asarray(_run_example(browser_results, served, comfy_base_dir, "framepack_kisekaeichi"), dtype=np.int16)
    stock = np.asarray(_run_example(browser_results, served, comfy_base_dir, "framepack_kisekaeichi_ksampler"),
                       dtype=np.int16)
    assert ours.shape == stock.shape
    # random weights give a noise picture: any sampling difference changes it everywhere
    assert np.abs(ours - stock).max() <= 1, np.abs(ours - stock).max()
    assert ours.std() > 5  # a real picture, not a flat one that would match anything
