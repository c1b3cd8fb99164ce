"""The NFT policy under FSDP2 (per-parameter sharding), on 2 CPU processes.

accelerate runs FSDP only on GPUs, so this drives `fully_shard` directly (tests/fsdp_run.py): the same tiny
transformer, whole and sharded, goes through a training step, the old-policy and EMA updates, the adapter switch,
the EMA swap, and a checkpoint round trip (whole tensors out, sliced back in). A last run uses bf16 mixed precision
as accelerate's FSDP2 config does.
"""

import os
import subprocess
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
# Slow: two spawned processes. In miniature: test_policy.py (the policy on one process).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, os.path.join(HERE, "fsdp_run.py"), str(out)],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


def test_lora_tensors_are_really_sharded(ranks):
    for rank in ranks:
        assert rank["rows"] == 32 and rank["local_rows"] == 16  # each process holds half of every LoRA matrix


def test_sharded_policy_matches_the_whole_one(ranks):
    for rank in ranks:
        whole, sharded = rank["whole"], rank["sharded"]
        assert whole.keys() == sharded.keys()
        for key in whole:
            torch.testing.assert_close(sharded[key], whole[key], rtol=1e-5, atol=1e-6, msg=key)


def test_what_is_compared_is_not_trivial(ranks):
    whole = ranks[0]["whole"]
    # the adapters differ from each other and from the base model, so the switch is really exercised
    assert (whole["forward_default"] - whole["forward_reference"]).abs().max() > 1e-3
    assert (whole["forward_default"] - whole["forward_old"]).abs().max() > 1e-4
    assert (whole["forward_default"] - whole["forward_ema"]).abs().max() > 1e-4
    torch.testing.assert_close(whole["forward_after_ema"], whole["forward_default"], rtol=0, atol=0)
    assert whole["deviation"] > 0
    lora_b = [k for k in whole if k.startswith("default/") and "lora_B" in k]
    assert lora_b and all(whole[k].abs().max() > 0 for k in lora_b)  # trained away from its zero init


def test_checkpoint_round_trip_resumes_exactly(ranks):
    for rank in ranks:
        sharded = rank["sharded"]
        for key in [k for k in sharded if k.startswith("resumed/")]:
            torch.testing.assert_close(sharded[key], sharded[key.replace("resumed/", "uninterrupted/")], rtol=0, atol=0)
    torch.testing.assert_close(ranks[0]["sharded"], ranks[1]["sharded"], rtol=0, atol=0)  # every rank saves the same


def test_bf16_mixed_precision_trains_after_an_old_policy_forward(ranks):
    # FSDP2 fixes gradient dtypes at the first forward, which runs the old policy; the switch must not turn off
    # requires_grad of theta then (it did: "attempting to assign a gradient with dtype BFloat16 ... grad_dtype Float").
    for rank in ranks:
        assert rank["mixed_precision_change"] > 1e-4
