"""The old and reference predictions of a micro-step as one forward of twice the batch (`frozen_pair`), checked
against two forwards before it is used, and refused where the batch's rows do not map to samples."""

import logging

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.loaders.peft import PeftAdapterMixin
from peft import LoraConfig

from diffusers_nft import NFTTrainer
from diffusers_nft.frozen_pair import OldAndReference
from diffusers_nft.pipelines import get_family
from diffusers_nft.policy import OLD, REFERENCE, NFTPolicy

from conftest import PROMPTS, lora_norm, small_lora, tiny_config


def counting_calls(module) -> list:
    """The batch size of each forward of `module`, appended as it runs."""
    calls = []
    module.register_forward_hook(lambda m, args, kwargs, out: calls.append(len(next(
        a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)))), with_kwargs=True)
    return calls


def _old_apart(policy, seed=0, scale=0.1):
    """Move the old adapter away from the base (its B matrices start at 0, where old and reference agree)."""
    g = torch.Generator().manual_seed(seed)
    policy.load_state_dict(OLD, {k: v + scale * torch.randn(v.shape, generator=g)
                                 for k, v in policy.state_dict(OLD).items()})


def _sd3_inputs(pipe):
    family = get_family(pipe)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *family.latent_shape(64), generator=g)
    cond = family.encode_prompts(PROMPTS[:3], torch.device("cpu"), 16)
    return family, x, torch.tensor([0.2, 0.5, 0.9]), cond


def _two_forwards(policy, predict, x, sigma, cond):
    with torch.no_grad():
        with policy.using(OLD):
            v_old = predict(x, sigma, cond)
        with policy.using(REFERENCE):
            return v_old, predict(x, sigma, cond)


def test_one_forward_of_twice_the_batch_gives_the_two_forwards_numbers(tiny_pipeline, caplog):
    family, x, sigma, cond = _sd3_inputs(tiny_pipeline)
    policy = NFTPolicy(tiny_pipeline.transformer, small_lora(tiny_pipeline.transformer))
    _old_apart(policy)
    pair, calls = OldAndReference(policy, family.predict_velocity), counting_calls(tiny_pipeline.transformer)
    expected = _two_forwards(policy, family.predict_velocity, x, sigma, cond)
    assert (expected[0] - expected[1]).abs().max() > 1e-2  # old and reference really differ
    calls.clear()
    with caplog.at_level(logging.INFO, logger="diffusers_nft.frozen_pair"), torch.no_grad():
        first = pair(x, sigma, cond)  # the probe ([x; x with sample 0 moved], through PEFT's check), then the pair
    assert calls == [6, 6] and pair.batched is True and "one forward of twice the batch" in caplog.text
    assert "one row per sample (probed on" in pair.reason
    calls.clear()
    with torch.no_grad():
        second = pair(x, sigma, cond)
    assert calls == [6]  # one transformer call for both
    for got in (first, second):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


class Folded(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """A model whose first layer sees its rows in another order than the samples' (`flip`), or tokens first
    (`transpose`): a mixed adapter batch gives those rows the wrong adapters."""

    @register_to_config
    def __init__(self, width: int = 8, fold: str = "flip"):
        super().__init__()
        self.proj, self.out = torch.nn.Linear(width, width), torch.nn.Linear(width, width)

    def forward(self, x):
        if self.config.fold == "flip":
            return self.out(self.proj(x.flip(0)).flip(0))
        return self.out(self.proj(x.transpose(0, 1)).transpose(0, 1))


def _folded(fold="flip", **lora):
    torch.manual_seed(0)
    model = Folded(fold=fold)
    policy = NFTPolicy(model, LoraConfig(r=4, lora_alpha=4, target_modules=["proj", "out"], **lora))
    _old_apart(policy, scale=0.5)
    return model, policy, lambda x, sigma, cond: model(x)


@pytest.mark.parametrize("fold", ["flip", "transpose"])
def test_a_model_whose_rows_are_not_samples_keeps_two_forwards(fold, caplog):
    model, policy, predict = _folded(fold)
    x = torch.randn(2, 4, 8)  # 4 tokens: the transposed pair's 4 rows pass PEFT's own length check
    expected = _two_forwards(policy, predict, x, torch.ones(2), {})
    forced = OldAndReference(policy, predict)
    forced.batched = True  # what the pair would give without the probe: silently wrong
    with torch.no_grad():
        assert (forced(x, torch.ones(2), {})[0] - expected[0]).abs().max() > 1e-3
    pair = OldAndReference(policy, predict)
    with caplog.at_level(logging.INFO, logger="diffusers_nft.frozen_pair"), torch.no_grad():
        got = pair(x, torch.ones(2), {})
    assert pair.batched is False and "proj does not see one row per sample" in pair.reason
    assert "two forwards" in caplog.text
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_dora_one_sample_and_the_switch_keep_two_forwards():
    model, policy, _ = _folded(use_dora=True)
    pair = OldAndReference(policy, lambda x, sigma, cond: model.out(x))
    with torch.no_grad():
        pair(torch.randn(1, 3, 8), torch.ones(1), {})
        assert pair.batched is None  # one sample cannot show whether rows are samples: not probed yet
        pair(torch.randn(2, 3, 8), torch.ones(2), {})
    assert pair.batched is False and "PEFT refuses" in pair.reason and "DoRA" in pair.reason
    off = OldAndReference(policy, lambda x, sigma, cond: model.out(x), batched=False)
    assert off.batched is False and off.reason == "turned off"


@pytest.mark.slow  # 2 x 3 iterations; in miniature: test_one_forward_of_twice_the_batch_gives_the_two_forwards_numbers
def test_training_with_the_pair_equals_training_with_two_forwards(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    trained = {}
    for batched in (True, False):
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        config = tiny_config(tmp_path / str(batched), max_steps=3, batch_frozen_forwards=batched)
        trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
        for _ in range(3):
            trainer.end_iteration(trainer.step())
        assert trainer.objective.old_and_reference.batched is (True if batched else False)
        trained[batched] = trainer.policy.state_dict("trained")
        calls = counting_calls(pipe.transformer)
        family, x, sigma, cond = _sd3_inputs(pipe)
        trainer.objective(x, sigma, cond, x0=x, noise=x, r=torch.full((3,), 0.7))
        assert len(calls) == (2 if batched else 3)  # transformer calls per micro-step
    assert lora_norm(trained[True], trained[False]) < 1e-4 * (1 + sum(v.norm() for v in trained[False].values()))



class Routed(ModelMixin, ConfigMixin, PeftAdapterMixin):
    """A model that sends each row to one of two layers by its noise level, as Wan 2.2 does to its two experts."""

    @register_to_config
    def __init__(self, width: int = 8):
        super().__init__()
        self.high, self.low = torch.nn.Linear(width, width), torch.nn.Linear(width, width)

    def forward(self, x, sigma):
        out, high = torch.zeros_like(x), sigma > 0.5
        if high.any():
            out[high] = self.high(x[high])
        if (~high).any():
            out[~high] = self.low(x[~high])
        return out


def test_a_model_that_routes_rows_keeps_two_forwards_even_when_forced():
    torch.manual_seed(0)
    model = Routed()
    policy = NFTPolicy(model, LoraConfig(r=4, lora_alpha=4, target_modules=["high", "low"]))
    _old_apart(policy, scale=0.5)
    predict = lambda x, sigma, cond: model(x, sigma)  # noqa: E731
    x, high, mixed = torch.randn(2, 8), torch.tensor([0.9, 0.8]), torch.tensor([0.9, 0.2])
    pair = OldAndReference(policy, predict)
    with torch.no_grad():
        pair(x, high, {})  # every row to `high`: `low` never runs, so the probe cannot vouch for it
    assert pair.batched is False and "low did not run" in pair.reason
    forced = OldAndReference(policy, predict)
    forced.batched = True
    with torch.no_grad():
        got = forced(x, mixed, {})  # each layer gets a part of the rows: PEFT refuses, two forwards take over
    assert forced.batched is False and "PEFT refused a later mixed batch" in forced.reason
    torch.testing.assert_close(got, _two_forwards(policy, predict, x, mixed, {}), rtol=0, atol=0)
