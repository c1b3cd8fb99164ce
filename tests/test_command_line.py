"""What a TRL or accelerate user reaches for on the command line: config files, one `diffusers-nft` command, a
remote reward, twin flags that disagree refused, and setup errors as one line."""

import json
import re
import os
import subprocess
import sys

import pytest
import yaml

from diffusers_nft.recipes import RECIPES
from diffusers_nft.rewards.remote import RemoteReward
from diffusers_nft.scripts import parse_rewards, parse_settings

from conftest import load_training_script, reach_loading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "examples", "configs")


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a cat\na dog\n")
    return str(path)


def _write(tmp_path, name, values):
    path = tmp_path / name
    path.write_text(json.dumps(values) if name.endswith(".json") else yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("name", ["run.yaml", "run.json"])
@pytest.mark.parametrize("form", ["positional", "--config", "--config="])
def test_a_config_file_gives_the_settings_and_flags_override_it(tmp_path, prompts, name, form):
    path = _write(tmp_path, name, {"pretrained_model_name_or_path": "x", "prompts": prompts, "output_dir": "o",
                                   "reward": ["jpeg_compressibility:2"], "max_train_steps": 7, "group_size": 4,
                                   "gradient_checkpointing": True, "monitors": False, "validation_prompts": ["a cat"]})
    given = {"positional": [path], "--config": ["--config", path], "--config=": [f"--config={path}"]}[form]
    script_args, config = reach_loading(given + ["--group_size", "6", "--reward", "jpeg_incompressibility"])
    assert (script_args.pretrained_model_name_or_path, script_args.dataset_name) == ("x", prompts)
    assert (config.max_steps, config.group_size, config.gradient_checkpointing, config.monitors) == (7, 6, True, False)
    assert script_args.reward == ["jpeg_incompressibility"]  # the flag replaces the file's list, it does not extend it
    assert config.reward_weights == [1.0] and config.validation_prompts == ["a cat"]


def test_a_config_file_with_a_mistake_is_refused_with_the_fix(tmp_path):
    typo = _write(tmp_path, "typo.yaml", {"max_stepz": 3})
    with pytest.raises(ValueError, match="'max_stepz' is not a setting. Did you mean max_steps"):
        parse_settings([typo])
    twice = _write(tmp_path, "twice.yaml", {"max_steps": 3, "max_train_steps": 4})
    with pytest.raises(ValueError, match="sets max_steps twice"):
        parse_settings([twice])
    (tmp_path / "bad.yaml").write_text("max_steps: [3\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        parse_settings([str(tmp_path / "bad.yaml")])
    with pytest.raises(ValueError, match="does not exist"):
        parse_settings([str(tmp_path / "missing.yaml")])
    (tmp_path / "list.yaml").write_text("- 3\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        parse_settings([str(tmp_path / "list.yaml")])


def test_the_shipped_demo_config_is_the_demo_run():
    from_file = parse_settings([os.path.join(CONFIGS, "demo.yaml")])
    default = parse_settings([])
    assert from_file[1].to_dict() == default[1].to_dict()
    assert from_file[0].reward == ["digit_eval"] and default[0].reward == []  # the demo's default, made explicit


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_shipped_release_config_is_its_recipe(name):
    script_args, config, demo = parse_settings([os.path.join(CONFIGS, f"{name}.yaml")])
    assert demo is None and script_args.pretrained_model_name_or_path == "stabilityai/stable-diffusion-3.5-medium"
    for key, value in RECIPES[name]["config"].items():
        assert getattr(config, key) == value, key
    assert script_args.reward == [f"{k}:{v}" for k, v in RECIPES[name]["rewards"].items()]
    assert config.mixed_precision == "bf16" and script_args.dataset_name and script_args.eval_dataset_name


@pytest.mark.parametrize("flags, message", [
    (["--max_steps", "3", "--max_train_steps", "5"], r"max_steps is given twice with different values \(--max_steps 3 "
                                                      r"and --max_train_steps 5\)"),
    (["--allow_tf32", "--no_allow_tf32"], "allow_tf32 is given twice"),
    (["--num_generations", "3", "--group_size", "2"], "num_generations is TRL's name for group_size"),
    (["--scale_rewards", "batch", "--advantage_std", "group"], "scale_rewards is TRL's name for advantage_std"),
])
def test_twin_flags_that_disagree_are_refused(flags, message):
    with pytest.raises(ValueError, match=message):
        parse_settings(flags)


def test_twin_flags_that_agree_and_repeatable_flags_are_fine():
    _, config, _ = parse_settings(["--max_steps", "3", "--max_train_steps", "3", "--num_generations", "4",
                                   "--group_size", "4", "--scale_rewards", "batch", "--advantage_std", "global"])
    assert (config.max_steps, config.group_size, config.advantage_std) == (3, 4, "global")
    script_args, _, _ = parse_settings(["--reward", "a", "--reward", "b"])
    assert script_args.reward == ["a", "b"]
    from diffusers_nft import NFTConfig

    with pytest.raises(ValueError, match="num_generations=3 and group_size=2 set the same thing"):
        NFTConfig(num_generations=3, group_size=2)  # in Python too


def test_a_remote_reward_on_the_command_line(tmp_path, prompts):
    rewards, weights = parse_rewards(["remote:http://127.0.0.1:8000", "remote:http://10.0.0.2:9000/pickscore:0.5",
                                      "remote:https://rewards.example.com:2.0", "ocr:0.25"])
    assert [(r.urls, r.__name__) for r in rewards[:3]] == [(["http://127.0.0.1:8000"], "remote"),
                                                          (["http://10.0.0.2:9000/pickscore"], "pickscore"),
                                                          (["https://rewards.example.com"], "remote")]
    assert all(isinstance(r, RemoteReward) for r in rewards[:3]) and rewards[3] == "ocr"
    assert weights == [1.0, 0.5, 2.0, 0.25]
    assert parse_rewards(["remote:https://rewards.example.com:8443"])[0][0].urls[0].endswith(":8443")  # a port
    pool, pool_weights = parse_rewards(["remote:http://10.0.0.2:8000/ps,http://10.0.0.3:8000/ps:0.5"])
    assert pool[0].urls == ["http://10.0.0.2:8000/ps", "http://10.0.0.3:8000/ps"] and pool[0].__name__ == "ps"
    assert pool_weights == [0.5]
    with pytest.raises(ValueError, match="not an http"):
        parse_rewards(["remote:127.0.0.1:8000"])
    with pytest.raises(ValueError, match="'10.0.0.3:8000' is not an http"):
        parse_rewards(["remote:http://10.0.0.2:8000,10.0.0.3:8000"])
    # An unknown name's error names what a command line can do instead of "pass a callable".
    with pytest.raises(ValueError, match=r"Unknown reward 'pickscor'.*or remote:http://host:port"):
        load_training_script().main(["--pretrained_model_name_or_path", "x", "--prompts", prompts, "--output_dir",
                                     str(tmp_path / "o"), "--reward", "pickscor"], load_pipeline=lambda *a: None)


def test_a_remote_reward_reaches_the_trainer_and_scores_through_the_server(tiny_pipeline_dir, tmp_path, prompts):
    from diffusers_nft.rewards.serve import create_app

    from conftest import serve_in_thread

    server, thread, url = serve_in_thread(create_app("jpeg_compressibility"))
    try:
        trainer, _, _ = load_training_script().prepare(
            ["--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts", prompts, "--output_dir",
             str(tmp_path / "o"), "--reward", f"remote:{url}:0.5", "--resolution", "64", "--max_sequence_length",
             "16", "--max_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2", "--num_sampling_steps",
             "2", "--report_to", "none", "--rank", "4"])
        metrics = trainer.step()
    finally:
        server.should_exit = True
        thread.join()
    assert trainer.rewards.names == ["remote"] and trainer.rewards.weights == [0.5]
    assert metrics["reward/total/mean"] == pytest.approx(0.5 * metrics["reward/remote/mean"])


def _command(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "diffusers_nft", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _main(capsys, *argv):
    """`diffusers-nft ARGV` in this process: `(exit status, stdout, stderr)`."""
    from diffusers_nft.cli import main

    saved = sys.argv
    try:
        main(list(argv))
        status = 0
    except SystemExit as stop:
        status = stop.code or 0
    finally:
        sys.argv = saved
    out = capsys.readouterr()
    return status, out.out, out.err


def test_the_diffusers_nft_command_lists_its_subcommands_and_refuses_others(capsys):
    status, listed, _ = _main(capsys, "--help")
    assert status == 0
    for name in ("train", "evaluate", "serve", "prompts", "env"):
        assert f"  {name} " in listed
    status, _, err = _main(capsys, "trian")
    assert status == 2 and "unknown command 'trian'" in err
    status, _, err = _main(capsys, "prompts", "--tasks", "single_object", "--num_test", "500")
    assert status == 2 and err.count(" ERROR ") == 1 and "Could not draw 5500 distinct prompts" in err


def test_env_prints_versions_devices_and_accelerates_config(capsys):
    import torch

    status, out, _ = _main(capsys, "env")
    lines = dict(line[2:].split(": ", 1) for line in out.splitlines() if line.startswith("- "))
    assert status == 0 and lines["torch"] == torch.__version__ and lines["diffusers-nft"] == "0.1.0"
    assert "accelerate config" in lines and ("devices" in lines or "cuda:0" in lines)


def test_subcommands_run_in_process(tmp_path, capsys):
    status, _, _ = _main(capsys, "prompts", "--output_dir", str(tmp_path / "g"), "--num_train", "10", "--num_test", "6")
    assert status == 0 and sorted(os.listdir(tmp_path / "g")) == ["test_metadata.jsonl", "train_metadata.jsonl"]
    status, out, _ = _main(capsys, "evaluate", "--help")
    assert status == 0 and "--caption_column" in out and "diffusers-nft evaluate" in out
    status, _, err = _main(capsys, "evaluate", "--lora", str(tmp_path / "no-such-run"))
    assert status == 2 and re.search(r"ERROR diffusers_nft: --lora .*no-such-run' does not exist", err)


@pytest.mark.slow  # 4 subprocesses; in miniature: test_subcommands_run_in_process
def test_each_subcommand_takes_its_own_flags(tmp_path):
    for name, flag in (("train", "--pretrained_model_name_or_path"), ("evaluate", "--lora"), ("serve", "--api_key"),
                       ("prompts", "--num_test")):
        out = _command(name, "--help")
        assert out.returncode == 0 and flag in out.stdout and f"diffusers-nft {name}" in out.stdout, name
    written = _command("prompts", "--output_dir", str(tmp_path / "g"), "--num_train", "10", "--num_test", "6")
    assert written.returncode == 0 and sorted(os.listdir(tmp_path / "g")) == ["test_metadata.jsonl",
                                                                              "train_metadata.jsonl"]


@pytest.mark.slow  # 4 subprocesses; in miniature: test_subcommands_run_in_process
def test_setup_errors_of_every_command_are_one_error_line(tmp_path):
    cases = [
        (["train", "--pretrained_model_name_or_path", "x", "--prompts", str(tmp_path / "none.txt"), "--reward",
          "ocr", "--output_dir", str(tmp_path / "o")], "none.txt"),
        (["evaluate", "--lora", str(tmp_path / "no-such-run")], "--lora .*no-such-run' does not exist"),
        (["prompts", "--tasks", "single_object", "--num_test", "500", "--output_dir", str(tmp_path / "g")],
         "Could not draw 5500 distinct prompts"),
        (["serve", "--reward", "pickscor"], "Unknown reward 'pickscor'"),
    ]
    for argv, message in cases:
        out = _command(*argv)
        errors = [line for line in out.stderr.splitlines() if " ERROR " in line]
        assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, (argv, out.stderr[-2000:])
        assert re.search(message, errors[0]), (message, errors[0])


def test_evaluate_takes_the_prompt_column_it_names(tmp_path):
    from diffusers_nft.evaluate import EvaluationArguments, load_records

    path = tmp_path / "p.jsonl"
    path.write_text('{"caption": "a red cat", "tag": "color"}\n')
    args = EvaluationArguments(prompts=str(path), caption_column="caption")
    assert load_records(args, demo=False) == [{"prompt": "a red cat", "tag": "color"}]
    with pytest.raises(ValueError, match="--caption_column"):
        load_records(EvaluationArguments(prompts=str(path)), demo=False)


def test_the_model_flag_says_which_pipelines_each_script_takes(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "FLUX.1 for train_nft_flux.py" in text and "any supported flow-matching pipeline for train_nft.py" in text


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_final_report_card_writes_the_demo_card_with_its_own_repo_and_base(tmp_path, monkeypatch):
    # A shortened demo run: --final_report card skips the held-out results table; the card names this run's folder
    # as its repo and builds the bundled base in its snippet, which runs as it is.
    monkeypatch.chdir(tmp_path)
    flags = ["--output_dir", "my-demo", "--max_train_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2",
             "--report_to", "none", "--num_validation_images", "1", "--eval_num_steps", "2"]
    load_training_script().main(flags + ["--final_report", "card"])
    names = set(os.listdir("my-demo"))
    assert "README.md" in names and "results.md" not in names
    card = open("my-demo/README.md").read()
    snippet = re.search(r"```python\n(.*?)```", card[card.index("## Use it"):], re.S).group(1)
    assert "from diffusers_nft.demo import load_demo_pipeline" in snippet and "path/to/the/base" not in snippet
    assert 'pipe.load_lora_weights("my-demo", weight_name="pytorch_lora_weights.safetensors")' in snippet
    namespace = {}
    exec(compile(snippet.replace('image.save("sample.png")', ""), "snippet", "exec"), namespace)
    assert namespace["image"].size == (32, 32)

    load_training_script().main(flags + ["--output_dir", "quiet", "--final_report", "none"])
    assert "README.md" not in os.listdir("quiet") and "pytorch_lora_weights.safetensors" in os.listdir("quiet")


@pytest.mark.slow  # an accelerate launch subprocess; in miniature: test_subcommands_run_in_process
def test_diffusers_nft_train_under_accelerate_launch(tiny_pipeline_dir, tmp_path, prompts):
    config = _write(tmp_path, "run.yaml", {"pretrained_model_name_or_path": tiny_pipeline_dir, "prompts": prompts,
                                           "reward": ["jpeg_compressibility"], "resolution": 64,
                                           "max_sequence_length": 16, "prompts_per_iteration": 2, "group_size": 2,
                                           "num_sampling_steps": 2, "eval_num_steps": 2, "report_to": "none",
                                           "rank": 4, "num_validation_images": 1})
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffusers_nft", "train", config,
               "--max_train_steps", "1", "--output_dir", str(tmp_path / "run")]
    out = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    assert {"pytorch_lora_weights.safetensors", "README.md", "metrics.jsonl"} <= set(os.listdir(tmp_path / "run"))
    assert "Training DiffusionNFT:" in out.stderr and "Config file" in out.stderr
