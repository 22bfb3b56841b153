"""ComfyUI FramePack one-frame node pack.

ComfyUI imports this folder as a custom-node package and calls `comfy_entrypoint()` (V3 node
API). `WEB_DIRECTORY` serves the frontend extension in `js/`.
"""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./js"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
