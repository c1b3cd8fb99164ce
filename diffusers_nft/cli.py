"""`diffusers-nft`: one installed command, as `trl` and `accelerate` have.

    diffusers-nft train [config.yaml] [--flags]   # any supported pipeline (`examples/train_nft.py`); the demo without one
    diffusers-nft evaluate --lora nft=run/ ...     # base against LoRAs on held-out prompts (`diffusers_nft.evaluate`)
    diffusers-nft serve --reward pickscore         # a reward over HTTP (`diffusers_nft.rewards.serve`)
    diffusers-nft prompts --output_dir geneval     # GenEval-style prompt sets (`diffusers_nft.geneval_prompts`)
    diffusers-nft env                              # versions, devices and accelerate's config, for bug reports

Several processes: `accelerate launch -m diffusers_nft train ...` (or `accelerate launch $(which diffusers-nft)
train ...`). Each subcommand's `--help` lists its flags.
"""

import importlib
import importlib.metadata
import os
import platform
import sys
from typing import Dict, List, Optional

# subcommand -> (module, its entry point, what it does)
COMMANDS = {
    "train": ("diffusers_nft.cli", "train", "Train a LoRA with DiffusionNFT (or --objective flow_grpo)."),
    "evaluate": ("diffusers_nft.evaluate", "main", "Score the base and LoRAs on prompts: a table and a grid."),
    "serve": ("diffusers_nft.rewards.serve", "main", "Serve a reward model over HTTP."),
    "prompts": ("diffusers_nft.geneval_prompts", "main", "Write GenEval-style train/test prompt sets."),
    "env": ("diffusers_nft.cli", "env", "Print versions, devices and accelerate's config (for bug reports)."),
}
PACKAGES = ("diffusers-nft", "torch", "diffusers", "transformers", "peft", "accelerate", "datasets", "huggingface_hub",
            "safetensors", "deepspeed", "wandb", "tensorboard")


def usage() -> str:
    lines = ["usage: diffusers-nft <command> [<args>]", "", "commands:"]
    lines += [f"  {name:<9} {about}" for name, (_, _, about) in COMMANDS.items()]
    return "\n".join(lines + ["", "`diffusers-nft <command> --help` lists a command's flags."])


def main(argv: Optional[List[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] not in COMMANDS:
        print(f"diffusers-nft: unknown command {argv[0]!r}.\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module, function, _ = COMMANDS[argv[0]]
    sys.argv = [f"diffusers-nft {argv[0]}"] + argv[1:]  # each command's --help names itself
    getattr(importlib.import_module(module), function)(argv[1:])


def train(argv: Optional[List[str]] = None) -> None:
    """`diffusers-nft train`: the flags of `examples/train_nft.py`; the pipeline's class from its model_index.json."""
    from .scripts import cli, load_any_pipeline

    cli(load_any_pipeline, argv=argv)


def environment() -> Dict[str, str]:
    """What a bug report needs: versions, the platform, devices and accelerate's default config."""
    info = {"platform": platform.platform(), "python": platform.python_version()}
    for package in PACKAGES:
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            info[f"cuda:{i}"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
        info["cuda"] = str(torch.version.cuda)
    else:
        info["devices"] = f"CPU only ({os.cpu_count()} cores)"
    info["accelerate config"] = _accelerate_config()
    return info


def _accelerate_config() -> str:
    from accelerate.commands.config import default_config_file

    if not os.path.isfile(default_config_file):
        return f"none ({default_config_file} does not exist; `accelerate config` writes it)"
    with open(default_config_file) as f:
        settings = " ".join(line.strip() for line in f if line.strip() and not line.startswith("#"))
    return f"{default_config_file}: {settings}"


def env(argv: Optional[List[str]] = None) -> None:
    """`diffusers-nft env`: paste its output into a bug report."""
    if argv:
        print(f"diffusers-nft env takes no arguments (got {argv}).", file=sys.stderr)
        sys.exit(2)
    print("Copy-and-paste this into your bug report:\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")


if __name__ == "__main__":
    main()
