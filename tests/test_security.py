"""Nothing in a checkpoint or a reward's weights file can run code: planted pickles are refused or ignored."""

import os
import pickle
import random
import shutil

import numpy as np

import pytest
import torch
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer
from diffusers_nft.checkpoints import CheckpointError
from diffusers_nft.checkpoints.checkpointer import set_rng_states
from diffusers_nft.checkpoints.folder import _read_part

from conftest import PROMPTS, tiny_config


class Payload:
    """Unpickling this creates a marker file: the proof that a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path, marker, wrap=None):
    with open(path, "wb") as f:
        pickle.dump(Payload(marker) if wrap is None else wrap(Payload(marker)), f)


def _trained(pipeline_dir, output_dir):
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(output_dir, max_steps=1, save_steps=1), PROMPTS).train()
    return os.path.join(output_dir, "checkpoint-1")


def _resume(pipeline_dir, output_dir, path):
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    return NFTTrainer(pipe, "jpeg_incompressibility",
                      tiny_config(output_dir, max_steps=2, save_steps=1, resume_from_checkpoint=path), PROMPTS)


def test_planted_pickles_in_a_checkpoint_never_run(tiny_pipeline_dir, tmp_path):
    good = _trained(tiny_pipeline_dir, tmp_path / "run")
    marker = tmp_path / "ran"
    # a file the format does not use is never opened: the resume works and the payload stays inert
    plant(os.path.join(good, "notes.txt"), marker)
    plant(os.path.join(good, "extra.pt"), marker)
    assert _resume(tiny_pipeline_dir, tmp_path / "run", good).global_step == 1
    assert not marker.exists()
    # a payload in a part the format reads is refused as corrupt, before it can run
    for part in ("lr_scheduler.pt", "random_states.pt", "optimizer.pt"):
        bad = str(tmp_path / f"bad-{part}")
        shutil.copytree(good, bad)
        plant(os.path.join(bad, part), marker, wrap=lambda payload: {"state": payload})
        with pytest.raises(CheckpointError, match=part):
            _resume(tiny_pipeline_dir, tmp_path / "run", bad)
        assert not marker.exists(), part


def test_checkpoints_store_rng_states_as_plain_data(tiny_pipeline_dir, tmp_path):
    good = _trained(tiny_pipeline_dir, tmp_path / "run")
    states = torch.load(os.path.join(good, "random_states.pt"), weights_only=True)  # no allow-list needed
    assert isinstance(states["numpy"][1], torch.Tensor) and states["numpy"][0] == "MT19937"


def test_rng_states_written_before_0_2_still_load_and_restore(tmp_path):
    # 0.1 saved numpy's own state tuple: a pickled uint32 array, read back through the numpy allow-list
    np.random.seed(7)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = np.random.rand(3)
    path = str(tmp_path / "random_states.pt")
    torch.save(old, path)
    np.random.seed(0)
    set_rng_states(_read_part(path))
    assert np.random.rand(3).tolist() == expected.tolist()


def test_reward_weights_files_never_run_code(tmp_path):
    from diffusers_nft.rewards.aesthetic import _load_weights
    from diffusers_nft.rewards.clip import _load_torch_checkpoint

    marker = tmp_path / "ran"
    for name, loader in (("HPS_v2.1_compressed.pt", _load_torch_checkpoint), ("aesthetic.pth", _load_weights)):
        path = tmp_path / name
        plant(path, marker, wrap=lambda payload: {"state_dict": {"weight": payload}})
        with pytest.raises(pickle.UnpicklingError):
            loader(str(path))
        assert not marker.exists(), name
        torch.save({"state_dict": {"weight": torch.ones(2)}}, path)  # plain tensors still load
        assert torch.equal(loader(str(path))["state_dict"]["weight"], torch.ones(2))
