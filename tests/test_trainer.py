import json
import math
import os
import re

import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler, StableDiffusion3Pipeline
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import CheckpointError
from diffusers_nft.rewards import RewardError
from diffusers_nft.lora_file import portable_lora

from conftest import PROMPTS, max_diff, small_lora, step_and_check_the_soft_update, tiny_config


def test_iteration_metrics_files_and_metadata(tiny_pipeline, tmp_path):
    seen_metadata = []

    def brightness(images, prompts, metadata):
        seen_metadata.extend(metadata)
        assert images.shape[1:] == (3, 64, 64) and 0 <= images.min() and images.max() <= 1
        return images.mean(dim=(1, 2, 3))

    prompts = [{"prompt": p, "index": i} for i, p in enumerate(PROMPTS)]
    config = tiny_config(tmp_path, validation_steps=2, reward_weights=[2.0, 1.0])
    trainer = NFTTrainer(tiny_pipeline, [brightness, "jpeg_compressibility"], config, prompts)
    history = trainer.train()
    assert [m["step"] for m in history] == [1, 2]
    metrics = history[-1]
    for key in (
        "reward/total/mean", "reward/total/std", "reward/brightness/mean", "reward/jpeg_compressibility/std",
        "r/mean", "r/std", "zero_variance_groups", "loss/policy", "loss/kl", "x0_norm", "old_theta_deviation",
        "lr", "time/sampling", "time/reward", "time/training", "images_per_second", "sample_x0_norm",
    ):
        assert math.isfinite(metrics[key]), key
    assert metrics["lr"] == pytest.approx(1e-3) and metrics["old_theta_deviation"] > 0
    assert metrics["reward/total/mean"] == pytest.approx(
        2 * metrics["reward/brightness/mean"] + metrics["reward/jpeg_compressibility/mean"], rel=1e-5
    )
    # r is centred per group: its mean over the whole batch is 0.5
    assert metrics["r/mean"] == pytest.approx(0.5, abs=1e-6)
    # metadata columns reach the rewards, the probe's two rows first
    assert {m["index"] for m in seen_metadata} <= set(range(len(PROMPTS))) and len(seen_metadata) == 2 + 2 * 8
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["step"] for l in lines] == [1, 2]
    curve = Image.open(tmp_path / "reward_curve.png")
    assert curve.size[0] > 100
    grids = sorted(os.listdir(tmp_path / "samples"))
    assert grids == ["step_000000.png", "step_000002.png"]
    assert Image.open(tmp_path / "samples" / grids[0]).size[0] >= 2 * 64


@pytest.mark.slow  # long: in CI (--runslow), not in the default set
def test_training_moves_a_latent_reward(tiny_pipeline, tmp_path):
    """End to end on a reward the tiny random pipeline can express: the red channel of a latent-to-RGB map."""
    config = tiny_config(tmp_path, max_steps=20, prompts_per_iteration=2, group_size=8, sample_batch_size=16,
                         train_batch_size=16, gradient_accumulation_steps=1, kl_beta=0.0)
    trainer = NFTTrainer(tiny_pipeline, lambda images, prompts, metadata: images[:, 0].mean(dim=(1, 2)), config, PROMPTS)
    trainer.family.decode = lambda latents: torch.sigmoid(latents[:, :3])  # a decoder that follows the latents
    history = trainer.train()
    first = sum(m["reward/total/mean"] for m in history[:2]) / 2
    last = sum(m["reward/total/mean"] for m in history[-2:]) / 2
    spread = history[0]["reward/total/std"]
    assert last - first > 1.5 * spread, (first, last, spread)


@pytest.mark.slow  # 3 runs; the rollouts test checks the reference forward's place
def test_kl_beta_zero_skips_the_reference_forward(tiny_pipeline_dir, tmp_path):
    # the drift monitors add one reference forward per iteration without a KL term, none with one; with a KL term
    # old and reference are one forward of twice the batch, after one probe forward (`frozen_pair`)
    for kl_beta, monitors, forwards_per_micro_step, monitor_forwards in ((0.0, False, 2, 0), (0.0, True, 2, 1),
                                                                         (1e-4, True, 2, 1)):
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        calls = []
        pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
        config = tiny_config(tmp_path / f"{kl_beta}-{monitors}", max_steps=1, kl_beta=kl_beta, monitors=monitors)
        trainer = NFTTrainer(pipe, "jpeg_compressibility", config, PROMPTS)
        calls.clear()
        metrics = trainer.step()
        sampling = config.images_per_iteration // config.sample_batch_size * config.num_sampling_steps
        micro_steps = math.ceil(config.images_per_iteration / config.train_batch_size) * 3  # int(0.99 * 4) = 3
        assert len(calls) == sampling + forwards_per_micro_step * micro_steps + monitor_forwards
        assert metrics["loss/kl"] == 0  # theta equals the base model until the first optimizer step
        assert (trainer.step()["loss/kl"] > 0) == (kl_beta > 0)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
@pytest.mark.parametrize("save_ema_weights", [True, False])
def test_saved_lora_loads_into_a_fresh_pipeline(tiny_pipeline_dir, tmp_path, save_ema_weights):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    config = tiny_config(tmp_path, max_steps=3, learning_rate=3e-2, save_ema_weights=save_ema_weights)
    trainer = NFTTrainer(pipe, "jpeg_compressibility", config, PROMPTS, peft_config=small_lora(pipe.transformer, 4, 16))
    trainer.train()
    saved = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert all(k.startswith("transformer.") and "lora" in k for k in saved)
    expected, _ = portable_lora(trainer.policy.state_dict("ema" if save_ema_weights else "default"),
                                trainer.policy.lora_config)  # alpha / r folded into lora_B
    assert max_diff({k[len("transformer."):]: v for k, v in saved.items()}, expected) == 0

    def render(pipeline):
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
        return pipeline(["a red cat", "a blue dog"], latents=latents, num_inference_steps=4, guidance_scale=1.0,
                        max_sequence_length=16, output_type="pt").images

    with trainer.policy.ema_weights(save_ema_weights):
        trained = render(trainer.pipeline)
    fresh = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    fresh.set_progress_bar_config(disable=True)
    base = render(fresh)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    loaded = render(fresh)
    assert (trained - base).abs().max() > 1e-3  # the LoRA changes the output...
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)  # ...and alpha != r reloads exactly


def _render(pipeline):
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    return pipeline(["a red cat", "a blue dog"], latents=latents, num_inference_steps=4, guidance_scale=1.0,
                    max_sequence_length=16, output_type="pt").images


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_after_training_the_pipeline_is_the_saved_lora_alone(tiny_pipeline_dir, tmp_path):
    """train() leaves the user's pipeline with one LoRA adapter holding the saved (EMA) weights, active: it draws
    what the saved file draws, and loading that file beside it makes two adapters, not three."""
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    trainer = NFTTrainer(pipe, "jpeg_compressibility", tiny_config(tmp_path, max_steps=3, learning_rate=3e-2), PROMPTS)
    trainer.train()
    assert set(pipe.transformer.peft_config) == {"default"}
    after = _render(pipe)
    fresh = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    fresh.set_progress_bar_config(disable=True)
    base = _render(fresh)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert (after - base).abs().max() > 1e-3
    torch.testing.assert_close(after, _render(fresh), atol=1e-5, rtol=1e-5)
    pipe.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors", adapter_name="loaded")
    assert pipe.get_list_adapters() == {"transformer": ["default", "loaded"]}
    pipe.delete_adapters("loaded")

    # the trainer still generates with every set of weights, and a further step trains on from theta's own weights
    ema, trained = (trainer.generate(["a red cat"], [0], weights=w) for w in ("ema", "trained"))
    assert (ema - trained).abs().max() > 1e-4
    torch.testing.assert_close(trainer.generate(["a red cat"], [0], weights="ema"), ema)
    theta = trainer.policy.state_dict("trained")  # theta's own weights, kept aside while the adapter holds the EMA
    assert max_diff(theta, trainer.policy.state_dict("ema")) > 1e-4
    trainer.policy.resume()
    assert set(pipe.transformer.peft_config) == {"default", "old"} and trainer.policy.published is None
    assert max_diff(theta, trainer.policy.state_dict("trained")) == 0  # back in the trainable adapter
    metrics = trainer.step()
    assert metrics["old_theta_deviation"] > 0 and max_diff(theta, trainer.policy.state_dict("trained")) > 0


def test_generate_with_each_policy_and_cfg(tiny_pipeline, tmp_path):
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path), PROMPTS)
    a = trainer.generate(["a red cat"] * 2, [0, 1], weights="base")
    b = trainer.generate(["a red cat"] * 2, [0, 1], weights="base")
    assert a.shape == (2, 3, 64, 64) and torch.equal(a, b) and not torch.equal(a[0], a[1])
    cfg = trainer.generate(["a red cat"] * 2, [0, 1], weights="base", guidance_scale=4.0)
    assert (cfg - a).abs().max() > 1e-4
    # Heun through the pipeline's own call: 2 transformer calls per step but the last (5 for 3 steps), the old
    # policy (a copy of theta, whose LoRA B starts at 0) draws what the base draws, and the image is not Euler's
    heun = FlowMatchHeunDiscreteScheduler.from_config(trainer.pipeline.scheduler.config)
    calls = []
    hook = trainer.pipeline.transformer.register_forward_hook(lambda *_: calls.append(1))
    heun_images = trainer.generate(["a red cat"], [0], weights="old", scheduler=heun, num_steps=3)
    hook.remove()
    assert heun_images.shape == (1, 3, 64, 64) and len(calls) == 5
    torch.testing.assert_close(heun_images, trainer.generate(["a red cat"], [0], weights="base", scheduler=heun,
                                                             num_steps=3), rtol=0, atol=1e-6)
    assert (heun_images - trainer.generate(["a red cat"], [0], weights="base", num_steps=3)).abs().max() > 1e-4


def test_errors_before_any_compute(tiny_pipeline, tmp_path):
    def build(**overrides):
        reward = overrides.pop("reward", "jpeg_compressibility")
        prompts = overrides.pop("prompts", PROMPTS)
        peft_config = overrides.pop("peft_config", None)
        return NFTTrainer(tiny_pipeline, reward, tiny_config(tmp_path, **overrides), prompts, peft_config=peft_config)

    with pytest.raises(ValueError, match="empty"):
        build(prompts=[])
    # values NFTConfig accepts, that only the trainer can refuse (NFTConfig's own checks are in test_config.py)
    with pytest.raises(ValueError, match="optimizer_steps_per_iteration=5 must divide it"):
        build(optimizer_steps_per_iteration=5)
    with pytest.raises(ValueError, match="resolution 72 does not suit"):
        build(resolution=72)
    changed = tiny_config(tmp_path)
    changed.nft_beta = 0  # a config edited after it was built is checked again
    with pytest.raises(ValueError, match="nft_beta must be a finite number in"):
        NFTTrainer(tiny_pipeline, "jpeg_compressibility", changed, PROMPTS)
    with pytest.raises(RewardError, match="Reward '<lambda>' raised ZeroDivisionError"):
        build(reward=lambda images, prompts, metadata: [1 / 0])
    with pytest.raises(RewardError, match="returned nan for the image of prompt"):
        build(reward=lambda images, prompts, metadata: [float("nan")] * len(prompts))
    with pytest.raises(RewardError, match="returned 3 values for 2 images"):
        build(reward=lambda images, prompts, metadata: [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="gradient_accumulation_steps=5 must divide"):
        build(gradient_accumulation_steps=5)
    with pytest.raises(CheckpointError, match="does not exist"):
        build(resume_from_checkpoint=str(tmp_path / "checkpoint-9"))
    from peft import LoraConfig

    with pytest.raises(ValueError, match="match no linear module"):
        build(peft_config=LoraConfig(r=4, target_modules=["attn.query"]))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(blocker / "out"), PROMPTS)
    # none of the failures above touched the model
    assert not any("lora" in n for n, _ in tiny_pipeline.transformer.named_parameters())


def test_non_flow_matching_pipeline_is_rejected(tiny_pipeline, tmp_path):
    tiny_pipeline.scheduler = EulerDiscreteScheduler()
    with pytest.raises(ValueError, match="not a flow-matching scheduler"):
        NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path), PROMPTS)


def test_unsupported_pipeline_family(tmp_path):
    class NotAPipeline:
        scheduler = StableDiffusion3Pipeline  # placeholder, replaced below

    from diffusers import FlowMatchEulerDiscreteScheduler

    NotAPipeline.scheduler = FlowMatchEulerDiscreteScheduler()
    with pytest.raises(ValueError, match="NotAPipeline has no `transformer` to train.*family files serve"):
        NFTTrainer(NotAPipeline(), "jpeg_compressibility", tiny_config(tmp_path), PROMPTS)


def test_bf16_mixed_precision_gradient_checkpointing_and_offload(tiny_pipeline, tmp_path):
    config = tiny_config(tmp_path, mixed_precision="bf16", gradient_checkpointing=True, offload_text_encoders=True)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    metrics = step_and_check_the_soft_update(trainer, rtol=1e-2)  # the old adapter itself is in bf16
    assert tiny_pipeline.transformer.dtype == torch.bfloat16
    assert {p.dtype for p in trainer.policy.trainable_parameters()} == {torch.float32}
    assert tiny_pipeline.transformer.is_gradient_checkpointing
    assert math.isfinite(metrics["loss/policy"]) and metrics["grad_norm"] > 0


@pytest.mark.slow  # 3 s; test_scoring_remote compares the modes on their own
def test_reward_scoring_modes_give_the_same_rewards(tiny_pipeline_dir, tmp_path):
    means = {}
    for mode in ("sync", "thread", "process"):
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        config = tiny_config(tmp_path / mode, reward_scoring=mode, normalize_rewards=True, reward_weights=[1.0, 2.0])
        trainer = NFTTrainer(pipe, ["jpeg_incompressibility", "jpeg_compressibility"], config, PROMPTS)
        metrics = trainer.step()
        means[mode] = (metrics["reward/total/mean"], metrics["reward/jpeg_incompressibility/mean"], metrics["r/std"])
        trainer.scorer.close()
    assert means["sync"] == means["thread"] == means["process"]


def test_startup_block_and_a_log_line_per_artifact(tiny_pipeline, tmp_path, caplog):
    """What will run is said before the first iteration; each checkpoint, grid and the LoRA get a line; the end lists
    the artifacts and the tensorboard command."""
    import logging

    config = tiny_config(tmp_path, save_steps=1, validation_steps=2, report_to="tensorboard")
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    with caplog.at_level(logging.INFO, logger="diffusers_nft"):
        trainer.train()
    # accelerate's logger names the process: "[RANK 0] ..."
    messages = [r.getMessage().removeprefix("[RANK 0] ") for r in caplog.records if r.name.startswith("diffusers_nft")]
    block = messages[0]
    assert block.startswith("Training DiffusionNFT:")
    assert "2 prompts x 4 images = 8 images (8 per process, 1 process)" in block and "4 dpm_solver steps, no CFG" in block
    steps, levels = trainer.plan.optimizer_steps, trainer.plan.levels_per_image
    assert f"{levels} noise levels per image, 1 optimizer step per iteration, {2 * steps} in all" in block
    assert "2 (from 0 to max_steps 2)" in block and "jpeg_compressibility x 1" in block
    assert str(tmp_path) in block and "tensorboard" in block
    lora = trainer.policy.trainable_parameters()
    assert f"  trainable   {sum(p.numel() for p in lora):,} LoRA parameters (rank 32, alpha 64) in {len(lora) // 2} " \
           "modules" in block
    assert "  precision   mixed precision no: frozen weights in float32, the LoRA in float32" in block
    assert "  device      cpu (" in block
    saved = [m.split()[-1] for m in messages if m.startswith("Saved ")]
    assert saved == [
        str(tmp_path / "samples" / "step_000000.png"), str(tmp_path / "checkpoint-1"),
        str(tmp_path / "checkpoint-2"), str(tmp_path / "samples" / "step_000002.png"),
        str(tmp_path / "pytorch_lora_weights.safetensors"),
    ]
    assert all(os.path.exists(path) for path in saved)
    summary = messages[-1]
    assert "pytorch_lora_weights.safetensors" in summary and "2 checkpoints: checkpoint-1, checkpoint-2" in summary
    assert f"tensorboard --logdir {tmp_path / 'logs'}" in summary
    reward = trainer.history[-1]["reward/total/mean"]
    assert re.search(rf"Done after 2 iterations: [\d.]+ s, [\d.]+ images/s, final reward {reward:.4g}\.", summary)


@pytest.mark.slow  # a 2-step run
def test_output_to_a_file_has_no_nested_bar_escape_codes(tiny_pipeline, tmp_path, capfd, monkeypatch):
    """Off a terminal the inner sampling bar is off, so a log file never holds cursor-movement codes; on a
    terminal it is drawn."""
    import sys

    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path), PROMPTS)
    trainer.train()
    err = capfd.readouterr().err
    assert "NFT:" in err and "sampling" not in err and "\x1b[" not in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    trainer.args.max_steps = 3
    trainer.state.max_steps = 3
    trainer.train()
    assert "sampling" in capfd.readouterr().err


@pytest.mark.slow  # a run with a card
def test_our_own_calls_raise_no_deprecation_warning(tmp_path):
    """Loading the demo pipeline, training, the card: no library tells us that a call of ours is deprecated."""
    import warnings

    from diffusers_nft.demo import load_demo_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = load_demo_pipeline()
        config = tiny_config(tmp_path, resolution=32, max_sequence_length=32, max_steps=1, validation_prompts=["a cat"])
        trainer = NFTTrainer(pipe, "jpeg_compressibility", config, PROMPTS)
        trainer.train()
        trainer.create_model_card("someone/x")
    deprecations = [f"{w.category.__name__}: {w.message}" for w in caught
                    if issubclass(w.category, (DeprecationWarning, FutureWarning)) or "deprecat" in str(w.message).lower()]
    assert deprecations == []


def _active_policy(transformer) -> str:
    """Which weights the transformer computes with now, read off its first PEFT LoRA layer."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layer = next(m for m in transformer.modules() if isinstance(m, BaseTunerLayer))
    return "reference" if layer.disable_adapters else layer.active_adapters[0]


@pytest.mark.parametrize("paired", [True, False])
def test_rollouts_come_from_the_old_policy_and_each_micro_step_sees_its_own_x_t(tiny_pipeline, tmp_path, paired):
    # One iteration with a KL term, after one already trained (old and theta differ): every sampling call runs the
    # old adapter; each training micro-step runs old and reference (one call of twice the batch once the first
    # micro-step's probe allowed it, else two calls), then theta; and the x_t theta sees is built from the very x0
    # (a rollout's clean latents), sigma and noise the loss is given.
    config = tiny_config(tmp_path, max_steps=2, kl_beta=1e-4, monitors=False, batch_frozen_forwards=paired)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    trainer.step()
    assert trainer.objective.old_and_reference.batched is paired
    calls, losses, collected = [], [], []
    predict, loss, collect = trainer.family.predict_velocity, trainer.objective.loss, trainer.collector.collect

    def spy_predict(latents, sigma, cond):
        calls.append((_active_policy(trainer.pipeline.transformer), torch.is_grad_enabled(), latents.detach().clone(),
                      sigma.detach().clone()))
        return predict(latents, sigma, cond)

    def spy_loss(v_theta, v_old, **kwargs):
        losses.append({k: v.detach().clone() for k, v in kwargs.items() if v is not None})
        return loss(v_theta, v_old, **kwargs)

    trainer.family.predict_velocity = spy_predict
    trainer.objective.loss = spy_loss
    for name in ("kl_beta", "adv_clip_max", "needs_reference", "norm_guard_weight"):
        setattr(spy_loss, name, getattr(loss, name))
    trainer.collector.collect = lambda *a, **k: collected.append(collect(*a, **k)) or collected[-1]
    trainer.step()
    sampling = config.images_per_iteration // config.sample_batch_size * config.num_sampling_steps
    assert [(policy, grad) for policy, grad, *_ in calls[:sampling]] == [("old", False)] * sampling
    training = calls[sampling:]
    frozen = [("old", False)] if paired else [("old", False), ("reference", False)]
    per_step = len(frozen) + 1
    assert len(training) == per_step * len(losses) > 0
    assert [(p, g) for p, g, *_ in training] == (frozen + [("default", True)]) * len(losses)
    clean = collected[0].latents.flatten(1)
    for k, seen in enumerate(losses):
        *frozen_calls, theta_call = training[per_step * k : per_step * (k + 1)]
        x_t, sigma = theta_call[2], theta_call[3]
        s = seen["sigma"].view(-1, *([1] * (x_t.ndim - 1)))
        torch.testing.assert_close(x_t, (1 - s) * seen["x0"] + s * seen["noise"], rtol=0, atol=1e-6)
        assert torch.equal(sigma, seen["sigma"])
        frozen_inputs = [torch.cat([x_t, x_t])] if paired else [x_t, x_t]  # the pair: old rows, then reference rows
        assert all(torch.equal(call[2], x) for call, x in zip(frozen_calls, frozen_inputs))
        assert all((clean == row).all(dim=1).any() for row in seen["x0"].flatten(1))


def test_each_accumulation_window_starts_without_gradients(tiny_pipeline, tmp_path):
    # 2 images per micro-batch x 3 levels = 12 micro-batches, 3 per optimizer step: each step sees only its window.
    config = tiny_config(tmp_path, max_steps=1, train_batch_size=4, gradient_accumulation_steps=3)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    params, seen, call = trainer.policy.trainable_parameters(), [], trainer.objective.__call__

    class Spy(type(trainer.objective)):
        def __call__(self, *args, **kwargs):
            seen.append(all(p.grad is None for p in params))
            return call(*args, **kwargs)

    trainer.objective.__class__ = Spy
    trainer.step()
    windows = trainer.plan.micro_batches // trainer.plan.accumulation
    assert trainer.plan.accumulation == 3 and windows >= 2
    assert seen == [True, False, False] * windows


def test_the_old_policy_follows_theta_by_the_decay_of_the_optimizer_steps_taken(tiny_pipeline, tmp_path):
    # 2 optimizer steps per iteration: after 2 iterations eta is 0.004 (4 steps), not 0.002 (2 iterations).
    config = tiny_config(tmp_path, max_steps=2, optimizer_steps_per_iteration=2)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    assert max_diff(trainer.policy.state_dict("old"), trainer.policy.state_dict("default")) == 0
    decays = [step_and_check_the_soft_update(trainer)["old_policy_decay"] for _ in range(2)]
    assert decays == [pytest.approx(0.002), pytest.approx(0.004)]


def test_grids_reach_tensorboard_under_their_prompts_and_the_last_iteration_has_one(tiny_pipeline, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = tiny_config(tmp_path, max_steps=2, validation_steps=1000, report_to="tensorboard", timestep_fraction=0.25,
                         validation_prompts=["a red cat", "a blue dog"], num_validation_images=2)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    assert "1 noise level per image, 1 optimizer step per iteration" in trainer.describe()
    trainer.train()
    assert sorted(os.listdir(tmp_path / "samples")) == ["step_000000.png", "step_000002.png"]  # start and end
    logs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "logs") for f in fs if "tfevents" in f]
    events = EventAccumulator(os.path.dirname(logs[0]), size_guidance={"images": 0}).Reload()
    tags = sorted(events.Tags()["images"])
    assert tags == ["validation/0 a red cat", "validation/1 a blue dog"]
    assert {event.step for tag in tags for event in events.Images(tag)} == {0, 2}


def test_on_a_gpu_each_iteration_logs_its_peak_memory(tiny_pipeline, tmp_path, monkeypatch):
    # No GPU here: the metric's source is stood in for while an iteration's row is built.
    from types import SimpleNamespace

    from diffusers_nft.credit import Credit

    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, max_steps=1), PROMPTS)
    assert "gpu_memory_gib" not in trainer.step()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 3 * 2**30)
    row = trainer._iteration_metrics(Credit({}, torch.zeros(0), torch.zeros(0), {}),
                                     SimpleNamespace(latents=torch.ones(2, 4)), {}, {"sampling": 1.0})
    assert row["gpu_memory_gib"] == 3.0


def test_an_overlong_prompt_is_reported_once_not_at_every_call(tiny_pipeline, tmp_path):
    import io
    import logging

    long_prompt = " ".join(["a red cat on a mat"] * 30)  # beyond CLIP's 77 tokens: diffusers warns at every encode
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, max_steps=2), [long_prompt, "a dog"])
    handler, written = logging.getLogger("diffusers").handlers[0], io.StringIO()  # diffusers' own handler
    stream = handler.setStream(written)
    try:
        trainer.train()
    finally:
        handler.setStream(stream)
    lines = [line for line in written.getvalue().splitlines() if "was truncated because" in line]
    # without the filter: every encode of every iteration, for each text encoder (CLIP's 77 tokens, T5's 16)
    heads = [line.split(":")[0] for line in lines]
    assert len(lines) == len(set(heads)) == 2 and heads[0].endswith("CLIP can only handle sequences up to 77 tokens")
    assert all(line.endswith("(logged once; later truncations of the same text are not)") for line in lines)
