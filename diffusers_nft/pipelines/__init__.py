"""Pipeline families. Each family is one adapter file, registered here by pipeline class name."""

from .base import Conditioning, FlowPipelineAdapter, Shared, select_conditioning
from .flux import FluxAdapter
from .flux2 import Flux2Adapter
from .lumina2 import Lumina2Adapter
from .qwenimage import QwenImageAdapter
from .sd3 import SD3Adapter
from .z_image import ZImageAdapter

ADAPTERS = (SD3Adapter, FluxAdapter, Lumina2Adapter, QwenImageAdapter, Flux2Adapter, ZImageAdapter)


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


__all__ = [
    "ADAPTERS", "Conditioning", "FlowPipelineAdapter", "Flux2Adapter", "FluxAdapter", "Lumina2Adapter", "QwenImageAdapter",
    "SD3Adapter", "Shared", "ZImageAdapter", "get_pipeline_adapter", "select_conditioning",
]
