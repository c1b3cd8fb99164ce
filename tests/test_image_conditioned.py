"""Image-conditioned training, on FLUX.1 Kontext (editing) and FLUX.1 Fill (inpainting): prompts with source images, checked before any compute; the same
source fed to sampling, training and evaluation; groups that share their row's source; rewards that see it; the
LoRA round trip; and the card's source | base | NFT grid with a snippet that loads the source."""

import json
import re

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.conditioning import ConditioningError
from diffusers_nft.pipelines import FluxFillFamily, FluxKontextFamily, get_family
from diffusers_nft.pipelines.base import SOURCE
from diffusers_nft.sampling import rollout

import tiny_pipelines
from conftest import PROMPTS, count_sampling_calls, expected_sampling_calls, load_saved, random_image, small_lora, \
    step_and_check_the_soft_update, tiny_config


@pytest.fixture(scope="module")
def kontext_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("kontext"))
    tiny_pipelines.build_tiny_flux_kontext_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Four source images on disk, and prompt rows that name them by path."""
    folder = tmp_path_factory.mktemp("sources")
    rows = []
    for i, prompt in enumerate(["make it blue", "turn it into a seven", "make it red", "add a dot"]):
        path = str(folder / f"source_{i}.png")
        random_image(10 + i).save(path)
        rows.append({"prompt": prompt, "source": path})
    return rows


def _render(pipe, family, images, prompts, steps=4):
    noise = torch.randn(len(prompts), *family.latent_shape(64), generator=torch.Generator().manual_seed(5))
    return pipe(prompt=prompts, image=images, latents=family.pipeline_latents(noise), output_type="pt",
                **family.call_kwargs(64, steps, 16)).images


def test_the_family_samples_what_the_pipeline_samples_for_the_same_source(kontext_dir):
    pipe = load_saved(kontext_dir)
    family = get_family(pipe)
    assert type(family) is FluxKontextFamily and family.conditioning == {"image": 1}
    images, prompts = [random_image(1), random_image(2)], ["make it blue", "turn it into a seven"]
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"image": i} for i in images], torch.device("cpu"))
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
        text_only = _render(pipe, family, None, prompts)
    theirs = _render(pipe, family, images, prompts)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (theirs - text_only).abs().max() > 1e-3  # the source matters


@pytest.mark.parametrize("sampler", ["dpm_solver", "euler", "heun", "unipc"])
def test_training_feeds_each_group_its_rows_source_with_every_solver(kontext_dir, sources, sampler, tmp_path):
    seen = []

    def likeness(images, prompts, metadata):  # an edit reward: how close each image is to its own source
        seen.extend(zip(prompts, [m["source_image"] for m in metadata]))
        return [-(i - m["source_image"]).abs().mean().item() for i, m in zip(images, metadata)]

    config = tiny_config(tmp_path, max_steps=1, sampler=sampler, prompts_per_iteration=2, group_size=2,
                         image_column="source")
    trainer = NFTTrainer(load_saved(kontext_dir), likeness, config, sources)
    calls = count_sampling_calls(trainer)
    last = step_and_check_the_soft_update(trainer)
    assert calls == [expected_sampling_calls(config)] and last["grad_norm"] > 0
    by_prompt = {row["prompt"]: np.asarray(Image.open(row["source"]).convert("RGB")) for row in sources}
    sampled = seen[2:]  # after the two blank images of the start-up check
    assert len(sampled) == 4
    for prompt, source in sampled:  # every image's reward saw its own row's source, as a (3, 64, 64) tensor
        assert source.shape == (3, 64, 64)
        assert np.array_equal((source.permute(1, 2, 0) * 255).round().byte().numpy(), by_prompt[prompt])


def test_the_lora_loads_into_kontext_and_reproduces_the_policy(kontext_dir, sources, tmp_path):
    pipe = load_saved(kontext_dir)
    peft_config = small_lora(pipe.transformer, rank=4, alpha=12)
    config = tiny_config(tmp_path, max_steps=2, learning_rate=3e-2, image_column="source")
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, sources, peft_config=peft_config)
    trainer.train()
    assert any("lora_B" in k for k in load_file(tmp_path / "pytorch_lora_weights.safetensors"))
    family, images, prompts = trainer.family, [random_image(1), random_image(2)], ["make it blue", "add a dot"]
    trained = _render(pipe, family, images, prompts)  # after train(): the pipeline holds the saved LoRA
    fresh = load_saved(kontext_dir)
    base = _render(fresh, family, images, prompts)
    fresh.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(_render(fresh, family, images, prompts), trained, atol=1e-5, rtol=1e-5)


def test_the_cards_grid_shows_the_source_and_its_snippet_draws_the_gallery(kontext_dir, sources, tmp_path):
    config = tiny_config(tmp_path, max_steps=1, image_column="source", eval_num_steps=3)
    trainer = NFTTrainer(load_saved(kontext_dir), "jpeg_incompressibility", config, sources)
    trainer.train()
    trainer.args.base_model_id = "someone/tiny-kontext"
    card_path = trainer.create_model_card("someone/kontext-nft")
    text = open(card_path).read()
    grid = Image.open(tmp_path / "images" / "before_after.png")
    assert grid.width >= 3 * 256  # source + 2 seeds, each 64 px shown 4x
    assert (tmp_path / "images" / "image_0.png").is_file()
    assert ModelCard.load(card_path).data.to_dict()["pipeline_tag"] == "image-to-image"
    samples = Image.open(trainer.log_validation())  # the validation grid starts each row with its source too
    assert samples.width == (1 + config.num_validation_images) * 256
    snippet = re.search(r"```python\n(.*?)```", text[text.index("## Use it"):], re.S).group(1)
    assert "load_image(" in snippet and "image=" in snippet
    snippet = snippet.replace('"someone/tiny-kontext"', json.dumps(kontext_dir))
    snippet = snippet.replace('"someone/kontext-nft"', json.dumps(str(tmp_path)))
    snippet = snippet.replace('"https://huggingface.co/someone/kontext-nft/resolve/main/images/image_0.png"',
                              json.dumps(str(tmp_path / "images" / "image_0.png")))
    namespace = {}
    exec(compile(snippet.replace('image.save("sample.png")', ""), card_path, "exec"), namespace)
    from_card = np.asarray(namespace["image"], dtype=np.int16)
    widget = ModelCard.load(card_path).data.to_dict()["widget"][0]
    gallery = np.asarray(Image.open(tmp_path / widget["output"]["url"]).convert("RGB"), dtype=np.int16)
    assert widget["text"] == sources[0]["prompt"]
    assert np.abs(gallery[::4, ::4] - from_card).max() <= 1


def test_conditioning_mistakes_fail_before_any_compute_naming_row_and_column(kontext_dir, sources, tmp_path):
    pipe = load_saved(kontext_dir)

    def build(rows, **overrides):
        overrides.setdefault("image_column", "source")
        return NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, **overrides), rows)

    missing = [dict(sources[0]), {"prompt": "make it green", "source": str(tmp_path / "nowhere.png")}]
    with pytest.raises(ConditioningError, match=r"train_dataset row 1, column 'source': no file .*nowhere.png"):
        build(missing)
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ConditioningError, match=r"row 0, column 'source': cannot read"):
        build([{"prompt": "x", "source": str(tmp_path / "text.png")}])
    with pytest.raises(ConditioningError, match=r"row 0, column 'source': 2 images, but the pipeline takes at most 1"):
        build([{"prompt": "x", "source": [sources[0]["source"], sources[1]["source"]]}])
    with pytest.raises(ConditioningError, match="has no column 'picture'"):
        build(sources, image_column="picture")
    with pytest.raises(ConditioningError, match="takes no `mask_image`"):
        build([{**row, "mask": row["source"]} for row in sources], mask_column="mask")


def test_a_text_to_image_pipeline_refuses_an_image_column(tiny_pipeline, sources, tmp_path):
    with pytest.raises(ConditioningError, match="takes no `image`"):
        NFTTrainer(tiny_pipeline, "jpeg_incompressibility", tiny_config(tmp_path, image_column="source"), sources)
    assert PROMPTS  # the shared prompt list stays untouched


# FLUX.1 Fill: inpainting, with a source image and a mask per row

def _mask(size: int = 64, box=(16, 48)) -> Image.Image:
    mask = torch.zeros(size, size)
    mask[box[0] : box[1], box[0] : box[1]] = 1
    return Image.fromarray((mask * 255).byte().numpy(), mode="L")


@pytest.fixture(scope="module")
def fill_dir(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("fill"))
    tiny_pipelines.build_tiny_flux_fill_pipeline().save_pretrained(folder)
    return folder


def test_fill_samples_what_its_pipeline_samples_for_the_same_image_and_mask(fill_dir):
    pipe = load_saved(fill_dir)
    family = get_family(pipe)
    assert type(family) is FluxFillFamily and family.required_conditioning == ("image", "mask_image")
    images, masks, prompts = [random_image(1), random_image(2)], [_mask(), _mask(box=(0, 32))], ["a red dot", "a blue dot"]
    shape = family.latent_shape(64)
    noise = torch.randn(2, *shape, generator=torch.Generator().manual_seed(5))
    cond = family.encode_prompts(prompts, torch.device("cpu"), 16)
    cond[SOURCE] = family.encode_conditioning([{"image": i, "mask_image": m} for i, m in zip(images, masks)],
                                              torch.device("cpu"))
    kwargs = dict(prompt=prompts, latents=family.pipeline_latents(noise), image=images, output_type="pt",
                  **family.call_kwargs(64, 4, 16))
    with torch.no_grad():
        ours = family.decode(rollout(lambda x, s: family.predict_velocity(x, s, cond), family.sampling_sigmas(4, shape),
                                     noise, "euler"))
        theirs = pipe(mask_image=masks, **kwargs).images
        unmasked = pipe(mask_image=[Image.new("L", (64, 64), 0)] * 2, **kwargs).images
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert (theirs - unmasked).abs().max() > 1e-2  # the mask matters


def test_fill_trains_on_image_and_mask_and_its_reward_sees_the_mask(fill_dir, sources, tmp_path):
    rows = [{**row, "mask": str(tmp_path / f"mask_{i}.png")} for i, row in enumerate(sources)]
    for i, row in enumerate(rows):
        _mask(box=(8 * i, 8 * i + 32)).save(row["mask"])
    seen = []

    def outside_kept(images, prompts, metadata):  # how much of the source survives outside the mask
        seen.extend(m["mask"] for m in metadata)
        return [-((i - m["source_image"]).abs() * (1 - m["mask"])).mean().item() for i, m in zip(images, metadata)]

    config = tiny_config(tmp_path, max_steps=1, image_column="source", mask_column="mask")
    history = NFTTrainer(load_saved(fill_dir), outside_kept, config, rows).train()
    assert history[-1]["grad_norm"] > 0 and history[-1]["reward/outside_kept/std"] > 0
    assert all(m.shape == (1, 64, 64) and set(m.unique().tolist()) == {0.0, 1.0} for m in seen)


def test_fill_refuses_rows_without_their_mask_or_with_a_mask_of_another_size(fill_dir, sources, tmp_path):
    pipe = load_saved(fill_dir)
    with pytest.raises(ConditioningError, match=r"needs \['mask_image'\].*--mask_column"):
        NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, image_column="source"), sources)
    (tmp_path / "small.png").parent.mkdir(exist_ok=True)
    _mask(size=32, box=(0, 8)).save(tmp_path / "small.png")
    rows = [{**row, "mask": str(tmp_path / "small.png")} for row in sources]
    with pytest.raises(ConditioningError, match=r"row 0: the mask is \(32, 32\) but its image is \(64, 64\)"):
        NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, image_column="source", mask_column="mask"),
                   rows)


# Rewards that see the source

def test_edit_consistency_scores_what_of_the_source_survives(tmp_path):
    from diffusers_nft.conditioning import as_tensor
    from diffusers_nft.rewards import load_reward

    from tiny_reward_models import save_tiny_clip

    reward = load_reward("edit_consistency", model_id=save_tiny_clip(str(tmp_path / "clip")), device="cpu")
    source = as_tensor(random_image(1))
    other = as_tensor(random_image(2))
    mask = as_tensor(_mask())  # the edit goes in the middle square
    inside_changed = source.clone()
    inside_changed[:, 16:48, 16:48] = other[:, 16:48, 16:48]
    images = torch.stack([source, inside_changed, other])
    plain = reward(images, ["x"] * 3, [{"source_image": source}] * 3)
    assert plain["scores"][0] == pytest.approx(1.0, abs=1e-5) and plain["scores"][2] < plain["scores"][0]
    masked = reward(images, ["x"] * 3, [{"source_image": source, "mask": mask}] * 3)
    assert masked["pixel"][:2] == pytest.approx([1.0, 1.0], abs=1e-6)  # outside the mask both keep the source
    assert masked["pixel"][2] < 0.9
    expected = [0.5 * f + 0.5 * p for f, p in zip(masked["feature"], masked["pixel"])]
    assert masked["scores"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="no source_image"):
        reward(images[:1], ["x"], [{}])


def test_edit_rewards_serve_over_the_reward_server_with_their_sources(tmp_path):
    """The source image and the mask cross the wire as lossless PNGs: the served score is the local one."""
    from diffusers_nft.conditioning import as_tensor
    from diffusers_nft.rewards import RemoteReward, load_reward
    from diffusers_nft.rewards.serve import create_app

    from conftest import serve_in_thread
    from tiny_reward_models import save_tiny_clip

    clip = save_tiny_clip(str(tmp_path / "clip"))
    source, mask = as_tensor(random_image(1)), as_tensor(_mask())
    images = torch.stack([as_tensor(random_image(2)), source])
    metadata = [{"source_image": source, "mask": mask, "tag": "a"}, {"source_image": source, "mask": mask, "tag": "b"}]
    local = load_reward("edit_consistency", model_id=clip, device="cpu")(images, ["x", "y"], metadata)
    server, thread, url = serve_in_thread(create_app("edit_consistency", model_id=clip, device="cpu"))
    try:
        remote = RemoteReward(url, name="edit_consistency")(images, ["x", "y"], metadata)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    scores = remote["scores"] if isinstance(remote, dict) else remote
    assert scores == pytest.approx(local["scores"], abs=1e-6) and scores[1] == pytest.approx(1.0, abs=1e-5)


def test_the_evaluation_command_takes_the_conditioning_columns(kontext_dir, sources, tmp_path):
    """`python -m diffusers_nft.evaluate --image_column source`: every image from its prompt's source, the rewards
    see it, and the grid shows the sources over the models' rows."""
    from diffusers_nft.evaluate import EvaluationArguments, run
    from diffusers_nft.rewards import register_reward

    seen = []

    def likeness(images, prompts, metadata):
        seen.extend((p, m["source_image"]) for p, m in zip(prompts, metadata))
        return [-(i - m["source_image"]).abs().mean().item() for i, m in zip(images, metadata)]

    register_reward("likeness", lambda **_: likeness)
    prompts = tmp_path / "edits.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in sources))
    args = EvaluationArguments(pretrained_model_name_or_path=kontext_dir, prompts=str(prompts), reward=["likeness"],
                               image_column="source", seeds=[0], num_steps=2, resolution=64, max_sequence_length=16,
                               output_dir=str(tmp_path / "eval"), grid_prompts=2)
    results = run(args)
    assert "likeness/mean" in results["base, CFG 1"] and len(seen) == 4
    by_prompt = {row["prompt"]: np.asarray(Image.open(row["source"]).convert("RGB")) for row in sources}
    for prompt, source in seen:
        assert np.array_equal((source.permute(1, 2, 0) * 255).round().byte().numpy(), by_prompt[prompt])
    grid = Image.open(tmp_path / "eval" / "grid.png")
    assert grid.height > 2 * 128  # the sources' row above the model's
    with pytest.raises(ConditioningError, match="no file"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"prompt": "x", "source": str(tmp_path / "none.png")}) + "\n")
        run(EvaluationArguments(pretrained_model_name_or_path=kontext_dir, prompts=str(bad), reward=["likeness"],
                                image_column="source", resolution=64))
