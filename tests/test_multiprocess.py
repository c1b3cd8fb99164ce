import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import max_diff

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "multiprocess_run.py")


def _launch(num_processes, pipeline_dir, output_dir, steps, resume, dump_dir):
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no", "--num_processes", str(num_processes)]
    if num_processes > 1:
        launcher.insert(3, "--multi_gpu")
    command = launcher + [SCRIPT, pipeline_dir, str(output_dir), str(steps), resume or "-", str(dump_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


def _load(dump_dir, rank):
    lora = torch.load(os.path.join(dump_dir, f"lora_rank{rank}.pt"))
    with open(os.path.join(dump_dir, f"optimality_rank{rank}.json")) as f:
        return lora, json.load(f)


@pytest.mark.slow
def test_two_processes_match_one_and_resume_exactly(tiny_pipeline_dir, tmp_path):
    _launch(2, tiny_pipeline_dir, tmp_path / "two", 4, None, tmp_path / "dump-two")
    lora0, info0 = _load(tmp_path / "dump-two", 0)
    lora1, info1 = _load(tmp_path / "dump-two", 1)
    assert info0["num_processes"] == 2 and info0["local_images"] == 3  # 3 prompts x 2 images over 2 ranks
    for which in ("default", "old", "ema"):
        assert max_diff(lora0[which], lora1[which]) == 0, which  # identical on both ranks
    # every rank computed r from the rewards of the whole batch, including group 1 split across the ranks
    whole = [[{k: record[k] for k in ("rewards", "groups", "r")} for record in info["recorded"]] for info in (info0, info1)]
    assert whole[0] == whole[1]
    assert info0["recorded"][0]["groups"] == [0, 0, 1, 1, 2, 2]
    # each rank trains with the r of its own images: rank 0 the iteration's first 3, rank 1 the last 3
    assert all(record["local"] == record["r"][:3] for record in info0["recorded"])
    assert all(record["local"] == record["r"][3:] for record in info1["recorded"])
    # only the main process writes files; the other one only makes sure the folder exists and is writable
    assert [w for w in info1["writes"] if w != "." and not w.startswith(".write-test-")] == []
    assert {"metrics.jsonl", "pytorch_lora_weights.safetensors", "checkpoint-4"} <= set(info0["writes"])

    _launch(1, tiny_pipeline_dir, tmp_path / "one", 1, None, tmp_path / "dump-one")
    _, single = _load(tmp_path / "dump-one", 0)
    first_two, first_one = info0["recorded"][0], single["recorded"][0]
    assert first_two["groups"] == first_one["groups"]
    torch.testing.assert_close(torch.tensor(first_two["rewards"]), torch.tensor(first_one["rewards"]))
    torch.testing.assert_close(torch.tensor(first_two["r"]), torch.tensor(first_one["r"]))

    _launch(2, tiny_pipeline_dir, tmp_path / "split", 2, None, tmp_path / "dump-split")
    _launch(2, tiny_pipeline_dir, tmp_path / "split", 4, "latest", tmp_path / "dump-resumed")
    resumed, _ = _load(tmp_path / "dump-resumed", 0)
    for which in ("default", "old", "ema"):
        assert max_diff(resumed[which], lora0[which]) <= 1e-6, which
