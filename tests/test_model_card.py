"""The model card: a Hub id or nothing as base_model, and a usage snippet that reproduces what the run evaluated."""

import json
import re

import numpy as np
import pytest
from diffusers import StableDiffusion3Pipeline
from huggingface_hub import ModelCard

from diffusers_nft import NFTTrainer
from diffusers_nft.evaluate import generate_images
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


def test_the_cards_snippet_reproduces_the_evaluation(trained, tiny_pipeline_dir):
    """The code block of the written card, run as it is (the two Hub ids pointed at local folders), gives the image
    the evaluation gives for the same prompt and seed; without the trained text length it would not."""
    trained.args.base_model_id = "someone/tiny-sd3"
    card_path = trained.create_model_card("someone/tiny-nft")
    results = open(card_path).read()
    snippet = re.search(r"```python\n(.*?)```", results[results.index("## Use it"):], re.S).group(1)
    snippet = snippet.replace('"someone/tiny-sd3"', json.dumps(tiny_pipeline_dir))
    snippet = snippet.replace('"someone/tiny-nft"', json.dumps(trained.args.output_dir))
    snippet = snippet.replace('image.save("sample.png")', "")
    assert "max_sequence_length=16" in snippet and "num_inference_steps=3" in snippet and "height=64" in snippet

    namespace = {}
    exec(compile(snippet, card_path, "exec"), namespace)
    from_card = np.asarray(namespace["image"], dtype=np.int16)

    trained.pipeline.set_progress_bar_config(disable=True)
    with trained.policy.ema_weights():
        kwargs = dict(resolution=64, num_steps=3, guidance_scale=1.0, batch_size=1)
        evaluated = generate_images(trained.pipeline, ["a red cat"], [0], max_sequence_length=16, **kwargs)
        padded = generate_images(trained.pipeline, ["a red cat"], [0], max_sequence_length=256, **kwargs)
    as_pixels = lambda images: (images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert np.abs(from_card - as_pixels(evaluated)).max() <= 1
    assert np.abs(from_card - as_pixels(padded)).max() > 8  # the text length matters: the card must pass it
