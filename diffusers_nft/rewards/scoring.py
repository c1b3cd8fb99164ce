"""Scoring off the sampling path: rewards of one batch are computed while the next batch samples."""

import multiprocessing
import os
import pickle
import queue
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Dict, List, Optional

import torch

from .combine import RewardError, WeightedRewards

# "sync" scores at submit; "thread" and "process" score one batch while the next one samples.
SCORING_MODES = ("sync", "thread", "process")

_WORKER_REWARDS = None


def _init_worker(specs, weights, options, parent: int):
    global _WORKER_REWARDS
    torch.set_num_threads(1)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _WORKER_REWARDS = WeightedRewards(specs, weights, **options)


def _exit_with_parent(parent: int) -> None:
    """A worker whose training process died (SIGKILL included) exits too, instead of lingering."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _score_in_worker(images, prompts, metadata):
    return _WORKER_REWARDS(images, prompts, metadata)


class _DaemonWorker:
    """One daemon worker thread: unlike a ThreadPoolExecutor's, a hung reward cannot block the interpreter's exit."""

    def __init__(self):
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="nft-reward", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as error:  # handed to whoever waits on the future
                    future.set_exception(error)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._queue.put((future, fn, args))
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = True) -> None:
        self._queue.put(None)
        if wait:
            self._thread.join()


class RewardScorer:
    """Submit batches to score; collect the results in order later, with `wait`.

    Args:
        rewards: The rewards.
        mode: `"sync"` (score at submit), `"thread"` (one worker thread: overlaps GPU/IO-bound rewards with
            sampling) or `"process"` (one spawned worker process: for rewards that hold the GIL; rewards must be
            registered names or module-level functions, and models load in the worker).
        timeout: Seconds `wait` allows a batch in the thread and process modes; None for no limit.
    """

    def __init__(self, rewards: WeightedRewards, mode: str = "thread", timeout: Optional[float] = None):
        if mode not in SCORING_MODES:
            raise ValueError(f"reward scoring mode must be one of {SCORING_MODES}, got {mode!r}.")
        self.rewards, self.mode, self.timeout = rewards, mode, timeout
        self._executor = None
        if mode == "process":
            try:
                pickle.dumps((rewards.specs, rewards.weights, rewards.options))
            except Exception as error:
                raise ValueError(
                    "Scoring rewards in a process needs picklable rewards (registered names or module-level "
                    f"functions); use reward_scoring='thread' for this one ({error})."
                ) from error
        self._start()

    def _start(self) -> None:
        if self.mode == "thread":
            self._executor = _DaemonWorker()
        elif self.mode == "process":
            rewards = self.rewards
            self._executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(rewards.specs, rewards.weights, rewards.options, os.getpid()),
            )

    def submit(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> "Future[Dict[str, torch.Tensor]]":
        """Start scoring a batch; `wait(future)` gives what `WeightedRewards.__call__` returns (or raises its error)."""
        images = images.detach()
        if self.mode == "sync":
            future: Future = Future()
            try:
                future.set_result(self.rewards(images, prompts, metadata))
            except Exception as error:
                future.set_exception(error)
            return future
        if self._executor is None:  # closed by an earlier train(): start again
            self._start()
        if self.mode == "process":
            return self._executor.submit(_score_in_worker, images.cpu(), prompts, metadata)
        return self._executor.submit(self.rewards, images, prompts, metadata)

    def wait(self, future: Future) -> Dict[str, torch.Tensor]:
        """The result of `future`, waiting at most `timeout` seconds.

        Raises:
            RewardError: If scoring takes longer; the worker is abandoned (a worker process is killed).
        """
        try:
            return future.result(timeout=None if self.mode == "sync" else self.timeout)
        except FutureTimeout as error:
            self._abandon()
            raise RewardError(
                f"Reward scoring took longer than reward_timeout={self.timeout:g} s ({self.rewards.names}). A reward "
                "hung or is too slow: check it, or raise --reward_timeout."
            ) from error

    def _abandon(self) -> None:
        executor, self._executor = self._executor, None
        for process in list((getattr(executor, "_processes", None) or {}).values()):  # a stuck worker: kill it
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Stop the worker (idempotent); a later `submit` starts a new one."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
