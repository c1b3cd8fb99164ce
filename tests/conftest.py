from contextlib import contextmanager
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


class Loaded(Exception):
    """Raised by `reach_loading`'s loader: the script got as far as loading the model."""


def reach_loading(argv):
    """The training script's `(ScriptArguments, NFTConfig)` at the moment it would load the model."""
    seen = {}

    def fake_load(script_args, config):
        seen.update(script_args=script_args, config=config)
        raise Loaded

    with pytest.raises(Loaded):
        load_training_script().main(argv, load_pipeline=fake_load)
    return seen["script_args"], seen["config"]


def random_image(seed: int, size: int = 64):
    """A seeded random RGB image: a source, reference, first frame or control image of the conditioned tests."""
    from PIL import Image

    generator = torch.Generator().manual_seed(seed)
    return Image.fromarray((torch.rand(size, size, 3, generator=generator) * 255).byte().numpy())


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


def lora_norm(a: dict, b: dict) -> float:
    """The L2 norm of the difference of two LoRA state dicts, over all their tensors (as `NFTPolicy.deviation`)."""
    return sum(((a[k].double() - b[k].double()) ** 2).sum() for k in a).item() ** 0.5


SOLVER_CALLS = {"euler": lambda n: n, "dpm_solver": lambda n: n, "unipc": lambda n: n, "heun": lambda n: 2 * n - 1}


def count_sampling_calls(trainer) -> list:
    """From now on, each `collect` appends how many transformer calls its sampling made."""
    counts, predict, collect = [], trainer.family.predict_velocity, trainer.collector.collect

    def counted(*args, **kwargs):
        if counts and isinstance(counts[-1], list):  # inside a collect
            counts[-1].append(1)
        return predict(*args, **kwargs)

    def collecting(*args, **kwargs):
        counts.append([])
        try:
            return collect(*args, **kwargs)
        finally:
            counts[-1] = len(counts[-1])

    trainer.family.predict_velocity, trainer.collector.collect = counted, collecting
    return counts


def expected_sampling_calls(config) -> int:
    """A `config`'s transformer calls per iteration's sampling on one process: batches x the solver's calls."""
    return -(-config.images_per_iteration // config.sample_batch_size) * SOLVER_CALLS[config.sampler](config.num_sampling_steps)


def step_and_check_the_soft_update(trainer, rtol: float = 1e-4) -> dict:
    """One iteration, and the values its metrics pin: `old_theta_deviation` is |theta - old| before the soft update;
    `old_policy_decay` is the linear schedule's eta = min(0.001 k, 0.5) at the k optimizer steps taken so far (not
    the iterations); and the old policy is then exactly `eta old + (1 - eta) theta`."""
    old = trainer.policy.state_dict("old")
    metrics = trainer.step()
    theta, new_old = trainer.policy.state_dict("default"), trainer.policy.state_dict("old")
    steps = trainer.global_step * trainer.plan.optimizer_steps
    eta = min(0.001 * steps, 0.5)
    assert trainer.optimizer_step == steps and metrics["optimizer_step"] == steps
    assert metrics["old_policy_decay"] == pytest.approx(eta, rel=1e-12)
    assert metrics["old_theta_deviation"] == pytest.approx(lora_norm(theta, old), rel=rtol)
    assert lora_norm(theta, old) > 0, "theta did not move"
    for k in theta:
        torch.testing.assert_close(new_old[k], eta * old[k] + (1 - eta) * theta[k], rtol=1e-5, atol=1e-7)
    return metrics


torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


class SwitchPolicy:
    """A stand-in `NFTPolicy` for objective tests: `using(name)` sets `family.active` (the weights a stand-in family
    predicts with) for the block, and puts back "default" after it."""

    lora_layers = {}  # none: the old and reference predictions are two forwards

    def __init__(self, family):
        self.family = family

    @contextmanager
    def using(self, which):
        self.family.active = which
        try:
            yield
        finally:
            self.family.active = "default"


def euler_rollout(family, prompts, noise, steps: int, max_sequence_length: int = 16):
    """The family's Euler rollout from `noise` on its own grid, not decoded: what a family's test compares with
    the pipeline's own call."""
    from diffusers_nft.sampling import rollout

    cond = family.encode_prompts(list(prompts), torch.device("cpu"), max_sequence_length)
    with torch.no_grad():
        return rollout(lambda x, s: family.predict_velocity(x, s, cond),
                       family.sampling_sigmas(steps, tuple(noise.shape[1:])), noise, "euler")


def check_the_lora_reproduces_the_trained_policy(build, render, load, tmp_path):
    """Train two iterations on `build()`; then the LoRA must move `render(pipe)` (a tensor), and loaded into a fresh
    build by `load(pipe, folder)` reproduce what the trained policy renders. Returns the trainer."""
    from diffusers_nft import NFTTrainer

    trainer = NFTTrainer(build(), "jpeg_incompressibility", tiny_config(tmp_path, max_steps=2, learning_rate=3e-2),
                         PROMPTS)
    trainer.train()
    with trainer.policy.ema_weights(), torch.no_grad():
        trained = render(trainer.pipeline)
    fresh = build()
    with torch.no_grad():
        base = render(fresh)
        load(fresh, str(tmp_path))
        loaded = render(fresh)
    assert (trained - base).abs().max() > 1e-3
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)
    return trainer
