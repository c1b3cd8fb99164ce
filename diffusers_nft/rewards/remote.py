"""`RemoteReward`: a reward computed by a server (`python -m diffusers_nft.rewards.serve`)."""

import time
from typing import List, Optional

import torch

from .wire import encode_images


class RemoteRewardError(RuntimeError):
    """The reward server failed or could not be reached."""


class RemoteReward:
    """Score images on a reward server over HTTP.

    Connection errors, timeouts and 503 answers are retried with backoff, `retries` times; any other failure
    raises `RemoteRewardError` with the server's reason. A failure is never turned into a score.

    Args:
        url: Base URL of the server, e.g. `"http://127.0.0.1:8000"`.
        name: Name of the reward in logs (default: `"remote"`).
        timeout: Seconds per request.
        retries: Extra attempts after a transient failure.
        backoff: Seconds before the first retry, doubled after each.
    """

    def __init__(self, url: str, name: str = "remote", timeout: float = 120.0, retries: int = 3, backoff: float = 0.5):
        self.url = url.rstrip("/")
        self.__name__ = name
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def __call__(self, images: torch.Tensor, prompts: List[str], metadata: Optional[List[dict]] = None):
        import httpx

        payload = {"images": encode_images(images), "prompts": list(prompts), "metadata": list(metadata or [])}
        if not payload["metadata"]:
            payload["metadata"] = [{} for _ in prompts]
        delay, last_error = self.backoff, None
        for attempt in range(self.retries + 1):
            try:
                response = httpx.post(f"{self.url}/score", json=payload, timeout=self.timeout)
            except (httpx.TransportError, httpx.TimeoutException) as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 200:
                    body = response.json()
                    return {"scores": body["scores"], **body.get("extras", {})} if body.get("extras") else body["scores"]
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


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]
