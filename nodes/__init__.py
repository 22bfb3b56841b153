"""Thin ComfyUI node classes. Each module lists its nodes in `NODES`; logic lives in framepack_core."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from . import encode, layout, lora, model_loader, sampler, web_routes

_MODULES = (model_loader, encode, layout, sampler, lora)
web_routes.register()  # the frontend's layout preview route, when running inside ComfyUI's server


class FramePackOneFrameExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _MODULES for node in module.NODES]


async def comfy_entrypoint() -> FramePackOneFrameExtension:
    return FramePackOneFrameExtension()
