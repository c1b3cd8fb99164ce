"""`examples/train_nft.py`: any supported pipeline from a folder, through DiffusionPipeline.from_pretrained."""

import json
import logging
import os

import pytest
from safetensors.torch import load_file

from diffusers_nft import scripts
from diffusers_nft.pipelines import TracedFamily

import tiny_pipelines

FLAGS = ["--reward", "jpeg_compressibility", "--resolution", "64", "--max_sequence_length", "16",
         "--max_train_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2", "--num_sampling_steps", "2",
         "--eval_num_steps", "2", "--report_to", "none", "--rank", "4", "--validation_steps", "5"]


@pytest.mark.parametrize("builder, cls, traced", [
    ("build_tiny_zimage_pipeline", "ZImagePipeline", False),
    ("build_tiny_auraflow_pipeline", "AuraFlowPipeline", True),  # no family file: traced
])
def test_train_nft_trains_any_pipeline_from_its_folder(builder, cls, traced, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "examples"))
    import train_nft

    folder = str(tmp_path / "model")
    getattr(tiny_pipelines, builder)().save_pretrained(folder)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\n")
    argv = ["--pretrained_model_name_or_path", folder, "--prompts", str(prompts), "--output_dir",
            str(tmp_path / "out")] + FLAGS
    trainer, script_args, demo = scripts.prepare(argv, train_nft.load_pipeline)
    assert type(trainer.pipeline).__name__ == cls and not demo
    assert isinstance(trainer.family, TracedFamily) == traced
    scripts.run(trainer, script_args, demo)
    assert json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    assert any("lora_B" in k for k in load_file(tmp_path / "out" / "pytorch_lora_weights.safetensors"))


def test_the_family_scripts_are_thin_and_share_the_scripts_module():
    root = os.path.join(os.path.dirname(__file__), "..", "examples")
    for name in ("train_nft.py", "train_nft_sd3.py", "train_nft_flux.py"):
        text = open(os.path.join(root, name)).read()
        assert "from diffusers_nft.scripts import" in text and "import train_nft_sd3" not in text
        assert len(text.splitlines()) < 60


def test_the_command_line_takes_held_out_judges_and_the_guard(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "examples"))
    import train_nft

    from diffusers_nft.guard import HackingGuard

    folder = str(tmp_path / "model")
    tiny_pipelines.build_tiny_sd3_pipeline().save_pretrained(folder)
    (tmp_path / "p.txt").write_text("a red cat\na blue dog\n")
    (tmp_path / "held.txt").write_text("a green tree\na yellow house\n")
    base = ["--pretrained_model_name_or_path", folder, "--prompts", str(tmp_path / "p.txt"), "--output_dir",
            str(tmp_path / "out"), "--eval_prompts", str(tmp_path / "held.txt"), "--eval_reward",
            "jpeg_incompressibility", "--eval_steps", "1"] + FLAGS
    with pytest.raises(ValueError, match="unknown actions"):
        scripts.prepare(base + ["--guard", "warn,panic"], train_nft.load_pipeline)
    trainer, script_args, demo = scripts.prepare(base, train_nft.load_pipeline)
    assert list(trainer.eval_dataset["prompt"]) == ["a green tree", "a yellow house"]
    assert trainer.eval_rewards.names == ["jpeg_incompressibility"]
    assert any(isinstance(c, HackingGuard) for c in trainer.callbacks.callbacks)
    scripts.run(trainer, script_args, demo)
    first = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])
    assert "eval/jpeg_incompressibility/mean" in first and "monitor/diversity" in first
    assert json.loads((tmp_path / "out" / "best" / "best.json").read_text())["judge"] == "jpeg_incompressibility"


def test_the_command_line_trains_flow_grpo_and_the_card_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "examples"))
    import train_nft

    from diffusers_nft.objectives import FlowGRPOObjective

    folder = str(tmp_path / "model")
    tiny_pipelines.build_tiny_sd3_pipeline().save_pretrained(folder)
    (tmp_path / "p.txt").write_text("a red cat\na blue dog\n")
    argv = ["--pretrained_model_name_or_path", folder, "--prompts", str(tmp_path / "p.txt"), "--output_dir",
            str(tmp_path / "out"), "--objective", "flow_grpo", "--grpo_guidance_scale", "3", "--grpo_kl_beta",
            "0.1", "--train_batch_size", "2"] + FLAGS  # 2 sample batches: one per optimizer step (the reference's 2)
    trainer, script_args, demo = scripts.prepare(argv, train_nft.load_pipeline)
    assert isinstance(trainer.objective, FlowGRPOObjective)
    assert (trainer.objective.guidance_scale, trainer.objective.kl_beta, trainer.objective.clip_range) == (3, 0.1, 1e-4)
    with caplog.at_level(logging.INFO, logger="diffusers_nft.scripts"):
        scripts.run(trainer, script_args, demo)
    split = caplog.text[caplog.text.index("Where the time went"):]
    history = trainer.history
    sampled = sum(row["time/sampling"] for row in history)
    assert "training loop: sampling" in split and f"{sampled:8.1f} s" in split and "model card and upload" in split
    first = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])
    assert "grpo/clip_fraction" in first and "r/mean" not in first
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "grpo_clip_range" in card and "nft_beta" not in card
    assert "trained with **Flow-GRPO**" in card and "DiffusionNFT" not in card
