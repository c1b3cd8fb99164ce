"""Release recipes by name, the GenEval-style prompt sets, and the evaluation command."""

import json
import os
from collections import Counter

import pytest
import torch
from PIL import Image

from diffusers_nft import NFTConfig
from diffusers_nft.geneval_prompts import COCO_CLASSES, TASKS, generate, main as geneval_main
from diffusers_nft.recipes import RECIPES
from diffusers_nft.rewards.geneval import geneval_score

from conftest import load_training_script


def test_recipes_set_the_release_values_and_flags_override():
    ocr = NFTConfig.from_recipe("sd35m_ocr", output_dir="x")
    assert (ocr.nft_beta, ocr.old_policy_decay, ocr.optimizer_steps_per_iteration) == (0.1, "delayed", 2)
    multi = NFTConfig.from_recipe("sd35m_multi_reward", num_sampling_steps=12)
    assert multi.nft_beta == 0.1 and multi.num_sampling_steps == 12
    assert RECIPES["sd35m_multi_reward"]["config"]["num_sampling_steps"] == 25
    assert RECIPES["sd35m_multi_reward"]["rewards"] == {"pickscore": 1.0, "hpsv2": 1.0, "clipscore": 1.0}
    for name in RECIPES:
        config = NFTConfig.from_recipe(name)
        assert (config.resolution, config.prompts_per_iteration, config.group_size, config.kl_beta) == (512, 48, 24, 1e-4)
        assert config.max_sequence_length == 128 and config.guidance_scale == 1.0 and config.sampler == "dpm_solver"
    with pytest.raises(ValueError, match="sd35m_ocr"):
        NFTConfig.from_recipe("ocr")


def test_script_recipe_sets_values_and_rewards_and_flags_win(tmp_path):
    script = load_training_script()
    seen = {}

    class Stop(Exception):
        pass

    def fake_load(script_args, config):
        seen["config"], seen["args"] = config, script_args
        raise Stop

    with pytest.raises(Stop):
        (tmp_path / "p.txt").write_text('a sign that says "hello"\n')
        script.main(["--recipe", "sd35m_ocr", "--pretrained_model_name_or_path", "x", "--prompts",
                     str(tmp_path / "p.txt"), "--output_dir", str(tmp_path / "out"), "--nft_beta", "0.5"],
                    load_pipeline=fake_load)
    config = seen["config"]
    assert config.nft_beta == 0.5 and config.old_policy_decay == "delayed" and config.optimizer_steps_per_iteration == 2
    from diffusers_nft.scripts import default_rewards

    assert default_rewards("sd35m_multi_reward", demo=False) == ["pickscore:1.0", "hpsv2:1.0", "clipscore:1.0"]


def test_flow_grpos_cfg_free_recipe_is_a_flow_grpo_config_from_python_and_the_command_line(tmp_path):
    from diffusers_nft import FlowGRPOConfig

    config = NFTConfig.from_recipe("flow_grpo_nocfg", output_dir="x", grpo_noise_level=0.9)
    assert isinstance(config, FlowGRPOConfig) and config.objective == "flow_grpo"
    assert (config.grpo_guidance_scale, config.grpo_clip_range, config.grpo_kl_beta) == (1.0, 1e-5, 0.0)
    assert (config.optimizer_steps_per_iteration, config.advantage_std, config.grpo_noise_level) == (2, "global", 0.9)
    (tmp_path / "p.jsonl").write_text('{"prompt": "a cat", "tag": "single_object", "include": [{"class": "cat", '
                                      '"count": 1}]}\n')
    from conftest import reach_loading

    _, cli = reach_loading(["--recipe", "flow_grpo_nocfg", "--pretrained_model_name_or_path", "x", "--prompts",
                            str(tmp_path / "p.jsonl"), "--output_dir", str(tmp_path / "out"), "--grpo_clip_range",
                            "2e-5"])
    assert isinstance(cli, FlowGRPOConfig) and (cli.grpo_clip_range, cli.grpo_noise_level) == (2e-5, 0.8)
    from diffusers_nft.scripts import default_rewards

    assert default_rewards("flow_grpo_nocfg", demo=False) == ["geneval:1.0"]


def test_optimizer_steps_per_iteration_splits_the_micro_batches(tiny_pipeline, tmp_path):
    from diffusers_nft import NFTTrainer

    from conftest import PROMPTS, tiny_config

    config = tiny_config(tmp_path, max_steps=1, optimizer_steps_per_iteration=2)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS)
    assert trainer.plan.optimizer_steps == 2
    trainer.step()
    assert trainer.optimizer_step == 2


def test_geneval_prompt_sets_are_seeded_disjoint_and_scorable(tmp_path):
    splits = generate(num_train=300, num_test=60, seed=3)
    assert len(splits["train"]) == 300 and len(splits["test"]) == 60
    assert not {r["prompt"] for r in splits["train"]} & {r["prompt"] for r in splits["test"]}
    assert generate(300, 60, seed=3) == splits and generate(300, 60, seed=4) != splits
    records = splits["train"] + splits["test"]
    assert {r["tag"] for r in records} == set(TASKS)
    for split in generate(num_train=100, num_test=50, seed=0).values():  # each split: the tasks in equal shares
        shares = sorted(Counter(r["tag"] for r in split).values())
        assert shares == ([16] * 2 + [17] * 4 if len(split) == 100 else [8] * 4 + [9] * 2)
    # the evaluation's 500 (more than single_object's 80 prompts): the other tasks share the rest, and a large
    # train split leaves every task in the test split, in proportion
    assert Counter(r["tag"] for r in generate(0, 500)["test"]) == dict.fromkeys(TASKS[1:], 84) | {TASKS[0]: 80}
    test = Counter(r["tag"] for r in generate(5000, 500)["test"])
    assert sum(test.values()) == 500 and test["single_object"] == 7 and test["counting"] == 22
    for record in records:
        for clause in record["include"]:
            assert clause["class"] in COCO_CLASSES
        # a detector that finds exactly what the prompt asks for gives full, strict credit
        found = {}
        for i, clause in enumerate(record["include"]):
            box = (0.0, 0.0, 10.0, 10.0)
            if "position" in clause:
                relation = clause["position"][0]
                box = {"left of": (-30.0, 0.0, -20.0, 10.0), "right of": (30.0, 0.0, 40.0, 10.0),
                       "above": (0.0, -30.0, 10.0, -20.0), "below": (0.0, 30.0, 10.0, 40.0)}[relation]
            found[clause["class"]] = [{"box": box, "color": clause.get("color")}] * clause["count"]
        result = geneval_score(record, found, lambda name, det: det["color"])
        assert result == {"score": 1.0, "strict": 1.0}, record
    geneval_main(["--output_dir", str(tmp_path), "--num_train", "12", "--num_test", "6"])
    lines = [json.loads(l) for l in open(tmp_path / "test_metadata.jsonl")]
    assert len(lines) == 6 and {"prompt", "tag", "include"} <= set(lines[0])
    from diffusers_nft.data import load_prompts, row_metadata

    dataset = load_prompts(str(tmp_path / "train_metadata.jsonl"))  # GenEval's nested metadata survives Arrow
    written = [json.loads(l) for l in open(tmp_path / "train_metadata.jsonl")]
    assert len(dataset) == 12 and list(dataset["prompt"]) == [r["prompt"] for r in written]
    for record, metadata in zip(written, row_metadata(dataset)):
        assert metadata["include"] == record["include"] and metadata["tag"] == record["tag"]
        assert metadata.get("exclude") == record.get("exclude")


def _demo_lora(folder):
    """A LoRA on the demo transformer with non-zero weights, saved as the trainer saves one."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from diffusers_nft.demo import load_demo_pipeline

    pipe = load_demo_pipeline()
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian", target_modules=["attn.to_q", "attn.to_v"])
    pipe.transformer.add_adapter(config)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    type(pipe).save_lora_weights(folder, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
                                 transformer_lora_adapter_metadata=config.to_dict(),
                                 weight_name="pytorch_lora_weights.safetensors")


def test_evaluate_command_compares_base_and_lora_offline(tmp_path):
    from diffusers_nft.evaluate import main

    _demo_lora(str(tmp_path / "lora"))
    out = tmp_path / "eval"
    main(["--lora", f"nft={tmp_path / 'lora'}", "--num_prompts", "4", "--seeds", "0", "1", "--num_steps", "4",
          "--guidance_scale", "1", "--guidance_scale", "3", "--group_by", "held_out", "--output_dir", str(out)])
    assert sorted(os.listdir(out)) == ["grid.png", "results.json", "results.md"]
    results = json.load(open(out / "results.json"))["results"]
    assert list(results) == ["base, CFG 1", "base, CFG 3", "nft, CFG 1", "nft, CFG 3"]
    for summary in results.values():  # 4 prompts x 2 seeds = 8 images, each scored (digit + colour) / 2
        score = {key: summary[f"digit_eval/{key}/mean"] for key in ("digit", "color", "strict")}
        assert summary["digit_eval/mean"] == pytest.approx((score["digit"] + score["color"]) / 2)
        for key, p in score.items():  # pass/fail per image: a multiple of 1/8, with a Bernoulli's std
            assert (8 * p) == pytest.approx(round(8 * p)), key
            assert summary[f"digit_eval/{key}/std"] == pytest.approx((p * (1 - p)) ** 0.5), key
        assert score["strict"] <= min(score["digit"], score["color"])
        assert "digit_eval/strict/held_out=False/mean" in summary
    table = open(out / "results.md").read()
    rows = [line for line in table.splitlines() if line.startswith(("| base", "| nft"))]
    assert len(rows) == 4 and "digit_eval/strict" in table.splitlines()[0]
    grid = Image.open(out / "grid.png")
    assert grid.size[1] >= 4 * 128  # four labelled rows of upscaled 32 px samples
    # the LoRA really changes the samples: its grid row differs from the base row
    rows = torch.tensor(list(grid.getdata()), dtype=torch.float32).view(grid.size[1], grid.size[0], 3)
    row = grid.size[1] // 4
    assert (rows[:row] - rows[2 * row : 3 * row]).abs().mean() > 1


def test_evaluate_requires_prompts_and_rewards_for_a_real_model(tmp_path, capsys):
    from diffusers_nft.evaluate import main

    for flags, message in ((["--prompts", "p.txt"], "--reward is required"), (["--reward", "ocr"], "--prompts is")):
        with pytest.raises(SystemExit) as stopped:
            main(["--pretrained_model_name_or_path", str(tmp_path), *flags])
        assert stopped.value.code == 2 and f"ERROR diffusers_nft: {message}" in capsys.readouterr().err


def test_every_model_is_evaluated_on_the_same_noise_seeded_1000_s_plus_i(tiny_pipeline):
    # Two labels for one model must give the same images; prompt i at seed s is the pipeline's own call with
    # `torch.Generator().manual_seed(1000 * s + i)`, so the images differ across prompts and seeds.
    from contextlib import nullcontext

    from diffusers_nft.evaluate import evaluate_models
    from diffusers_nft.pipelines import get_family

    records = [{"prompt": "a red cube"}, {"prompt": "a blue sphere"}]
    brightness = {"brightness": lambda images, prompts, metadata: images.mean(dim=(1, 2, 3))}
    results, images = evaluate_models(tiny_pipeline, {"a": nullcontext, "b": nullcontext}, records, brightness,
                                      seeds=(0, 1), num_steps=2, resolution=64, max_sequence_length=16)
    assert torch.equal(images["a, CFG 1"], images["b, CFG 1"])
    assert results["a, CFG 1"] == results["b, CFG 1"]
    kwargs = get_family(tiny_pipeline).call_kwargs(64, 2, 16, 1.0)
    # rows are prompt-major: (prompt 0, seed 0), (prompt 0, seed 1), (prompt 1, seed 0), (prompt 1, seed 1)
    alone = tiny_pipeline(prompt=["a blue sphere"], generator=[torch.Generator().manual_seed(1001)], output_type="pt",
                          return_dict=False, **kwargs)[0]
    torch.testing.assert_close(images["a, CFG 1"][3:4], alone.float(), rtol=0, atol=1e-4)  # batch of 4 vs 1
    flat = images["a, CFG 1"].flatten(1)
    assert all((flat[i] - flat[j]).abs().max() > 1e-3 for i in range(4) for j in range(i))
