"""The LoRA file every tool loads at the strength it was trained at.

PEFT applies `B @ A * alpha / r` (or `alpha / sqrt(r)` with rsLoRA). diffusers reads alpha from the file's
metadata; ComfyUI and others read `<module>.alpha` tensors; some loaders read neither and apply `B @ A` at scale 1.
With alpha != r (the release: r 32, alpha 64) those three give three strengths. The file we write has the scale
folded into `lora_B` and says alpha = r, so every loader applies exactly the trained update.
"""

import math
from typing import Dict, List, Optional, Tuple

import torch
from peft import LoraConfig
from peft.utils.other import get_pattern_key

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
        pipeline_class.save_lora_weights(folder, transformer_lora_layers=folded,
                                         transformer_lora_adapter_metadata=metadata, weight_name=name)
        paths.append(f"{folder}/{name}")
    return paths
