import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = ["a red cat", "a blue dog", "a green tree", "a yellow house", "a photo of the sea"]


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="Also run the tests marked slow (what CI runs).")


def pytest_collection_modifyitems(config, items):
    """`python -m pytest tests` runs the fast set; `--runslow` adds the slow end-to-end runs (CI runs both)."""
    if config.getoption("--runslow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one global state per process (mixed precision included); tests each get their own."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A tiny SD3.5-style pipeline, built offline once and saved like a Hub snapshot."""
    from tiny_pipelines import build_tiny_sd3_pipeline

    folder = str(tmp_path_factory.mktemp("tiny-sd3"))
    build_tiny_sd3_pipeline(seed=0).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_pipeline(tiny_pipeline_dir):
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_config(output_dir, **overrides):
    """A config that runs an iteration of the tiny pipeline in well under a second (`FlowGRPOConfig` with
    `objective="flow_grpo"`)."""
    from diffusers_nft import FlowGRPOConfig, NFTConfig

    values = dict(
        output_dir=str(output_dir),
        max_steps=2,
        prompts_per_iteration=2,
        group_size=4,
        num_sampling_steps=4,
        resolution=64,
        max_sequence_length=16,
        sample_batch_size=8,
        train_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        save_steps=1000,
        validation_steps=1000,
        eval_num_steps=4,
        num_validation_images=2,
        seed=0,
    )
    values.update(overrides)
    return (FlowGRPOConfig if values.get("objective") == "flow_grpo" else NFTConfig)(**values)


def run_tiny(pipeline_dir, output_dir, max_steps, resume=None, stop_after=None, reward="jpeg_incompressibility",
             **overrides):
    """Train to `max_steps`; or stop after `stop_after` iterations, as an interrupted run of `max_steps` would."""
    from diffusers import StableDiffusion3Pipeline

    from diffusers_nft import NFTTrainer

    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    overrides = {"save_steps": 2, **overrides}
    config = tiny_config(output_dir, max_steps=max_steps, resume_from_checkpoint=resume, **overrides)
    trainer = NFTTrainer(pipe, reward, config, PROMPTS)
    if stop_after is None:
        trainer.train()
    for _ in range(stop_after or 0):
        trainer.end_iteration(trainer.step())
    return trainer


def load_saved(folder):
    """A pipeline saved with `save_pretrained`, of the class its `model_index.json` names, without progress bars."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def small_lora(transformer, rank=4, alpha=16):
    from diffusers_nft.pipelines import SD3Family
    from diffusers_nft.policy import make_lora_config

    return make_lora_config(transformer, default_targets=SD3Family.default_lora_targets, rank=rank, alpha=alpha)


def load_training_script():
    """`examples/train_nft_sd3.py` as a module, to call its `main` / `prepare` in-process."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "train_nft_sd3.py")
    spec = importlib.util.spec_from_file_location("train_nft_sd3", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def serve_in_thread(app):
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; returns `(server, thread, url)`.

    Stop it with `server.should_exit = True; thread.join()`.
    """
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
