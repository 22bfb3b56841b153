"""FramePack one-frame inference: model, layout, sampler and LoRA. No UI code lives here."""
