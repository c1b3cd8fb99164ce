"""`BatchingScorer`: the reward server scores the requests of many clients together, so that the training
processes of several machines share one GPU's reward model in full batches rather than in their own small ones."""

import queue
import threading
import time
from collections import deque
from typing import Callable, Dict, List

import torch


class _Job:
    """One request waiting for its scores."""

    def __init__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]):
        self.images, self.prompts, self.metadata = images, list(prompts), list(metadata)
        self.done = threading.Event()
        self.result, self.error = None, None

    def finish(self, result=None, error=None) -> None:
        self.result, self.error = result, error
        self.done.set()


class BatchingScorer:
    """Call `rewards` from one worker thread on the requests that arrive together, up to `max_batch` images.

    A request is never split: the worker takes the oldest waiting request, then every other waiting one of the
    same image size while the total stays within `max_batch` (waiting up to `max_wait` seconds for more). While the
    model scores one batch the next requests queue up, so a busy server batches without any wait. The scores are
    each image's own (the rewards score images independently); when a batch fails, each of its requests is scored
    alone, so that an error reaches only the request that caused it.

    Args:
        rewards: `rewards(images, prompts, metadata) -> {name: tensor (B,)}` (a `WeightedRewards`).
        max_batch: Most images scored in one call (a single larger request is scored whole).
        max_wait: Seconds to wait for more requests before scoring a batch that is not full.
    """

    def __init__(self, rewards: Callable, max_batch: int, max_wait: float = 0.0):
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0 (got {max_batch}, {max_wait}).")
        self.rewards, self.max_batch, self.max_wait = rewards, max_batch, max_wait
        self.calls = 0  # model calls so far, for tests and logs
        self._queue: "queue.Queue[_Job]" = queue.Queue()
        self._held: deque = deque()  # taken from the queue but left for the next batch
        threading.Thread(target=self._serve_forever, daemon=True, name="reward-batcher").start()

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: List[dict]) -> Dict[str, torch.Tensor]:
        job = _Job(images, prompts, metadata)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _serve_forever(self) -> None:
        while True:
            self._score(self._next_batch())

    def _next_batch(self) -> List[_Job]:
        """The oldest waiting request and the others that fit with it."""
        batch = [self._held.popleft() if self._held else self._queue.get()]
        size, shape = len(batch[0].prompts), batch[0].images.shape[1:]
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch:
            try:
                job = self._queue.get(timeout=max(deadline - time.monotonic(), 0)) if self.max_wait else \
                    self._queue.get_nowait()
            except queue.Empty:
                break
            if job.images.shape[1:] != shape or size + len(job.prompts) > self.max_batch:
                self._held.append(job)
                break
            batch.append(job)
            size += len(job.prompts)
        return batch

    def _score(self, batch: List[_Job]) -> None:
        try:
            scores = self._call([j.images for j in batch], [p for j in batch for p in j.prompts],
                                [m for j in batch for m in j.metadata])
        except Exception as error:  # handed to the requests
            if len(batch) == 1:
                return batch[0].finish(error=error)
            for job in batch:  # find whose request failed
                self._score([job])
            return None
        start = 0
        for job in batch:
            end = start + len(job.prompts)
            job.finish(result={name: value[start:end] for name, value in scores.items()})
            start = end
        return None

    def _call(self, images: List[torch.Tensor], prompts: List[str], metadata: List[dict]):
        self.calls += 1
        return self.rewards(torch.cat(images) if len(images) > 1 else images[0], prompts, metadata)
