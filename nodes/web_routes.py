"""The layout preview route for the frontend drawing (js/framepack_layout.js).

`POST /framepack/layout_preview` with JSON `{"widgets": {<FramePackOneFrameLayout widget values>},
"num_controls": <start image + further controls, or null when the node has no start image>,
"lora_settings": {...} (optional)}` answers the
resolved layout, `OneFrameLayout.to_dict()`, built by the same code the node runs
(`layout_widgets.layout_from_widgets`, then `framepack_core.layout`), so the drawing always shows
what the sampler will do. Bad input answers HTTP 400 with `{"error": message}` (the same message
the node would raise).

Registration needs ComfyUI's running server (`server.PromptServer.instance`); without one
(plain imports, the in-process test executor) `register()` does nothing.
"""
from __future__ import annotations

import logging

from ..framepack_core.layout import MAX_CONTROLS, settings_only_count
from .layout_widgets import layout_from_widgets

ROUTE = "/framepack/layout_preview"


def preview(payload) -> tuple[int, dict]:
    """(HTTP status, JSON body) for one preview request; never raises."""
    if not isinstance(payload, dict):
        return 400, {"error": f"{ROUTE}: the body must be a JSON object with 'widgets' and 'num_controls'"}
    widgets = payload.get("widgets") or {}
    if not isinstance(widgets, dict):
        return 400, {"error": f"{ROUTE}: 'widgets' must be an object of widget name -> value"}
    try:
        # null: the node has no start image (a layout of settings only), resolved as the node resolves it
        num_controls = (settings_only_count(str(widgets.get("preset", "oichi"))) if payload.get("num_controls", 1)
                        is None else int(payload.get("num_controls", 1)))
    except (TypeError, ValueError):
        return 400, {"error": f"{ROUTE}: 'num_controls' must be an integer 1..{MAX_CONTROLS}"}
    try:
        layout = layout_from_widgets(widgets, num_controls, payload.get("lora_settings"))
    except (ValueError, TypeError) as e:  # LayoutError is a ValueError; its message names the input
        return 400, {"error": str(e)}
    return 200, layout.to_dict()


def register() -> bool:
    """Add the route to ComfyUI's server if one is running; True when registered."""
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None or getattr(instance, "_framepack_layout_preview", False):
        return False

    @instance.routes.post(ROUTE)
    async def layout_preview(request):
        try:
            payload = await request.json()
        except Exception:  # not JSON at all
            payload = None
        status, body = preview(payload)
        return web.json_response(body, status=status)

    instance._framepack_layout_preview = True
    logging.debug("FramePack one-frame: registered %s", ROUTE)
    return True
