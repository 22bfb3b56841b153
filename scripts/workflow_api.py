"""Turn a ComfyUI UI-format workflow (what the template browser loads) into an API prompt.

The UI format stores each node's widget values as a positional list (`widgets_values`) in the
order of the node's widgets, which is the order of its inputs in `/object_info` (`input_order`),
with two kinds of extra front-end-only widgets in between: the "control after generate" combo
that follows a seed, and the "upload" button that follows an image picker. Links are
`[link_id, from_node, from_slot, to_node, to_slot, type]`. The browser test checks this
converter against the front end's own `app.graphToPrompt()` for every example workflow.

Also here: `swap_text_encoder` (API prompts) and `swap_text_encoder_ui` (UI workflows, for the
templates `demo.py --ui` serves), which replace DualCLIPLoader + CLIPTextEncode by the test node
FPTestConditioning (random CONDITIONING with CLIPTextEncode's hunyuan_video structure) for runs
with random weights, where the 8 B LLaVA-Llama-3 text encoder cannot be used; and `set_widget`,
one widget value of a UI-format node.
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


def _extra_widgets(spec, name: str = "") -> int:
    """How many front-end-only widget values follow this input's value in widgets_values."""
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    # The front end gives an INT named seed / noise_seed a "control after generate" combo even when its
    # spec does not ask for one (useIntWidget), e.g. FPTestConditioning's seed.
    control = opts.get("control_after_generate", spec[0] == "INT" and name in ("seed", "noise_seed"))
    return int(bool(control)) + int(bool(opts.get("image_upload")))


def _widget_slots(info: dict) -> dict[str, int]:
    """widget input name -> its position in a UI node's widgets_values."""
    slots, pos = {}, 0
    order = info.get("input_order") or {s: list(info["input"].get(s, {})) for s in ("required", "optional")}
    for section in ("required", "optional"):
        for name in order.get(section, []):
            spec = info["input"][section][name]
            if _is_widget(spec):
                slots[name] = pos
                pos += 1 + _extra_widgets(spec, name)
    return slots


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
        values = list(node.get("widgets_values") or [])
        inputs = {name: values[pos] for name, pos in _widget_slots(info).items() if pos < len(values)}
        for slot in node.get("inputs", []):
            link = links.get(slot.get("link"))
            if link is not None:
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def _test_conditioning(text: str, seed: int) -> dict:
    """FPTestConditioning's inputs standing in for CLIPTextEncode(text): as many tokens as words, and
    seeded by the text, not the node id, so one prompt text gives one conditioning in every workflow."""
    return {"seed": seed + zlib.crc32(text.encode()) % 2**20, "tokens": max(1, min(256, len(text.split()) or 1)),
            "padding": 0, "dim": 4096, "pooled_dim": 768}


def swap_text_encoder(prompt: dict, seed: int = 0) -> dict:
    """Replace DualCLIPLoader + CLIPTextEncode by FPTestConditioning (for random-weight runs only)."""
    prompt = copy.deepcopy(prompt)
    loaders = {nid for nid, n in prompt.items() if n["class_type"] == "DualCLIPLoader"}
    for nid, node in prompt.items():
        if node["class_type"] == "CLIPTextEncode":
            text = node["inputs"].get("text", "")
            if isinstance(text, list):  # a linked text (e.g. a dataset's captions): the same rule, per text
                node["class_type"], node["inputs"] = "FPTestTextConditioning", {"text": text}
                continue
            node["class_type"] = "FPTestConditioning"
            node["inputs"] = _test_conditioning(str(text), seed)
    for nid in loaders:
        users = [n for n in prompt.values() for v in n["inputs"].values() if isinstance(v, list) and v[:1] == [nid]]
        if users:
            raise ValueError(f"DualCLIPLoader {nid} still feeds {[u['class_type'] for u in users]}")
        del prompt[nid]
    return prompt


def set_widget(node: dict, name: str, value, object_info: dict) -> None:
    """Set widget `name` of a UI-format workflow node (its place in widgets_values comes from /object_info)."""
    slots = _widget_slots(object_info[node["type"]])
    if name not in slots or slots[name] >= len(node.get("widgets_values") or []):
        raise ValueError(f"node {node['id']} ({node['type']}) has no widget value {name!r}")
    node["widgets_values"][slots[name]] = value


def swap_text_encoder_ui(workflow: dict, seed: int = 0) -> dict:
    """`swap_text_encoder` for a UI-format workflow: each CLIPTextEncode becomes an FPTestConditioning
    (same CONDITIONING output and links, a title that says so), or an FPTestTextConditioning where its
    text is linked; the DualCLIPLoaders and their links go."""
    workflow = copy.deepcopy(workflow)
    loaders = {n["id"] for n in workflow["nodes"] if n["type"] == "DualCLIPLoader"}
    dropped = {link[0] for link in workflow.get("links", []) if link[1] in loaders}
    for node in workflow["nodes"]:
        if node["type"] != "CLIPTextEncode":
            continue
        linked = [i for i in node.get("inputs", []) if i.get("link") is not None and i["link"] not in dropped
                  and i["name"] != "clip"]
        if [i["name"] for i in linked] == ["text"]:  # a linked text (a dataset's captions): the same rule, per text
            node["type"] = "FPTestTextConditioning"
            node["title"] = f"{node.get('title') or 'Prompt'} (demo: random conditioning, no text encoder)"
            node["widgets_values"] = []
            node["inputs"] = [{**{k: v for k, v in linked[0].items() if k != "widget"}, "type": "STRING"}]
            for link in workflow.get("links", []):
                if link[0] == linked[0]["link"]:
                    link[4] = 0  # the test node's only input
            node.setdefault("properties", {})["Node name for S&R"] = "FPTestTextConditioning"
            continue
        if linked:
            raise ValueError(f"node {node['id']}: a CLIPTextEncode with linked {[i['name'] for i in linked]} cannot "
                             f"be swapped")
        v = _test_conditioning(str((node.get("widgets_values") or [""])[0]), seed)
        node["type"] = "FPTestConditioning"
        node["title"] = f"{node.get('title') or 'Prompt'} (demo: random conditioning, no text encoder)"
        # seed, its "control after generate" (the front end adds one to any seed), tokens, padding, dims
        node["widgets_values"] = [v["seed"], "fixed", v["tokens"], v["padding"], v["dim"], v["pooled_dim"]]
        node.pop("inputs", None)  # the test node has widgets only; the front end makes its own slots
        node.setdefault("properties", {})["Node name for S&R"] = "FPTestConditioning"
    users = [link for link in workflow.get("links", []) if link[0] in dropped]
    bad = [link for link in users if not any(n["id"] == link[3] and n["type"] in ("FPTestConditioning",
                                                                                 "FPTestTextConditioning")
                                             for n in workflow["nodes"])]
    if bad:
        raise ValueError(f"DualCLIPLoader still feeds nodes {[link[3] for link in bad]}")
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] not in loaders]
    workflow["links"] = [link for link in workflow.get("links", []) if link[0] not in dropped]
    return workflow
