"""NaN and inf never reach a saved LoRA: bad settings fail up front, bad steps stop the run or are skipped."""

import json
import os

import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import clean_incomplete, list_checkpoints, save_checkpoint
from diffusers_nft.rewards import RewardError
from diffusers_nft.trainer import NonFiniteError

from conftest import PROMPTS, load_training_script, tiny_config


def _trainer(pipeline_dir, output_dir, reward="jpeg_incompressibility", **overrides):
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    return NFTTrainer(pipe, reward, tiny_config(output_dir, **overrides), PROMPTS)


def _poison_one_training_forward(trainer, call_number):
    """Make the `call_number`-th training forward of theta return NaN (sampling forwards run under no_grad)."""
    predict, calls = trainer.family.predict_velocity, []

    def poisoned(latents, sigma, cond):
        v = predict(latents, sigma, cond)
        if torch.is_grad_enabled():
            calls.append(1)
            if len(calls) == call_number:
                return v * float("nan")
        return v

    trainer.family.predict_velocity = poisoned


def test_a_non_finite_loss_stops_the_run_and_nothing_is_saved(tiny_pipeline_dir, tmp_path):
    trainer = _trainer(tiny_pipeline_dir, tmp_path, max_steps=2)
    _poison_one_training_forward(trainer, call_number=2)
    with pytest.raises(NonFiniteError, match="skip_nonfinite"):
        trainer.train()
    assert not os.path.exists(tmp_path / "pytorch_lora_weights.safetensors")


def test_a_non_finite_loss_stops_the_run_even_when_its_gradient_is_finite(tiny_pipeline_dir, tmp_path):
    # Under fp16's gradient scaler (and DeepSpeed) the gradient norm is not read, so the loss is checked itself: here
    # it is inf while its gradient (0) is finite, and the LoRA must not move.
    trainer = _trainer(tiny_pipeline_dir, tmp_path, max_steps=1)
    call = trainer.objective.__call__

    class InfiniteLoss(type(trainer.objective)):
        def __call__(self, *args, **kwargs):
            out = call(*args, **kwargs)
            out.loss = out.loss * 0 + float("inf")
            return out

    trainer.objective.__class__ = InfiniteLoss
    before = trainer.policy.state_dict("default")
    with pytest.raises(NonFiniteError, match="not finite"):
        trainer.step()
    after = trainer.policy.state_dict("default")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_skip_nonfinite_skips_the_step_and_saves_a_finite_lora(tiny_pipeline_dir, tmp_path):
    trainer = _trainer(tiny_pipeline_dir, tmp_path, max_steps=2, gradient_accumulation_steps=3, skip_nonfinite=True)
    _poison_one_training_forward(trainer, call_number=2)
    history = trainer.train()
    assert history[-1]["skipped_steps"] == 1 and trainer.optimizer_step == 4
    weights = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_non_finite_lora_is_never_saved(tiny_pipeline_dir, tmp_path):
    trainer = _trainer(tiny_pipeline_dir, tmp_path, save_ema_weights=False)
    with torch.no_grad():
        trainer.policy.trainable_parameters()[0].fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="not saved"):
        trainer.save_lora(str(tmp_path))
    assert not os.path.exists(tmp_path / "pytorch_lora_weights.safetensors")


def test_rewards_are_checked_in_float32_and_their_weighted_sum_too(tiny_pipeline_dir, tmp_path):
    huge = lambda images, prompts, metadata: [1e39] * len(prompts)  # finite in float64, inf in float32
    with pytest.raises(RewardError, match="float32"):
        _trainer(tiny_pipeline_dir, tmp_path / "a", reward=huge)
    big = lambda images, prompts, metadata: [3e38] * len(prompts)
    trainer = _trainer(tiny_pipeline_dir, tmp_path / "b", reward=[big, big])
    with pytest.raises(RewardError, match="weighted sum"):
        trainer.step()
    with pytest.raises(ValueError, match="finite"):
        _trainer(tiny_pipeline_dir, tmp_path / "c", reward=["jpeg_compressibility"]).rewards.__class__(
            ["jpeg_compressibility"], [float("nan")])


def test_script_refuses_a_nan_reward_weight_before_loading_the_model(tmp_path):
    script = load_training_script()
    loaded = []
    with pytest.raises(ValueError, match="reward_weights must be finite"):
        script.main(["--pretrained_model_name_or_path", "x", "--prompts", "p.txt", "--output_dir", str(tmp_path),
                     "--reward", "jpeg_compressibility:nan"], load_pipeline=lambda *a: loaded.append(1))
    assert loaded == []


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_metrics_have_no_duplicate_rows_after_a_resume(tiny_pipeline_dir, tmp_path):
    _trainer(tiny_pipeline_dir, tmp_path, max_steps=3, save_steps=2).train()
    _trainer(tiny_pipeline_dir, tmp_path, max_steps=4, save_steps=2, resume_from_checkpoint="latest").train()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4]


def test_a_rotation_cut_short_never_leaves_a_checkpoint_that_counts(tmp_path, monkeypatch):
    import diffusers_nft.checkpoints.folder as checkpoint

    for step in (1, 2):
        save_checkpoint(str(tmp_path), step, {"trainer_state.json": {"step": step}, "a.json": {}, "b.json": {}})
    real_rmtree = checkpoint.shutil.rmtree

    def interrupted(path, ignore_errors=False):
        if not os.path.exists(path):
            return
        for name in sorted(os.listdir(path)):  # deletes the parts, then dies before the state file goes
            if name != "trainer_state.json":
                os.remove(os.path.join(path, name))
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.shutil, "rmtree", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(str(tmp_path), 3, {"trainer_state.json": {"step": 3}}, total_limit=1)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["checkpoint-2", "checkpoint-3"]
    clean_incomplete(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-2", "checkpoint-3"]


def test_the_final_lora_is_replaced_whole_or_not_at_all(tiny_pipeline_dir, tmp_path, monkeypatch):
    trainer = _trainer(tiny_pipeline_dir, tmp_path)
    path = trainer.save_lora(str(tmp_path))
    before = open(path, "rb").read()
    save = type(trainer.pipeline).save_lora_weights

    def crashes_half_way(folder, weight_name, **kwargs):
        with open(os.path.join(folder, weight_name), "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(type(trainer.pipeline), "save_lora_weights", crashes_half_way)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_lora(str(tmp_path))
    assert open(path, "rb").read() == before  # the earlier LoRA is untouched
    monkeypatch.setattr(type(trainer.pipeline), "save_lora_weights", save)
    clean_incomplete(str(tmp_path))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
