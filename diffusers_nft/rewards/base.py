"""What model-based rewards share: a device, a dtype, batching, and clear errors for missing extras."""

import importlib
from typing import List, Optional, Sequence

import torch


def require(module: str, extra: str, package: Optional[str] = None):
    """Import `module`, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"This reward needs {package or module}: pip install 'diffusers-nft[{extra}]'"
        ) from error


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {sorted(names)}.")
    return names[dtype]


class ModelReward:
    """A reward backed by models that are loaded once, run on `device` in `dtype`, in chunks of `batch_size`.

    Subclasses implement `score(images, prompts, metadata) -> Tensor (B,)` for one chunk.

    Args:
        device: Where the models run; the accelerator when there is one.
        dtype: Model dtype (`torch.float32`, `"bf16"`, ...).
        batch_size: Images per forward pass.
    """

    def __init__(self, device=None, dtype=torch.float32, batch_size: int = 32):
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, prompts: Sequence[str], metadata: Sequence[dict]):
        """Scores as a list of floats, or a dict of lists (`"scores"` plus per-image extras) for rich rewards."""
        parts = []
        for start in range(0, len(prompts), self.batch_size):
            end = start + self.batch_size
            parts.append(self.score(images[start:end], list(prompts[start:end]), list(metadata[start:end])))
        if isinstance(parts[0], dict):
            return {key: torch.cat([p[key] for p in parts]).float().cpu().tolist() for key in parts[0]}
        return torch.cat(parts).float().cpu().tolist()

    def score(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]):
        """Scores of one chunk: a tensor `(B,)`, or a dict of such tensors with the reward under `"scores"`."""
        raise NotImplementedError
