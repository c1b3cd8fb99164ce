import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import CheckpointError, list_checkpoints, resolve_checkpoint, save_checkpoint

from conftest import PROMPTS, max_diff, run_tiny as _run, tiny_config


@pytest.mark.slow  # long: in CI (--runslow), not in the default set
def test_resume_is_exact(tiny_pipeline_dir, tmp_path):
    # two optimizer steps per iteration, and the delayed decay, so that every piece of state matters
    kwargs = dict(gradient_accumulation_steps=3, old_policy_decay="constant", old_policy_decay_constant=0.3,
                  normalize_rewards=True, lr_scheduler_type="cosine", lr_warmup_steps=3)  # the lr moves every step
    straight = _run(tiny_pipeline_dir, tmp_path / "straight", 4, **kwargs)
    _run(tiny_pipeline_dir, tmp_path / "split", 4, stop_after=2, **kwargs)
    resumed = _run(tiny_pipeline_dir, tmp_path / "split", 4, resume="latest", **kwargs)
    assert resumed.global_step == 4 and resumed.optimizer_step == straight.optimizer_step == 8
    for which in ("default", "old", "ema"):
        assert max_diff(straight.policy.state_dict(which), resumed.policy.state_dict(which)) <= 1e-6, which
    assert [m["reward/total/mean"] for m in straight.history] == [m["reward/total/mean"] for m in resumed.history]
    assert [m["lr"] for m in straight.history] == [m["lr"] for m in resumed.history]
    assert len({m["lr"] for m in straight.history}) == 4
    # and the runs did train: theta moved away from its initial value
    assert max_diff(straight.policy.state_dict("default"), _initial_lora(tiny_pipeline_dir, tmp_path)) > 1e-3


@pytest.mark.slow  # 3 s; the exact resume of test_resume_is_exact restores them too
def test_a_resumed_run_continues_the_global_rngs_where_the_checkpoint_left_them(tiny_pipeline_dir, tmp_path):
    # a reward that draws from torch's, numpy's and Python's global generators: only restored states repeat its values
    def jittery(images, prompts, metadata):
        jitter = torch.rand(len(images)) + torch.from_numpy(np.random.rand(len(images))).float() + random.random()
        return images.mean(dim=(1, 2, 3)) + jitter

    def run(folder, **kwargs):
        trainer = _run(tiny_pipeline_dir, tmp_path / folder, 2, reward=[jittery], save_steps=1, **kwargs)
        return [m["reward/total/mean"] for m in trainer.history]

    straight = run("straight")
    run("split", stop_after=1)
    resumed = run("split", resume="latest")
    assert len(resumed) == 2 and resumed == pytest.approx(straight, abs=1e-6)


def _initial_lora(pipeline_dir, tmp_path):
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path / "init"), PROMPTS)
    return trainer.policy.state_dict("default")


def test_rotation_and_latest_ignore_incomplete_folders(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(str(tmp_path), step, {"trainer_state.json": {"global_step": step}}, total_limit=2)
    assert [os.path.basename(p) for p in list_checkpoints(str(tmp_path))] == ["checkpoint-2", "checkpoint-3"]
    os.makedirs(tmp_path / ".tmp-checkpoint-4")
    os.makedirs(tmp_path / "checkpoint-5")  # a folder without its state file is not a checkpoint
    assert resolve_checkpoint("latest", str(tmp_path)).endswith("checkpoint-3")
    assert resolve_checkpoint("latest", str(tmp_path / "fresh")) is None
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        resolve_checkpoint(str(tmp_path / "checkpoint-5"), str(tmp_path))


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_corrupt_checkpoint_is_reported_before_training(tiny_pipeline_dir, tmp_path):
    _run(tiny_pipeline_dir, tmp_path, 2)
    with open(tmp_path / "checkpoint-2" / "lora_old.safetensors", "wb") as f:
        f.write(b"not a safetensors file")
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    with pytest.raises(CheckpointError, match="corrupt: cannot read lora_old.safetensors"):
        NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, resume_from_checkpoint="latest"), PROMPTS)
    os.remove(tmp_path / "checkpoint-2" / "optimizer.pt")
    with pytest.raises(CheckpointError, match=r"incomplete: \['optimizer.pt'\] missing"):
        NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, resume_from_checkpoint="latest"), PROMPTS)


CHILD = textwrap.dedent(
    """
    import os, sys, time
    import diffusers_nft.checkpoints.folder as checkpoint
    sys.path.insert(0, {tests!r})
    from conftest import PROMPTS, tiny_config
    from diffusers import StableDiffusion3Pipeline
    from diffusers_nft import NFTTrainer

    write_part = checkpoint._write_part

    def slow_write(path, value):
        write_part(path, value)
        if ".tmp-checkpoint-4" in path:  # half-way through the second checkpoint
            open({marker!r}, "w").close()
            time.sleep(600)

    checkpoint._write_part = slow_write
    pipe = StableDiffusion3Pipeline.from_pretrained({pipeline!r})
    config = tiny_config({output!r}, max_steps=6, save_steps=2)
    NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS).train()
    """
)


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_resumes_from_previous(tiny_pipeline_dir, tmp_path):
    """Slow: a subprocess killed mid-write; in miniature: test_checkpoint.py::test_resume_is_exact and
    test_nonfinite.py::test_a_rotation_cut_short_never_leaves_a_checkpoint_that_counts.
    """
    output, marker = tmp_path / "run", tmp_path / "writing"
    script = tmp_path / "child.py"
    tests = os.path.dirname(__file__)
    script.write_text(CHILD.format(tests=tests, marker=str(marker), pipeline=tiny_pipeline_dir, output=str(output)))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the child never reached the checkpoint write"
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert (output / ".tmp-checkpoint-4").is_dir()
    assert [os.path.basename(p) for p in list_checkpoints(str(output))] == ["checkpoint-2"]

    resumed = _run(tiny_pipeline_dir, output, 6, resume="latest")
    assert resumed.history[0]["step"] == 1 and len(resumed.history) == 6  # history came back from checkpoint-2
    assert not (output / ".tmp-checkpoint-4").exists()
    assert [os.path.basename(p) for p in list_checkpoints(str(output))] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    straight = _run(tiny_pipeline_dir, tmp_path / "straight", 6)
    assert max_diff(straight.policy.state_dict("default"), resumed.policy.state_dict("default")) <= 1e-6


def test_a_checkpoint_resumes_only_under_the_kind_of_run_that_wrote_it(tmp_path):
    import json
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from diffusers_nft.zero import check_resumable

    def run(kind, processes):
        return SimpleNamespace(distributed_type=kind, num_processes=processes)

    def checkpoint(name, processes, deepspeed):
        folder = tmp_path / name
        (folder / "deepspeed" if deepspeed else folder).mkdir(parents=True)
        (folder / "trainer_state.json").write_text(json.dumps({"num_processes": processes}))
        return str(folder)

    zero = checkpoint("zero", 2, deepspeed=True)
    whole = checkpoint("whole", 2, deepspeed=False)
    check_resumable(zero, run(DistributedType.DEEPSPEED, 2))
    check_resumable(whole, run(DistributedType.MULTI_GPU, 4))  # a whole optimizer state resumes on any count
    check_resumable(whole, run(DistributedType.NO, 1))
    with pytest.raises(CheckpointError, match="--num_processes 2"):
        check_resumable(zero, run(DistributedType.DEEPSPEED, 4))
    with pytest.raises(CheckpointError, match="written with DeepSpeed"):
        check_resumable(zero, run(DistributedType.MULTI_GPU, 2))
    with pytest.raises(CheckpointError, match="written without DeepSpeed"):
        check_resumable(whole, run(DistributedType.DEEPSPEED, 2))


def test_the_checkpointer_owns_part_names_and_the_backend(tiny_pipeline, tmp_path):
    """One object knows what a checkpoint holds for this backend; the trainer asks it and has no backend branch."""
    import inspect

    from diffusers_nft import trainer as trainer_module
    from diffusers_nft.checkpoints import Checkpointer

    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", tiny_config(tmp_path, max_steps=1, save_steps=1), PROMPTS)
    assert isinstance(trainer.checkpointer, Checkpointer) and not trainer.checkpointer.deepspeed
    trainer.train()
    written = set(os.listdir(tmp_path / "checkpoint-1"))
    assert set(trainer.checkpointer.part_names()) | {"trainer_state.json", "pytorch_lora_weights.safetensors"} == written
    assert "uses_deepspeed" not in inspect.getsource(trainer_module)
