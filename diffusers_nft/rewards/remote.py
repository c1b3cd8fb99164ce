"""`RemoteReward`: a reward computed by one server or a pool of them (`python -m diffusers_nft.rewards.serve`)."""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence, Union

import torch

from .wire import encode_images, encode_metadata


class RemoteRewardError(RuntimeError):
    """The reward server failed or could not be reached."""


class RemoteReward:
    """Score images on one reward server over HTTP, or spread each batch over several.

    With several servers each batch is cut into chunks (one per server unless `chunk_size` says otherwise), sent
    in parallel, round-robin, and the answers are joined in order: the scores are those one server would give.
    Connection errors, timeouts and 503 answers are transient: the chunk goes to the next server, and after each
    round over all of them it waits `backoff` seconds (doubled each round), `retries` rounds more. Any other
    failure raises `RemoteRewardError` with the server's reason. A failure is never turned into a score.

    Args:
        url: Base URL of the server, e.g. `"http://127.0.0.1:8000"`, or a list of them (servers of the same
            reward, e.g. one per GPU).
        name: Name of the reward in logs (default: `"remote"`).
        timeout: Seconds each attempt may take in all, however slowly the server answers (a deadline, not a
            limit per read).
        retries: Extra rounds over the servers after a transient failure.
        backoff: Seconds before the first extra round, doubled after each.
        api_key: The servers' shared secret, sent as `Authorization: Bearer <key>`; default
            `$DIFFUSERS_NFT_API_KEY`, or none.
        chunk_size: Images per request; default: the batch split evenly over the servers.
    """

    def __init__(self, url: Union[str, Sequence[str]], name: str = "remote", timeout: float = 120.0,
                 retries: int = 3, backoff: float = 0.5, api_key: Optional[str] = None,
                 chunk_size: Optional[int] = None):
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(f"retries must be >= 0, timeout > 0 and backoff >= 0 (got {retries}, {timeout}, {backoff}).")
        urls = [url] if isinstance(url, str) else list(url)
        if not urls or chunk_size is not None and chunk_size < 1:
            raise ValueError(f"Give at least one server URL and a chunk_size >= 1 (got {urls!r}, {chunk_size!r}).")
        self.urls = [u.rstrip("/") for u in urls]
        self.__name__ = name
        self.timeout, self.retries, self.backoff, self.chunk_size = timeout, retries, backoff, chunk_size
        api_key = api_key if api_key is not None else os.environ.get("DIFFUSERS_NFT_API_KEY")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: Optional[List[dict]] = None):
        encoded = encode_images(images)
        metadata = encode_metadata(list(metadata or [])) or [{} for _ in prompts]  # source images, masks as PNGs
        size = max(1, self.chunk_size or -(-len(encoded) // len(self.urls)))
        starts = range(0, len(encoded), size) if encoded else [0]
        payloads = [{"images": encoded[i:i + size], "prompts": list(prompts[i:i + size]),
                     "metadata": metadata[i:i + size]} for i in starts]
        if len(payloads) == 1:
            return self._score_chunk(0, payloads[0])
        with ThreadPoolExecutor(max_workers=min(len(payloads), 4 * len(self.urls)),
                                thread_name_prefix="remote-reward") as pool:
            answers = list(pool.map(self._score_chunk, range(len(payloads)), payloads))
        return _joined(answers)

    def _score_chunk(self, index: int, payload: dict):
        """One chunk's answer: its own server first (round-robin by chunk), then the others, `retries` rounds."""
        import httpx

        order = self.urls[index % len(self.urls):] + self.urls[:index % len(self.urls)]
        delay, last_errors = self.backoff, {}
        for attempt in range(self.retries + 1):
            for url in order:
                try:
                    response = self._post_within_deadline(url, payload)
                except (httpx.TransportError, httpx.TimeoutException) as error:
                    last_errors[url] = f"{type(error).__name__}: {error}"
                    continue
                if response.status_code == 200:
                    return self._scores(url, response)
                if response.status_code != 503:
                    raise RemoteRewardError(f"Reward server {url} answered {response.status_code}: {_detail(response)}")
                last_errors[url] = f"503: {_detail(response)}"
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise RemoteRewardError(self._failure(last_errors, payload))

    def _failure(self, last_errors: dict, payload: dict) -> str:
        if len(self.urls) == 1:
            return f"Reward server {self.urls[0]} failed {self.retries + 1} times; last: {last_errors[self.urls[0]]}"
        lasts = "; ".join(f"{url}: {error}" for url, error in last_errors.items())
        return (f"No reward server answered a chunk of {len(payload['images'])} images: each of {', '.join(self.urls)} "
                f"failed {self.retries + 1} times; last: {lasts}")

    def _post_within_deadline(self, url: str, payload: dict):
        """`POST /score`, given up after `timeout` seconds in all: httpx's timeouts bound each read, and a server
        that trickles its answer byte by byte would hold the call far longer. The call runs in a daemon thread that
        ends with its own timeouts; the caller waits for it `timeout` seconds at most."""
        import httpx

        outcome = {}

        def post():
            try:
                outcome["response"] = httpx.post(f"{url}/score", json=payload, timeout=self.timeout,
                                                  headers=self._headers)
            except Exception as error:  # handed to the caller
                outcome["error"] = error

        worker = threading.Thread(target=post, daemon=True, name="remote-reward")
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise httpx.TimeoutException(f"no whole answer within {self.timeout:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["response"]

    def _scores(self, url: str, response):
        try:
            body = response.json()
            scores, extras = body["scores"], body.get("extras") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RemoteRewardError(
                f"Reward server {url} answered 200 without scores ({type(error).__name__}): {response.text[:200]!r}"
            ) from error
        return {"scores": scores, **extras} if extras else scores


def _joined(answers: list):
    """The answers of a batch's chunks, in order, as one answer: a list of scores, or a dict of lists."""
    if not isinstance(answers[0], dict):
        return [score for answer in answers for score in answer]
    return {key: [value for answer in answers for value in answer[key]] for key in answers[0]}


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]
