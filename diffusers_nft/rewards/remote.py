"""`RemoteReward`: a reward computed by a server (`python -m diffusers_nft.rewards.serve`)."""

import os
import threading
import time
from typing import List, Optional

import torch

from .wire import encode_images, encode_metadata


class RemoteRewardError(RuntimeError):
    """The reward server failed or could not be reached."""


class RemoteReward:
    """Score images on a reward server over HTTP.

    Connection errors, timeouts and 503 answers are retried with backoff, `retries` times; any other failure
    raises `RemoteRewardError` with the server's reason. A failure is never turned into a score.

    Args:
        url: Base URL of the server, e.g. `"http://127.0.0.1:8000"`.
        name: Name of the reward in logs (default: `"remote"`).
        timeout: Seconds each attempt may take in all, however slowly the server answers (a deadline, not a
            limit per read).
        retries: Extra attempts after a transient failure.
        backoff: Seconds before the first retry, doubled after each.
        api_key: The server's shared secret, sent as `Authorization: Bearer <key>`; default
            `$DIFFUSERS_NFT_API_KEY`, or none.
    """

    def __init__(self, url: str, name: str = "remote", timeout: float = 120.0, retries: int = 3, backoff: float = 0.5,
                 api_key: Optional[str] = None):
        if retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(f"retries must be >= 0, timeout > 0 and backoff >= 0 (got {retries}, {timeout}, {backoff}).")
        self.url = url.rstrip("/")
        self.__name__ = name
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        api_key = api_key if api_key is not None else os.environ.get("DIFFUSERS_NFT_API_KEY")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: Optional[List[dict]] = None):
        import httpx

        payload = {"images": encode_images(images), "prompts": list(prompts),
                   "metadata": encode_metadata(list(metadata or []))}  # source images and masks as PNGs
        if not payload["metadata"]:
            payload["metadata"] = [{} for _ in prompts]
        delay, last_error = self.backoff, None
        for attempt in range(self.retries + 1):
            try:
                response = self._post_within_deadline(payload)
            except (httpx.TransportError, httpx.TimeoutException) as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    return self._scores(response)
                detail = _detail(response)
                if response.status_code != 503:
                    raise RemoteRewardError(
                        f"Reward server {self.url} answered {response.status_code}: {detail}"
                    )
                last_error = f"503: {detail}"
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise RemoteRewardError(f"Reward server {self.url} failed {self.retries + 1} times; last: {last_error}")


    def _post_within_deadline(self, payload: dict):
        """`POST /score`, given up after `timeout` seconds in all: httpx's timeouts bound each read, and a server
        that trickles its answer byte by byte would hold the call far longer. The call runs in a daemon thread that
        ends with its own timeouts; the caller waits for it `timeout` seconds at most."""
        import httpx

        outcome = {}

        def post():
            try:
                outcome["response"] = httpx.post(f"{self.url}/score", json=payload, timeout=self.timeout,
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

    def _scores(self, response):
        try:
            body = response.json()
            scores, extras = body["scores"], body.get("extras") or {}
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise RemoteRewardError(
                f"Reward server {self.url} answered 200 without scores ({type(error).__name__}): {response.text[:200]!r}"
            ) from error
        return {"scores": scores, **extras} if extras else scores


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]
