import os

import pytest
import torch
import yaml
from diffusers import StableDiffusion3Pipeline
from huggingface_hub import ModelCard

from diffusers_nft import NFTTrainer
from diffusers_nft.hub import UPLOAD_IGNORE

from conftest import PROMPTS, tiny_config


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records the calls and copies what would be uploaded."""

    def __init__(self, destination, fail=False):
        self.calls, self.destination, self.fail = [], destination, fail

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        if self.fail:
            raise ConnectionError("hub unreachable")

    def upload_folder(self, **kwargs):
        import fnmatch
        import shutil

        self.calls.append(("upload_folder", kwargs))
        root = kwargs["folder_path"]
        for folder, _, files in os.walk(root):
            for name in files:
                rel = os.path.relpath(os.path.join(folder, name), root)
                if any(fnmatch.fnmatch(rel, pattern) for pattern in kwargs["ignore_patterns"]):
                    continue
                os.makedirs(os.path.join(self.destination, os.path.dirname(rel)), exist_ok=True)
                shutil.copy(os.path.join(folder, name), os.path.join(self.destination, rel))


@pytest.fixture
def trained(tiny_pipeline_dir, tmp_path):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    config = tiny_config(tmp_path / "run", max_steps=2, save_steps=1, learning_rate=3e-2,
                         validation_prompts=["a red cat", "a blue dog"], validation_steps=1, reward_weights=[1.0, 0.5])
    trainer = NFTTrainer(pipe, ["jpeg_compressibility", "jpeg_incompressibility"], config, PROMPTS)
    trainer.train()
    return trainer


def test_push_to_hub_uploads_a_loadable_lora_with_a_real_card(trained, tiny_pipeline_dir, tmp_path):
    api = RecordingApi(str(tmp_path / "hub"))
    url = trained.push_to_hub("someone/tiny-nft", token="hf_secret", private=True, api=api)
    assert url == "https://huggingface.co/someone/tiny-nft"
    (create, create_kwargs), (upload, upload_kwargs) = api.calls
    assert create == "create_repo" and create_kwargs["token"] == "hf_secret" and create_kwargs["private"] is True
    assert upload == "upload_folder" and upload_kwargs["token"] == "hf_secret"
    assert upload_kwargs["repo_id"] == "someone/tiny-nft" and upload_kwargs["ignore_patterns"] == UPLOAD_IGNORE

    uploaded = tmp_path / "hub"
    files = {os.path.relpath(os.path.join(d, f), uploaded) for d, _, fs in os.walk(uploaded) for f in fs}
    assert {"README.md", "pytorch_lora_weights.safetensors", "reward_curve.png", "images/before_after.png",
            "images/sample_0.png", "images/sample_1.png"} <= files
    assert not any(f.startswith(("checkpoint-", "logs", "samples", ".tmp")) for f in files)
    assert os.path.isdir(trained.args.output_dir + "/checkpoint-2")  # still there locally

    card = ModelCard.load(uploaded / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "diffusers" and meta["base_model"]
    assert {"diffusers", "lora", "diffusers-nft", "reinforcement-learning", "text-to-image", "sd3"} <= set(meta["tags"])
    assert [w["text"] for w in meta["widget"]] == ["a red cat", "a blue dog"]
    assert all((uploaded / w["output"]["url"]).is_file() for w in meta["widget"])
    yaml.safe_load(open(uploaded / "README.md").read().split("---")[1])
    for text in ("jpeg_compressibility", "load_lora_weights(\"someone/tiny-nft\", weight_name=\"pytorch_lora_weights.safetensors\")",
                 "guidance_scale=1.0", "arXiv 2509.16117", "@inproceedings", "| `nft_beta` | 1.0 |", "## Limitations"):
        assert text in card.text, text

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(latents=torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), num_inference_steps=3,
                  guidance_scale=1.0, max_sequence_length=16, output_type="pt")
    base = pipe("a red cat", **kwargs).images
    pipe.load_lora_weights(str(uploaded), weight_name="pytorch_lora_weights.safetensors")
    assert (pipe("a red cat", **kwargs).images - base).abs().max() > 1e-4


def test_failed_upload_raises_and_keeps_the_output(trained, tmp_path):
    before = sorted(os.listdir(trained.args.output_dir))
    with pytest.raises(RuntimeError, match="someone/tiny-nft.*failed.*hub unreachable.*Nothing local was changed"):
        trained.push_to_hub("someone/tiny-nft", api=RecordingApi(str(tmp_path / "hub"), fail=True))
    after = sorted(os.listdir(trained.args.output_dir))
    assert set(before) <= set(after) and "pytorch_lora_weights.safetensors" in after
