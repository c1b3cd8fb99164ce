import os

import numpy as np
import pytest
import torch

from diffusers_nft.demo.world import (
    CLIP_LENGTH,
    COLOR_NAMES,
    HELD_OUT,
    MAX_SEQUENCE_LENGTH,
    PHRASINGS,
    load_digits_split,
    prompt_dataset,
    prompt_records,
    render,
)
from diffusers_nft.rewards import WeightedRewards, load_reward


def test_prompt_splits_hold_combinations_out_of_training():
    train, evaluation, held_out = (prompt_records(s) for s in ("train", "eval", "held_out"))
    assert len(train) == 50 * len(PHRASINGS) and len(evaluation) == 60 and len(held_out) == 10
    assert not {(r["digit"], r["color"]) for r in train} & set(HELD_OUT)
    assert {d for d, _ in HELD_OUT} == set(range(10)) and {c for _, c in HELD_OUT} == set(COLOR_NAMES)
    assert sum(r["held_out"] for r in evaluation) == 10
    assert "a handwritten seven in red" in {r["prompt"] for r in evaluation}
    assert {"the digit 7, red", "a red handwritten digit seven"} <= {r["prompt"] for r in train}
    dataset = prompt_dataset("train")
    assert dataset.column_names == ["prompt", "digit", "color", "held_out"]
    with pytest.raises(ValueError, match="split"):
        prompt_records("test")


def test_digit_split_and_rendering():
    train_digits, train_labels = load_digits_split("train")
    held_digits, _ = load_digits_split("held_out")
    assert len(train_digits) + len(held_digits) == 1797 and len(held_digits) == 360
    assert len(set(map(int, train_labels))) == 10
    images = render(held_digits[:2], ["red", "cyan"])
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert images[0, 1:].abs().max() == 0 and images[0, 0].max() > 0.5  # red: only the red channel
    assert images[1, 0].abs().max() == 0 and torch.equal(images[1, 1], images[1, 2])  # cyan = green + blue
    assert images[:, :, :4].abs().max() == 0 and images[:, :, :, -4:].abs().max() == 0  # black border


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_digit_eval_scores_real_held_out_digits():
    reward = load_reward("digit_eval", device="cpu")
    digits, labels = load_digits_split("held_out")
    for color in COLOR_NAMES:
        images = render(digits, [color] * len(digits))
        metadata = [{"digit": int(label), "color": color} for label in labels]
        out = reward(images, ["p"] * len(digits), metadata)
        predicted_digits, predicted_colors = reward.predict(images)
        digit_accuracy = (predicted_digits == torch.as_tensor(labels)).float().mean().item()
        color_accuracy = sum(c == color for c in predicted_colors) / len(digits)
        assert digit_accuracy >= 0.95 and color_accuracy >= 0.95, (color, digit_accuracy, color_accuracy)
        assert sum(out["strict"]) / len(digits) >= 0.9


def test_digit_eval_partial_credit():
    digits, labels = load_digits_split("held_out")
    images = render(digits[:3], ["red", "red", "red"])
    right = int(labels[0])
    metadata = [
        {"digit": right, "color": "red"},
        {"digit": (right + 1) % 10, "color": "red"},
        {"digit": (right + 1) % 10, "color": "blue"},
    ]
    metadata[1]["digit"] = (int(labels[1]) + 1) % 10
    metadata[2]["digit"] = (int(labels[2]) + 1) % 10
    scores = WeightedRewards("digit_eval")(images, ["a", "b", "c"], metadata)
    assert scores["digit_eval"].tolist() == [1.0, 0.5, 0.0]
    assert scores["digit_eval/strict"].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(Exception, match="needs 'digit' and 'color' metadata"):
        WeightedRewards("digit_eval")(images[:1], ["a"], [{}])


def test_every_prompt_of_the_world_fits_the_bundled_pipelines_text_lengths_whole():
    """The demo model's text is short (20 CLIP + 12 T5 tokens a sample, not 77 + 32): no prompt may lose a word."""
    from transformers import AutoTokenizer

    from diffusers_nft.demo import PIPELINE
    from diffusers_nft.demo.world import all_prompts

    clip = AutoTokenizer.from_pretrained(os.path.join(PIPELINE, "tokenizer"))
    t5 = AutoTokenizer.from_pretrained(os.path.join(PIPELINE, "tokenizer_3"))
    prompts = all_prompts()
    assert clip.model_max_length == CLIP_LENGTH
    assert max(len(clip(p).input_ids) for p in prompts) <= CLIP_LENGTH
    assert max(len(t5(p).input_ids) for p in prompts) <= MAX_SEQUENCE_LENGTH
    assert t5.unk_token_id not in {i for p in prompts for i in t5(p).input_ids}


def test_bundled_pipeline_loads_offline_and_generates():
    from diffusers_nft.demo import PIPELINE, load_demo_pipeline

    pipe = load_demo_pipeline()
    assert pipe.transformer.dtype == torch.float32 and PIPELINE.endswith("pipeline")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a handwritten seven in red", "the digit 3, cyan"], height=32, width=32, num_inference_steps=20,
               guidance_scale=1.0, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], output_type="pt",
               max_sequence_length=MAX_SEQUENCE_LENGTH).images
    assert out.shape == (2, 3, 32, 32)
    colors = load_reward("digit_eval", device="cpu").predict(out)[1]
    assert colors == ["red", "cyan"]  # the base model already gets colours right; digits are its weak point


@pytest.mark.slow
def test_short_nft_run_raises_the_mean_reward(tmp_path):
    """A few NFT iterations on the prompts of the digit the base model draws worst raise its digit_eval reward.

    Slow: a real NFT run on the demo world; in miniature: test_trainer.py::test_training_moves_a_latent_reward.
    """
    from datasets import Dataset

    from diffusers_nft import NFTTrainer
    from diffusers_nft.demo import load_demo_pipeline
    from diffusers_nft.demo.accuracy import generate
    from diffusers_nft.demo.recipe import demo_config

    zeros = Dataset.from_list([r for r in prompt_records("train") if r["digit"] == 0])
    probe = [r for r in prompt_records("eval") if r["digit"] == 0]  # all six colours, held-out one included
    judge = load_reward("digit_eval", device="cpu")
    seeds = list(range(4))

    def mean_reward(pipe):
        prompts = [r["prompt"] for r in probe for _ in seeds]
        images = generate(pipe, prompts, seeds * len(probe), num_steps=20)
        return sum(judge(images, prompts, [r for r in probe for _ in seeds])["scores"]) / len(prompts)

    pipe = load_demo_pipeline()
    pipe.set_progress_bar_config(disable=True)
    before = mean_reward(pipe)
    args = demo_config(output_dir=str(tmp_path), max_steps=6, prompts_per_iteration=4, sample_batch_size=32,
                       train_batch_size=32, timestep_fraction=0.3, learning_rate=1e-3, report_to="none",
                       reward_scoring="sync", validation_prompts=None, save_steps=100)
    trainer = NFTTrainer(pipe, "digit_eval", args=args, train_dataset=zeros)
    trainer.train()
    with trainer.policy.ema_weights():
        after = mean_reward(trainer.pipeline)
    print(f"mean digit_eval reward of the zeros: base {before:.3f}, after 6 NFT iterations {after:.3f}")
    assert before < 0.8, before  # the base model draws few zeros without CFG
    assert after >= before + 0.1, (before, after)


@pytest.mark.slow  # 360 digits through the judge
def test_the_held_out_judge_reads_real_held_out_digits_in_every_colour():
    judge = load_reward("digit_judge")
    digits, labels = load_digits_split("held_out")
    generator = torch.Generator().manual_seed(0)
    for color in COLOR_NAMES:
        offsets = torch.randint(-3, 4, (len(digits), 2), generator=generator).numpy()
        images = render(digits, [color] * len(digits), offsets)
        images = images * (0.6 + 0.4 * torch.rand(len(images), 1, 1, 1, generator=generator))  # dimmer strokes
        out = judge(images, ["p"] * len(digits), [{"digit": int(label), "color": color} for label in labels])
        assert sum(out["digit"]) / len(digits) >= 0.97 and sum(out["color"]) == len(digits), color


def test_the_held_out_judge_shares_no_model_or_features_with_the_reward():
    from sklearn.svm import SVC

    from diffusers_nft.demo.judge import digit_features

    judge = load_reward("digit_judge")
    assert isinstance(judge.reader.steps[-1][1], SVC)  # not the bundled CNN
    digits, _ = load_digits_split("held_out")
    red, cyan = render(digits[:5], ["red"] * 5), render(digits[:5], ["cyan"] * 5)
    shifted = render(digits[:5], ["red"] * 5, [[3, -2]] * 5)
    # colour-free and crop-aligned: the same stroke gives the same digit features in any colour or position
    assert np.allclose(digit_features(red), digit_features(cyan)) and np.allclose(digit_features(red), digit_features(shifted))
    assert digit_features(torch.zeros(1, 3, 32, 32)).max() == 0  # a blank image is no digit
    with pytest.raises(ValueError, match="needs 'digit' and 'color' metadata"):
        judge(red[:1], ["a"], [{}])


def test_the_robust_reward_gives_probabilities_that_real_digits_earn_and_noise_does_not():
    reward = load_reward("digit_eval_robust", device="cpu")
    digits, labels = load_digits_split("held_out")
    images = render(digits[:60], ["magenta"] * 60)
    right = reward(images, ["p"] * 60, [{"digit": int(label), "color": "magenta"} for label in labels[:60]])
    wrong = reward(images, ["p"] * 60, [{"digit": (int(label) + 1) % 10, "color": "cyan"} for label in labels[:60]])
    noise = reward(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), ["p"] * 8,
                   [{"digit": 3, "color": "red"}] * 8)
    assert all(0 <= s <= 1 for s in right["scores"] + wrong["scores"])
    assert sum(right["scores"]) / 60 > 0.85 and sum(wrong["scores"]) / 60 < 0.1 and max(noise["scores"]) < 0.3
    # the score is graded, not the 0 / 0.5 / 1 of digit_eval
    assert len({round(s, 3) for s in right["scores"]}) > 10


def test_the_ensemble_reward_averages_five_classifiers_and_reads_real_digits():
    from diffusers_nft.demo.reward import DigitEval

    ensemble, single = load_reward("digit_eval_ensemble", device="cpu"), DigitEval()
    assert len(ensemble.members) == 5 and ensemble.members[0] is ensemble.model
    members = [dict(m.named_parameters())["digit.weight"] for m in ensemble.members]
    assert all(not torch.equal(members[0], other) for other in members[1:])  # trained apart, not copies
    digits, labels = load_digits_split("held_out")
    images = render(digits[:120], ["cyan"] * 120)
    probabilities, _ = ensemble.probabilities(images)
    by_member = torch.stack([m(images)[0].softmax(-1) for m in ensemble.members]).mean(0)
    assert torch.allclose(probabilities, by_member, atol=1e-6) and torch.allclose(probabilities.sum(1), torch.ones(120))
    metadata = [{"digit": int(label), "color": "cyan"} for label in labels[:120]]
    result = ensemble(images, ["p"] * 120, metadata)
    assert set(result["scores"]) <= {0.0, 0.5, 1.0}  # digit_eval's credit, from the averaged probabilities
    assert sum(result["strict"]) / 120 >= 0.95 and sum(single(images, ["p"] * 120, metadata)["strict"]) / 120 >= 0.9


def test_ensemble_augmentation_shears_changes_contrast_and_blacks_out_a_patch():
    from diffusers_nft.demo.classifier import AUGMENTATIONS

    digits, _ = load_digits_split("train")
    standard, colors = AUGMENTATIONS["standard"](digits[:16], torch.Generator().manual_seed(0))
    strong, colors_too = AUGMENTATIONS["ensemble"](digits[:16], torch.Generator().manual_seed(0))
    assert torch.equal(colors, colors_too) and strong.shape == standard.shape == (16, 3, 32, 32)
    assert 0 <= strong.min() and strong.max() <= 1 and not torch.allclose(strong, standard)
    # every image has an 8 x 8 window of zeros (the blacked-out patch)
    windows = torch.nn.functional.max_pool2d(strong.amax(1, keepdim=True), 8, stride=1)
    assert (windows.flatten(1).min(1).values == 0).all()
