import socket
import time

import pytest
import torch

from diffusers_nft.rewards import (
    RemoteReward,
    RemoteRewardError,
    RewardError,
    RewardScorer,
    RunningStd,
    WeightedRewards,
    jpeg_incompressibility,
)
from diffusers_nft.rewards.wire import decode_images, encode_images

from conftest import serve_in_thread
from tiny_reward_models import random_images


def brightness(images, prompts, metadata):
    return images.mean(dim=(1, 2, 3))


def with_extras(images, prompts, metadata):
    return {"scores": [float(m["digit"]) for m in metadata], "strict": [1.0] * len(prompts)}


def _batches():
    return [(random_images(4, size=32, seed=s), [f"p{s}{i}" for i in range(4)], [{"digit": i} for i in range(4)])
            for s in range(3)]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_async_scoring_equals_sync(mode):
    rewards = WeightedRewards(["jpeg_incompressibility", "jpeg_compressibility"], [1.0, 0.5])
    sync = RewardScorer(rewards, "sync")
    other = RewardScorer(WeightedRewards(["jpeg_incompressibility", "jpeg_compressibility"], [1.0, 0.5]), mode)
    try:
        expected = [sync.submit(*b).result() for b in _batches()]
        futures = [other.submit(*b) for b in _batches()]
        for want, future in zip(expected, futures):
            got = future.result(timeout=120)
            assert want.keys() == got.keys()
            for key in want:
                torch.testing.assert_close(got[key], want[key])
    finally:
        other.close()


def test_async_errors_surface_and_unpicklable_rewards_are_refused():
    scorer = RewardScorer(WeightedRewards(lambda images, prompts, metadata: [float("nan")] * len(prompts)), "thread")
    with pytest.raises(RewardError, match="returned nan"):
        scorer.submit(*_batches()[0]).result()
    scorer.close()
    with pytest.raises(ValueError, match="picklable"):
        RewardScorer(WeightedRewards(lambda images, prompts, metadata: [0.0]), "process")


def test_extras_are_kept_apart_from_the_total():
    rewards = WeightedRewards([with_extras, brightness], [2.0, 1.0])
    images, prompts, metadata = _batches()[0]
    scores = rewards(images, prompts, metadata)
    assert set(scores) == {"with_extras", "with_extras/strict", "brightness"}
    assert scores["with_extras"].tolist() == [0.0, 1.0, 2.0, 3.0]
    torch.testing.assert_close(rewards.combine(scores), 2 * scores["with_extras"] + scores["brightness"])


def test_running_std_normalisation():
    running = RunningStd()
    running.update(torch.tensor([1.0, 2.0, 3.0]))
    running.update(torch.tensor([4.0]))
    assert running.std == pytest.approx(torch.tensor([1.0, 2.0, 3.0, 4.0]).std(unbiased=False).item())
    rewards = WeightedRewards([brightness, jpeg_incompressibility], [1.0, 1.0], normalize=True)
    a, b = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 200.0])
    total = rewards.combine({"brightness": a, "jpeg_incompressibility": b})
    # each component divided by its own std (1 and 100): both contribute equally
    torch.testing.assert_close(total, torch.tensor([0.0, 4.0]))
    state = rewards.state_dict()
    restored = WeightedRewards([brightness, jpeg_incompressibility], normalize=True)
    restored.load_state_dict(state)
    assert restored.running["jpeg_incompressibility"].std == pytest.approx(100.0)


def test_wire_format_is_lossless_for_8_bit_images():
    images = (random_images(3, size=16) * 255).round() / 255
    torch.testing.assert_close(decode_images(encode_images(images)), images)
    with pytest.raises(ValueError, match="not a base64 PNG"):
        decode_images(["bm90IGFuIGltYWdl"])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    from diffusers_nft.rewards.serve import create_app

    def flaky(images, prompts, metadata):
        if any("explode" in p for p in prompts):
            raise RuntimeError("reward model crashed")
        return with_extras(images, prompts, metadata)

    instance, thread, url = serve_in_thread(create_app(flaky, name="digits"))
    yield url
    instance.should_exit = True
    thread.join(timeout=10)


def test_remote_reward_on_loopback(server):
    import httpx

    assert httpx.get(f"{server}/health").json() == {"reward": "digits", "status": "ok"}
    images, prompts, metadata = _batches()[0]
    remote = RemoteReward(server, name="digits")
    local = with_extras(images, prompts, metadata)
    assert remote(images, prompts, metadata) == local
    # through WeightedRewards, as the trainer uses it
    scores = WeightedRewards(remote)(images, prompts, metadata)
    assert scores["digits"].tolist() == [0.0, 1.0, 2.0, 3.0] and "digits/strict" in scores


def test_remote_errors(server):
    import httpx

    images, prompts, metadata = _batches()[0]
    bad_length = httpx.post(f"{server}/score", json={"images": encode_images(images), "prompts": prompts[:2]})
    assert bad_length.status_code == 400 and "give one of each" in bad_length.json()["detail"]
    bad_image = httpx.post(f"{server}/score", json={"images": ["xx"], "prompts": ["a"]})
    assert bad_image.status_code == 400 and "base64 PNG" in bad_image.json()["detail"]
    missing = httpx.post(f"{server}/score", json={"prompts": ["a"]})
    assert missing.status_code == 422
    with pytest.raises(RemoteRewardError, match="answered 500: .*reward model crashed"):
        RemoteReward(server)(images, ["explode"] * 4, metadata)
    with pytest.raises(RewardError, match="Reward 'digits' raised RemoteRewardError"):
        WeightedRewards(RemoteReward(server, name="digits"))(images, ["explode"] * 4, metadata)


def test_unreachable_server_retries_a_bounded_number_of_times():
    url = f"http://127.0.0.1:{_free_port()}"
    start = time.time()
    with pytest.raises(RemoteRewardError, match="failed 3 times"):
        RemoteReward(url, retries=2, backoff=0.05, timeout=2)(*_batches()[0])
    assert time.time() - start < 10
