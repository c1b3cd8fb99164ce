"""Images for people to look at and for judges to score, from the pipeline's own call: the one way this package
generates outside training (validation grids, held-out evaluation, the model card's gallery, the demo's results,
`diffusers_nft.evaluate`).

One noise convention everywhere: the image of seed `s` starts from the noise the pipeline draws with
`torch.Generator().manual_seed(s)`, as the card's snippet does, so the snippet reproduces the card's gallery. Each
image has a generator of its own, so an image does not depend on the batch it was drawn in.

Training rollouts are not drawn here: they run the family's solvers on the run's own seed streams
(`collect.Collector`).
"""

from contextlib import contextmanager, nullcontext
from typing import Iterator, Optional, Sequence

import torch


def over_white(images: torch.Tensor) -> torch.Tensor:
    """RGB images from images whose channel axis (the third from the end) has 4 (RGBA, as Qwen-Image 2.1 decodes):
    composited over white, as that pipeline shows its vision encoder images; RGB images as they are."""
    if images.shape[-3] != 4:
        return images
    rgb, alpha = images.narrow(-3, 0, 3), images.narrow(-3, 3, 1)
    return rgb * alpha + (1 - alpha)


def generators(seeds: Sequence[int]):
    """One CPU generator per image, seeded as the card's snippet seeds its one."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


@torch.no_grad()
def generate_images(pipe, prompts: Sequence[str], seeds: Sequence[int], *, call_kwargs: dict, batch_size: int = 16,
                    bar=None, conditioning: Optional[Sequence[dict]] = None, family=None) -> torch.Tensor:
    """Images `(N, 3, H, W)` (videos `(N, F, 3, H, W)`) in [0, 1] on the CPU, one per (prompt, seed), from the
    pipeline's own call.

    Args:
        pipe: The pipeline, with whatever LoRA weights are active.
        prompts: One prompt per image.
        seeds: One seed per image (see the module's noise convention).
        call_kwargs: The rest of the call: size, steps, CFG switch, text length (`PipelineFamily.call_kwargs`).
        batch_size: Images per pipeline call.
        bar: A tqdm bar to advance by the images done.
        conditioning: For image-conditioned pipelines, each image's conditioning (argument -> PIL image(s)).
        family: The pipeline's `PipelineFamily` (how its call's images read, `call_images`), needed with
            `conditioning`: how a batch's conditioning becomes call
            arguments (`conditioning_call_kwargs`), whether a call takes one conditioning for all its prompts
            (`conditioning_shared_by_call`: a call then holds images of one conditioning only), and the most
            prompts a call takes (`max_prompts_per_call`; Qwen-Image-Edit's takes one).
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per image.")
    if conditioning is not None and (family is None or len(conditioning) != len(prompts)):
        raise ValueError("conditioning needs one entry per image and the pipeline's family.")
    images = []
    shared = conditioning if family is not None and family.conditioning_shared_by_call else None
    most = family.max_prompts_per_call if family is not None else None
    per_call = min(batch_size, most or batch_size)
    for start, end in call_ranges(len(prompts), per_call, shared):
        chunk = list(prompts[start:end])
        extra = {} if conditioning is None else family.conditioning_call_kwargs(list(conditioning[start:end]))
        # One image: a prompt and a generator, not lists of one (Wan VACE takes no lists); the noise is the same.
        prompt, generator = chunk, generators(seeds[start:end])
        if len(chunk) == 1:
            prompt, generator = chunk[0], generator[0]
        out = pipe(prompt=prompt, generator=generator, output_type="pt", return_dict=False, **call_kwargs, **extra)[0]
        out = family.call_images(out) if family is not None else out
        images.append(over_white(out.float().cpu()))
        if bar is not None:
            bar.update(len(chunk))
    return torch.cat(images)


def call_ranges(count: int, batch_size: int, shared: Optional[Sequence[dict]] = None):
    """`(start, end)` of each pipeline call: `batch_size` images at most, and where the call's conditioning is
    shared by its prompts (`shared`, one entry per image), consecutive images of one conditioning only."""
    start = 0
    while start < count:
        end = min(start + batch_size, count)
        if shared is not None:
            end = next((i for i in range(start + 1, end) if not _same(shared[i], shared[start])), end)
        yield start, end
        start = end


def _same(a: dict, b: dict) -> bool:
    return a is b or (a.keys() == b.keys() and all(a[k] is b[k] or a[k] == b[k] for k in a))


@contextmanager
def sampling_with(pipe, scheduler=None) -> Iterator[None]:
    """The pipeline samples with `scheduler` (a diffusers scheduler, such as `FlowMatchHeunDiscreteScheduler`)
    inside the block, with its own outside; None keeps its own."""
    if scheduler is None:
        yield
        return
    own = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield
    finally:
        pipe.scheduler = own


def image_seeds(num_prompts: int, seeds: Sequence[int]):
    """The seed of each image when each of `num_prompts` prompts is drawn once per seed of `seeds`, prompt-major:
    prompt `i` at seed `s` uses `1000 * s + i` (the evaluation's), so no two images share their noise and a few noises
    cannot decide most of the results. (The card's gallery uses each seed itself: a column is one seed.)"""
    return [1000 * s + i for i in range(num_prompts) for s in seeds]


def low_precision(device: torch.device, mixed_precision: str):
    """Autocast to the run's low precision (`"bf16"`, `"fp16"`; `"no"`: none) for a pipeline call. The VAE kept in
    float32 (`upcast_vae`) then decodes the low-precision latents; accelerate's own autocast is off under DeepSpeed,
    whose engine casts the transformer alone."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def stills(images: torch.Tensor) -> torch.Tensor:
    """Stills of a batch: images as they are, the middle frame of each video."""
    return images[:, images.shape[1] // 2] if images.dim() == 5 else images
