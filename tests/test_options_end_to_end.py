"""Every training option the README names changes what is trained, end to end; and what the README promises
about checkpoints, rewards and cards holds in a real run."""

import os

import pytest
import torch
import yaml
from diffusers import StableDiffusion3Pipeline
from huggingface_hub import ModelCard

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import CheckpointError
from diffusers_nft.rewards import RewardError

from diffusers_nft.advantages import rewards_to_optimality
from diffusers_nft.loss import NFTLoss
from diffusers_nft.sampling import model_sigmas

from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, max_diff, tiny_config


def _train(pipeline_dir, output_dir, reward="jpeg_incompressibility", watch=False, **overrides):
    """Two iterations; with `watch`, also what they did: `trainer.seen` holds the credit's inputs and r, each loss's
    inputs and output, the noise levels of theta's forwards, and the sampling calls of each iteration."""
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    trainer = NFTTrainer(pipe, reward, tiny_config(output_dir, max_steps=2, gradient_accumulation_steps=3,
                                                   learning_rate=1e-2, **overrides), PROMPTS)
    if watch:
        _watch(trainer)
    trainer.train()
    return trainer


def _watch(trainer):
    seen = trainer.seen = {"credit": [], "loss": [], "sigmas": []}
    seen["sampling_calls"] = count_sampling_calls(trainer)
    credit, loss, predict = trainer.objective.credit, trainer.objective.loss, trainer.family.predict_velocity

    def watched_credit(rewards, group_ids):
        r, metrics = credit(rewards, group_ids)
        seen["credit"].append((rewards.clone(), group_ids.clone(), r.clone()))
        return r, metrics

    def watched_loss(v_theta, v_old, **kwargs):
        out = loss(v_theta, v_old, **kwargs)
        seen["loss"].append(((v_theta.detach().clone(), v_old.detach().clone()), kwargs, out))
        return out

    def watched_predict(latents, sigma, cond):
        if torch.is_grad_enabled():
            seen["sigmas"].append(sigma.detach().clone())
        return predict(latents, sigma, cond)

    trainer.objective.credit, trainer.family.predict_velocity = watched_credit, watched_predict
    trainer.objective.loss = watched_loss
    for name in ("kl_beta", "adv_clip_max", "needs_reference", "norm_guard_weight"):
        setattr(watched_loss, name, getattr(loss, name))


def _check_what_the_option_did(trainer):
    """Each iteration's r, losses, noise levels and sampling calls are what the config's settings make of them."""
    args, seen = trainer.args, trainer.seen
    for rewards, group_ids, r in seen["credit"]:
        expected = rewards_to_optimality(rewards, group_ids, args.adv_clip_max, args.advantage_std, mode=args.adv_mode)
        assert torch.equal(r, expected.r)
    reference = NFTLoss(args.nft_beta, args.adv_clip_max, args.loss_weighting, args.kl_beta, args.drop_negative_term,
                        args.reward_adaptive_kl, args.norm_guard_weight, args.norm_guard_margin)
    for (v_theta, v_old), kwargs, out in seen["loss"]:
        again = reference(v_theta, v_old, **kwargs)
        assert again.loss.item() == pytest.approx(out.loss.item(), rel=1e-6)
    grid = model_sigmas(trainer.sampling_sigmas).float()
    on_grid = all(bool(torch.isin(s, grid).all()) for s in seen["sigmas"])
    assert on_grid == (args.train_timesteps == "sampler_grid")
    assert seen["sampling_calls"] == [expected_sampling_calls(args)] * args.max_steps


@pytest.fixture(scope="module")
def default_lora(tiny_pipeline_dir, tmp_path_factory):
    return _train(tiny_pipeline_dir, tmp_path_factory.mktemp("default")).policy.state_dict("default")


@pytest.mark.slow  # 10 runs of 2 iterations; in miniature: test_the_default_options_do_what_the_release_does
@pytest.mark.parametrize("option", [
    dict(advantage_std="group"), dict(train_timesteps="uniform"), dict(train_timesteps="logit_normal"),
    dict(loss_weighting="velocity"), dict(old_policy_decay="delayed"), dict(adv_mode="positive_only"),
    dict(adv_mode="binary"), dict(drop_negative_term=True), dict(sampler="heun"), dict(sampler="euler"),
    dict(kl_reference_guidance_scale=4.5, kl_beta=0.05), dict(reward_adaptive_kl=True, kl_beta=0.05),
    dict(norm_guard_weight=10.0, norm_guard_margin=0.0),
])
def test_each_option_changes_what_is_trained(tiny_pipeline_dir, tmp_path, default_lora, option):
    trainer = _train(tiny_pipeline_dir, tmp_path, watch=True, **option)
    _check_what_the_option_did(trainer)
    r = torch.cat([r for *_, r in trainer.seen["credit"]])
    if option.get("adv_mode") == "positive_only":
        assert r.min() == 0.5 and r.max() > 0.5
    if option.get("adv_mode") == "binary":
        values = {round(v, 6) for v in r.tolist()}  # the release's map at c = 5
        assert values <= {0.4, 0.5, 0.6} and {0.4, 0.6} <= values
    lora = trainer.policy.state_dict("default")
    assert max_diff(lora, default_lora) > 1e-6, option


def test_the_default_options_do_what_the_release_does(tiny_pipeline_dir, tmp_path):
    trainer = _train(tiny_pipeline_dir, tmp_path, watch=True)
    _check_what_the_option_did(trainer)
    r = torch.cat([r for *_, r in trainer.seen["credit"]])
    assert r.min() < 0.5 < r.max() and len(trainer.seen["loss"]) == 2 * trainer.plan.micro_batches


def test_the_delayed_decay_keeps_the_old_policy_fixed_early(tiny_pipeline_dir, tmp_path):
    trainer = _train(tiny_pipeline_dir, tmp_path, old_policy_decay="delayed")
    # eta is 0 for the first 75 optimizer steps: old becomes theta after each iteration
    assert max_diff(trainer.policy.state_dict("old"), trainer.policy.state_dict("default")) == 0
    assert [m["old_policy_decay"] for m in trainer.history] == [0.0, 0.0]


def test_a_reward_that_passes_the_probe_and_fails_later_stops_train(tiny_pipeline_dir, tmp_path):
    calls = []

    def breaks_after_the_probe(images, prompts, metadata):
        calls.append(len(prompts))
        if len(calls) > 1:
            raise RuntimeError("reward model went away")
        return [0.0] * len(prompts)

    with pytest.raises(RewardError, match="breaks_after_the_probe.*reward model went away"):
        _train(tiny_pipeline_dir, tmp_path, reward=breaks_after_the_probe)
    assert calls[0] == 2 and not os.path.exists(tmp_path / "pytorch_lora_weights.safetensors")


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_the_trainer_refuses_a_deepspeed_checkpoint_before_any_compute(tiny_pipeline_dir, tmp_path):
    _train(tiny_pipeline_dir, tmp_path, save_steps=2)
    (tmp_path / "checkpoint-2" / "deepspeed").mkdir()  # as a DeepSpeed run writes it
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    with pytest.raises(CheckpointError, match="written with DeepSpeed"):
        NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, max_steps=3, resume_from_checkpoint="latest",
                                                              gradient_accumulation_steps=3, learning_rate=1e-2), PROMPTS)
    assert not any("lora" in n for n, _ in pipe.transformer.named_parameters())


def test_reward_device_and_dtype_reach_the_reward(tiny_pipeline_dir, tmp_path):
    from diffusers_nft.rewards import register_reward

    seen = []

    def factory(**options):
        seen.append(options)
        return lambda images, prompts, metadata: images.mean(dim=(1, 2, 3))

    register_reward("options_probe", factory)
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    NFTTrainer(pipe, "options_probe", tiny_config(tmp_path, reward_device="cpu", reward_dtype="bfloat16",
                                                  reward_batch_size=3), PROMPTS)
    assert seen == [{"device": "cpu", "dtype": "bfloat16", "batch_size": 3}]


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_the_model_card_shows_weights_links_and_hyperparameters(tiny_pipeline_dir, tmp_path):
    trainer = _train(tiny_pipeline_dir, tmp_path, validation_prompts=["a red cat"], reward_weights=[1.0, 0.25],
                     reward=["jpeg_incompressibility", "jpeg_compressibility"])
    card = ModelCard.load(trainer.create_model_card("someone/tiny"))
    for row in ("| `jpeg_incompressibility` | 1.0 |", "| `jpeg_compressibility` | 0.25 |", "| `group_size` | 4 |",
                "| `sampler` | dpm_solver |", "| `LoRA rank / alpha` | 32 / 64 (the file folds", "images/before_after.png",
                "reward_curve.png"):
        assert row in card.text, row
    for link in ("images/before_after.png", "reward_curve.png", card.data.to_dict()["widget"][0]["output"]["url"]):
        assert (tmp_path / link).is_file(), link


def test_lumina2_and_flux_cards_carry_their_family_tags(tmp_path):
    from diffusers_nft.hub import write_model_card

    for pipeline_class, tag in (("Lumina2Pipeline", "lumina2"), ("FluxPipeline", "flux")):
        path = write_model_card(str(tmp_path), repo_id="someone/x", base_model="base/model",
                                pipeline_class=pipeline_class, rewards=[("ocr", 1.0)], hyperparameters={"nft_beta": 1.0},
                                history=[], widget=[], call_kwargs={"guidance_scale": 1.0}, license="other")
        meta = yaml.safe_load(open(path).read().split("---")[1])
        assert tag in meta["tags"] and "lora" in meta["tags"]


@pytest.mark.slow
def test_torch_compile_trains_like_eager(tiny_pipeline_dir, tmp_path):
    """`--torch_compile`: one tiny iteration through inductor on the CPU (most of its time is compiling).

    The compiled model predicts what the eager one does; one Adam step from the same start moves the LoRA the
    same way (Adam's first step is about lr * sign(grad), so tensors are compared on average, not to the last bit).
    """
    runs = {}
    for compiled in (False, True):
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        config = tiny_config(tmp_path / str(compiled), max_steps=1, num_sampling_steps=2, torch_compile=compiled)
        trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
        start = trainer.policy.state_dict("default")
        cond = trainer.collector.encode(["a red cat"])
        x = torch.randn(1, *trainer.latent_shape, generator=torch.Generator().manual_seed(0))
        velocity = trainer.family.predict_velocity(x, torch.tensor([0.5]), cond).detach()
        metrics = trainer.step()
        update = {k: v - start[k] for k, v in trainer.policy.state_dict("default").items()}
        runs[compiled] = (velocity, metrics, update)
    torch.testing.assert_close(runs[True][0], runs[False][0], atol=1e-4, rtol=1e-4)
    assert runs[True][1]["reward/total/mean"] == pytest.approx(runs[False][1]["reward/total/mean"], rel=1e-3)
    differ = sum((runs[True][2][k] - runs[False][2][k]).abs().mean() for k in runs[False][2])
    size = sum(v.abs().mean() for v in runs[False][2].values())
    assert size > 0 and differ < 0.05 * size
