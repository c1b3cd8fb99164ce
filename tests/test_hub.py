import os
import re

import pytest
import torch
import yaml
from diffusers import StableDiffusion3Pipeline
from huggingface_hub import ModelCard

from diffusers_nft import NFTTrainer

from conftest import PROMPTS, load_training_script, tiny_config


class Refused(Exception):
    """What the Hub raises for a token that cannot write: an HTTP error with its response's status."""

    def __init__(self, status):
        super().__init__(f"{status} Client Error: Forbidden")
        self.response = type("Response", (), {"status_code": status})()


def recording_api(destination, fail=False):
    """A stand-in for `huggingface_hub.HfApi` bound to its real signatures (a call that drifts from them fails):
    it records the calls and copies what would be uploaded, honouring the allow and ignore patterns as the Hub does. `fail`:
    True (the Hub not reached) or an exception to raise from `create_repo`."""
    import shutil
    from unittest.mock import create_autospec

    from huggingface_hub.hf_api import HfApi  # the class itself, even where a test replaced huggingface_hub.HfApi
    from huggingface_hub.utils import filter_repo_objects

    api = create_autospec(HfApi, instance=True)

    def create_repo(*args, **kwargs):
        if fail is True:
            raise ConnectionError("hub unreachable")
        if fail:
            raise fail

    def upload_folder(*, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        files = [os.path.relpath(os.path.join(d, f), folder_path) for d, _, fs in os.walk(folder_path) for f in fs]
        for rel in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            os.makedirs(os.path.join(destination, os.path.dirname(rel)), exist_ok=True)
            shutil.copy(os.path.join(folder_path, rel), os.path.join(destination, rel))

    api.create_repo.side_effect = create_repo
    api.upload_folder.side_effect = upload_folder
    return api


def listing(folder):
    """Every file under `folder` with its size and modification time."""
    return sorted((os.path.relpath(os.path.join(d, f), folder), os.stat(os.path.join(d, f)).st_size,
                   os.stat(os.path.join(d, f)).st_mtime_ns) for d, _, fs in os.walk(folder) for f in fs)


@pytest.fixture(autouse=True)
def validations(monkeypatch):
    """The Hub's card validation, offline: each call is recorded with the card's metadata, and accepted."""
    seen = []
    monkeypatch.setattr(ModelCard, "validate", lambda card, repo_type=None: seen.append(card.data.to_dict()))
    return seen


@pytest.fixture
def trained(tiny_pipeline_dir, tmp_path):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    config = tiny_config(tmp_path / "run", max_steps=2, save_steps=1, learning_rate=3e-2,
                         validation_prompts=["a red cat", "a blue dog"], validation_steps=1, reward_weights=[1.0, 0.5],
                         base_model_id="someone/tiny-sd3", license="openrail++")
    trainer = NFTTrainer(pipe, ["jpeg_compressibility", "jpeg_incompressibility"], config, PROMPTS)
    trainer.train()
    return trainer


def test_push_to_hub_uploads_a_loadable_lora_with_a_real_card(trained, tiny_pipeline_dir, tmp_path):
    api = recording_api(str(tmp_path / "hub"))
    url = trained.push_to_hub("someone/tiny-nft", token="hf_secret", private=True, api=api)
    assert url == "https://huggingface.co/someone/tiny-nft"
    create_kwargs, upload_kwargs = api.create_repo.call_args.kwargs, api.upload_folder.call_args.kwargs
    assert create_kwargs["token"] == "hf_secret" and create_kwargs["private"] is True
    assert upload_kwargs["token"] == "hf_secret" and upload_kwargs["repo_id"] == "someone/tiny-nft"

    uploaded = tmp_path / "hub"
    files = {os.path.relpath(os.path.join(d, f), uploaded) for d, _, fs in os.walk(uploaded) for f in fs}
    assert {"README.md", "pytorch_lora_weights.safetensors", "reward_curve.png", "images/before_after.png",
            "images/sample_0.png", "images/sample_1.png"} <= files
    assert not any(f.startswith(("checkpoint-", "logs", "samples", ".tmp")) for f in files)
    assert os.path.isdir(trained.args.output_dir + "/checkpoint-2")  # still there locally

    card = ModelCard.load(uploaded / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "diffusers" and meta["base_model"] == "someone/tiny-sd3"
    assert meta["license"] == "openrail++" and "<Gallery />" in card.text
    assert {"diffusers", "lora", "template:sd-lora", "diffusers-nft", "reinforcement-learning", "text-to-image",
            "sd3"} <= set(meta["tags"])
    assert [w["text"] for w in meta["widget"]] == ["a red cat", "a blue dog"]
    assert all((uploaded / w["output"]["url"]).is_file() for w in meta["widget"])
    yaml.safe_load(open(uploaded / "README.md").read().split("---")[1])
    for text in ("jpeg_compressibility", "load_lora_weights(\"someone/tiny-nft\", weight_name=\"pytorch_lora_weights.safetensors\")",
                 "guidance_scale=1.0", "max_sequence_length=16", "height=64", "arXiv 2509.16117", "@inproceedings", "| `nft_beta` | 1.0 |", "## Limitations"):
        assert text in card.text, text

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(latents=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), num_inference_steps=3,
                  guidance_scale=1.0, max_sequence_length=16, output_type="pt")
    base = pipe("a red cat", **kwargs).images
    pipe.load_lora_weights(str(uploaded), weight_name="pytorch_lora_weights.safetensors")
    assert (pipe("a red cat", **kwargs).images - base).abs().max() > 1e-4


def test_the_card_is_validated_before_anything_is_uploaded(trained, tmp_path, validations, monkeypatch):
    trained.push_to_hub("someone/tiny-nft", api=recording_api(str(tmp_path / "hub")))
    assert [v["base_model"] for v in validations] == ["someone/tiny-sd3"]

    def refuse(card, repo_type=None):
        raise ValueError("Invalid metadata in README.md: 'license' must be one of [...]")

    monkeypatch.setattr(ModelCard, "validate", refuse)
    api = recording_api(str(tmp_path / "hub2"))
    with pytest.raises(RuntimeError, match=r"did not accept the model card .*'license' must be one of"):
        trained.push_to_hub("someone/tiny-nft", api=api)
    assert not api.create_repo.called and not (tmp_path / "hub2").exists()


@pytest.mark.parametrize("failure, reason", [
    (True, r"the Hub was not reached \(ConnectionError: hub unreachable\)"),
    pytest.param(Refused(403), r"the Hub refused it \(403: 403 Client Error: Forbidden\); the token cannot write there",
                 marks=pytest.mark.slow),  # a 2-step run; test_the_script_checks_the_hub_before_training has the 403
])
def test_a_failed_upload_says_why_and_keeps_the_lora_and_card(trained, tmp_path, failure, reason):
    folder = trained.args.output_dir
    assert not os.path.exists(os.path.join(folder, "README.md"))
    with pytest.raises(RuntimeError, match=f"someone/tiny-nft.* failed: {reason}.*The LoRA and its card stay in"):
        trained.push_to_hub("someone/tiny-nft", api=recording_api(str(tmp_path / "hub"), fail=failure))
    names = {name for name, _, _ in listing(folder)}
    assert {"README.md", "pytorch_lora_weights.safetensors", "images/before_after.png", "reward_curve.png"} <= names
    assert not (tmp_path / "hub").exists()
    assert "someone/tiny-nft" in ModelCard.load(os.path.join(folder, "README.md")).text  # written for that repo


@pytest.mark.slow  # a 2-step run; the card's validation is also in test_the_card_is_validated_before_anything_is_uploaded
def test_a_refused_card_stays_in_the_output_dir(trained, tmp_path, monkeypatch):
    def refuse(card, repo_type=None):
        raise ValueError("Invalid metadata in README.md: 'license' must be one of [...]")

    monkeypatch.setattr(ModelCard, "validate", refuse)
    with pytest.raises(RuntimeError, match="The Hub did not accept the model card"):
        trained.push_to_hub("someone/tiny-nft", api=recording_api(str(tmp_path / "hub")))
    assert os.path.isfile(os.path.join(trained.args.output_dir, "README.md"))


@pytest.mark.slow  # a 2-step run; in miniature: test_the_upload_sends_only_what_the_run_wrote_and_refuses_symlinks
def test_the_upload_sends_results_and_never_checkpoints_logs_or_staging(trained, tmp_path):
    (tmp_path / "run" / "results.md").write_text("| a | b |")
    (tmp_path / "run" / "logs").mkdir(exist_ok=True)
    (tmp_path / "run" / "logs" / "events.out.tfevents").write_text("x")
    trained.push_to_hub("someone/tiny-nft", api=recording_api(str(tmp_path / "hub")))
    uploaded = {name for name, _, _ in listing(tmp_path / "hub")}
    local = {name for name, _, _ in listing(tmp_path / "run")}
    assert {"results.md", "metrics.jsonl", "README.md", "pytorch_lora_weights.safetensors"} <= uploaded
    assert any(n.startswith("checkpoint-") for n in local) and any(n.startswith("samples/") for n in local)
    assert not [n for n in uploaded if n.startswith(("checkpoint-", "logs/", "samples/", ".tmp"))]
    assert "README.md" in local and not [n for n in local if n.startswith(".tmp")]  # published after success


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_script_pushes_with_the_given_repo_and_token_or_the_output_dir_name(tiny_pipeline_dir, tmp_path, monkeypatch):
    import huggingface_hub

    script = load_training_script()
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\n")
    for hub_flags, repo in ((["--hub_model_id", "someone/nft-x"], "someone/nft-x"), (["--overwrite_output_dir"], "my-run")):
        api = recording_api(str(tmp_path / "hub" / repo))
        monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None, api=api: api)
        script.main(["--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts", str(prompts),
                     "--reward", "jpeg_compressibility", "--output_dir", str(tmp_path / "my-run"), "--resolution", "64", "--max_sequence_length", "16",
                     "--max_train_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2",
                     "--num_sampling_steps", "2", "--eval_num_steps", "2", "--num_validation_images", "1",
                     "--report_to", "none", "--rank", "4", "--push_to_hub", "--hub_token", "hf_from_flag", *hub_flags])
        assert api.upload_folder.call_args.kwargs["repo_id"] == repo
        assert api.create_repo.call_args.kwargs["token"] == "hf_from_flag"
        assert (tmp_path / "hub" / repo / "README.md").is_file()


def test_the_script_checks_the_hub_before_training(tiny_pipeline_dir, tmp_path, monkeypatch):
    import huggingface_hub

    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\n")
    for failure, reason in ((Refused(403), "the Hub refused it (403"), (True, "the Hub was not reached")):
        api = recording_api(str(tmp_path / "hub"), fail=failure)
        monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None, api=api: api)
        with pytest.raises(ValueError, match=r"the Hub repo 'someone/x' cannot be created or written before "
                                             rf"training: {re.escape(reason)}"):
            load_training_script().main(["--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts",
                                         str(prompts), "--reward", "jpeg_compressibility", "--output_dir",
                                         str(tmp_path / "run"), "--report_to", "none", "--push_to_hub",
                                         "--hub_model_id", "someone/x"])
        assert api.create_repo.call_args.kwargs["repo_id"] == "someone/x"
        assert not (tmp_path / "run" / "metrics.jsonl").exists() and not api.upload_folder.called
    # the library checks too, when the config asks for an upload
    from diffusers_nft import NFTTrainer

    from conftest import tiny_config

    with pytest.raises(ValueError, match="the Hub was not reached"):
        NFTTrainer(StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir), "jpeg_compressibility",
                   tiny_config(tmp_path / "lib", push_to_hub=True, hub_model_id="someone/x"), PROMPTS)


def test_the_upload_sends_only_what_the_run_wrote_and_refuses_symlinks(trained, tmp_path):
    run = tmp_path / "run"
    (run / ".env").write_text("HF_TOKEN=hf_secret")
    (run / "notes").mkdir()
    (run / "notes" / "private.md").write_text("mine")
    (run / "wandb").mkdir()
    (run / "wandb" / "run.log").write_text("x")
    (tmp_path / "token").write_text("hf_secret")
    os.symlink(tmp_path / "token", run / "token.txt")  # a link outside the allow-list is left out
    trained.push_to_hub("someone/tiny-nft", api=recording_api(str(tmp_path / "hub")))
    uploaded = {name for name, _, _ in listing(tmp_path / "hub")}
    assert not [n for n in uploaded if n.startswith((".env", "notes/", "wandb/", "token", ".diffusers-nft"))]
    assert {"README.md", "pytorch_lora_weights.safetensors", "reward_curve.png", "metrics.jsonl"} <= uploaded
    os.remove(run / "reward_curve.png")
    os.symlink(tmp_path / "token", run / "reward_curve.png")  # a link among the run's own files: nothing is sent
    api = recording_api(str(tmp_path / "hub2"))
    with pytest.raises(ValueError, match=r"Nothing was uploaded: \['reward_curve.png'\].*symbolic links"):
        trained.push_to_hub("someone/tiny-nft", api=api, write_card=False)
    assert not api.upload_folder.called
