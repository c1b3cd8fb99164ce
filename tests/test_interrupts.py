"""Signals, a dead launcher, a hung reward and the reward worker: training stops cleanly and leaves nothing behind."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import list_checkpoints
from diffusers_nft.rewards import RewardError

from conftest import PROMPTS, load_training_script, tiny_config

CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from conftest import PROMPTS, tiny_config
    from diffusers import StableDiffusion3Pipeline
    from diffusers_nft import NFTTrainer

    pipe = StableDiffusion3Pipeline.from_pretrained({pipeline!r})
    config = tiny_config({output!r}, max_steps=500, save_steps=1000, save_on_interrupt=True)
    NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS).train()
    """
)
# A launcher like `accelerate launch`: runs the training as a child and forwards nothing.
LAUNCHER = "import subprocess, sys; subprocess.Popen([sys.executable, sys.argv[1]]).wait()"


def _start(tmp_path, pipeline_dir, launcher=False):
    output, script = tmp_path / "run", tmp_path / "child.py"
    script.write_text(CHILD.format(tests=os.path.dirname(__file__), pipeline=pipeline_dir, output=str(output)))
    command = [sys.executable, "-c", LAUNCHER, str(script)] if launcher else [sys.executable, str(script)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (output / "metrics.jsonl").exists() or not (output / "metrics.jsonl").read_text().strip():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "the child never finished an iteration"
        time.sleep(0.2)
    return process, output


def _steps(output):
    return [json.loads(line)["step"] for line in open(output / "metrics.jsonl")]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_non_zero(tiny_pipeline_dir, tmp_path):
    """Slow; a training subprocess; no in-process twin (signals)."""
    process, output = _start(tmp_path, tiny_pipeline_dir)
    os.kill(process.pid, signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM
    checkpoints = list_checkpoints(str(output))
    assert len(checkpoints) == 1 and checkpoints[0].endswith(f"checkpoint-{_steps(output)[-1]}")
    assert not os.path.exists(output / "pytorch_lora_weights.safetensors")  # not a finished run


@pytest.mark.slow
def test_a_killed_launcher_stops_its_training_child(tiny_pipeline_dir, tmp_path):
    """Slow; two subprocesses; no in-process twin (signals)."""
    import psutil

    launcher, output = _start(tmp_path, tiny_pipeline_dir, launcher=True)
    children = psutil.Process(launcher.pid).children()
    assert len(children) == 1
    launcher.kill()  # SIGKILL: the launcher forwards nothing
    launcher.wait()
    _, alive = psutil.wait_procs(children, timeout=120)
    assert alive == [], "the training child outlived its launcher"
    assert len(list_checkpoints(str(output))) == 1  # it stopped the clean way: SIGTERM, then its checkpoint


def test_a_hung_reward_fails_after_reward_timeout(tiny_pipeline_dir, tmp_path):
    calls = []

    def hangs_after_the_probe(images, prompts, metadata):
        calls.append(1)
        if len(calls) > 1:
            time.sleep(60)
        return [0.0] * len(prompts)

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    trainer = NFTTrainer(pipe, hangs_after_the_probe, tiny_config(tmp_path, reward_timeout=1.0), PROMPTS)
    start = time.time()
    with pytest.raises(RewardError, match="reward_timeout=1"):
        trainer.train()
    assert time.time() - start < 30


@pytest.mark.slow  # long: in CI (--runslow), not in the default set
def test_train_shuts_the_reward_process_down(tiny_pipeline_dir, tmp_path):
    import multiprocessing

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path, max_steps=1, reward_scoring="process"),
                         PROMPTS)
    assert multiprocessing.active_children()
    trainer.train()
    assert multiprocessing.active_children() == []
    trainer.step()  # a trainer used again after train() starts a new worker
    trainer.scorer.close()


@pytest.mark.slow
def test_a_killed_training_process_takes_its_reward_worker_with_it(tmp_path):
    """Slow; a subprocess and its worker; in miniature: test_interrupts.py::test_train_shuts_the_reward_process_down."""
    import psutil

    code = textwrap.dedent(
        """
        import time
        from diffusers_nft.rewards import RewardScorer, WeightedRewards
        scorer = RewardScorer(WeightedRewards("jpeg_incompressibility"), "process")
        import torch
        scorer.wait(scorer.submit(torch.zeros(1, 3, 8, 8), ["a"], [{}]))
        print("ready", flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert parent.stdout.readline().strip() == b"ready"
    workers = psutil.Process(parent.pid).children(recursive=True)  # the worker and multiprocessing's resource tracker
    assert any("resource_tracker" not in " ".join(p.cmdline()) for p in workers)
    parent.kill()
    parent.wait()
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert alive == []


def test_the_script_warns_about_a_hub_token_flag(tmp_path):
    script = load_training_script()

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    with pytest.warns(UserWarning, match="HF_TOKEN"), pytest.raises(Stop):
        (tmp_path / "p.txt").write_text("a cat\n")
        script.main(["--pretrained_model_name_or_path", "x", "--prompts", str(tmp_path / "p.txt"), "--output_dir",
                     str(tmp_path / "out"), "--reward", "jpeg_compressibility", "--hub_token", "hf_secret"], load_pipeline=stop)


SIGNALLED = textwrap.dedent(
    """
    import os, signal, sys, time
    from diffusers_nft.interrupts import StopSignals

    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        print("first", stop.received, flush=True)
        if len(sys.argv) > 1:
            os.kill(os.getpid(), signal.SIGINT)  # asked again: the process stops here
            time.sleep(2)
        print("after", flush=True)
    """
)


@pytest.mark.parametrize("twice", [False, True])
def test_one_signal_is_noted_and_a_second_stops_at_once(twice):
    done = subprocess.run([sys.executable, "-c", SIGNALLED] + (["again"] if twice else []), capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.splitlines()[0] == f"first {int(signal.SIGINT)}"
    if twice:
        assert done.returncode == -signal.SIGINT and "after" not in done.stdout
    else:
        assert done.returncode == 0 and done.stdout.splitlines()[1] == "after"
