"""Turn a ComfyUI UI-format workflow (what the template browser loads) into an API prompt.

The UI format stores each node's widget values as a positional list (`widgets_values`) in the
order of the node's widgets, which is the order of its inputs in `/object_info` (`input_order`),
with two kinds of extra front-end-only widgets in between: the "control after generate" combo
that follows a seed, and the "upload" button that follows an image picker. Links are
`[link_id, from_node, from_slot, to_node, to_slot, type]`. The browser test checks this
converter against the front end's own `app.graphToPrompt()` for every example workflow.

Also here: `swap_text_encoder`, which replaces DualCLIPLoader + CLIPTextEncode by the test node
FPTestConditioning (random CONDITIONING with CLIPTextEncode's hunyuan_video structure) for runs
with random weights, where the 8 B LLaVA-Llama-3 text encoder cannot be used.
"""
from __future__ import annotations

import copy
import zlib

_WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Front-end-only nodes: they hold text for people and never reach the server.
_FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _is_widget(spec) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in _WIDGET_TYPES


def _extra_widgets(spec) -> int:
    """How many front-end-only widget values follow this input's value in widgets_values."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return int(bool(opts.get("control_after_generate"))) + int(bool(opts.get("image_upload")))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """API prompt {node_id: {"class_type", "inputs"}} for the active nodes of `workflow`."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) == 2 or node["type"] in ("Note", "MarkdownNote"):  # muted / a note: not executed
            continue
        if node["type"] in _FRONTEND_ONLY:
            raise ValueError(f"node {node['id']}: {node['type']} nodes are not supported by this small converter")
        if node.get("mode", 0) == 4:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; bypass is not supported here")
        info = object_info.get(node["type"])
        if info is None:
            raise ValueError(f"node {node['id']}: type {node['type']!r} is not installed in this ComfyUI")
        inputs = {}
        values = list(node.get("widgets_values") or [])
        pos = 0
        order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
        for section in ("required", "optional"):
            for name in order.get(section, []):
                spec = info["input"][section][name]
                if _is_widget(spec) and pos < len(values):
                    inputs[name] = values[pos]
                    pos += 1 + _extra_widgets(spec)
        for slot in node.get("inputs", []):
            link = links.get(slot.get("link"))
            if link is not None:
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def swap_text_encoder(prompt: dict, seed: int = 0) -> dict:
    """Replace DualCLIPLoader + CLIPTextEncode by FPTestConditioning (for random-weight runs only)."""
    prompt = copy.deepcopy(prompt)
    loaders = {nid for nid, n in prompt.items() if n["class_type"] == "DualCLIPLoader"}
    for nid, node in prompt.items():
        if node["class_type"] == "CLIPTextEncode":
            text = str(node["inputs"].get("text", ""))
            tokens = max(1, min(256, len(text.split()) or 1))
            node["class_type"] = "FPTestConditioning"
            # seeded by the text, not the node id: one prompt text gives one conditioning in every workflow
            node["inputs"] = {"seed": seed + zlib.crc32(text.encode()) % 2**20, "tokens": tokens, "padding": 0, "dim": 4096, "pooled_dim": 768}
    for nid in loaders:
        users = [n for n in prompt.values() for v in n["inputs"].values() if isinstance(v, list) and v[:1] == [nid]]
        if users:
            raise ValueError(f"DualCLIPLoader {nid} still feeds {[u['class_type'] for u in users]}")
        del prompt[nid]
    return prompt
