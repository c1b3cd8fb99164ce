import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from diffusers_nft.rewards.geneval import GenEval, geneval_release_score, geneval_score, relative_position
from diffusers_nft.rewards.ocr import OCRReward, ocr_similarity, quoted_text

from tiny_reward_models import random_images, save_tiny_clip, save_tiny_mask2former


def _render(text: str) -> torch.Tensor:
    image = Image.new("RGB", (160, 64), "white")
    ImageDraw.Draw(image).text((8, 14), text, fill="black", font=ImageFont.load_default(size=28))
    return torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255


def test_ocr_text_helpers():
    assert quoted_text('a sign that says "Open Late" in neon') == "Open Late"
    assert quoted_text("no quotes here") is None
    assert ocr_similarity("Open Late", "OPENLATE") == 1.0
    assert ocr_similarity("hello", "the hello sign") == 1.0  # substring
    assert ocr_similarity("abcd", "abxd") == pytest.approx(0.75)
    assert ocr_similarity("abc", "") == 0.0
    assert ocr_similarity("ab", "xyzuvw") == 0.0  # distance capped at the length


def test_ocr_compares_both_texts_lower_cased_and_without_spaces():
    # the release's normalisation, `replace(" ", "").lower()`, applies to the reading as much as to the target
    assert ocr_similarity("open late", "Open  Late") == 1.0
    assert ocr_similarity("Open Late", "open late") == 1.0
    assert ocr_similarity("ABCD", "ab xd") == pytest.approx(0.75)
    assert ocr_similarity("a b c d", "A B X D") == pytest.approx(0.75)


def test_ocr_reads_rendered_text():
    reward = OCRReward()
    images = torch.stack([_render("Hello"), _render("Help"), _render(""), _render("World")])
    prompt = 'a poster that says "hello"'
    scores = reward(images, [prompt] * 4, [{}] * 4)
    assert scores[0] >= 0.99  # the right text
    assert 0.3 < scores[1] < 0.9  # close but wrong
    assert scores[2] == 0.0  # no text
    assert scores[1] > scores[3]
    with pytest.raises(ValueError, match="double quotes"):
        reward(images[:1], ["a poster"], [{}])


def _obj(box, color="red", score=0.95):
    return {"box": box, "color": color, "score": score}


def _color(name, obj):
    return obj["color"]


def test_relative_position():
    left, right = (0, 0, 10, 10), (30, 0, 40, 10)
    assert relative_position(left, right) == {"left of"}
    assert relative_position(right, left) == {"right of"}
    assert relative_position((0, 0, 10, 10), (0, 30, 10, 40)) == {"above"}
    assert relative_position((0, 0, 10, 10), (1, 0, 11, 10)) == set()  # within the margin


def test_geneval_partial_credit_hand_computed():
    counting = {"tag": "counting", "include": [{"class": "cat", "count": 3}], "exclude": [{"class": "cat", "count": 4}]}
    two_cats = {"cat": [_obj((0, 0, 5, 5)), _obj((10, 0, 15, 5))]}
    # count credit 1 - |3 - 2| / 3 = 2/3; exclude holds (2 < 4): mean(2/3, 1) = 5/6
    assert geneval_score(counting, two_cats, _color) == {"score": pytest.approx(5 / 6), "strict": 0.0}
    three_cats = {"cat": two_cats["cat"] + [_obj((20, 0, 25, 5))]}
    assert geneval_score(counting, three_cats, _color) == {"score": 1.0, "strict": 1.0}

    colors = {"tag": "colors", "include": [{"class": "dog", "count": 2, "color": "blue"}]}
    dogs = {"dog": [_obj((0, 0, 5, 5), "blue"), _obj((9, 0, 14, 5), "green")]}
    # count 1, colour 1/2
    assert geneval_score(colors, dogs, _color) == {"score": pytest.approx(0.75), "strict": 0.0}

    position = {
        "tag": "position",
        "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["right of", 0]}],
    }
    scene = {"dog": [_obj((0, 0, 10, 10))], "cat": [_obj((30, 0, 40, 10))]}
    assert geneval_score(position, scene, _color) == {"score": 1.0, "strict": 1.0}
    swapped = {"dog": scene["cat"], "cat": scene["dog"]}
    assert geneval_score(position, swapped, _color) == {"score": pytest.approx(2 / 3), "strict": 0.0}
    assert geneval_score(position, {"dog": scene["dog"]}, _color) == {"score": pytest.approx(1 / 3), "strict": 0.0}

    # Arrow turns missing struct fields into None: they must read as absent
    with_nones = {"tag": "single_object", "include": [{"class": "cat", "count": 1, "color": None, "position": None}],
                  "exclude": None}
    assert geneval_score(with_nones, {"cat": [_obj((0, 0, 5, 5))]}, _color) == {"score": 1.0, "strict": 1.0}
    with pytest.raises(ValueError, match="no include/exclude"):
        geneval_score({"tag": "x"}, {}, _color)


def test_geneval_release_rules_hand_computed():
    """The release's training reward (Flow-GRPO's gen_eval.py `evaluate_reward`), clause by clause."""
    cat = {"tag": "single_object", "include": [{"class": "cat", "count": 1}]}
    three = {"cat": [_obj((0, 0, 5, 5)), _obj((10, 0, 15, 5)), _obj((20, 0, 25, 5))]}
    # 1 - |1 - 3| / 1 = -1 (no floor); the evaluator's rules give min(3, 1) / 1 = 1
    assert geneval_release_score(cat, three, _color) == -1.0
    assert geneval_score(cat, three, _color)["score"] == 1.0
    counting = {"tag": "counting", "include": [{"class": "cat", "count": 2}], "exclude": [{"class": "cat", "count": 3}]}
    # 1 - 1/2 = 0.5, exclude ignored; the evaluator's: mean(0.5, exclude fails 0) = 0.25
    assert geneval_release_score(counting, three, _color) == 0.5
    assert geneval_score(counting, three, _color)["score"] == 0.25

    colors = {"tag": "colors", "include": [{"class": "dog", "count": 2, "color": "blue"}]}
    dogs = {"dog": [_obj((0, 0, 5, 5), "blue"), _obj((9, 0, 14, 5), "green")]}
    assert geneval_release_score(colors, dogs, _color) == 0.75  # mean(count 1, colour 1 - |2 - 1| / 2)
    one_dog = {"dog": dogs["dog"][:1]}
    assert geneval_release_score(colors, one_dog, _color) == 0.25  # mean(count 1/2, colour 0: the count is wrong)

    position = {"tag": "position",
                "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["right of", 0]}]}
    scene = {"dog": [_obj((0, 0, 10, 10))], "cat": [_obj((30, 0, 40, 10))]}
    assert geneval_release_score(position, scene, _color) == 1.0  # mean(1, 1, position 1)
    swapped = {"dog": scene["cat"], "cat": scene["dog"]}
    assert geneval_release_score(position, swapped, _color) == 0.75  # mean(1, 1, 0, 1): the release appends 0 and 1
    assert geneval_release_score(position, {"dog": scene["dog"]}, _color) == pytest.approx(1 / 3)  # mean(1, 0, 0)
    no_dog = {"cat": scene["cat"]}  # the reference clause failed: 0 for the position
    assert geneval_release_score(position, no_dog, _color) == pytest.approx(1 / 3)  # mean(0, 1, 0)
    two_cats = {"dog": scene["dog"], "cat": [_obj((30, 0, 40, 10)), _obj((60, 0, 70, 10))]}
    assert geneval_release_score(position, two_cats, _color) == pytest.approx(1 / 3)  # mean(1, 0, 0): count wrong
    assert geneval_release_score({"tag": "x"}, {}, _color) == 0.0


def test_geneval_model_path_runs_end_to_end(tmp_path):
    detector = save_tiny_mask2former(str(tmp_path / "m2f"))
    clip = save_tiny_clip(str(tmp_path / "clip"))
    reward = GenEval(detector_id=detector, clip_model_id=clip, device="cpu", rules="evaluator")
    metadata = [
        {"tag": "single_object", "include": [{"class": "cat", "count": 1}]},
        {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}]},
        {"tag": "counting", "include": [{"class": "person", "count": 2}], "exclude": [{"class": "person", "count": 3}]},
    ]
    out = reward(random_images(3, size=64), ["a cat", "a red dog", "two people"], metadata)
    assert set(out) == {"scores", "strict"} and len(out["scores"]) == 3
    assert all(0 <= s <= 1 for s in out["scores"]) and all(s in (0.0, 1.0) for s in out["strict"])
    release = GenEval(detector_id=detector, clip_model_id=clip, device="cpu")(random_images(3, size=64),
                                                                              ["a cat", "a red dog", "two people"], metadata)
    assert list(release["strict"]) == list(out["strict"]) and all(s <= 1 for s in release["scores"])
    with pytest.raises(ValueError, match="rules"):
        GenEval(detector_id=detector, clip_model_id=clip, rules="official")
    detections = reward.detect(Image.fromarray((np.random.rand(64, 64, 3) * 255).astype("uint8")), threshold=0.0)
    assert set(detections) <= {"cat", "dog", "person"}
    for objects in detections.values():
        assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)
        assert all(o["mask"].shape == (64, 64) and len(o["box"]) == 4 for o in objects)
