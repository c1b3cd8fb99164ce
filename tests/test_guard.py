"""The reward-hacking guard: a training reward that climbs while a held-out judge falls must trigger each action."""

import itertools
import json

import pytest
import torch
from safetensors.torch import load_file

from diffusers_nft import HackingGuard, NFTTrainer
from tiny_pipelines import build_tiny_sd3_pipeline

from conftest import PROMPTS, tiny_config

HELD_OUT = ["a red car", "a blue house"]


def _climbing():
    """A training reward that rises by 0.1 at each call, whatever the images."""
    calls = itertools.count()

    def reward(images, prompts, metadata):
        return torch.full((len(images),), 0.1 * next(calls)) + 1e-3 * images.mean(dim=(1, 2, 3))

    return reward


def _falling():
    """A judge that falls by 0.1 at each evaluation."""
    calls = itertools.count()

    def judge(images, prompts, metadata):
        return torch.full((len(images),), 1.0 - 0.1 * next(calls))

    return judge


def _train(tmp_path, guard, max_steps=5, judge=None):
    config = tiny_config(tmp_path, max_steps=max_steps, eval_steps=1, learning_rate=3e-2)
    trainer = NFTTrainer(build_tiny_sd3_pipeline(), _climbing(), config, PROMPTS, eval_dataset=HELD_OUT,
                         eval_reward_funcs=[judge or _falling()], callbacks=[guard])
    return trainer, trainer.train()


@pytest.mark.slow  # a 4-step run; in miniature: test_stop_ends_training_when_the_judge_falls
def test_warn_and_save_best_keep_the_judges_best_lora(tmp_path, caplog):
    guard = HackingGuard(judge_drop=0.15)
    with caplog.at_level("WARNING"):
        trainer, history = _train(tmp_path, guard)
    assert len(history) == 5  # warn and save_best do not stop
    assert [e["rule"] for e in guard.events] == ["judge_drop"]
    # the judge's first evaluation (the probe scored once) is its best; it has fallen by 0.2 two iterations later
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best["step"] == 1 and best["judge"] == "judge" and best["events"][0]["step"] == 3
    assert "fell from" in caplog.text
    kept = load_file(tmp_path / "best" / "pytorch_lora_weights.safetensors")
    last = load_file(tmp_path / "pytorch_lora_weights.safetensors")
    assert kept.keys() == last.keys() and max((kept[k] - last[k]).abs().max().item() for k in kept) > 1e-4
    card = open(trainer.create_model_card("user/guarded")).read()
    assert "## Which LoRA" in card and "scored highest" in card and "iteration 3" in card


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_stop_ends_training_when_the_judge_falls(tmp_path):
    guard = HackingGuard(judge_drop=0.15, actions=("warn", "stop"))
    _, history = _train(tmp_path, guard, max_steps=8)
    assert len(history) == 3 and guard.events[0]["rule"] == "judge_drop"
    assert not (tmp_path / "best").exists()


@pytest.mark.slow  # 3 s; in miniature: the guard's defaults test fires only past its edges
def test_a_steady_judge_does_not_fire(tmp_path):
    guard = HackingGuard(judge_drop=0.05)
    _, history = _train(tmp_path, guard, max_steps=4, judge=lambda images, prompts, metadata: torch.ones(len(images)))
    assert len(history) == 4 and guard.events == []
    assert json.loads((tmp_path / "best" / "best.json").read_text())["step"] == 1


def test_diversity_and_brightness_rules():
    guard = HackingGuard(diversity_floor=0.5, brightness_drift=0.1, actions=("warn",))
    from diffusers_nft.callbacks import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    guard.on_log(None, state, control, logs={"step": 1, "monitor/diversity": 0.2, "monitor/brightness": 0.5})
    guard.on_log(None, state, control, logs={"step": 2, "monitor/diversity": 0.15, "monitor/brightness": 0.55})
    assert guard.events == []
    guard.on_log(None, state, control, logs={"step": 3, "monitor/diversity": 0.09, "monitor/brightness": 0.65})
    assert [e["rule"] for e in guard.events] == ["diversity", "brightness"]
    guard.on_log(None, state, control, logs={"step": 4, "monitor/diversity": 0.01, "monitor/brightness": 0.9})
    assert len(guard.events) == 2 and not control.should_training_stop  # each rule fires once; warn only
    with pytest.raises(ValueError, match="Unknown guard actions"):
        HackingGuard(actions=("panic",))


def _feed(guard, rows):
    """Log `rows` (step -> metrics) into `guard` as the trainer would; the rules fired, in order, as (step, rule)."""
    from types import SimpleNamespace

    from diffusers_nft.metrics import TOTAL, eval_key, monitor_key, reward_key

    names = {"judge": eval_key("clipscore"), "reward": reward_key(TOTAL), "diversity": monitor_key("diversity"),
             "brightness": monitor_key("brightness")}
    control = SimpleNamespace(should_training_stop=False)
    for step, row in enumerate(rows, start=1):
        logs = {"step": step, **{names[k]: v for k, v in row.items()}}
        guard.on_log(None, SimpleNamespace(global_step=step), control, logs=logs)
    return [(event["step"], event["rule"]) for event in guard.events]


def test_the_documented_default_thresholds_fire_just_past_their_edges():
    # judge_drop 0.05 from the best, only while the training reward is above its value at the best: a drop of 0.04
    # does not fire, nor one of 0.05 with the reward fallen below it; a drop of 0.051 with the reward up does.
    judge = [dict(judge=0.80, reward=0.5), dict(judge=0.76, reward=0.9), dict(judge=0.75, reward=0.4),
             dict(judge=0.749, reward=0.6)]
    assert _feed(HackingGuard(actions=("warn",)), judge) == [(4, "judge_drop")]
    # diversity_floor 0.5 of the first value
    diversity = [dict(diversity=1.0), dict(diversity=0.51), dict(diversity=0.49)]
    assert _feed(HackingGuard(actions=("warn",)), diversity) == [(3, "diversity")]
    # brightness_drift 0.15 either way from the first value: 0.14 up, 0.14 down and 0.149 do not fire, 0.16 down does
    brightness = [dict(brightness=0.5), dict(brightness=0.64), dict(brightness=0.36), dict(brightness=0.351),
                  dict(brightness=0.34)]
    assert _feed(HackingGuard(actions=("warn",)), brightness) == [(5, "brightness")]
    brighter = [dict(brightness=0.5), dict(brightness=0.66)]
    assert _feed(HackingGuard(actions=("warn",)), brighter) == [(2, "brightness")]
