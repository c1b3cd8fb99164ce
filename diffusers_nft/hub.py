"""The model card and the Hub, as functions of plain values: the card's text from `CardInputs`, its images, the
folder an upload sends, and the upload. `diffusers_nft.publisher.Publisher` uses them for a run."""

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

from accelerate.logging import get_logger

from .lora_file import LORA_WEIGHT_NAME, SINGLE_LORA_LAYOUT
from .metrics import reward_key, reward_names

logger = get_logger(__name__)

# What never leaves the machine: optimizer checkpoints, half-written folders, logs, per-step sample grids.
# What an upload sends of output_dir: what the run wrote for people to use (the LoRA files, the card and its images,
# the curve, the results and metrics, the guard's best LoRA), never anything else there (a .env, notes, wandb/).
UPLOAD_ALLOW = ["pytorch_lora_weights*.safetensors", "README.md", "images/*", "reward_curve.png", "results.md",
                "metrics.jsonl", "edits.png", "best/*"]


def model_card_template() -> str:
    """Path of the model-card template `model_cards/nft_lora.md`: in the source tree, or in a wheel install."""
    source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "model_cards", "nft_lora.md")
    if os.path.isfile(source):
        return source
    return str(resources.files("diffusers_nft.model_cards").joinpath("nft_lora.md"))


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_base_model(name_or_path: Optional[str], base_model_id: Optional[str] = None) -> Optional[str]:
    """The base model's Hub id for a card, or None when it has none: a local path never goes into a card.

    Args:
        name_or_path: What the pipeline was loaded from (`pipe.name_or_path`): a Hub id or a local folder.
        base_model_id: The Hub id the user named (`NFTConfig.base_model_id`); it wins.
    """
    if base_model_id:
        if not _HUB_ID.match(base_model_id) or os.path.exists(base_model_id):
            raise ValueError(f"base_model_id must be a Hub id such as 'org/name', got {base_model_id!r}.")
        return base_model_id
    if not name_or_path:
        return None
    if os.path.exists(name_or_path):  # a local folder: the Hub id it was saved from, if it says one
        index = os.path.join(name_or_path, "model_index.json")
        if not os.path.isfile(index):
            return None
        with open(index) as f:
            name_or_path = json.load(f).get("_name_or_path")
        if not name_or_path or os.path.exists(name_or_path):
            return None
    return name_or_path if _HUB_ID.match(name_or_path) and "/" in name_or_path else None


def base_model_license(base_model: Optional[str]) -> Optional[str]:
    """The license of `base_model` on the Hub, or None when the Hub cannot say (offline, no card)."""
    if base_model is None:
        return None
    try:
        from huggingface_hub import model_info

        data = model_info(base_model, timeout=10).card_data
        return data.get("license") if data else None
    except Exception:  # offline or unknown: the card then says the license is the base model's, unnamed
        return None


def _lora_loader(pipeline_class: str) -> Tuple[str, str, str]:
    """How the snippet loads a LoRA into the diffusers class named `pipeline_class` (`lora_file.loading_call`;
    `pipe.load_lora_weights` for a class diffusers does not export)."""
    import diffusers

    from .lora_file import loading_call

    cls = getattr(diffusers, pipeline_class, None)
    return ("", "pipe.load_lora_weights(", "") if cls is None else loading_call(cls)


def _guiders(pipeline_class: str) -> List[str]:
    """The guider components of a diffusers class (HunyuanVideo 1.5's `guider`): they guide whatever the call says."""
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    return [] if cls is None else [n for n in inspect.signature(cls.__init__).parameters if n.endswith("guider")]


def call_snippet(pipeline_class: str, base_model: Optional[str], repo_id: str, prompt: str, call_kwargs: dict,
                 lora_layout: Optional[Dict[str, Tuple[str, dict]]] = None, seed: int = 0,
                 conditioning_files: Optional[Dict[str, object]] = None,
                 base_loader: Optional[Tuple[str, str]] = None) -> str:
    """Python that loads the base pipeline and this LoRA and generates as the run evaluated, on the user's device:
    the card's first gallery image, whose seed is `seed` (`diffusers_nft.generation`'s noise convention), from the
    repo's copy of its source image(s) where the pipeline is image-conditioned. `base_loader`, `(import line,
    expression)`, builds a base that is not on the Hub (the demo's bundled pipelines)."""
    base = base_model or "path/to/the/base/pipeline"
    load_base = (f"{base_loader[0]}\n", f"pipe = {base_loader[1]}.to(device)\n") if base_loader else (
        f"from diffusers import {pipeline_class}\n",
        f"pipe = {pipeline_class}.from_pretrained({_literal(base)}, dtype=dtype).to(device)\n")
    arguments = "".join(f"    {key}={_load_images(value, repo_id)},\n" for key, value in (conditioning_files or {}).items())
    arguments += "".join(f"    {key}={_literal(value)},\n" for key, value in call_kwargs.items())
    # a class without diffusers' LoRA loader loads the same file through its transformer
    import_line, loader, extra = _lora_loader(pipeline_class)
    loads = "".join(
        f"{loader}{_literal(repo_id)}, weight_name={_literal(name)}{extra}"
        + "".join(f", {k}={_literal(v)}" for k, v in load_kwargs.items()) + ")\n"
        for name, (_, load_kwargs) in (lora_layout or SINGLE_LORA_LAYOUT).items()
    )
    loads += "".join(f"pipe.{name}.disable()  # trained and evaluated without CFG\n" for name in _guiders(pipeline_class))
    return (
        "import torch\n"
        f"{load_base[0]}{import_line}"
        + ("from diffusers.utils import load_image\n" if conditioning_files else "") + "\n"
        'device = "cuda" if torch.cuda.is_available() else "cpu"\n'
        + ("" if base_loader else 'dtype = torch.bfloat16 if device == "cuda" else torch.float32\n')
        + f"{load_base[1]}"
        f"{loads}"
        "image = pipe(\n"
        f"    prompt={_literal(prompt)},\n{arguments}"
        f"    generator=torch.Generator().manual_seed({seed}),\n"
        ").images[0]\n"
        'image.save("sample.png")\n'
    )


def _before_after(output_dir: str) -> str:
    """The before/after grid's path in the card: a PNG, or an animated WebP/GIF for videos."""
    images = os.path.join(output_dir, "images")
    found = sorted(f for f in os.listdir(images) if f.startswith("before_after.")) if os.path.isdir(images) else []
    return f"images/{found[0]}" if found else "images/before_after.png"


def guard_summary(output_dir: str) -> str:
    """What `HackingGuard` kept and saw, for the card; empty without `best/best.json`."""
    path = os.path.join(output_dir, "best", "best.json")
    if not os.path.isfile(path):
        return ""
    with open(path) as f:
        best = json.load(f)
    lines = [f"`{LORA_WEIGHT_NAME}` is the LoRA of the last iteration. `best/{LORA_WEIGHT_NAME}` is the one the "
             f"held-out judge `{best['judge']}` scored highest: {best['value']:.4g} at iteration {best['step']} "
             f"(training reward {best['training_reward']:.4g} then)."]
    events = best.get("events") or []
    lines.append("The reward-hacking guard fired: " + "; ".join(f"iteration {e['step']}: {e['message']}" for e in events)
                 + "." if events else "The reward-hacking guard did not fire.")
    return " ".join(lines)


def _load_images(paths, repo_id: str) -> str:
    """`load_image(<the file's URL in the repo>)`, or a list of them."""
    if isinstance(paths, (list, tuple)):
        return "[" + ", ".join(_load_images(p, repo_id) for p in paths) + "]"
    return f"load_image({_literal(f'https://huggingface.co/{repo_id}/resolve/main/{paths}')})"


def save_sources(folder: str, conditioning: Sequence[dict]) -> List[Dict[str, object]]:
    """Each prompt's conditioning images as `images/<argument>_<prompt>[_<k>].png` in `folder`; their paths
    relative to it, in the same structure."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    saved = []
    for i, values in enumerate(conditioning):
        row = {}
        for arg, value in values.items():
            images = value if isinstance(value, (list, tuple)) else [value]
            paths = [f"images/{arg}_{i}{f'_{k}' if len(images) > 1 else ''}.png" for k in range(len(images))]
            for image, path in zip(images, paths):
                image.save(os.path.join(folder, path))
            row[arg] = paths if isinstance(value, (list, tuple)) else paths[0]
        saved.append(row)
    return saved


def _literal(value) -> str:
    """A Python literal in the style of the card's code: double-quoted strings."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def card_hyperparameters(args, lora, mixed_precision: str, settings: Sequence[str]) -> Dict[str, object]:
    """The card's settings table: the LoRA, the objective's own `settings` (its `card_settings`) and the shared
    ones."""
    return {
        "LoRA rank / alpha": f"{lora.r} / {lora.lora_alpha} (the file folds alpha / r into lora_B and says alpha = r)",
        "LoRA targets": ", ".join(sorted(lora.target_modules)),
        "saved weights": "EMA" if args.save_ema_weights else "raw",
        **{k: getattr(args, k) for k in (
            "objective", "prompts_per_iteration", "group_size", "images_per_iteration", "num_sampling_steps",
            *settings, "resolution", "adv_clip_max", "learning_rate", "ema_decay", "seed")},
        "mixed_precision": mixed_precision,
    }


@dataclass
class CardInputs:
    """Everything a model card says, as plain values (`write_model_card`).

    Attributes:
        repo_id: The Hub repo the card is for, e.g. `"user/sd35-nft"`.
        base_model: Hub id of the base pipeline (see `hub_base_model`), or None to leave the field out.
        pipeline_class: Its diffusers class name.
        rewards: (name, weight) pairs.
        hyperparameters: Settings to show in a table.
        history: Per-iteration metrics (for the first/last reward table).
        call_kwargs: The pipeline-call arguments the run evaluated with (resolution, steps, guidance, text length).
        license: The card's license; default: the base model's on the Hub, when it can be read.
        evaluation: A markdown table of an evaluation run, shown in the card.
        lora_layout: The LoRA files and how each loads (`PipelineFamily.lora_layout`), for the snippet.
        method: The objective's class (`diffusers_nft.objectives`), whose facts the card states; default:
            DiffusionNFT's.
        conditioning_files: For image-conditioned pipelines, the first prompt's conditioning as files of the repo
            (argument -> path, or a list of paths): the snippet loads them.
        base_loader: `(import line, expression)` that builds the base pipeline where it is not on the Hub (the
            demo worlds' bundled ones), for the snippet; None: `from_pretrained(base_model)`.
    """

    repo_id: str
    base_model: Optional[str]
    pipeline_class: str
    rewards: Sequence[Tuple[str, float]]
    hyperparameters: Dict[str, object]
    history: List[Dict[str, float]] = field(default_factory=list)
    call_kwargs: Dict[str, object] = field(default_factory=dict)
    license: Optional[str] = None
    evaluation: Optional[str] = None
    lora_layout: Optional[Dict[str, Tuple[str, dict]]] = None
    method: Optional[type] = None
    conditioning_files: Dict[str, object] = field(default_factory=dict)
    base_loader: Optional[Tuple[str, str]] = None


def write_model_card(output_dir: str, *, widget: Sequence[Tuple[str, str]], seed: int = 0,
                     inputs: Optional[CardInputs] = None, **values) -> str:
    """Write `output_dir/README.md` from the template.

    Args:
        output_dir: The run's folder (it holds the LoRA, `reward_curve.png` and `images/`).
        widget: (prompt, image path relative to `output_dir`) pairs for the Hub widget and gallery; the snippet
            generates the first one.
        seed: The seed of the widget's images: the snippet's generator.
        inputs: What the card says (`CardInputs`); or its fields as keyword arguments.

    Returns: The path of the card.
    """
    from huggingface_hub import ModelCard

    c = inputs or CardInputs(**values)
    method = c.method or _default_method()
    card = ModelCard.from_template(
        _card_data(c.base_model, c.pipeline_class, widget, c.license, bool(c.conditioning_files)),
        template_path=model_card_template(),
        title=f"{c.repo_id.split('/')[-1]}: {method.title} LoRA for {c.base_model or c.pipeline_class}",
        method=method,
        base_model=c.base_model,
        pipeline_class=c.pipeline_class,
        rewards=list(c.rewards),
        iterations=len(c.history),
        images_seen=int(c.hyperparameters.get("images_per_iteration", 0)) * len(c.history),
        final_rewards=_first_and_last(c.history),
        before_after=_before_after(output_dir),
        guard=guard_summary(output_dir),
        snippet=call_snippet(c.pipeline_class, c.base_model, c.repo_id, widget[0][0] if widget else "a photo",
                             c.call_kwargs, c.lora_layout, seed=seed, conditioning_files=c.conditioning_files,
                             base_loader=c.base_loader),
        evaluation=c.evaluation,
        hyperparameters=list(c.hyperparameters.items()),
    )
    path = os.path.join(output_dir, "README.md")
    card.save(path)
    return path


def _default_method() -> type:
    from .objectives import NFTObjective

    return NFTObjective


def _card_data(base_model: Optional[str], pipeline_class: str, widget, license: Optional[str],
               conditioned: bool = False):
    """The card's metadata block: what the Hub indexes (`conditioned`: the run gave images to the call)."""
    from huggingface_hub import ModelCardData

    from .pipelines import card_pipeline_tag, card_tags

    task = card_pipeline_tag(pipeline_class, conditioned)
    tags = ["diffusers", "lora", "template:sd-lora", "diffusers-nft", "reinforcement-learning", task]
    return ModelCardData(
        base_model=base_model,
        license=license or base_model_license(base_model),
        library_name="diffusers",
        pipeline_tag=task,
        tags=tags + card_tags(pipeline_class),
        widget=[{"text": prompt, "output": {"url": path}} for prompt, path in widget],
    )


def _first_and_last(history: List[Dict[str, float]]) -> List[Tuple[str, float, float]]:
    if not history:
        return []
    return [(n, history[0][reward_key(n)], history[-1][reward_key(n)]) for n in reward_names(history[-1])]


def write_card_images(folder: str, prompts: Sequence[str], base, tuned, per_prompt: int, scale: int,
                      settings: str = "", tuned_label: str = "NFT", seeds: Optional[Sequence[int]] = None,
                      sources: Optional[Sequence] = None):
    """The same-seed before/after grid (with each prompt's source image first, for image-conditioned pipelines:
    source | base | tuned) and one widget image per prompt, under `folder/images/`.

    Returns:
        (prompt, image path relative to `folder`) pairs for the card's widget: each prompt's first seed.
    """
    import torch

    from .visualize import save_grid, with_sources

    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    n = per_prompt
    columns = [f"seed {k}" for k in (seeds or range(n))]
    if sources is not None:  # the source once per row, beside the same-seed images
        base, tuned = (with_sources(images, sources, n) for images in (base, tuned))
        n, columns = n + 1, ["source"] + columns
    rows = torch.cat([torch.cat([base[i * n : (i + 1) * n], tuned[i * n : (i + 1) * n]]) for i in range(len(prompts))])
    labels = [f"{who}: {p}" for p in prompts for who in ("base", tuned_label)]
    save_grid(rows, os.path.join(folder, "images", "before_after"), rows=2 * len(prompts), labels=labels,
              scale=scale, column_labels=columns, caption=settings)
    widget, first = [], 1 if sources is not None else 0
    for i, prompt in enumerate(prompts):  # videos become animated WebP (GIF without WebP support)
        path = save_grid(tuned[i * n + first : i * n + first + 1], os.path.join(folder, "images", f"sample_{i}"),
                         rows=1, scale=scale)
        widget.append((prompt, os.path.relpath(path, folder)))
    return widget


def validate_card(path: str) -> None:
    """Ask the Hub whether it accepts the card's metadata, before anything is uploaded.

    Raises:
        RuntimeError: Naming the Hub's objection (or why it could not be asked).
    """
    from huggingface_hub import ModelCard

    try:
        ModelCard.load(path).validate()
    except Exception as error:
        reason = hub_failure(error)
        if reason.startswith("the Hub was not reached"):
            raise RuntimeError(f"The model card {path} could not be checked: {reason}. Nothing was uploaded; the card "
                               "and the LoRA stay where they are.") from error
        raise RuntimeError(f"The Hub did not accept the model card {path} ({type(error).__name__}: {error}); nothing "
                           "was uploaded. Fix the card's metadata (base_model_id, license).") from error


def hub_failure(error: Exception) -> str:
    """Why a Hub call failed, in words: the Hub not reached (offline, network), no token, or the Hub refusing (with
    its HTTP status)."""
    names = {c.__name__ for c in type(error).__mro__}
    if names & {"OfflineModeIsEnabled", "TransportError", "ConnectionError", "TimeoutError", "TimeoutException"}:
        return (f"the Hub was not reached ({type(error).__name__}: {error}); check the network, or unset "
                "HF_HUB_OFFLINE")
    if "LocalTokenNotFoundError" in names:
        return "there is no Hub token: run `hf auth login` or set $HF_TOKEN"
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return (f"the Hub refused it ({status}: {error}); the token cannot write there: check `hf auth whoami` and "
                "that the token has write access")
    if status is not None:
        return f"the Hub refused it ({status}: {error})"
    return f"{type(error).__name__}: {error}"


def hub_api(token: Optional[str], api=None):
    """`api`, or a `huggingface_hub.HfApi` with `token`."""
    if api is not None:
        return api
    from huggingface_hub import HfApi

    return HfApi(token=token)


def check_hub(repo_id: str, token: Optional[str] = None, private: Optional[bool] = None, api=None) -> str:
    """Before training: create the model repo (or find it), so that an upload cannot fail only at the end.

    Raises:
        ValueError: Saying why (no token, the Hub not reached, no write access).
    """
    try:
        hub_api(token, api).create_repo(repo_id=repo_id, token=token, private=private, exist_ok=True,
                                        repo_type="model")
    except Exception as error:
        raise ValueError(f"--push_to_hub: the Hub repo {repo_id!r} cannot be created or written before training: "
                         f"{hub_failure(error)}. Fix it, or train without --push_to_hub and upload later.") from error
    return f"https://huggingface.co/{repo_id}"


def uploaded_files(output_dir: str) -> List[str]:
    """The files of `output_dir` (relative paths) that an upload sends: those `UPLOAD_ALLOW` names."""
    from huggingface_hub.utils import filter_repo_objects

    files = [os.path.relpath(os.path.join(d, f), output_dir) for d, _, fs in os.walk(output_dir) for f in fs]
    return sorted(filter_repo_objects(files, allow_patterns=UPLOAD_ALLOW))


def upload_folder(output_dir: str, repo_id: str, token: Optional[str] = None, private: Optional[bool] = None,
                  api=None, commit_message: str = "Upload DiffusionNFT LoRA") -> str:
    """Create the repo if needed and upload what the run wrote in `output_dir` for people to use (`UPLOAD_ALLOW`:
    the LoRA, the card and its images, the curve, results and metrics), nothing else there.

    Raises:
        ValueError: If a file to upload is a symbolic link (it could point at anything, a token file included).
        RuntimeError: If the Hub refuses the card or the upload, or is not reached; `output_dir` keeps everything.
    """
    sent = uploaded_files(output_dir)
    links = [name for name in sent if os.path.islink(os.path.join(output_dir, name))]
    if links:
        raise ValueError(f"Nothing was uploaded: {links} in {output_dir!r} are symbolic links; an upload sends the "
                         "run's own files only. Replace them with the files themselves.")
    validate_card(os.path.join(output_dir, "README.md"))
    api = hub_api(token, api)
    try:
        api.create_repo(repo_id=repo_id, token=token, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id, folder_path=output_dir, token=token, commit_message=commit_message,
            allow_patterns=UPLOAD_ALLOW, repo_type="model",
        )
    except Exception as error:
        raise RuntimeError(
            f"Uploading {output_dir!r} to the Hub repo {repo_id!r} failed: {hub_failure(error)}. The LoRA and its "
            f"card stay in {output_dir!r}: upload them later with trainer.push_to_hub() or "
            f"`hf upload {repo_id} {output_dir}`."
        ) from error
    return f"https://huggingface.co/{repo_id}"
