import pytest
from transformers import HfArgumentParser

from diffusers_nft import NFTConfig


def test_release_defaults():
    config = NFTConfig()
    assert (config.group_size, config.prompts_per_iteration, config.num_sampling_steps) == (24, 48, 10)
    assert (config.nft_beta, config.kl_beta, config.adv_clip_max) == (1.0, 1e-4, 5.0)
    assert (config.sampler, config.guidance_scale, config.loss_weighting) == ("dpm_solver", 1.0, "x0_adaptive")
    assert (config.learning_rate, config.weight_decay, config.max_grad_norm) == (3e-4, 1e-4, 1.0)
    assert config.train_timesteps == "sampler_grid" and config.timestep_fraction == 0.99
    assert config.old_policy_decay == "linear" and config.ema_decay == 0.9
    assert config.images_per_iteration == 1152


def test_hf_argument_parser_with_diffusers_aliases():
    (config,) = HfArgumentParser(NFTConfig).parse_args_into_dataclasses(
        [
            "--group_size", "4",
            "--max_train_steps", "7",
            "--checkpointing_steps", "3",
            "--checkpoints_total_limit", "2",
            "--validation_prompt", "a cat", "a dog",
            "--reward_weights", "1", "0.5",
            "--gradient_checkpointing",
        ]
    )
    assert config.group_size == 4 and config.max_steps == 7 and config.save_steps == 3
    assert config.save_total_limit == 2 and config.validation_prompts == ["a cat", "a dog"]
    assert config.reward_weights == [1.0, 0.5] and config.gradient_checkpointing is True


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("group_size", 1, "group_size must be >= 2"),
        ("nft_beta", 0.0, r"nft_beta must be a finite number in \(0, inf\)"),
        ("nft_beta", -1.0, r"nft_beta must be a finite number in \(0, inf\)"),
        ("nft_beta", float("inf"), r"nft_beta must be a finite number in \(0, inf\) \(got inf\)"),
        ("adv_clip_max", 0.0, r"adv_clip_max must be a finite number in \(0, inf\)"),
        ("learning_rate", float("inf"), r"learning_rate must be a finite number in \(0, 1\]"),
        ("learning_rate", 1e6, r"learning_rate must be a finite number in \(0, 1\]"),
        ("learning_rate", float("nan"), "learning_rate"),
        ("max_grad_norm", float("inf"), "max_grad_norm"),
        ("reward_weights", [1.0, float("nan")], "reward_weights must be finite"),
        ("logit_std", 0.0, "logit_std"),
        ("kl_beta", -1.0, "kl_beta"),
        ("sampler", "ddim", "sampler must be one of"),
        ("timestep_fraction", 1.5, "timestep_fraction"),
        ("train_timesteps", "beta", "train_timesteps"),
        ("old_policy_decay", "cosine", "old_policy_decay"),
        ("mixed_precision", "fp8", "mixed_precision"),
        ("prompts_per_iteration", 0, "prompts_per_iteration"),
        ("guidance_scale", 0.5, "guidance_scale"),
        ("ema_decay", 1.0, "ema_decay"),
        ("resolution", 500, "multiple of 8"),
    ],
)
def test_bad_values_are_rejected_with_the_fix(field, value, message):
    with pytest.raises(ValueError, match=message):
        NFTConfig(**{field: value})


def test_tf32_is_on_by_default_and_the_flag_turns_it_off(monkeypatch):
    import torch

    from diffusers_nft.engine import use_tf32

    assert NFTConfig().allow_tf32 is True
    (off,) = HfArgumentParser(NFTConfig).parse_args_into_dataclasses(["--allow_tf32", "false"])
    assert off.allow_tf32 is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # what a CUDA machine reports
    for allow, expected in ((off.allow_tf32, False), (NFTConfig().allow_tf32, True)):
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        use_tf32(allow)
        assert torch.backends.cuda.matmul.allow_tf32 is expected and torch.backends.cudnn.allow_tf32 is expected
