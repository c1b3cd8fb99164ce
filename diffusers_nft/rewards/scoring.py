"""Scoring off the sampling path: rewards of one batch are computed while the next batch samples."""

import multiprocessing
import pickle
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Dict, List

import torch

from ..config import SCORING_MODES
from .combine import WeightedRewards

_WORKER_REWARDS = None


def _init_worker(specs, weights, options):
    global _WORKER_REWARDS
    torch.set_num_threads(1)
    _WORKER_REWARDS = WeightedRewards(specs, weights, **options)


def _score_in_worker(images, prompts, metadata):
    return _WORKER_REWARDS(images, prompts, metadata)


class RewardScorer:
    """Submit batches to score; collect the results in order later.

    Args:
        rewards: The rewards.
        mode: `"sync"` (score at submit), `"thread"` (one worker thread: overlaps GPU/IO-bound rewards with
            sampling) or `"process"` (one spawned worker process: for rewards that hold the GIL; rewards must be
            registered names or module-level functions, and models load in the worker).
    """

    def __init__(self, rewards: WeightedRewards, mode: str = "thread"):
        if mode not in SCORING_MODES:
            raise ValueError(f"reward scoring mode must be one of {SCORING_MODES}, got {mode!r}.")
        self.rewards, self.mode = rewards, mode
        self._executor = None
        if mode == "thread":
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nft-reward")
        elif mode == "process":
            try:
                pickle.dumps((rewards.specs, rewards.weights, rewards.options))
            except Exception as error:
                raise ValueError(
                    "Scoring rewards in a process needs picklable rewards (registered names or module-level "
                    f"functions); use reward_scoring='thread' for this one ({error})."
                ) from error
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(rewards.specs, rewards.weights, rewards.options),
            )

    def submit(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> "Future[Dict[str, torch.Tensor]]":
        """Start scoring a batch; `.result()` gives what `WeightedRewards.__call__` returns (or raises its error)."""
        images = images.detach()
        if self.mode == "sync":
            future: Future = Future()
            try:
                future.set_result(self.rewards(images, prompts, metadata))
            except Exception as error:
                future.set_exception(error)
            return future
        if self.mode == "process":
            return self._executor.submit(_score_in_worker, images.cpu(), prompts, metadata)
        return self._executor.submit(self.rewards, images, prompts, metadata)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
