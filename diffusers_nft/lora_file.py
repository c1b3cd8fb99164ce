"""The LoRA file every tool loads at the strength it was trained at.

PEFT applies `B @ A * alpha / r` (or `alpha / sqrt(r)` with rsLoRA). diffusers reads alpha from the file's
metadata; ComfyUI and others read `<module>.alpha` tensors; some loaders read neither and apply `B @ A` at scale 1.
With alpha != r (the release: r 32, alpha 64) those three give three strengths. The file we write has the scale
folded into `lora_B` and says alpha = r, so every loader applies exactly the trained update.
"""

import inspect
import logging
import math
from typing import Dict, List, Optional, Tuple

import torch
from peft import LoraConfig
from peft.utils.other import get_pattern_key

logger = logging.getLogger(__name__)

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"  # the file `load_lora_weights(..., weight_name=)` reads
# LoRA file name -> (prefix of the tensors it holds, `load_lora_weights` arguments): one file of every tensor.
SINGLE_LORA_LAYOUT = {LORA_WEIGHT_NAME: ("", {})}
_A, _B = ".lora_A.weight", ".lora_B.weight"


def module_scale(config: LoraConfig, module: str, rank: int) -> float:
    """The factor PEFT multiplies `B @ A` by for `module`, whose LoRA has rank `rank`."""
    alpha = config.lora_alpha
    if config.alpha_pattern:
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module), alpha)
    return alpha / (math.sqrt(rank) if config.use_rslora else rank)


def portable_lora(weights: Dict[str, torch.Tensor], config: LoraConfig) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Fold each module's scale into its `lora_B`; returns the tensors and the LoRA metadata that says alpha = r.

    Args:
        weights: LoRA tensors keyed like `get_peft_model_state_dict` (`<module>.lora_A.weight`, `<module>.lora_B.weight`).
        config: The `LoraConfig` they were trained with.
    """
    folded = dict(weights)
    for key, lora_a in weights.items():
        if key.endswith(_A):
            module = key[: -len(_A)]
            rank = lora_a.shape[0]
            folded[module + _B] = weights[module + _B] * module_scale(config, module, rank)
    metadata = config.to_dict()
    metadata.update(lora_alpha=config.r, alpha_pattern=dict(config.rank_pattern), use_rslora=False)
    return folded, metadata


def write_lora_file(pipeline_class, folder: str, weights: Dict[str, torch.Tensor], config: LoraConfig,
                    layout: Optional[Dict[str, Tuple[str, dict]]] = None) -> List[str]:
    """Write the LoRA with the pipeline class's own LoRA writer; returns the paths written.

    Args:
        layout: File name -> (the prefix of the tensors it holds, the `load_lora_weights` arguments that load it):
            one `pytorch_lora_weights.safetensors` by default; Wan 2.2's two experts get a file each.
    """
    paths = []
    for name, (prefix, _) in (layout or SINGLE_LORA_LAYOUT).items():
        part = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        folded, metadata = portable_lora(part, config)
        if has_lora_loader(pipeline_class):
            pipeline_class.save_lora_weights(folder, transformer_lora_layers=folded,
                                             transformer_lora_adapter_metadata=metadata, weight_name=name)
        else:
            _write_denoiser_lora(folder, name, folded, metadata, denoiser_name(pipeline_class))
        paths.append(f"{folder}/{name}")
    return paths


def has_lora_loader(pipeline_class) -> bool:
    """Whether the pipeline class has diffusers' LoRA loader for its transformer (`load_lora_weights` /
    `save_lora_weights(transformer_lora_layers=...)`). Classes without one (BRIA 3.2, Ovis-Image, Sana PAG, ...) still
    load the same file through their transformer's `load_lora_adapter`."""
    if not (hasattr(pipeline_class, "save_lora_weights") and hasattr(pipeline_class, "load_lora_weights")):
        return False
    # a UNet-era loader (PRX inherits Stable Diffusion's) saves `unet_lora_layers`, not a transformer's
    parameters = inspect.signature(pipeline_class.save_lora_weights).parameters
    return "transformer_lora_layers" in parameters or "unet_lora_layers" not in parameters


def denoiser_name(pipeline_class) -> str:
    """The component of a pipeline class that denoises and carries the LoRA: `transformer`, or `unet` for a class
    that has a UNet and no transformer (DreamLite). Read from the class's signature."""
    parameters = inspect.signature(pipeline_class.__init__).parameters
    return "unet" if "unet" in parameters and "transformer" not in parameters else "transformer"


def denoiser_of(pipeline) -> torch.nn.Module:
    """The pipeline's denoising network (`denoiser_name`)."""
    return getattr(pipeline, denoiser_name(type(pipeline)))


def loading_call(pipeline_class) -> Tuple[str, str, str]:
    """How code loads a LoRA file into this class: `(import line, call prefix, extra arguments)`.
    `pipe.load_lora_weights` where the class has diffusers' LoRA loader; else its denoiser's (`transformer`'s,
    DreamLite's `unet`'s) `load_lora_adapter`; else (a denoiser without PEFT support in diffusers) this package's
    `load_lora_file`, which gives it the PEFT mixin first."""
    if has_lora_loader(pipeline_class):
        return "", "pipe.load_lora_weights(", ""
    name = denoiser_name(pipeline_class)
    annotation = getattr(inspect.signature(pipeline_class.__init__).parameters.get(name), "annotation", None)
    if inspect.isclass(annotation) and not hasattr(annotation, "load_lora_adapter"):
        return "from diffusers_nft.lora_file import load_lora_file\n", "load_lora_file(pipe, ", ""
    return "", f"pipe.{name}.load_lora_adapter(", f', prefix="{name}"'


def _write_denoiser_lora(folder: str, name: str, weights: Dict[str, torch.Tensor], metadata: dict,
                         prefix: str) -> None:
    """The file `save_lora_weights` would write (tensors and metadata under `<prefix>.`, the denoiser's component
    name), for a class without it."""
    from diffusers.loaders.lora_base import LoraBaseMixin

    LoraBaseMixin.write_lora_layers(
        state_dict=LoraBaseMixin.pack_weights(weights, prefix), save_directory=folder, is_main_process=True,
        weight_name=name, save_function=None, safe_serialization=True,
        lora_adapter_metadata={f"{prefix}.{k}": v for k, v in metadata.items()},
    )


def load_lora_file(pipe, folder: str, weight_name: str, adapter_name: Optional[str] = None, **kwargs) -> None:
    """Load a LoRA file this package wrote into `pipe`: `pipe.load_lora_weights`, or, for a class without diffusers'
    LoRA loader, its denoiser's `load_lora_adapter` of the same file (`pipe.transformer`, or `pipe.unet`: given
    diffusers' PEFT support first where its class lacks it, as for training: `with_peft_support`)."""
    if has_lora_loader(type(pipe)):
        pipe.load_lora_weights(folder, weight_name=weight_name, adapter_name=adapter_name, **kwargs)
    else:
        denoiser = with_peft_support(denoiser_of(pipe))
        denoiser.load_lora_adapter(folder, weight_name=weight_name, adapter_name=adapter_name,
                                   prefix=denoiser_name(type(pipe)), **kwargs)


def has_peft_support(model) -> bool:
    """Whether the model's class has diffusers' PEFT methods (`add_adapter`, `load_lora_adapter`, ...)."""
    return hasattr(model, "add_adapter") and hasattr(model, "load_lora_adapter")


def with_peft_support(model):
    """The model, its class given diffusers' `PeftAdapterMixin` where it lacks it (Lumina-Next's, PRX's and
    EasyAnimate's transformers): the mixin's methods inject PEFT's LoRA layers into any diffusers model, so such a
    transformer trains, saves and loads a LoRA as the others do. Its instance changes class in place, to a subclass
    of the same name."""
    from diffusers.loaders.peft import PeftAdapterMixin

    if has_peft_support(model):
        return model
    cls = type(model)
    model.__class__ = type(cls.__name__, (cls, PeftAdapterMixin), {"__module__": cls.__module__})
    return model


def give_peft_support(pipeline) -> None:
    """Before any compute: a denoiser (transformer) whose class lacks diffusers' PEFT support gets it (`with_peft_support`), and
    the log says so, with how to load the LoRA it will train."""
    denoiser = getattr(pipeline, denoiser_name(type(pipeline)), None)
    if denoiser is None or has_peft_support(denoiser):
        return
    with_peft_support(denoiser)
    logger.warning("%s (of %s) has no PEFT support in diffusers: it gets diffusers' PeftAdapterMixin for this run. "
                   "Load the LoRA with diffusers_nft.lora_file.load_lora_file(pipe, folder, weight_name), which "
                   "gives a fresh pipeline's %s the same.", type(denoiser).__name__, type(pipeline).__name__,
                   denoiser_name(type(pipeline)))
