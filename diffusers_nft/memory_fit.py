"""The rollout batch chosen from the device's memory: as many images per sampling batch as fit, measured.

Two sampling batches (1 and 4 images, the run's own sampler, steps and decoding) give the memory of one more
image; the batch is the most images that fit in a share of the free memory, at most one process's images of an
iteration, the smallest of all processes' (sharded models need every process to run the same forwards).
`--sample_batch_size` sets it instead. Only CUDA reports its memory; elsewhere the batch is `FALLBACK_BATCH_SIZE`.
"""

from typing import Callable, Optional, Tuple

import torch

FALLBACK_BATCH_SIZE = 8
# The share of the free memory a sampling batch may take: the reward models may score the previous batch on the
# same device meanwhile, and the allocator fragments.
HEADROOM = 0.85
GIB = 2**30


class CudaMemory:
    """A CUDA device's free memory, and the peak memory of running a function on it."""

    def __init__(self, device: torch.device):
        self.device = device

    def free(self) -> int:
        """Bytes free on the device, counting those PyTorch holds cached but unused."""
        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)

    def peak(self, run: Callable[[], object]) -> int:
        """Bytes that `run()` allocated at its peak, above what was allocated before it."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        run()
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - before


def device_memory(device: torch.device) -> Optional[CudaMemory]:
    """The memory of `device` where it can be measured (CUDA), else None."""
    return CudaMemory(device) if device.type == "cuda" else None


def fit_batch(peak_of: Callable[[int], int], free: int, most: int, headroom: float = HEADROOM) -> Tuple[int, str]:
    """The most images per batch, up to `most`, whose measured memory fits in `headroom` of `free` bytes.

    Args:
        peak_of: `peak_of(n)`: peak bytes of sampling and decoding a batch of `n` images.
        free: Free bytes on the device.
        most: The largest batch worth having (one process's images of an iteration).
        headroom: The share of `free` a batch may take.

    Returns:
        `(batch, reason)`: the batch, and how it was chosen, for the start-up block.
    """
    small, large = 1, min(4, most)
    if large == small:
        return 1, "one image per process and iteration"
    low, high = peak_of(small), peak_of(large)
    per_image = max((high - low) / (large - small), 1.0)
    fixed = max(low - per_image, 0.0)
    fits = int((headroom * free - fixed) // per_image)
    batch = max(1, min(most, fits))
    return batch, (f"chosen from the device's memory: {per_image / GIB:.2f} GiB per image measured, "
                   f"{free / GIB:.1f} GiB free; --sample_batch_size sets it")
