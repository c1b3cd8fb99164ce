#!/usr/bin/env python
"""Which of the installed diffusers' text-to-image and text-to-video flow pipelines train, offline.

Candidates are every `*Pipeline` class diffusers exports whose scheduler is a flow-matching one and whose call
takes a prompt and no required image or video (edit, inpaint, control, image-to-video and audio classes are left
out). Each candidate is built tiny from the components of a `tests/tiny_pipelines.py` pipeline of its own
diffusers package (FLUX.1 components for `FluxPipeline`, SD3 ones for `StableDiffusion3PAGPipeline`, ...); a
class with no such build is reported as such. Each built one runs 2 NFT iterations through its family (the
family's file, else traced) and a `load_lora_weights` round trip: a fresh instance of the class, given the saved
LoRA, must change its output and reproduce the trained policy's.

A second table does the same for the image-conditioned classes (editing, inpainting, control, image-to-video, and
the text-to-image classes that also take reference images, FLUX.2's): each built one trains 2 iterations on a tiny dataset of prompts with source images (and masks where the class takes
them), and the round trip renders with those sources.

    python benchmarks/family_matrix.py                       # prints the tables
    python benchmarks/family_matrix.py --out benchmarks/results/family_matrix.md --readme README.md
"""

import argparse
import inspect
import os
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager

import torch

from diffusers_nft import NFTConfig, NFTTrainer
from diffusers_nft.lora_file import denoiser_name, has_lora_loader, load_lora_file
from diffusers_nft.pipelines import FAMILIES, TracedFamily, get_family

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))  # the tiny pipelines
import tiny_matrix_pipelines  # noqa: E402
import tiny_pipelines  # noqa: E402

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow house"]
NOT_TEXT_TO_X = ("Img2Img", "Inpaint", "Control", "Edit", "ImageToVideo", "VideoToVideo", "I2V", "I2I", "Fill",
                 "Kontext", "Refiner", "SR", "Framepack", "Condition", "Cloze", "Omni", "Layered", "VACE", "WM",
                 "Audio", "AceStep", "InContext", "DFR", "HDR", "MultiPrompt", "TI2VA")
IMAGE_INPUTS = ("image", "control_image", "mask_image", "video", "image_embeds")
# The tiny builds, by the diffusers package of the pipeline they build, with their call options.
BUILDS = {
    "stable_diffusion_3": ("build_tiny_sd3_pipeline", {}),
    "pag": ("build_tiny_sd3_pipeline", {}),
    "flux": ("build_tiny_flux_pipeline", {}),
    "lumina2": ("build_tiny_lumina2_pipeline", {"max_sequence_length": 256}),
    "qwenimage": ("build_tiny_qwenimage_pipeline", {}),
    "flux2": ("build_tiny_flux2_klein_pipeline", {}),
    "z_image": ("build_tiny_zimage_pipeline", {}),
    "wan": ("build_tiny_wan_pipeline", {"num_frames": 5}),
    "aura_flow": ("build_tiny_auraflow_pipeline", {}),
    "chroma": ("build_tiny_chroma_pipeline", {}),
    "bria": ("build_tiny_bria_pipeline", {}),
    "ltx": ("build_tiny_ltx_pipeline", {"num_frames": 9}),
    "mochi": ("build_tiny_mochi_pipeline", {"num_frames": 7}),
    "cogview4": ("build_tiny_cogview4_pipeline", {}),
    "hunyuan_video": ("build_tiny_hunyuan_video_pipeline", {"num_frames": 5}),
    "hidream_image": ("build_tiny_hidream_pipeline", {"max_sequence_length": 128}),
    "lumina": ("build_tiny_lumina_pipeline", {}),
    "cosmos": ("build_tiny_cosmos2_pipeline", {}),
    "kandinsky5": ("build_tiny_kandinsky5_pipeline", {}),
    "ovis_image": ("build_tiny_ovis_pipeline", {}),
    "hunyuan_image": ("build_tiny_hunyuan_image_pipeline", {}),
    "hunyuan_video1_5": ("build_tiny_hunyuan_video15_pipeline", {"num_frames": 5}),
    "krea2": ("build_tiny_krea2_pipeline", {}),
    "ltx2": ("build_tiny_ltx2_pipeline", {"num_frames": 9}),
    "nucleusmoe_image": ("build_tiny_nucleusmoe_pipeline", {}),
    "longcat_image": ("build_tiny_longcat_pipeline", {}),
    "ernie_image": ("build_tiny_ernie_image_pipeline", {}),
    "qwenimage21": ("build_tiny_qwenimage21_pipeline", {}),
    "bria_fibo2": ("build_tiny_bria_fibo2_pipeline", {}),
    "ideogram4": ("build_tiny_ideogram4_pipeline", {}),
    "bria_fibo": ("build_tiny_bria_fibo_pipeline", {}),
    "easyanimate": ("build_tiny_easyanimate_pipeline", {"num_frames": 5}),
    "dreamlite": ("build_tiny_dreamlite_pipeline", {}),
    "glm_image": ("build_tiny_glm_image_pipeline", {}),
}
# Classes whose package's build is another class's (FLUX.2 [dev] beside the Klein build).
CLASS_BUILDS = {
    "Flux2Pipeline": ("build_tiny_flux2_pipeline", {}),
    "Cosmos2VideoToWorldPipeline": ("build_tiny_cosmos2_video_pipeline", {"num_frames": 5}),
    "Kandinsky5T2VPipeline": ("build_tiny_kandinsky5_video_pipeline", {"num_frames": 5}),
    "SanaPAGPipeline": ("build_tiny_sana_pag_pipeline", {}),
    "PRXPipeline": ("build_tiny_prx_pipeline", {}),
    "PRXPixelPipeline": ("build_tiny_prx_pixel_pipeline", {}),
}
# The image-conditioned classes with a tiny offline build of their own.
CONDITIONED_BUILDS = {
    "FluxKontextPipeline": ("build_tiny_flux_kontext_pipeline", {}),
    "FluxFillPipeline": ("build_tiny_flux_fill_pipeline", {}),
    "WanImageToVideoPipeline": ("build_tiny_wan_i2v_pipeline", {"num_frames": 5}),
    "StableDiffusion3ControlNetPipeline": ("build_tiny_sd3_controlnet_pipeline", {}),
    "FluxControlNetPipeline": ("build_tiny_flux_controlnet_pipeline", {}),
    "FluxControlPipeline": ("build_tiny_flux_control_pipeline", {}),
    "WanVACEPipeline": ("build_tiny_wan_vace_pipeline", {"num_frames": 5}),
    # references at 64^2 for the VAE and 32^2 for the text encoder instead of the pipeline's 1024^2 and 384^2
    "QwenImageEditPlusPipeline": ("build_tiny_qwenimage_edit_plus_pipeline", {"module_sizes": {
        "diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus": {"VAE_IMAGE_SIZE": 64 * 64,
                                                                       "CONDITION_IMAGE_SIZE": 32 * 32}}}),
    # its one image at 64^2 instead of the pipeline's 1024^2
    "QwenImageEditPipeline": ("build_tiny_qwenimage_edit_pipeline", {"module_sizes": {
        "diffusers.pipelines.qwenimage.pipeline_qwenimage_edit": {
            "calculate_dimensions": lambda area, ratio: (64, 64, None)}}}),
}


# Text-to-image classes whose family also takes images (FLUX.2's reference images): in both tables.
TAKES_IMAGES_TOO = {name for family in FAMILIES if family.conditioning and family.pipeline_tag == "text-to-image"
                    for name in family.pipeline_class_names}


def candidates(conditioned: bool = False):
    """(name, class) of each text-to-image / text-to-video flow-matching pipeline class diffusers exports; with
    `conditioned`, of each image-conditioned one instead (audio classes aside)."""
    import diffusers

    found = []
    for name in sorted(n for n in dir(diffusers) if n.endswith("Pipeline")):
        try:
            cls = getattr(diffusers, name)
            init = inspect.signature(cls.__init__).parameters
            call = inspect.signature(cls.__call__).parameters
        except Exception:  # a class whose optional dependency is missing
            continue
        scheduler = init.get("scheduler")
        annotation = str(getattr(scheduler, "annotation", ""))
        if scheduler is None or "FlowMatch" not in annotation or "prompt" not in call:
            continue
        required_images = [p for p in IMAGE_INPUTS if p in call and call[p].default is inspect.Parameter.empty]
        image_conditioned = bool(required_images) or any(marker in name for marker in NOT_TEXT_TO_X)
        if conditioned and "Audio" not in name and "AceStep" not in name and (image_conditioned or
                                                                               name in TAKES_IMAGES_TOO):
            found.append((name, cls))
        elif not conditioned and not image_conditioned:
            found.append((name, cls))
    return found


def package(cls) -> str:
    """`flux` for `diffusers.pipelines.flux.pipeline_flux.FluxPipeline`."""
    parts = cls.__module__.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "pipelines" else ""


def build(cls):
    """A tiny instance of `cls` from its package's tiny components, with its call options, or a reason."""
    init = inspect.signature(cls.__init__).parameters
    served = {name for family in FAMILIES for name in family.pipeline_class_names}
    if "transformer" not in init and cls.__name__ not in served:  # known from the class alone: no build needed
        denoiser = [k for k in ("unet", "prior", "decoder") if k in init]
        return None, None, (f"no `transformer` (its denoiser is `{denoiser[0]}`)" if denoiser else
                            "no `transformer`") + ": this package trains a pipeline's `transformer` (or DreamLite's `unet`), and no family file serves it"
    entry = CONDITIONED_BUILDS.get(cls.__name__) or CLASS_BUILDS.get(cls.__name__) or BUILDS.get(package(cls))
    if package(cls) == "pag" and not cls.__name__.startswith("StableDiffusion3") and entry is BUILDS.get("pag"):
        entry = None  # diffusers.pipelines.pag holds PAG variants of many families; the SD3 build serves SD3's
    if entry is None:
        return None, None, f"no offline tiny build for diffusers.pipelines.{package(cls)}"
    builder, options = entry
    built = getattr(tiny_pipelines, builder, None) or getattr(tiny_matrix_pipelines, builder)
    built = built()
    components = built.components
    missing = [k for k, p in init.items() if k != "self" and p.default is inspect.Parameter.empty
               and p.kind is p.POSITIONAL_OR_KEYWORD and k not in components]
    if missing:
        return None, None, f"needs components {missing} that the {builder} build lacks"
    # A sibling class (FLUX.2 [dev] beside the Klein build) must take the build's models as they are.
    wrong = [f"{k} is {type(components[k]).__name__}, {cls.__name__} takes {init[k].annotation.__name__}"
             for k in init if type(built) is not cls and isinstance(components.get(k), torch.nn.Module)
             and inspect.isclass(init[k].annotation) and not isinstance(components[k], init[k].annotation)]
    if wrong:
        return None, None, f"the {builder} build does not fit: {'; '.join(wrong)}"
    # the build itself where it is of the class (it may set the class's sizes small: HiDream's area, Kandinsky's bins)
    pipe = built if type(built) is cls else cls(**{k: v for k, v in components.items() if k in init})
    pipe.set_progress_bar_config(disable=True)
    return pipe, options, ""


def render(family, noise, options, values=None):
    """Euler on the family's grid: the same latents whichever pipeline instance the family wraps (the LoRA
    changes the denoiser only, so latents are where a round trip shows); with `values`, from those sources."""
    from diffusers_nft.pipelines.base import SOURCE
    from diffusers_nft.sampling import rollout

    prompts = ["a red cat", "a blue dog"]
    cond = family.encode_prompts(prompts, noise.device, options.get("max_sequence_length", 16))
    if values:
        cond[SOURCE] = family.encode_conditioning(values, noise.device, prompts)
    with torch.no_grad():
        sigmas = family.sampling_sigmas(3, tuple(noise.shape[1:]))
        latents = rollout(lambda x, s: family.predict_velocity(x, s, cond), sigmas, noise, "euler")
        family.decode(latents[:1])  # the pipeline's decoding runs too
        return latents


# the conditioning argument -> its column in the matrix's tiny datasets
COLUMNS = {"image": ("image_column", "image"), "mask_image": ("mask_column", "mask"),
           "control_image": ("control_column", "control"), "video": ("video_column", "video")}


def conditioned_rows(family, folder: str):
    """A tiny dataset for an image-conditioned family: four prompts, each with a source image (or a control image,
    for ControlNets; a video of as many frames as the family generates, for video-conditioned ones; and a mask where
    the family takes one), and the conditioning of the first two for the round trip."""
    from PIL import Image

    rows, values = [], []
    arg = next((a for a in ("image", "control_image", "video") if a in family.conditioning), "image")
    count = family.conditioning.get("video", 1) if arg == "video" else 1
    for i, prompt in enumerate(PROMPTS):
        column, row, value = COLUMNS[arg][1], {"prompt": prompt}, {}
        paths = [os.path.join(folder, f"{column}_{i}_{k}.png") for k in range(count)]
        for k, path in enumerate(paths):
            generator = torch.Generator().manual_seed(100 * i + k)
            Image.fromarray((torch.rand(64, 64, 3, generator=generator) * 255).byte().numpy()).save(path)
        frames = [Image.open(path).convert("RGB") for path in paths]
        row[column], value[arg] = (paths, frames) if arg == "video" else (paths[0], frames[0])
        if "mask_image" in family.conditioning:
            mask = Image.new("L", (64, 64), 0)
            mask.paste(255, (8 * i, 8 * i, 8 * i + 32, 8 * i + 32))
            row["mask"] = os.path.join(folder, f"mask_{i}.png")
            mask.save(row["mask"])
            value["mask_image"] = mask
        rows.append(row)
        values.append(value)
    return rows, values[:2]


@contextmanager
def module_sizes(sizes: dict):
    """A build's `module_sizes` (module -> constant -> value: a pipeline's hard-coded image areas made tiny), set for
    the row and restored after it."""
    import importlib

    saved = []
    for name, constants in sizes.items():
        module = importlib.import_module(name)
        for constant, value in constants.items():
            saved.append((module, constant, getattr(module, constant)))
            setattr(module, constant, value)
    try:
        yield
    finally:
        for module, constant, value in saved:
            setattr(module, constant, value)


def run_one(cls, folder: str, conditioned: bool = False) -> dict:
    """Build, train 2 iterations, save, reload the LoRA into a fresh instance; the row of the table."""
    entry = CONDITIONED_BUILDS.get(cls.__name__) if conditioned else None
    with module_sizes(entry[1].get("module_sizes", {}) if entry else {}):
        return _run_one(cls, folder, conditioned)


def _run_one(cls, folder: str, conditioned: bool) -> dict:
    row = {"pipeline": cls.__name__, "family": "", "result": "fail", "reason": "", "seconds": 0.0}
    start = time.perf_counter()
    try:
        pipe, options, reason = build(cls)
        if pipe is None:
            row["reason"] = reason
            return row
        frames = options.get("num_frames")
        family = get_family(pipe, num_frames=frames)
        row["family"] = "traced" if isinstance(family, TracedFamily) else type(family).__name__
        prompts, values, columns = PROMPTS, None, {}
        if conditioned:
            prompts, values = conditioned_rows(family, folder)
            columns = dict(COLUMNS[arg] for arg in values[0])
        config = NFTConfig(output_dir=folder, max_steps=2, prompts_per_iteration=2, group_size=4, resolution=64,
                           num_sampling_steps=4, max_sequence_length=options.get("max_sequence_length", 16),
                           sample_batch_size=8, train_batch_size=4, learning_rate=3e-2, report_to="none",
                           save_steps=1000, validation_steps=1000, eval_num_steps=4, num_frames=frames, seed=0,
                           **columns)
        trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, prompts)
        trainer.train()
        noise = torch.randn(2, *trainer.latent_shape, generator=torch.Generator().manual_seed(5))
        with trainer.policy.ema_weights():
            trained = render(trainer.family, noise, options, values)
        fresh, _, _ = build(cls)
        fresh_adapter = get_family(fresh, num_frames=frames)
        if values:  # the traced family traces with a row's images, as the trainer's does
            fresh_adapter.use_example_conditioning(values[0])
        fresh_adapter.latent_shape(64)
        base = render(fresh_adapter, noise, options, values)
        load_lora_file(fresh, folder, "pytorch_lora_weights.safetensors")
        loaded = render(fresh_adapter, noise, options, values)
        moved, error = (trained - base).abs().max().item(), (loaded - trained).abs().max().item()
        if moved <= 1e-5 or error > 1e-4:
            row["reason"] = f"the loaded LoRA moved the latents by {moved:.2g}, {error:.2g} from the trained policy"
        else:
            row["result"], row["reason"] = "pass", f"LoRA round trip within {error:.1g}" + (
                "" if has_lora_loader(cls) else f", loaded by `{denoiser_name(cls)}.load_lora_adapter` (the class has "
                "no `load_lora_weights`)")
    except Exception as exc:  # the table reports every failure with its reason
        row["reason"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:280]}"  # the pipeline's own error included
        if os.environ.get("FAMILY_MATRIX_DEBUG"):
            traceback.print_exc()
    finally:
        row["seconds"] = time.perf_counter() - start
    return row


def table(rows, kind: str = "text-to-image / text-to-video") -> str:
    passed = sum(r["result"] == "pass" for r in rows)
    lines = [f"{passed} of {len(rows)} {kind} flow-matching pipeline classes of diffusers "
             "train offline (2 NFT iterations and a `load_lora_weights` round trip).", "",
             "| pipeline | family | result | reason | s |", "| --- | --- | --- | --- | ---: |"]
    lines += [f"| `{r['pipeline']}` | {r['family'] or '-'} | {r['result']} | {r['reason'].replace('|', '/')} | "
              f"{r['seconds']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


README_START, README_END = "<!-- family-matrix:start -->", "<!-- family-matrix:end -->"


def parse_table(text: str) -> list:
    """The rows of one table that `table` wrote: (pipeline, family, result, reason) as dicts."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 4:
            rows.append({"pipeline": cells[0].strip("`"), "family": cells[1], "result": cells[2], "reason": cells[3]})
    return rows


def parse_results(path: str) -> tuple:
    """The two tables of a results file: (text-to-image/video rows, image-conditioned rows)."""
    with open(path) as f:
        first, _, second = f.read().partition("image-conditioned flow-matching")
    return parse_table(first), parse_table(second)


def readme_block(plain: list, conditioned: list) -> str:
    """The README's supported-pipelines table, from the matrix's rows: counts, and the passing classes by family."""
    lines = [README_START, "| classes | train offline | family files | traced family |", "| --- | ---: | --- | --- |"]
    for kind, rows in (("text-to-image / text-to-video", plain), ("image-conditioned", conditioned)):
        passed = [r for r in rows if r["result"] == "pass"]
        files = sorted({r["family"] for r in passed if r["family"] != "traced"})
        traced = sorted(r["pipeline"].removesuffix("Pipeline") for r in passed if r["family"] == "traced")
        lines.append(f"| {kind} | **{len(passed)} of {len(rows)}** | {', '.join(files)} | {', '.join(traced)} |")
    failed = [r for r in plain if r["result"] != "pass"]
    if failed:  # the text-to-image/video classes that do not train, each with its reason
        lines += ["", "Text-to-image / text-to-video classes that do not train here:", ""]
        lines += [f"- `{r['pipeline']}`: {r['reason']}" for r in failed]
    return "\n".join(lines + [README_END])


def update_readme(path: str, block: str) -> None:
    with open(path) as f:
        text = f.read()
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    with open(path, "w") as f:
        f.write(text[:start] + block + text[end:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="Also write the table to this markdown file.")
    parser.add_argument("--only", nargs="*", default=None, help="Only these pipeline class names.")
    parser.add_argument("--readme", default=None, help="Also rewrite this README's supported-pipelines table.")
    args = parser.parse_args()
    import diffusers

    tables, all_rows = [], []
    for conditioned, kind in ((False, "text-to-image / text-to-video"), (True, "image-conditioned")):
        rows = []
        for name, cls in candidates(conditioned):
            if args.only and name not in args.only:
                continue
            with tempfile.TemporaryDirectory() as folder:
                rows.append(run_one(cls, folder, conditioned))
            print(f"{name}: {rows[-1]['result']} ({rows[-1]['reason']})", flush=True)
        tables.append(table(rows, kind) if rows else "")
        all_rows.append(rows)
    text = f"diffusers {diffusers.__version__}, torch {torch.__version__}, CPU.\n\n" + "\n".join(tables)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    if args.readme:
        update_readme(args.readme, readme_block(*all_rows))
        print(f"wrote the supported-pipelines table of {args.readme}")


if __name__ == "__main__":
    main()
