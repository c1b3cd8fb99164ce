"""The edit demo world: its rows, its reward and held-out judge on real edits, the bundled Kontext-shaped
pipeline (offline, an edit model that follows its instructions), and the one-command demo."""


import numpy as np
import pytest
import torch

from diffusers_nft.demo.edit_world import (
    COLOR_EDITS,
    DIGIT_EDITS,
    EVAL_SOURCES,
    TRAIN_SOURCES,
    edit_dataset,
    edit_records,
    training_pairs,
)
from diffusers_nft.demo.world import COLOR_NAMES, DIGIT_WORDS, load_digits_split, render
from diffusers_nft.rewards import load_reward


def _sources(rows):
    from diffusers_nft.conditioning import as_tensor

    return torch.stack([as_tensor(r["image"]) for r in rows])


def test_each_row_asks_for_one_change_of_its_source():
    train, evaluation = edit_records("train"), edit_records("eval")
    assert len(train) == 2 * TRAIN_SOURCES and len(evaluation) == EVAL_SOURCES
    for row in train + evaluation:
        changed = (row["digit"] != row["source_digit"], row["color"] != row["source_color"])
        assert changed == ((False, True) if row["edit"] == "color" else (True, False)), row
        target = row["color"] if row["edit"] == "color" else DIGIT_WORDS[row["digit"]]
        assert target in row["prompt"] or str(row["digit"]) in row["prompt"]
    assert {r["edit"] for r in evaluation[::2]} == {"color"} and {r["edit"] for r in evaluation[1::2]} == {"digit"}
    assert {r["prompt"] for r in evaluation} <= {COLOR_EDITS[0].format(color=c) for c in COLOR_NAMES} | {
        DIGIT_EDITS[0].format(a_word=("an " if w == "eight" else "a ") + w) for w in DIGIT_WORDS}
    assert "turn it into an eight" in {r["prompt"] for r in evaluation}
    # the evaluation sources are the held-out digits' strokes, rendered as the digits world renders them
    held, _ = load_digits_split("held_out")
    strokes = render(held, ["yellow"] * len(held)).amax(1)
    first = _sources(evaluation[:1]).amax(1)
    assert (strokes - first).abs().flatten(1).amax(1).min() < 2 / 255
    dataset = edit_dataset("eval")
    assert dataset.features["image"].__class__.__name__ == "Image" and len(dataset) == EVAL_SOURCES
    with pytest.raises(ValueError, match="split"):
        edit_records("test")


def test_training_pairs_keep_what_the_instruction_does_not_change():
    sources, targets, prompts = training_pairs(seed=3, count=64)
    assert sources.shape == targets.shape == (64, 3, 32, 32) and len(prompts) == 64
    for source, target, prompt in zip(sources, targets, prompts):
        if any(prompt == p.format(color=c) for p in COLOR_EDITS for c in COLOR_NAMES):
            assert torch.allclose(source.amax(0), target.amax(0), atol=1e-6)  # the same stroke, another colour
        else:
            colour = lambda x: torch.nn.functional.normalize(x.flatten(1).sum(1), dim=0)  # noqa: E731
            assert torch.allclose(colour(source), colour(target), atol=1e-5)  # the same colour, another stroke


def _edited(rows):
    """The rows' ideal edits: a colour edit repaints the source's stroke; a digit edit draws a held-out digit of the
    target class in the source's colour."""
    from diffusers_nft.demo.world import COLORS

    digits, labels = load_digits_split("held_out")
    images = []
    for row, source in zip(rows, _sources(rows)):
        if row["edit"] == "color":
            colour = torch.tensor(COLORS[row["color"]], dtype=torch.float32).view(3, 1, 1) / 255
            images.append(source.amax(0, keepdim=True) * colour)
        else:
            k = int(np.flatnonzero(labels == row["digit"])[0])
            images.append(render(digits[k : k + 1], [row["color"]])[0])
    return torch.stack(images)


def _metadata(rows):
    from diffusers_nft.conditioning import as_tensor

    return [{**{k: v for k, v in r.items() if k not in ("prompt", "image")}, "source_image": as_tensor(r["image"])}
            for r in rows]


def test_the_reward_and_the_judge_credit_real_edits_and_refuse_unchanged_sources():
    rows = edit_records("eval")
    prompts, metadata = [r["prompt"] for r in rows], _metadata(rows)
    reward, judge = load_reward("digit_edit"), load_reward("digit_edit_judge")
    edited, unchanged = _edited(rows), _sources(rows)
    for scorer, name in ((reward, "digit_edit"), (judge, "digit_edit_judge")):
        good, bad = scorer(edited, prompts, metadata), scorer(unchanged, prompts, metadata)
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        assert mean(good["strict"]) >= 0.9 and mean(good["followed"]) >= 0.9 and mean(good["kept"]) >= 0.9, name
        assert mean(bad["followed"]) <= 0.1 and mean(bad["kept"]) >= 0.9, name  # nothing changed: nothing followed
        assert mean(good["scores"]) > mean(bad["scores"]) + 0.3, name
    with pytest.raises(ValueError, match="source_image"):
        reward(edited[:1], prompts[:1], [{"digit": 1, "color": "red", "edit": "digit"}])


def test_recolouring_the_same_stroke_earns_more_than_redrawing_it():
    rows = [r for r in edit_records("eval") if r["edit"] == "color"][:8]
    digits, labels = load_digits_split("train")
    redrawn = torch.stack([render(digits[k : k + 1], [r["color"]])[0] for r in rows
                           for k in [int(np.flatnonzero(labels == r["digit"])[5])]])
    reward, judge = load_reward("digit_edit"), load_reward("digit_edit_judge")
    prompts, metadata = [r["prompt"] for r in rows], _metadata(rows)
    same = reward(_edited(rows), prompts, metadata)["scores"]
    other = reward(redrawn, prompts, metadata)["scores"]
    assert min(s - o for s, o in zip(same, other)) > 0
    assert sum(judge(redrawn, prompts, metadata)["kept"]) < sum(judge(_edited(rows), prompts, metadata)["kept"])


def test_bundled_edit_pipeline_loads_offline_and_recolours_held_out_digits():
    from diffusers import FluxKontextPipeline

    from diffusers_nft.demo import EDIT_PIPELINE, load_edit_pipeline
    from diffusers_nft.pipelines import FluxKontextFamily, get_family

    pipe = load_edit_pipeline()
    assert isinstance(pipe, FluxKontextPipeline) and EDIT_PIPELINE.endswith("edit_pipeline")
    assert isinstance(get_family(pipe), FluxKontextFamily) and not pipe.transformer.config.guidance_embeds
    pipe.set_progress_bar_config(disable=True)
    rows = [r for r in edit_records("eval") if r["edit"] == "color"][:6]
    out = pipe(image=[r["image"] for r in rows], prompt=[r["prompt"] for r in rows], height=32, width=32,
               num_inference_steps=20, guidance_scale=1.0, max_sequence_length=32, output_type="pt",
               generator=[torch.Generator().manual_seed(s) for s in range(len(rows))], max_area=32 * 32, _auto_resize=False).images
    assert out.shape == (6, 3, 32, 32)
    judged = load_reward("digit_edit_judge")(out, [r["prompt"] for r in rows], _metadata(rows))
    # the base model recolours held-out strokes; turning one digit into another is what it does poorly
    assert sum(judged["strict"]) >= 5, judged
