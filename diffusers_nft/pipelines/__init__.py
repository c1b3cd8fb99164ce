"""Pipeline families. Each family is one adapter file, registered here by pipeline class name."""

from .base import Conditioning, FlowPipelineAdapter, Shared, select_conditioning
from .flux import FluxAdapter
from .flux2 import Flux2Adapter
from .lumina2 import Lumina2Adapter
from .qwenimage import QwenImageAdapter
from .sd3 import SD3Adapter
from .traced import TraceError, TracedAdapter
from .wan import WanAdapter
from .z_image import ZImageAdapter

ADAPTERS = (SD3Adapter, FluxAdapter, Lumina2Adapter, QwenImageAdapter, Flux2Adapter, ZImageAdapter, WanAdapter)


ADAPTER_MODES = ("auto", "traced")
"""`auto`: the family's adapter file, else the traced adapter; `traced`: trace every pipeline."""


def get_pipeline_adapter(pipeline, mode: str = "auto", **options) -> FlowPipelineAdapter:
    """The adapter for a pipeline: its family's (found by class or parent class name), else a traced one.

    Args:
        pipeline: A diffusers pipeline with a flow-matching scheduler.
        mode: One of `ADAPTER_MODES`.
        **options: Passed to the adapter (`distilled_guidance_scale`).

    Raises:
        ValueError: For an unknown mode.
        TraceError: If the pipeline has no adapter file and cannot be traced, with the reason.
    """
    if mode not in ADAPTER_MODES:
        raise ValueError(f"adapter must be one of {ADAPTER_MODES} (got {mode!r}).")
    by_name = {name: adapter for adapter in ADAPTERS for name in adapter.pipeline_class_names}
    if mode == "auto":
        for cls in type(pipeline).__mro__:
            if cls.__name__ in by_name:
                return by_name[cls.__name__](pipeline, **options)
    return TracedAdapter(pipeline, **options)


__all__ = [
    "ADAPTERS", "Conditioning", "FlowPipelineAdapter", "Flux2Adapter", "FluxAdapter", "Lumina2Adapter", "QwenImageAdapter",
    "ADAPTER_MODES", "SD3Adapter", "Shared", "TraceError", "TracedAdapter", "WanAdapter", "ZImageAdapter", "get_pipeline_adapter",
    "select_conditioning",
]
