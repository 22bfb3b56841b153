"""FramePack MagCache: musubi-tuner's step cache for the FramePack MODEL (framepack_core/magcache.py)."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..framepack_core import magcache
from ..framepack_core.comfy_model import require_framepack_model

NODE = "FramePackMagCache"


def _show_calibration(node_id: str | None):
    """The calibration's result goes where the user needs it: the console (as musubi-tuner prints it) and the
    text area of this node, whose `ratios` input takes it. The node runs before sampling, so it cannot return
    the ratios as an output; ComfyUI's progress text reaches the node once sampling ends."""

    def report(result: dict) -> None:
        ratios = result["ratios"]
        if ratios is None:
            logging.warning("%s: calibration measured steps %s only (a sampler evaluating off the schedule?); "
                            "no ratios to use", NODE, result["steps"])
            return
        text = magcache.format_ratios(ratios)
        logging.info("%s: calibration norm_ratio %s, norm_std %s, cos_dis %s", NODE, result["norm_ratio"],
                     result["norm_std"], result["cos_dis"])
        logging.info("%s: calibrated ratios (%d steps); paste them into the node's 'ratios' input:\n%s", NODE,
                     len(ratios), text)
        try:
            from server import PromptServer
        except ImportError:  # outside ComfyUI's server
            return
        if node_id is not None and getattr(PromptServer, "instance", None) is not None:
            PromptServer.instance.send_progress_text(f"calibrated ratios ({len(ratios)} steps):\n{text}", node_id)

    return report


class FramePackMagCache(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=NODE,
            display_name="FramePack MagCache",
            category="FramePack/sampling",
            description=(
                "musubi-tuner's MagCache for FramePack: at some steps the transformer's block stack is skipped and "
                "the change it made at the last computed step is reused, decided from per-step magnitude ratios. "
                "Faster, slightly different images. For your model + LoRA, run once with calibration on (same "
                "steps and settings), then paste the ratios it shows into 'ratios'."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The FramePack model (after any LoRA nodes)."),
                io.Float.Input("threshold", default=0.24, min=0.0, max=2.0, step=0.01,
                               tooltip="Accumulated error up to which steps are skipped (musubi's default 0.24; "
                                       "0.12 is closer to the uncached image). 0 = never skip."),
                io.Int.Input("K", default=6, min=1, max=100,
                             tooltip="At most this many steps skipped in a row (musubi's default 6 is meant for 50 "
                                     "steps; musubi-tuner suggests less for fewer steps)."),
                io.Float.Input("retention_ratio", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="This fraction of the first steps always runs (at least the first step); "
                                       "the last step always runs too."),
                io.Boolean.Input("calibration", default=False, optional=True,
                                 tooltip="Skip nothing and measure this model's ratios; they appear on this node "
                                         "and in the console when sampling ends."),
                io.String.Input("ratios", default="", multiline=True, optional=True,
                                tooltip="Comma list of per-step magnitude ratios, as calibration prints them. Empty "
                                        "= musubi-tuner's default ratios (50 steps). Another step count is "
                                        "mapped to the nearest entries, as musubi-tuner does."),
            ],
            outputs=[io.Model.Output(tooltip="The model with MagCache; connect it to the sampler.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, threshold, K, retention_ratio, calibration=False, ratios="") -> io.NodeOutput:
        require_framepack_model(model, NODE)
        settings = magcache.MagCacheSettings(threshold=threshold, k=K, retention_ratio=retention_ratio,
                                             ratios=magcache.parse_ratios(ratios, NODE),
                                             calibration=bool(calibration)).check(NODE)
        node_id = cls.hidden.unique_id if cls.hidden is not None else None
        return io.NodeOutput(magcache.apply_magcache(model, settings, report=_show_calibration(node_id)))


NODES = [FramePackMagCache]
