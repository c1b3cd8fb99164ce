"""What every training script shares: its flags (`ScriptArguments` + `NFTConfig`), the checks made before any
model loads, building the trainer, training, and the demo's results and card.

A script is one `load_pipeline(script_args, config)` function and `cli(load_pipeline)`; see
`examples/train_nft.py` (any pipeline), `examples/train_nft_sd3.py` and `examples/train_nft_flux.py`.
"""

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import torch
from transformers import HfArgumentParser

from .checkpoints import check_output_dir, resolve_checkpoint
from .machines import on_every_machine
from .checkpoints.checkpointer import fresh_run_refusal
from .command_line import check_twins, config_defaults, exit_on_setup_error, given_flags, read_config_file, \
    repeatable_settings, split_config_file
from .config import NFTConfig, weight_dtype
from .data import load_prompts
from .metrics import time_key
from .hub import check_hub
from .lora_file import denoiser_of
from .demo import DEMO
from .objectives import objective_class
from .pipelines import get_family
from .trainer import NFTTrainer
from .policy import check_lora_shape, check_lora_targets, make_lora_config
from .rewards.registry import check_reward, register_reward
from .recipes import RECIPES, recipe

logger = logging.getLogger(__name__)


@dataclass
class ScriptArguments:
    pretrained_model_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Hub id or local folder of the pipeline to train: SD3/SD3.5 for train_nft_sd3.py, FLUX.1 for "
                  "train_nft_flux.py, FLUX.1 Kontext for train_nft_edit.py, any supported flow-matching pipeline for "
                  "train_nft.py and `diffusers-nft train`. Default: the script's offline demo world."}
    )
    revision: Optional[str] = field(default=None, metadata={"help": "Model revision on the Hub."})
    variant: Optional[str] = field(default=None, metadata={"help": "Weights variant, e.g. 'fp16'."})
    dataset_name: Optional[str] = field(
        default=None,
        metadata={"help": "Prompts: a Hub dataset name, a save_to_disk folder, or a .txt/.jsonl/.json/.csv/.parquet "
                  "file. Required with --pretrained_model_name_or_path; default: the demo's prompts.",
                  "aliases": ["--prompts"]},
    )
    dataset_config_name: Optional[str] = field(default=None, metadata={"help": "The dataset's configuration."})
    dataset_split: str = field(default="train", metadata={"help": "The split to train on. Default: train."})
    caption_column: str = field(
        default="prompt", metadata={"help": "The column of the prompts. Default: prompt.", "aliases": ["--prompt_column"]}
    )
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where Hub datasets are cached."})
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N prompts only (for debugging). Default: all."}
    )
    recipe: Optional[str] = field(
        default=None,
        metadata={"help": f"A release configuration, one of {sorted(RECIPES)}: sets its values and rewards; "
                  "explicit flags still override."},
    )
    reward: List[str] = field(
        default_factory=list,
        metadata={
            "help": "Reward as name[:weight], or remote:http://host:port[:weight] for a reward server (`diffusers-nft "
                    "serve`; several URLs joined by commas for a pool); repeat the flag for several (weighted sum). Required with "
                    "--pretrained_model_name_or_path unless --recipe gives them; default: the demo's digit_eval.",
            "action": "extend",
        },
    )
    eval_dataset_name: Optional[str] = field(
        default=None,
        metadata={"help": "Held-out prompts, never trained on (same forms as --dataset_name), scored every "
                  "--eval_steps by the judges.", "aliases": ["--eval_prompts"]},
    )
    eval_reward: List[str] = field(
        default_factory=list,
        metadata={"help": "A held-out judge (a reward name); repeat for several. Default: the training rewards.",
                  "action": "extend"},
    )
    vlm_judge_model: Optional[str] = field(
        default=None,
        metadata={"help": "The model of the vlm_judge reward (an AutoModelForImageTextToText Hub id or folder). "
                  "Default: Qwen/Qwen2.5-VL-7B-Instruct."},
    )
    vlm_judge_question: Optional[str] = field(
        default=None,
        metadata={"help": "The vlm_judge question, a template over {prompt} and the metadata columns. Default: "
                  "'Does this image show {prompt}? Answer yes or no.'"},
    )
    guard: str = field(
        default="warn,save_best",
        metadata={"help": "Reward-hacking guard actions with --eval_dataset_name: any of warn, save_best, stop, "
                  "comma-separated, or 'none'."},
    )
    final_report: str = field(
        default="full",
        metadata={"help": "After training: 'full' (the demo's results table on its held-out prompts, then the model "
                  "card), 'card' (the card only) or 'none'. The card is written whenever --push_to_hub is given.",
                  "choices": ["full", "card", "none"]},
    )
    rank: int = field(default=32, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=64, metadata={"help": "LoRA alpha."})
    lora_layers: Optional[str] = field(
        default=None, metadata={"help": "Comma-separated module suffixes, e.g. 'attn.to_q,attn.to_k'. Default: release."}
    )


def parse_rewards(specs: List[str]):
    """`["pickscore:1", "ocr:0.5", "remote:http://127.0.0.1:8000:2"]` -> rewards (names, or a `RemoteReward` for
    each `remote:` server) and weights."""
    rewards, weights = [], []
    for spec in specs:
        if spec.startswith(REMOTE):
            reward, weight = remote_reward(spec)
        else:
            reward, _, weight = spec.partition(":")
        try:
            weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise ValueError(f"--reward {spec!r}: the weight {weight!r} is not a number (use name:0.5).") from None
        rewards.append(reward)
    return rewards, weights


REMOTE = "remote:"


def remote_reward(spec: str):
    """`remote:<url>[,<url>...][:weight]` -> `(RemoteReward(urls), weight text)`. The last `:field` is a weight when
    it is a number that is not the URL's port (`remote:http://host:8000` has none; `remote:http://host:8000:0.5` has
    0.5). Several comma-separated URLs are a pool of servers of the same reward."""
    from urllib.parse import urlparse

    from .rewards.remote import RemoteReward

    *urls, last = spec[len(REMOTE):].split(",")
    last, weight = _url_and_weight(last)
    urls.append(last)
    for url in urls:
        parts = urlparse(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--reward {spec!r}: {url!r} is not an http(s) URL; use remote:http://host:port[:weight] "
                             "(a server started with `diffusers-nft serve --reward NAME`), or several URLs joined "
                             "by commas for a pool.")
    name = urlparse(urls[0]).path.strip("/").split("/")[-1] or "remote"
    return RemoteReward(urls if len(urls) > 1 else urls[0], name=name), weight


def _url_and_weight(url: str):
    """`http://host:8000:0.5` -> `("http://host:8000", "0.5")`; `http://host:8000` -> `("http://host:8000", "")`."""
    from urllib.parse import urlparse

    head, _, tail = url.rpartition(":")
    try:
        float(tail)
    except ValueError:
        return url, ""
    head_parts = urlparse(head)
    if head_parts.netloc and ("." in tail or head_parts.port is not None or head_parts.path not in ("", "/")):
        return head, tail
    return url, ""


# Without a model, the script trains the bundled demo world: a tiny pretrained text-to-image model of coloured
# handwritten digits, judged by the bundled digit/colour classifier (`digit_eval`). About 7 minutes on 2 CPU cores.


def default_rewards(recipe_name: Optional[str], demo) -> List[str]:
    """The recipe's rewards, else the demo world's (`check_data_and_rewards_given` asked for them outside a demo)."""
    if recipe_name:
        return [f"{name}:{weight}" for name, weight in recipe(recipe_name)["rewards"].items()]
    return [demo.reward]


def use_all_cpu_cores() -> None:
    """`accelerate launch` sets OMP_NUM_THREADS=1; on a CPU-only machine give each process its share of cores."""
    if torch.cuda.is_available():
        return
    share = max(1, len(os.sched_getaffinity(0)) // int(os.environ.get("WORLD_SIZE", "1")))
    if torch.get_num_threads() < share:
        logger.info("CPU run: using %d threads per process (the launcher set %d).", share, torch.get_num_threads())
        torch.set_num_threads(share)


def prepare(argv, load_pipeline: Callable, world=DEMO):
    """Parse the flags, check everything that can be checked without the model, then load it and build the trainer.

    Args:
        argv: The flags (None: `sys.argv`).
        load_pipeline: `(script_args, config) -> pipeline`.
        world: The bundled demo world the script trains without `--pretrained_model_name_or_path` (`DEMO`, the
            digits; `EDIT_DEMO`, the edits).

    Returns:
        `(trainer, script_args, demo)`: `demo` is the demo world being trained, or None for a real model.
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    use_all_cpu_cores()
    script_args, config, demo = parse_settings(argv, world)
    # Each machine checks its own files; a failure on one stops them all (`machines.on_every_machine`).
    reward_names, prompts = on_every_machine(lambda: check_before_loading(script_args, config, demo),
                                             "the settings, the prompts and the output folder")
    pipeline = on_every_machine(lambda: load_pipeline(script_args, config), "the model")
    peft_config = make_lora_config(
        denoiser_of(pipeline),
        targets=script_args.lora_layers.split(",") if script_args.lora_layers else None,
        default_targets=get_family(pipeline, config.family, num_frames=config.num_frames).default_lora_targets,
        rank=script_args.rank,
        alpha=script_args.lora_alpha,
    )
    trainer = NFTTrainer(pipeline, reward_names, args=config, train_dataset=prompts, peft_config=peft_config,
                         **held_out(script_args))
    if demo:
        trainer.card_base_loader = demo.base_loader  # the card's snippet builds the bundled base, not a Hub id
    return trainer, script_args, demo


def parse_settings(argv, world=DEMO):
    """`(script_args, config, demo)` of a command line: the demo world's values (without a model), a recipe's, a
    config file's (the first argument or `--config`), then the flags, each over the one before.

    Raises:
        ValueError: For a config file that cannot be read or names no setting, or a setting given twice differently.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    path, argv = split_config_file(argv)
    from_file = read_config_file(path) if path else {}
    probe = HfArgumentParser((ScriptArguments, NFTConfig))
    first = probe.parse_known_args(argv)[0]
    recipe_objective = recipe(first.recipe)["config"].get("objective", "nft") if first.recipe else "nft"
    probe.set_defaults(objective=from_file.get("objective", recipe_objective))
    config_class = objective_class(probe.parse_known_args(argv)[0].objective).config_class  # Flow-GRPO's flags too
    parser = HfArgumentParser((ScriptArguments, config_class))
    file_values = config_defaults(parser, from_file, path) if path else {}
    check_twins(parser, argv)
    given = given_flags(parser, argv)  # a repeatable flag given on the command line replaces the file's list
    file_values = {k: v for k, v in file_values.items() if not (k in given and k in repeatable_settings(parser))}
    parser.set_defaults(**file_values)
    known, _ = parser.parse_known_args(argv)
    demo = world if known.pretrained_model_name_or_path is None else None
    if demo:
        logger.info("No --pretrained_model_name_or_path: offline demo on the bundled %s (%s reward).",
                    demo.description, demo.reward)
        parser.set_defaults(output_dir=demo.output_dir, **demo.config)
    if known.recipe:
        parser.set_defaults(**recipe(known.recipe)["config"])
        logger.info("Recipe %s: %s; prompts: %s", known.recipe, recipe(known.recipe)["config"],
                    recipe(known.recipe)["prompts"])
    if path:
        parser.set_defaults(**file_values)  # over the demo's and the recipe's
        logger.info("Config file %s: %s", path, file_values)
    script_args, config = parser.parse_args_into_dataclasses(args=argv)
    return script_args, config, demo


def held_out(script_args: ScriptArguments) -> dict:
    """`eval_dataset`, `eval_reward_funcs` and the guard callback of the flags (nothing without eval prompts)."""
    if not script_args.eval_dataset_name:
        return {}
    from .guard import HackingGuard

    actions = [] if script_args.guard == "none" else [a for a in script_args.guard.split(",") if a]
    return {
        "eval_dataset": load_prompts(script_args.eval_dataset_name, script_args.caption_column,
                                     cache_dir=script_args.cache_dir),
        "eval_reward_funcs": list(script_args.eval_reward) or None,
        "callbacks": [HackingGuard(actions=actions)] if actions else None,
    }


def check_before_loading(script_args: ScriptArguments, config: NFTConfig, demo):
    """Rewards and their weights, the prompts, the LoRA shape, output_dir and the resume path: before any download.

    Returns:
        The reward names and the prompt dataset.
    """
    check_data_and_rewards_given(script_args, config, demo)
    configure_vlm_judge(script_args)
    reward_names, reward_weights = parse_rewards(script_args.reward or default_rewards(script_args.recipe, demo))
    config.reward_weights = config.reward_weights or reward_weights
    config.validate()  # the weights from --reward name:w too
    script_args.eval_reward = parse_rewards(script_args.eval_reward)[0]
    for reward in reward_names + script_args.eval_reward:
        check_reward_flag(reward)
    if script_args.guard != "none":
        from .guard import GUARD_ACTIONS

        unknown = [a for a in script_args.guard.split(",") if a and a not in GUARD_ACTIONS]
        if unknown:
            raise ValueError(f"--guard {script_args.guard}: unknown actions {unknown}; use {GUARD_ACTIONS} or 'none'.")
    check_lora_shape(script_args.rank, script_args.lora_alpha)
    check_lora_layers(script_args)
    if config.hub_token:
        warnings.warn("--hub_token is visible to every user of this machine (`ps`) and in accelerate's failure "
                      "messages; set $HF_TOKEN or run `hf auth login` instead.")
    if script_args.dataset_name:
        prompts = load_prompts(
            script_args.dataset_name, script_args.caption_column, config_name=script_args.dataset_config_name,
            split=script_args.dataset_split, cache_dir=script_args.cache_dir, max_samples=script_args.max_train_samples,
        )
    else:
        prompts = demo.train_prompts()
    check_output_dir(config.output_dir)
    resumed = resolve_checkpoint(config.resume_from_checkpoint, config.output_dir) if config.resume_from_checkpoint \
        else None
    refusal = None if resumed else fresh_run_refusal(config)
    if refusal:  # another run's folder: refused before the model loads
        raise ValueError(refusal)
    if config.push_to_hub and int(os.environ.get("RANK", "0")) == 0:  # before any download, as diffusers' scripts do
        check_hub(config.hub_model_id or os.path.basename(os.path.normpath(config.output_dir)),
                  token=config.hub_token, private=config.hub_private_repo)
    return reward_names, prompts


def check_reward_flag(reward) -> None:
    """`check_reward`, with the fix a command line can take: another name, or a reward server."""
    try:
        check_reward(reward)
    except ValueError as error:
        raise ValueError(str(error).replace("or pass a callable.", "or remote:http://host:port for a reward server "
                                            "(`diffusers-nft serve --reward NAME`).")) from None


def configure_vlm_judge(script_args: ScriptArguments) -> None:
    """`vlm_judge` with the model and question of the flags, wherever the name is used (training or judging)."""
    settings = {k: v for k, v in (("model_id", script_args.vlm_judge_model),
                                  ("question", script_args.vlm_judge_question)) if v}
    if not settings:
        return
    if "question" in settings and "{prompt}" not in settings["question"]:
        raise ValueError(f"--vlm_judge_question must contain '{{prompt}}' (got {settings['question']!r}).")

    def factory(**options):
        from .rewards.vlm import VLMJudge

        return VLMJudge(**{**options, **settings})

    register_reward("vlm_judge", factory)


def check_data_and_rewards_given(script_args: ScriptArguments, config: NFTConfig, demo) -> None:
    """A real model trains on prompts and rewards that were asked for: the demo's are never a silent default."""
    if demo:
        return
    if not script_args.dataset_name:
        raise ValueError("--pretrained_model_name_or_path needs --dataset_name (or --prompts): a Hub dataset, a "
                         "save_to_disk folder or a .txt/.jsonl/.json/.csv/.parquet file. The demo's digit prompts are "
                         "only for the demo.")
    if not script_args.reward and not script_args.recipe:
        raise ValueError("--pretrained_model_name_or_path needs --reward name[:weight] (repeat it for several), or "
                         "--recipe with its rewards; there is no default reward for a real model.")
    if script_args.reward and config.reward_weights:
        raise ValueError("Give the weights once: either --reward name:weight or --reward_weights, not both.")


def check_lora_layers(script_args: ScriptArguments) -> None:
    """`--lora_layers` against the denoiser (the transformer; DreamLite's UNet) built from its config alone, on the
    meta device: no weights load."""
    if not script_args.lora_layers or script_args.pretrained_model_name_or_path is None:
        return
    import diffusers

    path, revision = script_args.pretrained_model_name_or_path, script_args.revision
    # Only model_index.json and the denoiser's config.json are read (or downloaded); any model class reads them.
    index = diffusers.DiffusionPipeline.load_config(path, revision=revision)
    subfolder = "unet" if "unet" in index and "transformer" not in index else "transformer"
    config = diffusers.SD3Transformer2DModel.load_config(path, subfolder=subfolder, revision=revision)
    with torch.device("meta"):
        denoiser = getattr(diffusers, config["_class_name"]).from_config(config)
    check_lora_targets(denoiser, script_args.lora_layers.split(","))


def run(trainer, script_args: ScriptArguments, demo) -> None:
    """Train; then the demo world's results table (`demo`, None for a real model), the model card, and the upload
    when asked (`--final_report` says how much of it); last, where the time went."""
    config, report, spent = trainer.args, script_args.final_report, {}
    start = time.perf_counter()
    trainer.train()
    spent["training"] = time.perf_counter() - start
    if demo and report == "full":
        logger.info("Scoring the base and the trained model on the %s's held-out prompts for results.md (a few "
                    "minutes on a CPU; --final_report card skips it).", demo.description.split(" (")[0])
        start = time.perf_counter()
        demo.report(trainer)
        spent["results table (the base and the trained model scored)"] = time.perf_counter() - start
    start = time.perf_counter()
    if report != "none" or config.push_to_hub:
        logger.info("Writing the model card: the same-seed base/%s gallery, the reward curve (--final_report none "
                    "skips it).", trainer.objective_class.short)
        trainer.create_model_card()
    if config.push_to_hub:
        logger.info("Pushed to %s", trainer.push_to_hub(write_card=False))
    spent["model card and upload"] = time.perf_counter() - start
    if trainer.accelerator.is_main_process:
        logger.info("Where the time went:\n%s", time_split(trainer.history, spent))


def time_split(history: List[dict], spent: dict) -> str:
    """The run's time as a small table: the training loop split into its iterations' sampling, reward and
    training (summed over `history`) and the rest (evaluation, checkpoints, logs), then each step after it."""
    parts = {part: sum(row.get(time_key(part), 0.0) for row in history) for part in ("sampling", "reward", "training")}
    parts["evaluation, checkpoints and logs"] = max(spent["training"] - sum(parts.values()), 0.0)
    rows = [(f"training loop: {part}", seconds) for part, seconds in parts.items()]
    rows += [(name, seconds) for name, seconds in spent.items() if name != "training"]
    total = sum(seconds for _, seconds in rows)
    return "\n".join(f"  {name:<58} {seconds:8.1f} s {100 * seconds / max(total, 1e-9):5.1f} %"
                     for name, seconds in rows + [("total", total)])


def main(argv, load_pipeline: Callable, world=DEMO) -> None:
    run(*prepare(argv, load_pipeline, world))


def cli(load_pipeline: Callable, world=DEMO, argv=None) -> None:
    """The command line: a mistake found while setting up is one line on stderr and exit status 2, no traceback."""
    run(*exit_on_setup_error(lambda: prepare(argv, load_pipeline, world)))


def load_any_pipeline(script_args: ScriptArguments, config: NFTConfig):
    """The pipeline of `--pretrained_model_name_or_path` (a Hub id or a local folder) by `DiffusionPipeline`, whose
    `model_index.json` names its class; the demo world's without one."""
    from diffusers import DiffusionPipeline

    if script_args.pretrained_model_name_or_path is None:
        return DEMO.load_pipeline()
    return DiffusionPipeline.from_pretrained(
        script_args.pretrained_model_name_or_path, **from_pretrained_kwargs(script_args, config)
    )



def from_pretrained_kwargs(script_args: ScriptArguments, config: NFTConfig) -> dict:
    """The `from_pretrained` arguments of the flags: revision, variant, and the dtype of accelerate's mixed
    precision."""
    return {"revision": script_args.revision, "variant": script_args.variant,
            "dtype": weight_dtype(config.mixed_precision)}
