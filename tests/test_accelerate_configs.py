"""The shipped accelerate configs parse, and the DDP one launches the training script on 2 CPU processes."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "examples", "accelerate_configs")


def test_every_shipped_config_parses_with_what_the_trainer_needs():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    expected = {"ddp.yaml": DistributedType.MULTI_GPU, "fsdp.yaml": DistributedType.FSDP,
                "deepspeed_zero2.yaml": DistributedType.DEEPSPEED}
    assert sorted(os.listdir(CONFIGS)) == sorted(expected)
    for name, kind in expected.items():
        config = load_config_from_file(os.path.join(CONFIGS, name))
        assert config.distributed_type == kind, name
    fsdp = load_config_from_file(os.path.join(CONFIGS, "fsdp.yaml")).fsdp_config
    assert fsdp["fsdp_version"] == 2  # per-parameter sharding: the only FSDP the policy supports
    import diffusers.models.transformers.transformer_sd3 as sd3

    assert hasattr(sd3, fsdp["fsdp_transformer_layer_cls_to_wrap"])  # the class it wraps exists


@pytest.mark.slow
def test_ddp_config_launches_the_script_on_two_cpu_processes(tiny_pipeline_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cat\na blue dog\na green tree\n")
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(CONFIGS, "ddp.yaml"),
               "--num_processes", "2", "--mixed_precision", "no", os.path.join(ROOT, "examples", "train_nft_sd3.py"),
               "--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts", str(prompts),
               "--reward", "jpeg_compressibility", "--output_dir", str(tmp_path / "out"), "--resolution", "64", "--max_sequence_length", "16",
               "--max_train_steps", "1", "--prompts_per_iteration", "2", "--group_size", "2",
               "--num_sampling_steps", "2", "--eval_num_steps", "2", "--report_to", "none", "--rank", "4",
               "--validation_steps", "5", "--sample_batch_size", "2", "--train_batch_size", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["step"] == 1 and (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
