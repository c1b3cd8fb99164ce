#!/usr/bin/env python
"""How far the traced family is from each family's family file, on the tiny offline models (float32).

For 3 prompts and 3 noise levels: the largest velocity difference, the largest decoded-pixel difference, and
whether the noise grids (6 steps), latent shapes and CFG-off arguments agree.

    python benchmarks/traced_vs_explicit.py
"""

import os
import sys
import torch

from diffusers_nft.pipelines import get_family

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # the tiny pipelines
import tiny_pipelines  # noqa: E402

FAMILIES = {"sd3": {}, "flux": {"guidance_embeds": True}, "lumina2": {}, "qwenimage": {}, "flux2": {}, "flux2_klein": {},
            "zimage": {}, "wan": {}}
PROMPTS = ["a red cat", "a blue dog on the sea", "a photo"]


def compare(name: str, options: dict) -> str:
    pipe = getattr(tiny_pipelines, f"build_tiny_{name}_pipeline")(**options)
    pipe.set_progress_bar_config(disable=True)
    extra = {"num_frames": 5} if name == "wan" else {}
    explicit, traced = get_family(pipe, **extra), get_family(pipe, "traced", **extra)
    shape = traced.latent_shape(64)
    length = 256 if name == "lumina2" else 16
    with torch.no_grad():  # as the trainer encodes (with gradients on, CPU kernels differ in the last bits)
        cond_e = explicit.encode_prompts(PROMPTS, torch.device("cpu"), length)
        cond_t = traced.encode_prompts(PROMPTS, torch.device("cpu"), length)
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.95, 0.5, 0.1])
    with torch.no_grad():
        velocity = (traced.predict_velocity(x, sigma, cond_t) - explicit.predict_velocity(x, sigma, cond_e)).abs().max()
        pixels = (traced.decode(x) - explicit.decode(x)).abs().max()
    grid = torch.equal(traced.sampling_sigmas(6, shape), explicit.sampling_sigmas(6, shape))
    cfg = explicit.cfg_free_call_kwargs().items() <= traced.cfg_free_call_kwargs().items()
    trace = traced._traces[64]
    mapping = f"{trace.timestep_scale:g} sigma + {trace.timestep_offset:g}, sign {trace.sign:+g}"
    return (f"| {type(pipe).__name__} | {type(explicit).__name__} | {mapping} | {velocity:.1e} | {pixels:.1e} | "
            f"{'same' if grid else 'DIFFERENT'} | {'same' if shape == explicit.latent_shape(64) else 'DIFFERENT'} | "
            f"{'same' if cfg else 'DIFFERENT'} |")


def main():
    print("| pipeline | family file | traced timestep map | max velocity diff | max pixel diff | grid | latents | "
          "CFG off |")
    print("| --- | --- | --- | ---: | ---: | --- | --- | --- |")
    for name, options in FAMILIES.items():
        print(compare(name, options), flush=True)


if __name__ == "__main__":
    main()
