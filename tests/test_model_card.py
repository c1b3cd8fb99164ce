"""The model card: a Hub id or nothing as base_model, and a usage snippet that reproduces what the run evaluated."""

import json
import os
import re

import numpy as np
import pytest
from diffusers import StableDiffusion3Pipeline
from huggingface_hub import ModelCard
from PIL import Image

from diffusers_nft import NFTTrainer
from diffusers_nft.generation import generate_images
from diffusers_nft.hub import hub_base_model

from conftest import PROMPTS, tiny_config


def test_base_model_is_a_hub_id_or_nothing(tmp_path):
    assert hub_base_model("stabilityai/stable-diffusion-3.5-medium") == "stabilityai/stable-diffusion-3.5-medium"
    assert hub_base_model(str(tmp_path)) is None  # a local folder that names no Hub id
    (tmp_path / "model_index.json").write_text(json.dumps({"_name_or_path": "stabilityai/stable-diffusion-3-medium"}))
    assert hub_base_model(str(tmp_path)) == "stabilityai/stable-diffusion-3-medium"  # the id it was saved from
    (tmp_path / "model_index.json").write_text(json.dumps({"_name_or_path": str(tmp_path)}))
    assert hub_base_model(str(tmp_path)) is None
    assert hub_base_model("/tmp/x/y") is None and hub_base_model(None) is None
    assert hub_base_model(str(tmp_path), base_model_id="me/base") == "me/base"
    with pytest.raises(ValueError, match="must be a Hub id"):
        hub_base_model(None, base_model_id=str(tmp_path))


def test_a_relative_local_path_never_reaches_the_card(tmp_path, monkeypatch):
    # "models/sd3" and "weights/base" look like Hub ids ('org/name'); as folders here they are local paths.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "sd3").mkdir(parents=True)
    (tmp_path / "weights" / "base").mkdir(parents=True)
    assert hub_base_model("models/sd3") is None
    (tmp_path / "models" / "sd3" / "model_index.json").write_text(json.dumps({"_name_or_path": "weights/base"}))
    assert hub_base_model("models/sd3") is None
    (tmp_path / "models" / "sd3" / "model_index.json").write_text(json.dumps({"_name_or_path": "org/real-id"}))
    assert hub_base_model("models/sd3") == "org/real-id"


@pytest.fixture
def trained(tiny_pipeline_dir, tmp_path):
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    config = tiny_config(tmp_path / "run", max_steps=2, learning_rate=3e-2, validation_prompts=["a red cat"],
                         eval_num_steps=3)
    trainer = NFTTrainer(pipe, "jpeg_compressibility", config, PROMPTS)
    trainer.train()
    return trainer


def test_a_local_base_never_reaches_the_card(trained, tiny_pipeline_dir):
    card_path = trained.create_model_card("someone/tiny-nft")
    text = open(card_path).read()
    assert "base_model" not in ModelCard.load(card_path).data.to_dict()
    assert tiny_pipeline_dir not in text and "huggingface.co//" not in text
    assert "names no Hub model" in text and 'from_pretrained("path/to/the/base/pipeline"' in text


def _run_the_cards_snippet(trained, tiny_pipeline_dir):
    """Write the card and run its code block as it is (the two Hub ids pointed at local folders): `(card path,
    snippet, the image it draws as int16 pixels)`."""
    trained.args.base_model_id = "someone/tiny-sd3"
    card_path = trained.create_model_card("someone/tiny-nft")
    results = open(card_path).read()
    snippet = re.search(r"```python\n(.*?)```", results[results.index("## Use it"):], re.S).group(1)
    snippet = snippet.replace('"someone/tiny-sd3"', json.dumps(tiny_pipeline_dir))
    snippet = snippet.replace('"someone/tiny-nft"', json.dumps(trained.args.output_dir))
    snippet = snippet.replace('image.save("sample.png")', "")
    namespace = {}
    exec(compile(snippet, card_path, "exec"), namespace)
    return card_path, snippet, np.asarray(namespace["image"], dtype=np.int16)


def test_the_cards_snippet_reproduces_the_evaluation(trained, tiny_pipeline_dir):
    """The card's code block gives the image the evaluation gives for the same prompt and seed; without the trained
    text length it would not."""
    card_path, snippet, from_card = _run_the_cards_snippet(trained, tiny_pipeline_dir)
    assert "max_sequence_length=16" in snippet and "num_inference_steps=3" in snippet and "height=64" in snippet

    trained.pipeline.set_progress_bar_config(disable=True)
    with trained.policy.ema_weights():
        kwargs = dict(height=64, width=64, num_inference_steps=3, guidance_scale=1.0)
        evaluated = generate_images(trained.pipeline, ["a red cat"], [0], batch_size=1,
                                    call_kwargs=dict(kwargs, max_sequence_length=16))
        padded = generate_images(trained.pipeline, ["a red cat"], [0], batch_size=1,
                                 call_kwargs=dict(kwargs, max_sequence_length=256))
    as_pixels = lambda images: (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert np.abs(from_card - as_pixels(evaluated)).max() <= 1
    assert np.abs(from_card - as_pixels(padded)).max() > 8  # the text length matters: the card must pass it


def test_the_cards_snippet_draws_the_cards_own_gallery_image(trained, tiny_pipeline_dir):
    """The snippet names a prompt and a seed; the card's first gallery image is that prompt at that seed, pixel for
    pixel (one noise convention for the gallery and the snippet), and the gallery's next seed is another image."""
    card_path, snippet, from_card = _run_the_cards_snippet(trained, tiny_pipeline_dir)
    widget = ModelCard.load(card_path).data.to_dict()["widget"][0]
    assert widget["text"] == "a red cat" and json.dumps("a red cat") in snippet and "manual_seed(0)" in snippet
    folder = os.path.dirname(card_path)
    gallery = np.asarray(Image.open(os.path.join(folder, widget["output"]["url"])).convert("RGB"), dtype=np.int16)
    scale = gallery.shape[0] // from_card.shape[0]  # the card shows the 64 px images 4x larger
    assert scale == 4 and gallery.shape[:2] == (256, 256)
    assert np.abs(gallery[::scale, ::scale] - from_card).max() <= 1
    other_seed = trained.generate(["a red cat"], [1], weights="ema")[0].permute(1, 2, 0).numpy() * 255
    assert np.abs(other_seed.round().astype(np.int16) - from_card).max() > 8


def test_the_license_is_the_base_models_unless_one_is_named(tmp_path, monkeypatch):
    import huggingface_hub

    from diffusers_nft.hub import write_model_card

    asked = []

    def model_info(repo_id, timeout=None):  # the Hub's answer for a base model whose card says its license
        asked.append(repo_id)
        return type("Info", (), {"card_data": {"license": "openrail++"}})()

    monkeypatch.setattr(huggingface_hub, "model_info", model_info)

    def card_license(**values):
        path = write_model_card(str(tmp_path), repo_id="someone/x", base_model="org/base", pipeline_class=
                                "StableDiffusion3Pipeline", rewards=[("ocr", 1.0)], hyperparameters={}, widget=[],
                                **values)
        return ModelCard.load(path).data.license

    assert card_license() == "openrail++" and asked == ["org/base"]
    assert card_license(license="apache-2.0") == "apache-2.0" and asked == ["org/base"]  # named: the Hub not asked
    monkeypatch.setattr(huggingface_hub, "model_info", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    assert card_license() is None  # offline: no license invented
