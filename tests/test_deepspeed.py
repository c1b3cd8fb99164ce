"""DeepSpeed ZeRO-2 through `accelerate launch` and the shipped config, on 2 CPU processes (tests/deepspeed_run.py).

ZeRO-2 splits the optimizer state, float32 master weights included, over the processes. The trainer must then
hand DeepSpeed its batch geometry, read the gradient norm from the engine, and checkpoint and restore the
partitioned state through the engine: a resume that only copied the LoRA back into the model would be overwritten
by the master weights at the next step.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import max_diff

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "deepspeed_run.py")
ZERO2 = os.path.join(ROOT, "examples", "accelerate_configs", "deepspeed_zero2.yaml")

# Slow: accelerate launch with 2 processes. In miniature: test_checkpoint.py (exact resume on one process) and
# test_options_end_to_end.py::test_the_trainer_refuses_a_deepspeed_checkpoint_before_any_compute.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                                  reason="DeepSpeed is not installed (pip install -e '.[deepspeed]')")]


def _launch(pipeline_dir, output_dir, steps, dump_dir, resume=None, mixed_precision="no", deepspeed=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if deepspeed:
        launcher += ["--config_file", ZERO2]
    else:  # DDP on CPU processes
        env["ACCELERATE_USE_CPU"] = "1"
        launcher += ["--multi_gpu"]
    command = launcher + [SCRIPT, pipeline_dir, str(output_dir), str(steps), resume or "-", str(dump_dir),
                          mixed_precision]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [torch.load(os.path.join(dump_dir, f"rank{rank}.pt"), weights_only=False) for rank in (0, 1)]


@pytest.fixture(scope="module")
def runs(tiny_pipeline_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("deepspeed")
    out = {"straight": _launch(tiny_pipeline_dir, root / "straight", 4, root / "dump-straight")}
    shutil.copytree(root / "straight" / "checkpoint-2", root / "resumed" / "checkpoint-2")
    out["resumed"] = _launch(tiny_pipeline_dir, root / "resumed", 4, root / "dump-resumed", resume="latest")
    out["ddp"] = _launch(tiny_pipeline_dir, root / "ddp", 1, root / "dump-ddp", deepspeed=False)
    out["checkpoint"] = root / "straight" / "checkpoint-2"
    return out


def test_runs_under_zero2_with_two_processes(runs):
    for rank in runs["straight"]:
        assert rank["distributed_type"] == "DistributedType.DEEPSPEED" and rank["num_processes"] == 2
        assert rank["optimizer_step"] == 8  # 4 iterations x 6 micro-batches / 3 per step
        assert all(torch.isfinite(torch.tensor(m["grad_norm"])) for m in rank["history"])  # read from the engine
    first, second = runs["straight"]
    for which in ("default", "old", "ema"):
        assert max_diff(first["lora"][which], second["lora"][which]) == 0, which  # one model on both ranks


def test_first_iteration_matches_ddp(runs):
    # The same iteration under DDP: same rewards, gradients and AdamW steps, up to float rounding. (Later
    # iterations sample from slightly different weights, and a JPEG-size reward amplifies any difference.)
    zero, ddp = runs["straight"][0], runs["ddp"][0]
    assert zero["history"][0]["reward/total/mean"] == ddp["history"][0]["reward/total/mean"]
    assert zero["history"][0]["grad_norm"] == pytest.approx(ddp["history"][0]["grad_norm"], rel=1e-5)
    zero_theta, ddp_theta = zero["theta_after_each_iteration"][0], ddp["theta_after_each_iteration"][0]
    difference = torch.cat([(zero_theta[k] - ddp_theta[k]).abs().flatten() for k in ddp_theta])
    # AdamW moves every weight by about lr = 1e-2 per step. A few weights with gradients near Adam's eps (lora_A
    # right after B left zero) amplify rounding: 73 of 77,824 differ by more than 1e-7, the largest by 7e-6.
    assert (difference > 1e-7).float().mean() < 0.005
    assert difference.max() < 1e-4


def test_checkpoint_holds_every_process_partition(runs):
    state = runs["checkpoint"] / "deepspeed" / "state"
    partitions = sorted(p.name for p in state.iterdir() if "optim_states" in p.name)
    assert partitions == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert not (runs["checkpoint"] / "optimizer.pt").exists()  # one way per backend: the engine's files here


def test_resume_is_exact(runs):
    straight, resumed = runs["straight"][0], runs["resumed"][0]
    assert resumed["optimizer_step"] == 8 and len(resumed["history"]) == 4
    for which in ("default", "old", "ema"):
        assert max_diff(straight["lora"][which], resumed["lora"][which]) == 0, which


def test_bf16_trains_with_float32_copies_of_the_old_policy_and_ema(tiny_pipeline_dir, tmp_path):
    first, second = _launch(tiny_pipeline_dir, tmp_path / "bf16", 2, tmp_path / "dump", mixed_precision="bf16")
    assert first["theta_dtype"] == "torch.bfloat16"  # the engine cast the whole model, LoRA included
    assert all(torch.isfinite(torch.tensor([m["grad_norm"], m["loss/total"]])).all() for m in first["history"])
    old, ema = first["lora"]["old"], first["lora"]["ema"]
    assert {t.dtype for t in [*old.values(), *ema.values()]} == {torch.float32}
    # the old policy's forward uses the float32 copy rounded once, not a bf16 tensor updated in place
    assert max_diff(first["old_adapter"], {k: v.bfloat16().float() for k, v in old.items()}) == 0
    for which in ("default", "old", "ema"):
        assert max_diff(first["lora"][which], second["lora"][which]) == 0, which
