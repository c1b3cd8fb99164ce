"""What a TRL user reaches for: train(resume_from_checkpoint=), save_model(), state.log_history, callbacks that can
stop training, an evaluation curve on eval_dataset, and TRL's names for the same settings."""

import json

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from diffusers_nft import NFTConfig, NFTTrainer
from diffusers_nft.callbacks import NFTCallback

from conftest import PROMPTS, max_diff, tiny_config


def _trainer(pipe, folder, **overrides):
    return NFTTrainer(pipe, "jpeg_compressibility", tiny_config(folder, **overrides), PROMPTS)


@pytest.mark.slow  # long: in CI (--runslow), not in the default set
def test_train_resumes_from_a_checkpoint_given_to_train(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    load = lambda: StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    whole = _trainer(load(), tmp_path / "a", max_steps=3)
    whole.train()
    _trainer(load(), tmp_path / "b", max_steps=2, save_steps=2).train()
    resumed = _trainer(load(), tmp_path / "b", max_steps=3)
    resumed.train(resume_from_checkpoint="latest")
    assert resumed.state.global_step == 3 and [m["step"] for m in resumed.state.log_history] == [1, 2, 3]
    assert max_diff(resumed.policy.state_dict("ema"), whole.policy.state_dict("ema")) == 0


def test_save_model_and_log_history(tiny_pipeline, tmp_path):
    trainer = _trainer(tiny_pipeline, tmp_path / "run", max_steps=2)
    history = trainer.train()
    assert trainer.state.log_history is trainer.history and history == trainer.state.log_history
    path = trainer.save_model(str(tmp_path / "exported"))
    assert path.endswith("exported/pytorch_lora_weights.safetensors")
    assert max_diff(load_file(path), load_file(tmp_path / "run" / "pytorch_lora_weights.safetensors")) == 0


class Recorder(NFTCallback):
    def __init__(self, stop_at=None):
        self.events, self.stop_at = [], stop_at

    def on_train_begin(self, args, state, control, **kwargs):
        self.events.append(("begin", state.global_step))

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.events.append(("log", state.global_step, round(logs["reward/total/mean"], 6)))

    def on_save(self, args, state, control, checkpoint=None, **kwargs):
        self.events.append(("save", state.global_step, checkpoint.rsplit("/", 1)[-1]))

    def on_step_end(self, args, state, control, metrics=None, **kwargs):
        self.events.append(("step", state.global_step))
        if state.global_step == self.stop_at:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.events.append(("end", state.global_step))


def test_callbacks_see_every_event_and_can_stop_training(tiny_pipeline, tmp_path):
    recorder = Recorder(stop_at=2)
    config = tiny_config(tmp_path, max_steps=5, save_steps=2)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS, callbacks=[recorder])
    history = trainer.train()
    rewards = [round(m["reward/total/mean"], 6) for m in history]
    assert recorder.events == [("begin", 0), ("log", 1, rewards[0]), ("step", 1), ("log", 2, rewards[1]),
                               ("save", 2, "checkpoint-2"), ("step", 2), ("end", 2)]
    assert len(history) == 2 and (tmp_path / "pytorch_lora_weights.safetensors").is_file()  # stopped, then saved


def test_a_transformers_callback_works_unchanged(tiny_pipeline, tmp_path):
    logged = []

    class PrintLogs(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append((state.global_step, sorted(k for k in logs if k.startswith("reward/total"))))

    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path), PROMPTS, callbacks=[PrintLogs])
    trainer.train()
    assert [step for step, _ in logged] == [1, 2] and "reward/total/mean" in logged[0][1]
    with pytest.raises(TypeError, match="none of the callback methods"):
        NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path / "x"), PROMPTS, callbacks=[object()])


def test_transformers_printer_and_progress_callbacks_work_as_they_are(tiny_pipeline, tmp_path, capsys):
    from transformers import PrinterCallback, ProgressCallback

    progress = ProgressCallback()
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, max_steps=2), PROMPTS,
                         callbacks=[PrinterCallback(), progress])
    history = trainer.train()
    printed = [line for line in capsys.readouterr().out.splitlines() if "reward/total/mean" in line]
    assert len(printed) == 4  # each prints the logs of both iterations
    assert all(f"'reward/total/mean': '{history[-1]['reward/total/mean']:.4g}'" in line for line in printed[2:])
    assert progress.current_step == 2 and progress.training_bar is None  # advanced to the end, then closed


def test_transformers_early_stopping_stops_when_the_judge_stops_improving(tiny_pipeline, tmp_path):
    from transformers import EarlyStoppingCallback

    scores = iter([0.5, 0.75, 0.625, 0.875, 0.9375, 1.0])  # the judge's mean at each evaluation: worse at the 3rd

    def judge(images, prompts, metadata):  # (the start-up check scores the training prompts)
        return [next(scores)] * len(prompts) if prompts == ["a tree", "a star"] else [0.0] * len(prompts)

    config = tiny_config(tmp_path, max_steps=6, eval_steps=1, metric_for_best_model="judge")
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS, eval_dataset=["a tree", "a star"],
                         eval_reward_funcs=[judge], callbacks=[EarlyStoppingCallback(early_stopping_patience=1)])
    history = trainer.train()
    assert [m["eval/judge/mean"] for m in history] == [0.5, 0.75, 0.625]  # stopped at the first one no better
    assert trainer.state.best_metric == 0.75 and trainer.state.best_global_step == 2
    assert config.greater_is_better is True and (tmp_path / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow  # a 3-step run; in miniature: the early-stopping test evaluates every iteration
def test_eval_dataset_gives_a_logged_held_out_curve(tiny_pipeline, tmp_path):
    held_out = ["a green tree", "a yellow star", "a blue circle"]
    config = tiny_config(tmp_path, max_steps=3, eval_steps=2)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS, eval_dataset=held_out)
    history = trainer.train()
    evaluated = [m["step"] for m in history if "eval/jpeg_compressibility/mean" in m]
    assert evaluated == [2, 3]  # every eval_steps, and at the end
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows if "eval/jpeg_compressibility/mean" in r] == [2, 3]
    # the logged value is the EMA policy's score on the held-out prompts with fixed seeds: evaluate() again
    assert trainer.evaluate()["eval/jpeg_compressibility/mean"] == pytest.approx(
        history[-1]["eval/jpeg_compressibility/mean"], abs=1e-6)
    assert history[-1]["eval/jpeg_compressibility/mean"] != pytest.approx(history[-1]["reward/jpeg_compressibility/mean"])


def test_trls_names_for_the_same_settings():
    assert NFTConfig(num_generations=6).group_size == 6
    assert NFTConfig(scale_rewards="batch").advantage_std == "global"
    assert NFTConfig(scale_rewards="group").advantage_std == "group"
    with pytest.raises(ValueError, match="'none' has no counterpart"):
        NFTConfig(scale_rewards="none")


def test_trls_names_on_the_command_line(tmp_path, monkeypatch):
    import diffusers_nft.scripts

    from conftest import load_training_script

    seen = {}
    monkeypatch.setattr(diffusers_nft.scripts, "check_hub", lambda repo, **kwargs: seen.update(hub=(repo, kwargs)))

    def fake_load(script_args, config):
        seen["config"] = config
        raise KeyboardInterrupt

    (tmp_path / "p.txt").write_text("a cat\n")
    with pytest.raises(KeyboardInterrupt):
        load_training_script().main(["--pretrained_model_name_or_path", "x", "--prompts", str(tmp_path / "p.txt"),
                                     "--reward", "jpeg_compressibility", "--output_dir", str(tmp_path / "o"),
                                     "--num_generations", "3", "--push_to_hub", "--hub_private_repo", "true"],
                                    load_pipeline=fake_load)
    config = seen["config"]
    assert config.group_size == 3 and config.push_to_hub and config.hub_private_repo is True
    assert seen["hub"] == ("o", {"token": None, "private": True})  # checked before the model loads


def test_the_hub_token_is_never_written(tiny_pipeline, tmp_path):
    config = tiny_config(tmp_path, max_steps=1, save_steps=1, hub_token="hf_secret_value", report_to="tensorboard")
    assert "hub_token" not in config.to_dict()
    NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS).train()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"hf_secret_value" not in path.read_bytes(), path
