import json
import os
import subprocess
import sys

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_nft_sd3.py")


@pytest.mark.slow
def test_accelerate_launch_example_and_load_its_lora(tiny_pipeline_dir, tmp_path):
    """Slow: an accelerate launch subprocess; in miniature:
    test_hub.py::test_script_pushes_with_the_given_repo_and_token_or_the_output_dir_name runs the same script
    in process.
    """
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"caption": p}) for p in ["a red cat", "a blue dog", "a green tree"]))
    output = tmp_path / "out"
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        SCRIPT,
        "--pretrained_model_name_or_path", tiny_pipeline_dir,
        "--prompts", str(prompts), "--prompt_column", "caption",
        "--reward", "jpeg_compressibility:1", "--reward", "jpeg_incompressibility:0.5",
        "--output_dir", str(output),
        "--resolution", "64", "--max_sequence_length", "16",
        "--max_train_steps", "2", "--checkpointing_steps", "1", "--checkpoints_total_limit", "1",
        "--prompts_per_iteration", "2", "--group_size", "3", "--num_sampling_steps", "3",
        "--sampler", "unipc", "--rank", "4", "--lora_alpha", "12", "--lora_layers", "attn.to_q,attn.to_v",
        "--report_to", "tensorboard", "--validation_prompt", "a red cat", "--validation_steps", "2",
        "--eval_num_steps", "3", "--num_validation_images", "2",
        "--learning_rate", "0.05",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p for p in os.listdir(output) if p.startswith("checkpoint-")) == ["checkpoint-2"]
    assert os.listdir(output / "logs")  # tensorboard event files
    metrics = [json.loads(line) for line in open(output / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [1, 2]
    assert set(m for m in metrics[0] if m.startswith("reward/")) >= {
        "reward/jpeg_compressibility/mean", "reward/jpeg_incompressibility/mean", "reward/total/mean"
    }

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = dict(latents=latents, num_inference_steps=3, guidance_scale=1.0, max_sequence_length=16, output_type="pt")
    base = pipe("a red cat", **kwargs).images
    pipe.load_lora_weights(str(output), weight_name="pytorch_lora_weights.safetensors")
    tuned = pipe("a red cat", **kwargs).images
    assert (tuned - base).abs().max() > 1e-4
    lora_modules = {n.rsplit(".lora_", 1)[0].rsplit(".", 1)[-1] for n, _ in pipe.transformer.named_parameters() if "lora_A" in n}
    assert lora_modules == {"to_q", "to_v"}


@pytest.mark.slow
def test_demo_default_runs_the_bundled_world(tmp_path):
    """The README's first command, shortened: no model argument -> the bundled digits world and digit_eval.

    Slow: the demo command end to end; in miniature: test_demo_world.py and
    test_recipes_evaluate.py::test_evaluate_command_compares_base_and_lora_offline.
    """
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", SCRIPT,
        "--output_dir", str(tmp_path / "demo"), "--max_train_steps", "1", "--prompts_per_iteration", "2",
        "--group_size", "2", "--report_to", "none",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundled digits world" in result.stderr
    output = tmp_path / "demo"
    results = (output / "results.md").read_text()
    assert "| strict |" in results and "| strict_held_out |" in results
    assert "| base (digit_eval, trained on) |" in results  # the demo's reward is the one it scores
    assert (output / "images" / "before_after.png").is_file() and (output / "README.md").is_file()
    metrics = json.loads((output / "metrics.jsonl").read_text().splitlines()[0])
    assert "reward/digit_eval/strict/mean" in metrics


@pytest.mark.slow
def test_edit_demo_trains_the_bundled_edit_world_and_its_lora_loads(tmp_path):
    """The edit demo's one command, shortened: the bundled Kontext-shaped pipeline trained on instructions with
    their sources; its results (3 rows), picture and card written; its LoRA loads with `load_lora_weights`.

    Slow: an accelerate launch subprocess and a 240-image evaluation; in miniature: test_edit_demo.py and
    test_image_conditioned.py.
    """
    from diffusers_nft.demo import load_edit_pipeline
    from diffusers_nft.demo.edit_world import edit_records

    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(ROOT, "examples", "train_nft_edit.py"),
        "--output_dir", str(tmp_path / "edit"), "--max_train_steps", "1", "--prompts_per_iteration", "2",
        "--group_size", "2", "--report_to", "none", "--learning_rate", "0.05",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bundled edit world" in result.stderr and "FluxKontextFamily" in result.stderr
    output = tmp_path / "edit"
    rows = [line for line in (output / "results.md").read_text().splitlines() if line.startswith("| base") or
            line.startswith("| NFT")]
    assert [r.split(" | ")[0] for r in rows] == ["| base, no CFG", rows[1].split(" | ")[0], "| NFT, no CFG"]
    assert "best CFG" in rows[1] and all(0 <= float(c) <= 1 for r in rows for c in r.strip("| ").split(" | ")[1:])
    assert (output / "edits.png").is_file() and (output / "samples" / "step_000000.png").is_file()
    card = (output / "README.md").read_text()
    assert "pipeline_tag: image-to-image" in card and "FluxKontextPipeline" in card and "load_image" in card and "digit_edit" in card
    assert (output / "images" / "before_after.png").is_file()

    pipe = load_edit_pipeline()
    pipe.set_progress_bar_config(disable=True)
    row = edit_records("eval")[1]
    kwargs = dict(image=row["image"], prompt=row["prompt"], height=32, width=32, num_inference_steps=4,
                  guidance_scale=1.0, max_sequence_length=32, output_type="pt", max_area=32 * 32, _auto_resize=False)
    base = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    pipe.load_lora_weights(str(output), weight_name="pytorch_lora_weights.safetensors")
    tuned = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert (tuned - base).abs().max() > 1e-3
