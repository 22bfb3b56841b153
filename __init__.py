"""ComfyUI FramePack one-frame node pack.

ComfyUI imports this folder as a custom-node package and calls `comfy_entrypoint()` (V3 node
API). `WEB_DIRECTORY` serves the frontend extension in `js/`.
"""
WEB_DIRECTORY = "./js"
__all__ = ["WEB_DIRECTORY"]

if __package__:
    from .nodes import comfy_entrypoint

    __all__.append("comfy_entrypoint")
# else: pytest collects the repo root as a package and imports this file on its own when the
# checkout's folder name is no Python identifier (e.g. comfyui-framepack-oneframe): there is no
# package to import the nodes from, and the tests load the pack their own way (tests/conftest.py).
