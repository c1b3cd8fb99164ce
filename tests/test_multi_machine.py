"""Two machines on this one: two `accelerate launch` commands, one process each, `--num_machines 2 --machine_rank
0|1 --main_process_ip 127.0.0.1` (gloo on CPU), with the shipped DDP and DeepSpeed ZeRO-2 configs.

The two-machine run must train what one machine with two processes trains, resume exactly, stop on both machines
when either launcher is killed, and refuse to start, on both, when one machine cannot see what the run needs.
"""

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import max_diff

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = os.path.join(ROOT, "examples", "accelerate_configs")
SCRIPTS = {"ddp": os.path.join(HERE, "multiprocess_run.py"), "zero2": os.path.join(HERE, "deepspeed_run.py")}
KILL_BOUND = 120  # seconds for both machines to stop after either launcher is killed

pytestmark = pytest.mark.slow  # accelerate launch, 2 processes a run


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(kind: str, machines: int, rank: int, port: int):
    """The launch command of one machine: the shipped config with the machine's flags (on this CPU, DDP is told
    so by `ACCELERATE_USE_CPU`, as the multi-process tests do)."""
    config = os.path.join(CONFIGS, "ddp.yaml" if kind == "ddp" else "deepspeed_zero2.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--num_processes", "2",
               "--num_machines", str(machines), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if machines > 1:
        command += ["--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
        if kind == "zero2":
            command += ["--deepspeed_multinode_launcher", "standard"]
    env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
    if kind == "ddp":
        env["ACCELERATE_USE_CPU"] = "1"
        command += ["--multi_gpu"]
    return command, env


def _start(kind, machines, script_args_of_rank):
    """The launchers of a run: one per machine (or one for a one-machine run), started together."""
    port, processes = _port(), []
    for rank in range(machines):
        command, env = _launcher(kind, machines, rank, port)
        processes.append(subprocess.Popen(command + [SCRIPTS[kind], *map(str, script_args_of_rank(rank))], env=env,
                                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return processes


def _finish(processes, timeout=900):
    outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    return [p.returncode for p in processes], outputs


def _train(kind, machines, pipeline_dir, output_dir, steps, dump_dir, resume=None):
    """Train and return rank 0's LoRA: `{"default", "old", "ema"}`."""
    args = [pipeline_dir, output_dir, steps, resume or "-", dump_dir] + (["no"] if kind == "zero2" else [])
    codes, outputs = _finish(_start(kind, machines, lambda rank: args))
    assert codes == [0] * machines, "\n".join(o[-3000:] for o in outputs)
    if kind == "ddp":
        return torch.load(os.path.join(dump_dir, "lora_rank0.pt"))
    return torch.load(os.path.join(dump_dir, "rank0.pt"), weights_only=False)["lora"]


KINDS = ["ddp"] + (["zero2"] if importlib.util.find_spec("deepspeed") else [])


@pytest.mark.parametrize("kind", KINDS)
def test_two_machines_train_as_one_machine_and_resume_exactly(kind, tiny_pipeline_dir, tmp_path):
    two = _train(kind, 2, tiny_pipeline_dir, tmp_path / "two", 4, tmp_path / "dump-two")
    one = _train(kind, 1, tiny_pipeline_dir, tmp_path / "one", 4, tmp_path / "dump-one")
    for which in two:
        assert max_diff(two[which], one[which]) == 0, which  # the same LoRA as one machine with two processes
    shutil.copytree(tmp_path / "two" / "checkpoint-2", tmp_path / "resumed" / "checkpoint-2")
    resumed = _train(kind, 2, tiny_pipeline_dir, tmp_path / "resumed", 4, tmp_path / "dump-resumed", "latest")
    for which in two:
        assert max_diff(resumed[which], two[which]) == 0, which  # bit-identical to the uninterrupted run


@pytest.mark.parametrize("killed", [0, 1])
def test_killing_either_machines_launcher_stops_both(killed, tiny_pipeline_dir, tmp_path):
    output_dir = tmp_path / "out"
    processes = _start("ddp", 2, lambda rank: [tiny_pipeline_dir, output_dir, 200, "-", tmp_path / "dump"])
    deadline = time.time() + 600
    while not (output_dir / "metrics.jsonl").exists():  # training has started on both
        assert time.time() < deadline and all(p.poll() is None for p in processes), "training did not start"
        time.sleep(0.5)
    start = time.time()
    processes[killed].send_signal(signal.SIGTERM)
    codes, outputs = _finish(processes, timeout=KILL_BOUND)
    assert time.time() - start < KILL_BOUND
    assert all(code != 0 for code in codes) or "stopping after this iteration" in outputs[killed], outputs
    assert not (tmp_path / "dump").exists()  # neither machine went on to finish the run


def test_a_machine_that_cannot_see_the_output_folder_stops_both(tiny_pipeline_dir, tmp_path):
    # Machine 1 is given a folder of the same role that is not the main process's (as its own disk would be).
    folders = [tmp_path / "shared", tmp_path / "machine-1-local"]
    start = time.time()
    codes, outputs = _finish(_start("ddp", 2, lambda rank: [tiny_pipeline_dir, folders[rank], 2, "-",
                                                            tmp_path / "dump"]), timeout=300)
    assert codes[0] != 0 and codes[1] != 0 and time.time() - start < 300
    for output in outputs:  # the same message on both machines, naming the one that failed
        assert "Setting up the output folder failed on 1 of 2 processes" in output, output[-3000:]
        assert "(process 1): ValueError: output_dir" in output and "is not the main process's folder" in output
    assert not (folders[0] / "metrics.jsonl").exists()


def test_a_reward_that_fails_on_one_machine_stops_both_before_training(tiny_pipeline_dir, tmp_path, monkeypatch):
    # As a reward whose weights are missing on machine 1: its probe fails there, and both machines say so.
    monkeypatch.setenv("NFT_TEST_REWARD_MISSING_ON_RANK", "1")
    codes, outputs = _finish(_start("ddp", 2, lambda rank: [tiny_pipeline_dir, tmp_path / "out", 2, "-",
                                                            tmp_path / "dump"]), timeout=300)
    assert codes[0] != 0 and codes[1] != 0
    for output in outputs:
        assert "Setting up the rewards failed on 1 of 2 processes" in output, output[-3000:]
        assert "(process 1): RewardError" in output and "FileNotFoundError" in output
        assert "reward-weights.pt" in output
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
