"""Rewards on other machines: a `RemoteReward` over a pool of servers, and a server that batches the requests of
many clients into one call of its model."""

import threading
import time

import pytest
import torch

from diffusers_nft.rewards import RemoteReward, RemoteRewardError
from diffusers_nft.rewards.batching import BatchingScorer

from conftest import serve_in_thread


def brightness(images, prompts, metadata):
    """Each image's own score (mean brightness + the prompt's length), with an extra value per image."""
    scores = images.flatten(1).mean(1) + torch.tensor([float(len(p)) for p in prompts])
    return {"scores": scores.tolist(), "double": (2 * scores).tolist()}


def counted(reward, log: list):
    """`reward`, recording the number of images of each call in `log`."""
    def score(images, prompts, metadata):
        log.append(len(prompts))
        if any("explode" in p for p in prompts):
            raise RuntimeError("reward model crashed")
        time.sleep(0.05)  # a model's forward: requests arriving meanwhile queue up
        return reward(images, prompts, metadata)
    return score


@pytest.fixture
def servers():
    """Start reward servers: `start(reward=..., **create_app options) -> url`; all are stopped at the end."""
    from diffusers_nft.rewards.serve import create_app

    running = []

    def start(reward=brightness, **options):
        running.append(serve_in_thread(create_app(reward, name="b", **options)))
        return running[-1][2]

    yield start
    for server, thread, _ in running:
        server.should_exit = True
        thread.join(timeout=10)


def _dead_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _batch(n=6, size=8):
    images = (torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(n)) * 255).round() / 255
    return images, [f"prompt {'x' * i}" for i in range(n)], [{} for _ in range(n)]


def test_a_pool_spreads_each_batch_round_robin_and_scores_as_one_server(servers):
    logs = [[], []]
    urls = [servers(counted(brightness, log)) for log in logs]
    images, prompts, metadata = _batch(6)
    alone = RemoteReward(urls[0])(images, prompts, metadata)
    assert logs == [[6], []]
    pooled = RemoteReward(urls)(images, prompts, metadata)
    assert pooled == alone  # scores and extras, in order
    assert logs == [[6, 3], [3]]
    RemoteReward(urls, chunk_size=2)(images, prompts, metadata)  # three chunks: servers 0, 1, 0
    assert sorted(logs[0][2:]) == [2, 2] and logs[1][1:] == [2]
    assert pooled["scores"] == pytest.approx(brightness(images, prompts, metadata)["scores"], abs=1e-6)


def test_a_chunk_whose_server_is_down_or_busy_goes_to_another(servers):
    import fastapi

    busy = fastapi.FastAPI()

    @busy.post("/score")
    def always_busy():
        raise fastapi.HTTPException(503, "busy")

    busy_url = serve_in_thread(busy)
    try:
        log = []
        live = servers(counted(brightness, log))
        images, prompts, metadata = _batch(6)
        expected = RemoteReward(live)(images, prompts, metadata)
        for down in (_dead_url(), busy_url[2]):
            log.clear()
            assert RemoteReward([down, live], chunk_size=2, backoff=0)(images, prompts, metadata) == expected
            assert sorted(log) == [2, 2, 2]  # every chunk, its own server's too, scored by the live one
    finally:
        busy_url[0].should_exit = True
        busy_url[1].join(timeout=10)


def test_when_no_server_answers_the_batch_fails_naming_them_in_bounded_time():
    urls = [_dead_url(), _dead_url()]
    start = time.time()
    with pytest.raises(RemoteRewardError, match="No reward server answered a chunk of 3 images: each of "
                                                f"{urls[0]}, {urls[1]} failed 2 times"):
        RemoteReward(urls, retries=1, backoff=0.05, timeout=2)(*_batch(6))
    assert time.time() - start < 10


def test_a_server_error_is_not_retried_elsewhere_and_names_the_server(servers):
    logs = [[], []]
    urls = [servers(counted(brightness, log)) for log in logs]
    images, prompts, metadata = _batch(2)
    with pytest.raises(RemoteRewardError, match=f"Reward server {urls[0]} answered 500: .*reward model crashed"):
        RemoteReward(urls, chunk_size=2)(images, ["explode", "b"], metadata)
    assert logs == [[2], []]


def test_the_batcher_scores_concurrent_requests_together_and_each_gets_its_own_scores():
    log = []
    scorer = BatchingScorer(lambda *a: {"b": torch.tensor(counted(brightness, log)(*a)["scores"])}, max_batch=8)
    requests = [_batch(2, size=8) for _ in range(5)] + [_batch(3, size=8)]
    answers = [None] * len(requests)

    def send(i):
        answers[i] = scorer(*requests[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for (images, prompts, metadata), answer in zip(requests, answers):
        assert answer["b"].tolist() == pytest.approx(brightness(images, prompts, metadata)["scores"], abs=1e-6)
    assert sum(log) == 13 and max(log) <= 8
    assert len(log) < len(requests) and scorer.calls == len(log)  # some requests shared a call


def test_the_batcher_keeps_sizes_apart_and_a_failure_to_its_own_request():
    log = []
    scorer = BatchingScorer(lambda *a: {"b": torch.tensor(counted(brightness, log)(*a)["scores"])},
                            max_batch=64, max_wait=0.3)
    small, large, bad = _batch(2, size=8), _batch(2, size=16), _batch(2, size=8)
    bad = (bad[0], ["explode", "fine"], bad[2])
    answers = {}

    def send(name, request):
        try:
            answers[name] = scorer(*request)["b"].tolist()
        except RuntimeError as error:
            answers[name] = error

    threads = [threading.Thread(target=send, args=item) for item in (("small", small), ("large", large),
                                                                       ("bad", bad))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers["small"] == pytest.approx(brightness(*small)["scores"], abs=1e-6)
    assert answers["large"] == pytest.approx(brightness(*large)["scores"], abs=1e-6)
    assert isinstance(answers["bad"], RuntimeError) and "reward model crashed" in str(answers["bad"])
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        BatchingScorer(brightness, max_batch=0)


def _send_concurrently(url: str, requests) -> list:
    """Each request sent to `url` from a thread of its own, all at once; their answers, in order."""
    answers = [None] * len(requests)
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, RemoteReward(url)(*requests[i])))
               for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return answers


def test_a_batching_server_shares_its_model_between_concurrent_clients(servers):
    log = []
    url = servers(counted(brightness, log), max_batch=16)
    requests = [_batch(4) for _ in range(6)]
    answers = _send_concurrently(url, requests)
    for request, answer in zip(requests, answers):
        assert answer["scores"] == pytest.approx(brightness(*request)["scores"], abs=1e-6)
        assert answer["double"] == pytest.approx(brightness(*request)["double"], abs=1e-6)
    assert sum(log) == 24 and max(log) <= 16 and len(log) < len(requests)


def test_a_server_without_batching_still_calls_its_model_from_one_thread_at_a_time(servers):
    """Concurrent first requests once raced on the reward's lazy model loading (transformers' lazy imports raised
    `cannot import name 'CLIPModel'` on the second server of `reward_throughput.py --serve`): the model has one
    owner thread whether batching is on or off."""
    inside, most = [0], [0]
    lock = threading.Lock()

    def one_at_a_time(images, prompts, metadata):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.05)
        with lock:
            inside[0] -= 1
        return brightness(images, prompts, metadata)

    url = servers(one_at_a_time, max_batch=1)
    requests = [_batch(2) for _ in range(8)]
    answers = _send_concurrently(url, requests)
    assert all(answer["scores"] == pytest.approx(brightness(*r)["scores"], abs=1e-6) for r, answer in zip(requests, answers))
    assert most[0] == 1
