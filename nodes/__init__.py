"""Thin ComfyUI node classes. Each module lists its nodes in `NODES`; logic lives in framepack_core."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from ..framepack_core.comfy_sampling import register_with_ksampler
from . import attention, encode, layout, lora, magcache, model_loader, sampler, sampling, training, web_routes

_MODULES = (model_loader, encode, layout, sampler, sampling, magcache, attention, lora, training)
web_routes.register()  # the frontend's layout preview route, when running inside ComfyUI's server
# FramePack's UniPC and schedule in the stock KSampler's combos (see framepack_core.comfy_sampling)
register_with_ksampler()


class FramePackOneFrameExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [node for module in _MODULES for node in module.NODES]


async def comfy_entrypoint() -> FramePackOneFrameExtension:
    return FramePackOneFrameExtension()
