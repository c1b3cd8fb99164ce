"""`vlm_judge`: P("yes") of a vision-language model, on tiny random Qwen2.5-VL and LLaVA models built offline."""

import httpx
import pytest
import torch

from diffusers_nft import NFTTrainer
from diffusers_nft.rewards import WeightedRewards
from diffusers_nft.rewards.registry import load_reward
from diffusers_nft.rewards.remote import RemoteReward
from diffusers_nft.rewards.vlm import VLMJudge
from tiny_pipelines import build_tiny_llava_judge, build_tiny_qwen2_5_vl_judge

from conftest import PROMPTS, serve_in_thread, tiny_config

PROMPTS_4 = ["a red cat", "a blue dog on a green chair", "two yellow birds", "a red cat"]


@pytest.fixture(scope="module")
def qwen_judge(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-qwen-vl"))
    processor = build_tiny_qwen2_5_vl_judge(folder)
    return folder, processor


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("tiny-llava"))
    build_tiny_llava_judge(folder)
    return folder


def _images(n=4, seed=0):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_qwen2_5_vl_scores_are_probabilities_equal_batched_or_not(qwen_judge):
    folder, processor = qwen_judge
    images, metadata = _images(), [{}] * 4
    one = VLMJudge(folder, processor=processor, device="cpu", batch_size=1)
    assert type(one.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    unbatched = torch.tensor(one(images, PROMPTS_4, metadata))
    batched = torch.tensor(VLMJudge(folder, processor=processor, device="cpu", batch_size=4)(images, PROMPTS_4,
                                                                                          metadata))
    assert ((unbatched > 0) & (unbatched < 1)).all()
    torch.testing.assert_close(batched, unbatched, atol=1e-5, rtol=1e-4)
    normalized = torch.tensor(VLMJudge(folder, processor=processor, device="cpu", normalize=True)(images, PROMPTS_4,
                                                                                             metadata))
    assert ((normalized > unbatched) & (normalized < 1)).all()  # P(yes | yes or no) >= P(yes)


def test_the_prompt_and_its_metadata_reach_the_model(qwen_judge):
    folder, processor = qwen_judge
    judge = VLMJudge(folder, question="Is the {color} thing in this image {prompt}? Answer yes or no.",
                     processor=processor, device="cpu")
    seen = []
    hook = judge.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"]), with_kwargs=True)
    image = _images(1).expand(2, -1, -1, -1)
    scores = judge(image, ["a red cat", "a blue dog on a green chair"], [{"color": "red"}, {"color": "blue"}])
    hook.remove()
    text = processor.tokenizer.batch_decode(seen[0])
    assert "Is the red thing in this image a red cat?" in text[0]
    assert "Is the blue thing in this image a blue dog on a green chair?" in text[1]
    assert scores[0] != pytest.approx(scores[1], abs=1e-7)  # same image, another question: another answer
    with pytest.raises(ValueError, match="must contain"):
        VLMJudge(folder, question="Is this good?", processor=processor, device="cpu")


def test_the_name_loads_a_hub_style_folder_with_its_own_processor(llava_folder):
    judge = load_reward("vlm_judge", model_id=llava_folder, device="cpu")
    assert type(judge.model).__name__ == "LlavaForConditionalGeneration"
    scores = torch.tensor(judge(_images(), PROMPTS_4, [{}] * 4))
    assert ((scores > 0) & (scores < 1)).all()
    single = torch.tensor([judge(_images()[i : i + 1], PROMPTS_4[i : i + 1], [{}])[0] for i in range(4)])
    torch.testing.assert_close(scores, single, atol=1e-5, rtol=1e-4)


def test_it_serves_over_the_reward_server(llava_folder):
    from diffusers_nft.rewards.serve import create_app

    instance, thread, url = serve_in_thread(create_app("vlm_judge", model_id=llava_folder, device="cpu"))
    try:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        images = _images()
        remote = RemoteReward(url, name="vlm_judge")(images, PROMPTS_4, [{}] * 4)
        local = VLMJudge(llava_folder, device="cpu")(images, PROMPTS_4, [{}] * 4)
        # the wire carries 8-bit images
        quantized = VLMJudge(llava_folder, device="cpu")((images * 255).round() / 255, PROMPTS_4, [{}] * 4)
        torch.testing.assert_close(torch.tensor(remote), torch.tensor(quantized), atol=1e-5, rtol=1e-4)
        assert len(local) == 4
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


def test_it_judges_held_out_prompts_during_training(tiny_pipeline, llava_folder, tmp_path):
    judge = VLMJudge(llava_folder, device="cpu")
    trainer = NFTTrainer(tiny_pipeline, "jpeg_incompressibility", tiny_config(tmp_path, max_steps=1), PROMPTS,
                         eval_dataset=["a green tree", "a yellow house"], eval_reward_funcs=[judge])
    history = trainer.train()
    value = history[-1]["eval/VLMJudge/mean"]
    assert 0 < value < 1
    direct = WeightedRewards([judge])(trainer.generate(["a green tree", "a yellow house"], [0, 1]),
                                      ["a green tree", "a yellow house"], [{}, {}])
    assert value == pytest.approx(direct["VLMJudge"].double().mean().item(), abs=1e-6)


def test_the_command_line_sets_the_judges_model_and_question(tmp_path, llava_folder, monkeypatch):
    import os

    import tiny_pipelines
    from diffusers_nft import scripts
    from diffusers_nft.rewards.registry import register_reward
    from diffusers_nft.rewards.vlm import VLMJudge

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "examples"))
    import train_nft

    folder = str(tmp_path / "model")
    tiny_pipelines.build_tiny_sd3_pipeline().save_pretrained(folder)
    (tmp_path / "p.txt").write_text("a red cat\na blue dog\n")
    (tmp_path / "held.txt").write_text("a green tree\na yellow house\n")
    argv = ["--pretrained_model_name_or_path", folder, "--prompts", str(tmp_path / "p.txt"), "--output_dir",
            str(tmp_path / "out"), "--reward", "jpeg_compressibility", "--eval_prompts", str(tmp_path / "held.txt"),
            "--eval_reward", "vlm_judge", "--vlm_judge_model", llava_folder, "--vlm_judge_question",
            "Is this {prompt}? Say yes or no.", "--resolution", "64", "--max_sequence_length", "16",
            "--max_train_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2", "--num_sampling_steps", "2",
            "--eval_num_steps", "2", "--report_to", "none", "--rank", "4", "--guard", "none"]
    try:
        trainer, script_args, demo = scripts.prepare(argv, train_nft.load_pipeline)
        results = trainer.evaluate()
        assert 0 < results["eval/vlm_judge/mean"] < 1
        loaded = load_reward("vlm_judge", device="cpu")  # the name now builds the flags' judge
        assert loaded.question == "Is this {prompt}? Say yes or no." and type(loaded.model).__name__.startswith("Llava")
    finally:
        register_reward("vlm_judge", VLMJudge)  # the registry is global: back to the default


def test_with_the_source_the_model_sees_the_source_then_the_edit(qwen_judge):
    """The edit template: two images per row, the source first; another source gives another answer."""
    from diffusers_nft.rewards.vlm import EDIT_QUESTION

    folder, processor = qwen_judge
    judge = VLMJudge(folder, processor=processor, device="cpu", with_source=True)
    assert judge.question == EDIT_QUESTION
    seen = []
    hook = judge.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw), with_kwargs=True)
    edits, sources = _images(2), _images(2, seed=1)
    scores = judge(edits, ["make it blue", "make it blue"], [{"source_image": s} for s in sources])
    swapped = judge(edits, ["make it blue", "make it blue"], [{"source_image": s} for s in sources.flip(0)])
    hook.remove()
    text = processor.tokenizer.batch_decode(seen[0]["input_ids"])
    assert "Is the second image the first one edited as follows: make it blue?" in text[0]
    assert len(seen[0]["image_grid_thw"]) == 4  # two rows, two images each
    assert all(0 < s < 1 for s in scores) and scores[0] != pytest.approx(swapped[0], abs=1e-7)
    with pytest.raises(ValueError, match="no source_image"):
        judge(edits[:1], ["make it blue"], [{}])


def test_vlm_edit_judge_by_name_shows_llava_the_source_too(llava_folder):
    judge = load_reward("vlm_edit_judge", model_id=llava_folder, device="cpu")
    assert judge.with_source and "second image" in judge.question
    edits, sources = _images(2), _images(2, seed=1)
    scores = judge(edits, ["make it blue"] * 2, [{"source_image": s} for s in sources])
    assert all(0 < s < 1 for s in scores)
    assert scores != judge(edits, ["make it blue"] * 2, [{"source_image": s} for s in sources.flip(0)])
