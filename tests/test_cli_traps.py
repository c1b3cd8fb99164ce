"""The command line's traps for a diffusers user: each is refused, or does what the flag says, before any loading."""

import pytest
import torch
from datasets import Dataset, DatasetDict

from diffusers_nft import NFTConfig
from diffusers_nft.config import resolved_mixed_precision, weight_dtype
from diffusers_nft.data import load_prompts

from conftest import load_training_script, reach_loading


def _refused(argv, message):
    loaded = []
    with pytest.raises(ValueError, match=message):
        load_training_script().main(argv, load_pipeline=lambda *a: loaded.append(1))
    assert loaded == []


@pytest.fixture
def real(tmp_path):
    """The flags of a real-model run, with a prompt file."""
    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    return ["--pretrained_model_name_or_path", "x", "--output_dir", str(tmp_path / "o")], str(tmp_path / "p.txt")


def test_a_real_model_needs_prompts_and_a_reward(real):
    base, prompts = real
    _refused(base + ["--reward", "jpeg_compressibility"], "needs --dataset_name")
    _refused(base + ["--prompts", prompts], "needs --reward")
    _, config = reach_loading(base + ["--prompts", prompts, "--reward", "jpeg_compressibility"])
    assert config.reward_weights == [1.0]


def test_an_unknown_recipe_is_refused_before_loading(real):
    base, prompts = real
    _refused(base + ["--prompts", prompts, "--recipe", "sd35m_ocrr"], r"Unknown recipe 'sd35m_ocrr'; choose one of")


def test_reward_weights_given_twice_are_refused(real):
    base, prompts = real
    _refused(base + ["--prompts", prompts, "--reward", "pickscore:1", "--reward_weights", "2"], "Give the weights once")


@pytest.mark.parametrize("report_to, message", [
    ("wandb,tensorboardd", "unknown tracker 'tensorboardd'"),
    ("comet_ml", "comet_ml is not installed"),
])
def test_trackers_are_checked_before_loading(real, report_to, message):
    base, prompts = real
    _refused(base + ["--prompts", prompts, "--reward", "jpeg_compressibility", "--report_to", report_to], message)


def test_tracker_lists_reach_accelerate_as_lists():
    assert NFTConfig(report_to="tensorboard").trackers() == ["tensorboard"]
    assert NFTConfig(report_to=" tensorboard , tensorboard").trackers() == ["tensorboard", "tensorboard"]
    assert NFTConfig(report_to="none").trackers() is None and NFTConfig(report_to="all").trackers() == "all"


def test_mixed_precision_defers_to_accelerate(real, monkeypatch):
    base, prompts = real
    flags = base + ["--prompts", prompts, "--reward", "jpeg_compressibility"]
    _, config = reach_loading(flags)
    assert config.mixed_precision is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert resolved_mixed_precision(config.mixed_precision) == "bf16"
    assert weight_dtype(config.mixed_precision) == torch.bfloat16  # what the script loads the weights in
    _, config = reach_loading(flags + ["--mixed_precision", "no"])  # an explicit flag still wins
    assert resolved_mixed_precision(config.mixed_precision) == "no"


def test_trainer_takes_accelerates_mixed_precision(tiny_pipeline, tmp_path, monkeypatch):
    from diffusers_nft import NFTTrainer

    from conftest import PROMPTS, tiny_config

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path), PROMPTS)
    assert trainer.accelerator.mixed_precision == "bf16"
    assert trainer.pipeline.transformer.dtype.is_floating_point and str(trainer.pipeline.transformer.dtype) == "torch.bfloat16"


def test_repeated_validation_prompts_are_all_kept(real):
    base, prompts = real
    _, config = reach_loading(base + ["--prompts", prompts, "--reward", "jpeg_compressibility",
                                       "--validation_prompt", "a", "--validation_prompt", "b c", "d"])
    assert config.validation_prompts == ["a", "b c", "d"]


def test_a_dataset_dict_trains_on_its_split_not_its_keys():
    splits = DatasetDict(train=Dataset.from_dict({"text": ["a cat", "a dog"]}),
                         test=Dataset.from_dict({"text": ["a cow"]}))
    assert load_prompts(splits, "text")["prompt"] == ["a cat", "a dog"]
    assert load_prompts(splits, "text", split="test")["prompt"] == ["a cow"]
    with pytest.raises(ValueError, match=r"splits \['test', 'train'\], not 'validation'"):
        load_prompts(splits, "text", split="validation")


def test_dataset_flags_the_diffusers_way(tmp_path):
    """--dataset_name with a CSV, a parquet file and a save_to_disk folder; --caption_column; --max_train_samples."""
    table = Dataset.from_dict({"caption": ["a cat", "a dog", "a cow"], "tag": ["x", "y", "z"]})
    table.to_csv(str(tmp_path / "p.csv"), index=False)
    table.to_parquet(str(tmp_path / "p.parquet"))
    DatasetDict(validation=table).save_to_disk(str(tmp_path / "saved"))
    for source, split in ((tmp_path / "p.csv", "train"), (tmp_path / "p.parquet", "train"),
                          (tmp_path / "saved", "validation")):
        argv = ["--pretrained_model_name_or_path", "x", "--output_dir", str(tmp_path / "o"), "--reward",
                "jpeg_compressibility", "--dataset_name", str(source), "--caption_column", "caption",
                "--dataset_split", split, "--max_train_samples", "2"]
        script_args, _ = reach_loading(argv)
        prompts = load_prompts(str(source), "caption", split=split, max_samples=2)
        assert prompts["prompt"] == ["a cat", "a dog"] and prompts["tag"] == ["x", "y"], source
    assert script_args.dataset_split == "validation" and script_args.max_train_samples == 2


def test_every_flag_has_help_with_its_default():
    import re

    from transformers import HfArgumentParser

    script = load_training_script()
    parser = HfArgumentParser((script.ScriptArguments, NFTConfig))
    missing = [a.dest for a in parser._actions if a.dest != "help" and not (a.help or "").strip()]
    assert missing == []
    choice_fields = {"sampler", "reward_scoring", "adv_mode", "advantage_std", "loss_weighting", "train_timesteps",
                     "old_policy_decay", "mixed_precision"}
    for action in parser._actions:
        if action.dest in choice_fields:
            assert re.search(r"one of|One of", action.help), action.dest
