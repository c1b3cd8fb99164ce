"""Pipeline families. Each family is one adapter file, registered here by pipeline class name."""

from .base import Conditioning, FlowPipelineAdapter, select_conditioning
from .flux import FluxAdapter
from .lumina2 import Lumina2Adapter
from .sd3 import SD3Adapter

ADAPTERS = (SD3Adapter, FluxAdapter, Lumina2Adapter)


def get_pipeline_adapter(pipeline, **options) -> FlowPipelineAdapter:
    """The adapter for a pipeline, found by its class (or a parent class) name.

    Raises:
        ValueError: If no registered family serves this pipeline.
    """
    by_name = {name: adapter for adapter in ADAPTERS for name in adapter.pipeline_class_names}
    for cls in type(pipeline).__mro__:
        if cls.__name__ in by_name:
            return by_name[cls.__name__](pipeline, **options)
    raise ValueError(
        f"{type(pipeline).__name__} is not a supported pipeline family. Supported: {sorted(by_name)}. "
        "A new flow-matching family is one FlowPipelineAdapter subclass added to diffusers_nft.pipelines.ADAPTERS."
    )


__all__ = ["ADAPTERS", "Conditioning", "FlowPipelineAdapter", "FluxAdapter", "Lumina2Adapter", "SD3Adapter", "get_pipeline_adapter", "select_conditioning"]
