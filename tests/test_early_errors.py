"""Mistakes are caught before the model loads or computes, with the file, line or setting named."""

import os
import subprocess
import sys

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import CheckpointError
from diffusers_nft.data import load_prompts
from diffusers_nft.rewards import RewardError, WeightedRewards

from conftest import PROMPTS, load_training_script, run_tiny, small_lora, tiny_config

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "examples", "train_nft_sd3.py")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--reward", "pickscor"], "Unknown reward 'pickscor'"),
        (["--reward", "pickscore:abc"], "the weight 'abc' is not a number"),
        (["--lora_alpha", "0"], "lora_alpha must be"),
        (["--rank", "0"], "LoRA rank must be"),
        (["--resume_from_checkpoint", "/no/such/checkpoint-3"], "does not exist"),
        (["--prompts", "/no/such/file.txt"], "No such file|nonexistent|not exist|doesn't exist|cannot find|Couldn't find"),
    ],
)
def test_script_checks_before_loading_the_model(flags, message, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    loaded = []
    argv = ["--pretrained_model_name_or_path", "x", "--prompts", str(prompts), "--output_dir", str(tmp_path / "o"),
            "--reward", "jpeg_compressibility"]
    with pytest.raises((ValueError, OSError), match=message):
        load_training_script().main(argv + flags, load_pipeline=lambda *args: loaded.append(1))
    assert loaded == []


@pytest.mark.slow
def test_script_reports_a_setup_error_in_one_line(tmp_path):
    """Slow: the script as a subprocess; in miniature:
    test_early_errors.py::test_script_checks_before_loading_the_model.
    """
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a cat\nb\xff dog\n")
    result = subprocess.run([sys.executable, SCRIPT, "--pretrained_model_name_or_path", "x", "--prompts", str(bad),
                             "--reward", "jpeg_compressibility"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{bad}, line 2: not UTF-8" in errors[0]
    assert "Traceback" not in result.stderr


def test_prompt_files_name_the_bad_line(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"prompt": "a cat"}\n{"prompt": "a dog"\n')
    with pytest.raises(ValueError, match=r"p.jsonl, line 2: not a JSON record"):
        load_prompts(str(jsonl))
    listing = tmp_path / "q.jsonl"
    listing.write_text('{"prompt": "a"}\n["a list"]\n')
    with pytest.raises(ValueError, match=r"line 2: a JSON object with a 'prompt'"):
        load_prompts(str(listing))


@pytest.mark.parametrize("resolution, message", [(72, "multiples of 16.*64 or 80"), (8, "multiples of 16.*Use 16"),
                                                 (256, "position embedding allows")])
def test_resolutions_the_transformer_cannot_take_fail_up_front(tiny_pipeline, tmp_path, resolution, message):
    with pytest.raises(ValueError, match=message):
        NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, resolution=resolution), PROMPTS)


def test_rewards_of_the_wrong_kind_are_named():
    images, prompts = torch.rand(2, 3, 8, 8), ["a", "b"]
    for output, kind in ((torch.ones(2, dtype=torch.complex64), "complex"), (torch.empty(2, device="meta"), "meta")):
        with pytest.raises(RewardError, match=kind):
            WeightedRewards(lambda images, prompts, metadata, output=output: output)(images, prompts, [{}, {}])


def _resumable_run(pipeline_dir, output_dir):
    """`run(max_steps, resume, rank, alpha, reward, prompts, **config)`: a run with a checkpoint every iteration."""
    def run(max_steps, resume=None, rank=4, alpha=16, reward="jpeg_incompressibility", prompts=PROMPTS, **overrides):
        pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
        config = tiny_config(output_dir, max_steps=max_steps, save_steps=1, resume_from_checkpoint=resume, **overrides)
        trainer = NFTTrainer(pipe, reward, config, prompts, peft_config=small_lora(pipe.transformer, rank, alpha))
        trainer.train()
        return trainer

    return run


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_resume_refuses_other_geometry_and_another_lora_rank(tiny_pipeline_dir, tmp_path):
    run = _resumable_run(tiny_pipeline_dir, tmp_path)
    run(1)
    with pytest.raises(CheckpointError, match=r"group_size: 4 -> 2"):
        run(2, resume="latest", group_size=2)
    with pytest.raises(CheckpointError, match=r"seed: 0 -> 1"):
        run(2, resume="latest", seed=1)
    with pytest.raises(CheckpointError, match=r"LoRA rank differs \(checkpoint 4, this run 8\).*--rank 4"):
        run(2, resume="latest", rank=8)
    with pytest.warns(UserWarning, match=r"learning_rate: 0.001 -> 0.002"):
        assert run(2, resume="latest", learning_rate=2e-3).global_step == 2


def test_script_checks_lora_layers_from_the_config_before_loading_weights(tiny_pipeline_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    loaded = []
    argv = ["--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts", str(prompts), "--reward", "jpeg_compressibility",
            "--output_dir", str(tmp_path / "o"), "--lora_layers", "attn.to_q,attn.nonexistent"]
    with pytest.raises(ValueError, match=r"\['attn.nonexistent'\] match no linear module"):
        load_training_script().main(argv, load_pipeline=lambda *args: loaded.append(1))
    assert loaded == []


def test_resume_warns_that_a_decaying_schedule_is_stretched_to_a_new_length():
    from diffusers_nft.config import resume_differences

    assert resume_differences({"max_steps": 2, "lr_scheduler_type": "cosine"},
                              {"max_steps": 4, "lr_scheduler_type": "cosine"}) == ([], ["max_steps: 2 -> 4"])
    assert resume_differences({"max_steps": 2, "lr_scheduler_type": "constant"},
                              {"max_steps": 4, "lr_scheduler_type": "constant"}) == ([], [])


def test_resume_refuses_another_trained_function_and_warns_on_other_prompts(tiny_pipeline_dir, tmp_path):
    run = _resumable_run(tiny_pipeline_dir, tmp_path)
    run(1)
    with pytest.raises(CheckpointError, match=r"trained another function \(lora_alpha: 16 -> 64\)"):
        run(2, resume="latest", alpha=64)
    with pytest.raises(CheckpointError, match=r"rewards: \['jpeg_incompressibility'\] -> \['jpeg_compressibility'\]"):
        run(2, resume="latest", reward="jpeg_compressibility")
    with pytest.raises(CheckpointError, match=r"reward_weights: \[1.0\] -> \[2.0\]"):
        run(2, resume="latest", reward_weights=[2.0])
    others = [p.upper() for p in PROMPTS]  # as many prompts, other ones
    with pytest.warns(UserWarning, match="another prompt set"):
        assert run(2, resume="latest", prompts=others).global_step == 2


SLOW = pytest.mark.slow  # a run each; the first two stand for them in the fast set


@pytest.mark.parametrize("edit, message", [
    (dict(global_step=-3), "global_step -3 and optimizer_step"),
    (dict(config=None), "it has no 'config'"),
    pytest.param(dict(global_step=1e300), "global_step 1e[+]300", marks=SLOW),
    pytest.param(dict(global_step=True), "global_step True", marks=SLOW),
    pytest.param(dict(prompt_sampler={"epoch": 0, "position": -1, "num_prompts": 4}),
                 "prompt_sampler .* needs whole epoch", marks=SLOW),
    pytest.param(dict(history="rows"), "'history' must be a list", marks=SLOW),
])
def test_every_field_of_a_resumed_state_is_checked_before_compute(tiny_pipeline_dir, tmp_path, edit, message):
    import json

    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=1, save_steps=1)
    state_file = tmp_path / "checkpoint-1" / "trainer_state.json"
    state = {**json.loads(state_file.read_text()), **edit}
    state_file.write_text(json.dumps(state))
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=rf"checkpoint-1/trainer_state.json: {message}"):
        run_tiny(tiny_pipeline_dir, tmp_path, max_steps=2, resume="latest", save_steps=1)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics


@pytest.mark.parametrize("flags, message", [
    (["--lora_layers", "0"], r"LoRA target '0' also names .* not linear layers \(such as 'transformer_blocks.0'\)"),
    (["--group_size", "1000000000"], r"= 48000000000 images per iteration, more than 65,536"),
    (["--seed", str(2**40)], r"seed must be in \[0, 2\*\*32\)"),
    (["--seed", "-1"], r"seed must be in \[0, 2\*\*32\)"),
])
def test_what_can_be_bounded_is_refused_before_the_model_loads(tiny_pipeline_dir, tmp_path, flags, message):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    loaded = []
    argv = ["--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts", str(prompts), "--reward",
            "jpeg_compressibility", "--output_dir", str(tmp_path / "o"), *flags]
    with pytest.raises(ValueError, match=message):
        load_training_script().main(argv, load_pipeline=lambda *args: loaded.append(1))
    assert loaded == []
