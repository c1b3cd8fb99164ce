"""One run per output_dir: a second fresh run is refused, `overwrite_output_dir` starts over cleanly, a resume
continues, and `resume_from_checkpoint="latest"` says when there is nothing to resume."""

import json
import logging
import os

import pytest
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer

from conftest import PROMPTS, load_training_script, run_tiny, tiny_config


def _steps(folder):
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


def _trainer(pipeline_dir, folder, **overrides):
    return NFTTrainer(StableDiffusion3Pipeline.from_pretrained(pipeline_dir), "jpeg_incompressibility",
                      tiny_config(folder, **overrides), PROMPTS)


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_a_second_fresh_run_in_the_same_folder_is_refused_before_any_compute(tiny_pipeline_dir, tmp_path):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=2)
    before = sorted(os.listdir(tmp_path))
    message = (r"already holds a run \(checkpoint-2, metrics.jsonl, pytorch_lora_weights.safetensors, reward_curve.png, "
               r"samples\)\. Continue it with --resume_from_checkpoint latest, replace it with --overwrite_output_dir")
    trainer = _trainer(tiny_pipeline_dir, tmp_path)  # TRL's way: the resume may still come with train()
    for start in (trainer.train, trainer.step):
        with pytest.raises(ValueError, match=message):
            start()
    assert sorted(os.listdir(tmp_path)) == before and _steps(tmp_path) == [1, 2]  # nothing computed or written
    prompts = tmp_path.parent / "p.txt"
    prompts.write_text("a cat\n")
    loaded = []
    with pytest.raises(ValueError, match=message):  # the scripts refuse before the model loads
        load_training_script().main(["--pretrained_model_name_or_path", tiny_pipeline_dir, "--prompts", str(prompts),
                                     "--reward", "jpeg_compressibility", "--output_dir", str(tmp_path)],
                                    load_pipeline=lambda *args: loaded.append(1))
    assert loaded == []


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_trls_resume_given_to_train_continues_the_folder(tiny_pipeline_dir, tmp_path):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, stop_after=2)
    _trainer(tiny_pipeline_dir, tmp_path, max_steps=3).train(resume_from_checkpoint="latest")
    assert _steps(tmp_path) == [1, 2, 3]


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_overwrite_output_dir_starts_over_and_keeps_other_files(tiny_pipeline_dir, tmp_path, caplog):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=2)
    (tmp_path / "prompts.txt").write_text("mine\n")
    with caplog.at_level(logging.INFO):
        trainer = _trainer(tiny_pipeline_dir, tmp_path, max_steps=1, overwrite_output_dir=True, save_steps=1)
    assert ("Removed the earlier run's checkpoint-2, metrics.jsonl, pytorch_lora_weights.safetensors, reward_curve.png, "
            "samples") in caplog.text
    assert sorted(os.listdir(tmp_path)) == [".diffusers-nft.lock", "prompts.txt"]
    trainer.train()
    assert _steps(tmp_path) == [1] and (tmp_path / "checkpoint-1").is_dir() and not (tmp_path / "checkpoint-2").exists()


@pytest.mark.slow  # 2 s; test_nonfinite's resume checks the metrics rows too
def test_a_resume_continues_the_folder(tiny_pipeline_dir, tmp_path):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, stop_after=2)
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, resume="latest")
    assert _steps(tmp_path) == [1, 2, 3, 4]


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_latest_with_nothing_to_resume_says_so_and_starts_clean(tiny_pipeline_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        _trainer(tiny_pipeline_dir, tmp_path / "empty", resume_from_checkpoint="latest")
    assert "holds no checkpoint yet, so this run starts from step 0" in caplog.text
    # A run cut short before its first checkpoint left only its metrics: "latest" starts over without them.
    run_tiny(tiny_pipeline_dir, tmp_path / "cut", max_steps=4, stop_after=1, save_steps=10)
    assert _steps(tmp_path / "cut") == [1] and not os.path.exists(tmp_path / "cut" / "pytorch_lora_weights.safetensors")
    run_tiny(tiny_pipeline_dir, tmp_path / "cut", max_steps=2, resume="latest", save_steps=10)
    assert _steps(tmp_path / "cut") == [1, 2]


def test_latest_never_overwrites_a_finished_run_without_checkpoints(tiny_pipeline_dir, tmp_path):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=1, save_steps=10)  # a LoRA, no checkpoint
    with pytest.raises(ValueError, match="already holds a run"):
        _trainer(tiny_pipeline_dir, tmp_path, resume_from_checkpoint="latest").train()
    assert (tmp_path / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow  # an end-to-end run (the fast set stays within its time)
def test_two_runs_in_one_folder_at_once_are_refused_naming_the_other(tiny_pipeline_dir, tmp_path):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys; from diffusers_nft.checkpoints.folder import lock_output_dir; "
        f"lock_output_dir({str(tmp_path)!r}); print('held', flush=True); sys.stdin.read()")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=rf"is in use by another run \(process {holder.pid}\)"):
            _trainer(tiny_pipeline_dir, tmp_path)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    _trainer(tiny_pipeline_dir, tmp_path)  # the kernel released the lock with the process
    _trainer(tiny_pipeline_dir, tmp_path, overwrite_output_dir=True)  # and this process may take it again


def test_only_the_packages_own_temporary_folders_are_cleaned(tiny_pipeline_dir, tmp_path):
    for name in (".tmp-notes", ".tmp-checkpoint-3", ".tmp-checkpoint-2-deleting", ".tmp-lora-ab_12"):
        (tmp_path / name).mkdir()
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=1)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".tmp-")) == [".tmp-notes"]


@pytest.mark.parametrize("folder", ["/", "package", "package/run"])
def test_the_root_and_the_package_are_no_output_dir(tiny_pipeline_dir, folder):
    import diffusers_nft

    package = os.path.dirname(diffusers_nft.__file__)
    path = folder.replace("package", package)
    with pytest.raises(ValueError, match="choose a folder of its own"):
        _trainer(tiny_pipeline_dir, path)
    assert not os.path.exists(os.path.join(package, "run"))


@pytest.mark.slow  # 3 runs; in miniature: test_nonfinite.py::test_metrics_have_no_duplicate_rows_after_a_resume
def test_a_torn_last_metrics_row_is_dropped_on_resume_and_a_bad_row_is_named(tiny_pipeline_dir, tmp_path):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, stop_after=2)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 3, "reward/total/mean"')  # a full disk cut the row short
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, resume="latest")
    assert _steps(tmp_path) == [1, 2, 3, 4]
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:1] + ["not json"] + lines[1:2]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2: not a JSON row"):
        run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, resume=str(tmp_path / "checkpoint-2"))


@pytest.mark.slow  # 3 resumed runs; in miniature: test_trls_resume_given_to_train_continues_the_folder
def test_a_branch_resumed_from_an_early_checkpoint_owns_rotation_and_latest(tiny_pipeline_dir, tmp_path):
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, save_steps=1)  # checkpoints 1..4 of the first branch
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=3, save_steps=1, save_total_limit=1,
             resume=str(tmp_path / "checkpoint-1"))
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.startswith("checkpoint-")] == [
        "checkpoint-2.abandoned", "checkpoint-3", "checkpoint-3.abandoned", "checkpoint-4.abandoned"]
    assert _steps(tmp_path) == [1, 2, 3]
    run_tiny(tiny_pipeline_dir, tmp_path, max_steps=4, save_steps=1, save_total_limit=1, resume="latest")
    assert _steps(tmp_path) == [1, 2, 3, 4]  # latest continued the new branch, not the old checkpoint-4


@pytest.mark.slow  # two runs
def test_a_checkpoint_folder_that_is_a_link_is_replaced_not_followed(tiny_pipeline_dir, tmp_path):
    # checkpoint-2 of this folder links to another run's folder: the run's own checkpoint-2 replaces the link, the
    # linked folder is left alone, and the final LoRA is written.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(elsewhere, run / "checkpoint-2")
    run_tiny(tiny_pipeline_dir, run, max_steps=2, save_steps=2, overwrite_output_dir=True)
    assert (run / "pytorch_lora_weights.safetensors").is_file() and not os.path.islink(run / "checkpoint-2")
    assert (run / "checkpoint-2" / "trainer_state.json").is_file() and (elsewhere / "keep.txt").read_text() == "mine"
    import shutil

    shutil.copy(run / "checkpoint-2" / "trainer_state.json", elsewhere / "trainer_state.json")
    os.symlink(elsewhere, run / "checkpoint-1")  # an older complete checkpoint that is a link: rotation unlinks it
    run_tiny(tiny_pipeline_dir, run, max_steps=3, save_steps=1, save_total_limit=1, resume="latest")
    assert sorted(n for n in os.listdir(run) if n.startswith("checkpoint")) == ["checkpoint-3"]
    assert (elsewhere / "keep.txt").read_text() == "mine" and not any(n.startswith(".tmp") for n in os.listdir(run))
