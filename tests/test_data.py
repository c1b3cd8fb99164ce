import json

import pytest
from datasets import Dataset

from diffusers_nft.data import PromptSampler, load_prompts


def test_sources(tmp_path):
    assert load_prompts(["a", "b"])["prompt"][:] == ["a", "b"]
    txt = tmp_path / "p.txt"
    txt.write_text("a cat\n\n a dog \n")
    assert load_prompts(str(txt))["prompt"][:] == ["a cat", "a dog"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"p{i}", "digit": i}) for i in range(3)))
    dataset = load_prompts(str(jsonl), prompt_column="text")
    assert dataset.column_names == ["prompt", "digit"] and dataset["digit"][:] == [0, 1, 2]
    assert load_prompts(Dataset.from_dict({"prompt": ["x"], "tag": ["t"]}))["tag"][:] == ["t"]


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_prompts([])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        load_prompts(str(empty))
    with pytest.raises(ValueError, match="no 'prompt' column"):
        load_prompts([{"caption": "x"}])
    other = tmp_path / "p.yaml"
    other.write_text("a")
    with pytest.raises(ValueError, match=r".txt, .jsonl, .json, .csv or .parquet file, a save_to_disk folder"):
        load_prompts(str(other))


def test_sampler_covers_each_epoch_and_resumes():
    sampler = PromptSampler(5, seed=3)
    first_epoch = sampler.next(3) + sampler.next(2)
    assert sorted(first_epoch) == list(range(5))
    straight = PromptSampler(5, seed=3)
    expected = [straight.next(4) for _ in range(4)]
    resumed = PromptSampler(5, seed=3)
    got = [resumed.next(4) for _ in range(2)]
    state = resumed.state_dict()
    fresh = PromptSampler(5, seed=3)
    fresh.load_state_dict(state)
    got += [fresh.next(4) for _ in range(2)]
    assert got == expected
    with pytest.raises(ValueError, match="same prompt set"):
        PromptSampler(6, seed=3).load_state_dict(state)


def test_each_epoch_is_a_new_permutation_of_the_seed():
    def epochs(seed, count=3, n=20):
        sampler = PromptSampler(n, seed=seed)
        return [sampler.next(n) for _ in range(count)]

    first = epochs(seed=0)
    assert all(sorted(epoch) == list(range(20)) for epoch in first)
    assert len({tuple(epoch) for epoch in first}) == 3  # reshuffled every epoch, not one order repeated
    assert first == epochs(seed=0)  # the seed decides it
    assert epochs(seed=1)[0] != first[0] and epochs(seed=1)[1] != first[1]


@pytest.mark.parametrize("write, message", [
    (lambda p: p.with_suffix(".jsonl").write_text('{"prompt": "a cat"}\n{"prompt": 5}\n'), "row 2: int after str"),
    (lambda p: p.with_suffix(".jsonl").write_text('{"prompt": 3}\n{"prompt": 4}\n'), r"row 1: the prompt is 3 \(int\)"),
    (lambda p: p.with_suffix(".jsonl").write_text('{"prompt": "a cat"}\n{"prompt": null}\n'), r"row 2: the prompt is None"),
    (lambda p: p.with_suffix(".jsonl").write_text('{"prompt": ""}\n{"prompt": "  "}\n'), "The prompt set is empty"),
    (lambda p: p.with_suffix(".json").write_text("[1, 2, 3]"), r"row 1: 1 is neither a prompt"),
    (lambda p: p.with_suffix(".json").write_text('{"prompt": "a"}'), "a JSON list of prompts or records is needed"),
    (lambda p: p.with_suffix(".txt").write_text("x" * 20_000 + "\n"), "row 1: the prompt is 20,000 characters long"),
])
def test_one_rule_for_prompts_in_every_format_naming_the_row(tmp_path, write, message):
    write(tmp_path / "p")
    (path,) = [p for p in tmp_path.iterdir()]
    with pytest.raises(ValueError, match=message):
        load_prompts(str(path))


def test_blank_prompts_are_left_out_in_every_format_with_one_warning(tmp_path):
    for prompts, message in (([5, "a"], r"row 1: 5 is neither a prompt"), ([{"prompt": None}], "row 1: the prompt is None")):
        with pytest.raises(ValueError, match=message):
            load_prompts(prompts)
    (tmp_path / "p.txt").write_text("a cat\n\na dog\n\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat", "k": 1}\n{"prompt": " ", "k": 2}\n{"prompt": "a dog", "k": 3}\n')
    for source in (["a cat", "", "a dog"], str(tmp_path / "p.txt"), str(tmp_path / "p.jsonl")):
        with pytest.warns(UserWarning, match=r"1 blank prompt\(s\) left out \(the first at row 2\)"):
            assert load_prompts(source)["prompt"] == ["a cat", "a dog"]
    assert load_prompts(str(tmp_path / "p.jsonl"))["k"] == [1, 3]
