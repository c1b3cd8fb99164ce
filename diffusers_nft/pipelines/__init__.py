"""Pipeline families. Each family is one file, registered here by pipeline class name."""

from typing import List

from .base import Conditioning, PipelineFamily, Shared, select_conditioning
from .cogview4 import CogView4Family
from .cosmos2 import Cosmos2Family
from .dreamlite import DreamLiteFamily
from .flux import FluxFamily
from .flux_controlnet import FluxControlNetFamily
from .flux_fill import FluxFillFamily
from .flux_kontext import FluxKontextFamily
from .flux2 import Flux2Family
from .hunyuan_video15 import HunyuanVideo15Family
from .longcat_image import LongCatImageFamily
from .ltx2 import LTX2Family
from .lumina2 import Lumina2Family
from .prx_pixel import PRXPixelFamily
from .qwenimage import QwenImageFamily
from .qwenimage_edit import QwenImageEditFamily, QwenImageEditPlusFamily
from .sd3 import SD3Family
from .sd3_controlnet import SD3ControlNetFamily
from .traced import TraceError, TracedFamily
from .wan import WanFamily
from .wan_i2v import WanImageToVideoFamily
from .z_image import ZImageFamily

FAMILIES = (SD3Family, FluxFamily, Lumina2Family, QwenImageFamily, Flux2Family, ZImageFamily, WanFamily,
            FluxKontextFamily, FluxFillFamily, WanImageToVideoFamily, QwenImageEditPlusFamily, QwenImageEditFamily,
            SD3ControlNetFamily, FluxControlNetFamily, HunyuanVideo15Family, LTX2Family, CogView4Family,
            Cosmos2Family, LongCatImageFamily, PRXPixelFamily, DreamLiteFamily)


FAMILY_MODES = ("auto", "traced")
"""`auto`: the family's family file, else the traced family; `traced`: trace every pipeline."""


def get_family(pipeline, mode: str = "auto", **options) -> PipelineFamily:
    """The family for a pipeline: its family's (found by class or parent class name), else a traced one.

    Args:
        pipeline: A diffusers pipeline with a flow-matching scheduler.
        mode: One of `FAMILY_MODES`.
        **options: Passed to the family (`distilled_guidance_scale`).

    Raises:
        ValueError: For an unknown mode.
        TraceError: If the pipeline has no family file and cannot be traced, with the reason.
    """
    if mode not in FAMILY_MODES:
        raise ValueError(f"family must be one of {FAMILY_MODES} (got {mode!r}).")
    by_name = {name: family for family in FAMILIES for name in family.pipeline_class_names}
    if mode == "auto":
        for cls in type(pipeline).__mro__:
            if cls.__name__ in by_name:
                return by_name[cls.__name__](pipeline, **options)
    return TracedFamily(pipeline, **options)


def family_for_training(pipeline, config) -> PipelineFamily:
    """The family of `pipeline` in the mode `config.family`, once its scheduler and `config.resolution` are known
    to suit training.

    Raises:
        ValueError: For a scheduler that is not flow matching, or a resolution the transformer cannot take.
    """
    from ..sampling import is_flow_matching_scheduler

    if not is_flow_matching_scheduler(pipeline.scheduler):
        raise ValueError(
            f"The pipeline's scheduler is {type(pipeline.scheduler).__name__}, not a flow-matching scheduler. "
            "DiffusionNFT trains rectified-flow models (SD3/SD3.5, Flux, ...): use a pipeline whose scheduler "
            "is FlowMatchEulerDiscreteScheduler (or one with use_flow_sigmas=True, prediction_type='flow_prediction')."
        )
    family = get_family(pipeline, config.family, distilled_guidance_scale=config.distilled_guidance_scale,
                        num_frames=config.num_frames)
    family.check_resolution(config.resolution)
    return family


def card_pipeline_tag(pipeline_class_name: str, conditioned: bool = False) -> str:
    """The Hub task of the family that serves `pipeline_class_name` (`text-to-image` for traced classes);
    `image-to-image` for a text-to-image family trained with images (FLUX.2's reference images)."""
    task = next((f.pipeline_tag for f in FAMILIES if pipeline_class_name in f.pipeline_class_names), "text-to-image")
    return "image-to-image" if conditioned and task == "text-to-image" else task


def card_tags(pipeline_class_name: str) -> List[str]:
    """The Hub tags of the family that serves the pipeline class named `pipeline_class_name` (none if traced)."""
    return [tag for family in FAMILIES if pipeline_class_name in family.pipeline_class_names for tag in family.card_tags]


__all__ = [
    "FAMILIES", "card_pipeline_tag", "card_tags", "family_for_training", "Conditioning", "FluxKontextFamily", "FluxControlNetFamily", "FluxFillFamily", "PipelineFamily", "PRXPixelFamily", "DreamLiteFamily", "Flux2Family", "FluxFamily", "Lumina2Family", "QwenImageFamily", "QwenImageEditPlusFamily", "QwenImageEditFamily",
    "FAMILY_MODES", "SD3Family", "SD3ControlNetFamily", "Shared", "TraceError", "TracedFamily", "WanFamily", "WanImageToVideoFamily", "ZImageFamily", "get_family",
    "select_conditioning",
]
