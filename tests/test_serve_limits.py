"""The reward server bounds what a request can cost, can require a key, and the client refuses bad answers."""

import base64
import io
import socket
import time
import tracemalloc

import pytest
import torch
from PIL import Image

from diffusers_nft.rewards import RemoteReward, RemoteRewardError
from diffusers_nft.rewards.wire import ImageTooLarge, decode_images, encode_images

from conftest import serve_in_thread


def brightness(images, prompts, metadata):
    return images.mean(dim=(1, 2, 3))


@pytest.fixture
def limited():
    from diffusers_nft.rewards.serve import create_app

    app = create_app(brightness, name="b", api_key="s3cret", max_images=4, max_pixels=64 * 64,
                     max_body_bytes=200_000, body_timeout=1.0)
    server, thread, url = serve_in_thread(app)
    yield url
    server.should_exit = True
    thread.join(timeout=10)


def _bomb(side=13000) -> str:
    """A tiny 1-bit PNG that declares side x side pixels."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_decompression_bomb_is_refused_from_its_header():
    bomb = _bomb()
    assert len(bomb) < 60_000
    tracemalloc.start()
    with pytest.raises(ImageTooLarge, match="13000x13000"):
        decode_images([bomb], max_pixels=4096 * 4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20  # decoding it would take 169 MB as 1-bit, 507 MB as RGB
    with pytest.raises(ImageTooLarge):  # past PIL's own bomb limit too: still "too large", not "not a PNG"
        decode_images([_bomb(20000)], max_pixels=4096 * 4096)


def test_server_limits_and_key(limited):
    import httpx

    key = {"Authorization": "Bearer s3cret"}
    small = encode_images(torch.rand(2, 3, 32, 32))
    ok = httpx.post(f"{limited}/score", json={"images": small, "prompts": ["a", "b"]}, headers=key)
    assert ok.status_code == 200 and len(ok.json()["scores"]) == 2
    assert httpx.post(f"{limited}/score", json={"images": small, "prompts": ["a", "b"]}).status_code == 401
    wrong = httpx.post(f"{limited}/score", json={"images": small, "prompts": ["a", "b"]},
                       headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    many = httpx.post(f"{limited}/score", json={"images": small * 3, "prompts": ["a"] * 6}, headers=key)
    assert many.status_code == 413 and "at most 4" in many.json()["detail"]
    big = encode_images(torch.rand(1, 3, 65, 64))
    assert httpx.post(f"{limited}/score", json={"images": big, "prompts": ["a"]}, headers=key).status_code == 413
    bomb = httpx.post(f"{limited}/score", json={"images": [_bomb(9400)], "prompts": ["a"]}, headers=key)
    assert bomb.status_code == 413 and "9400x9400" in bomb.json()["detail"]
    huge = httpx.post(f"{limited}/score", content=b"{" + b" " * 300_000 + b"}", headers=key)
    assert huge.status_code == 413 and "bytes" in huge.json()["detail"]
    # the client sends the key, and gets the same scores as the reward itself
    images = torch.rand(2, 3, 32, 32)
    scores = RemoteReward(limited, api_key="s3cret")(images, ["a", "b"], [{}, {}])
    assert scores == pytest.approx(brightness((images * 255).round() / 255, None, None).tolist(), abs=1e-6)


def test_a_chunked_body_without_content_length_is_bounded_too(limited):
    # No Content-Length to refuse up front: the server counts the chunks as they come and stops past the limit.
    import httpx

    def chunks():
        yield b"{"
        for _ in range(10):
            yield b" " * 30_000
        yield b"}"

    answer = httpx.post(f"{limited}/score", content=chunks(), headers={"Authorization": "Bearer s3cret"})
    assert answer.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in answer.request.headers
    assert answer.status_code == 413 and "more than 200000 bytes" in answer.json()["detail"]


def test_a_stalled_body_times_out(limited):
    host, port = limited.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"images\"")
        start = time.time()
        answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and time.time() - start < 8


def test_client_refuses_bad_answers_and_settings():
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()
    app.post("/score")(lambda: PlainTextResponse("not json"))
    app.post("/empty/score")(lambda: {"nothing": 1})
    server, thread, url = serve_in_thread(app)
    try:
        images = torch.rand(1, 3, 8, 8)
        with pytest.raises(RemoteRewardError, match="200 without scores"):
            RemoteReward(url, retries=0)(images, ["a"])
        with pytest.raises(RemoteRewardError, match="200 without scores"):
            RemoteReward(f"{url}/empty", retries=0)(images, ["a"])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    with pytest.raises(ValueError, match="retries must be >= 0"):
        RemoteReward(url, retries=-1)


def test_serving_beyond_loopback_without_a_key_warns(monkeypatch):
    import uvicorn

    from diffusers_nft.rewards import serve

    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    monkeypatch.delenv(serve.API_KEY_ENV, raising=False)
    with pytest.warns(UserWarning, match="beyond loopback"):
        serve.main(["--reward", "jpeg_compressibility", "--host", "0.0.0.0"])


def test_serve_by_name_with_its_options(monkeypatch):
    """`python -m diffusers_nft.rewards.serve --reward NAME ...`: the registered reward, its options, the limits."""
    import uvicorn
    from starlette.testclient import TestClient

    from diffusers_nft.rewards import jpeg_compressibility, register_reward, serve

    seen = []

    def factory(**options):
        seen.append(options)
        return jpeg_compressibility

    register_reward("served_probe", factory)
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, http: served.update(app=app, host=host, port=port))
    serve.main(["--reward", "served_probe", "--port", "8123", "--dtype", "bf16", "--batch_size", "3",
                "--max_images", "2", "--api_key", "k"])
    assert served["host"] == "127.0.0.1" and served["port"] == 8123
    client = TestClient(served["app"])
    images = torch.rand(3, 3, 16, 16)
    headers = {"Authorization": "Bearer k"}
    assert client.post("/score", json={"images": encode_images(images), "prompts": ["a"] * 3}, headers=headers).status_code == 413
    answer = client.post("/score", json={"images": encode_images(images[:2]), "prompts": ["a", "b"]}, headers=headers)
    assert answer.status_code == 200
    expected = jpeg_compressibility((images[:2] * 255).round() / 255, ["a", "b"], [{}, {}])
    assert answer.json()["scores"] == pytest.approx([float(v) for v in expected], abs=1e-3)
    assert seen == [{"dtype": "bf16", "batch_size": 3}]
    assert served["app"].app.state.scorer.max_batch == 3  # --max_batch defaults to --batch_size
    serve.main(["--reward", "served_probe", "--max_batch", "1"])
    assert served["app"].app.state.scorer.max_batch == 1  # each request alone, from the model's one thread


def test_the_default_limits_are_the_documented_ones():
    # README: 64 MiB bodies, 256 images a request, 2048 x 2048 pixels an image, 30 s between two chunks of a body
    import httpx

    from diffusers_nft.rewards.serve import create_app

    app = create_app(brightness)
    assert app.body_timeout == 30.0
    server, thread, url = serve_in_thread(app)
    try:
        one = encode_images(torch.rand(1, 3, 1, 1))
        assert httpx.post(f"{url}/score", json={"images": one * 256, "prompts": ["a"] * 256}).status_code == 200
        many = httpx.post(f"{url}/score", json={"images": one * 257, "prompts": ["a"] * 257})
        assert many.status_code == 413 and "at most 256" in many.json()["detail"]
        edge = httpx.post(f"{url}/score", json={"images": [_bomb(2048)], "prompts": ["a"]}, timeout=60)
        assert edge.status_code == 200
        past = httpx.post(f"{url}/score", json={"images": [_bomb(2049)], "prompts": ["a"]})
        assert past.status_code == 413 and "2049x2049" in past.json()["detail"]
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:  # declared, never sent
            raw.sendall(f"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: {64 * 2**20 + 1}\r\n\r\n".encode())
            assert raw.recv(4096).split(b"\r\n")[0].endswith(b"413 Request Entity Too Large")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_16_bit_png_is_refused_not_clipped(limited):
    import httpx
    import numpy as np

    url, buffer = limited, io.BytesIO()
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(buffer, format="PNG")  # mid-grey in 16 bits
    answer = httpx.post(f"{url}/score", json={"images": [base64.b64encode(buffer.getvalue()).decode()],
                                               "prompts": ["a"]}, headers={"Authorization": "Bearer s3cret"})
    assert answer.status_code == 400 and "16-bit PNG: send 8-bit images" in answer.json()["detail"]


def test_the_bytes_of_all_requests_in_flight_are_bounded():
    # Two bodies of 600 KB at once, with 1 MB allowed in flight: the second is answered 503 (RemoteReward retries
    # it) while the first is held; once the first is done, the same body goes through.
    import asyncio

    from diffusers_nft.rewards.serve import RequestGuard

    release = asyncio.Event()
    answered = []

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = RequestGuard(slow_app, None, max_body_bytes=2**20, body_timeout=5, max_bytes_in_flight=2**20)

    def request(size):
        sent = [False]

        async def receive():
            if sent[0]:
                await asyncio.sleep(10)
            sent[0] = True
            return {"type": "http.request", "body": b"x" * size, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                answered.append(message["status"])

        return guard({"type": "http", "headers": []}, receive, send)

    async def scenario():
        first = asyncio.create_task(request(600_000))
        await asyncio.sleep(0.05)
        await request(600_000)  # refused at once: 1.2 MB would be in flight
        assert guard.in_flight == 600_000
        release.set()
        await first
        await request(600_000)
        assert guard.in_flight == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))  # without the bound, the second request would wait for the first
    assert answered == [503, 200, 200]


def test_the_client_timeout_is_a_deadline_for_the_whole_request():
    # A server that sends its answer one byte every 0.2 s: every read is quick, the whole would take 20 s.
    import threading
    import time

    from diffusers_nft.rewards.remote import RemoteRewardError

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def trickle():
        connection, _ = listener.accept()
        connection.recv(2**20)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            time.sleep(0.2)
            try:
                connection.sendall(b" ")
            except OSError:
                break
        connection.close()

    threading.Thread(target=trickle, daemon=True).start()
    start = time.monotonic()
    with pytest.raises(RemoteRewardError, match="failed 1 times; last: .*within 1 s"):
        RemoteReward(f"http://127.0.0.1:{port}", timeout=1, retries=0)(torch.rand(1, 3, 8, 8), ["a"])
    assert time.monotonic() - start < 5  # the deadline, not the 20 s the answer would take
    listener.close()


def test_the_key_comes_from_a_file_or_the_environment_and_the_flag_warns(tmp_path, monkeypatch):
    import argparse

    from diffusers_nft.rewards.serve import API_KEY_ENV, api_key_of

    (tmp_path / "key").write_text("from-file\n")

    def args(key=None, key_file=None):
        return argparse.Namespace(api_key=key, api_key_file=key_file)

    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert api_key_of(args(key_file=str(tmp_path / "key"))) == "from-file"
    assert api_key_of(args()) == "from-env"
    with pytest.warns(UserWarning, match=r"--api_key is visible to every user of this machine \(`ps`\)"):
        assert api_key_of(args(key="from-flag")) == "from-flag"
    with pytest.raises(ValueError, match="Give the key once"):
        api_key_of(args(key="a", key_file=str(tmp_path / "key")))


def _guarded_server(header_timeout, max_connections):
    """The brightness reward served in a thread with `connections.guarded_protocol`; `(server, thread, port)`."""
    import threading

    import uvicorn

    from diffusers_nft.rewards.connections import guarded_protocol
    from diffusers_nft.rewards.serve import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(brightness), host="127.0.0.1", port=port, log_level="warning",
                            http=guarded_protocol(header_timeout, max_connections))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline
        time.sleep(0.05)
    return server, thread, port


def _closed_within(connection, seconds) -> bool:
    """Whether the server closed `connection` within `seconds` (a read returns nothing)."""
    connection.settimeout(seconds)
    try:
        return connection.recv(1024) == b""
    except socket.timeout:
        return False


def test_headers_sent_too_slowly_and_connections_beyond_the_limit_are_closed():
    import httpx

    server, thread, port = _guarded_server(header_timeout=1.0, max_connections=3)
    try:
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /score HTTP/1.1\r\nHo")  # and never the rest
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        extra = socket.create_connection(("127.0.0.1", port))  # the fourth open connection
        assert _closed_within(extra, 0.5)
        assert _closed_within(slow, 3) and all(_closed_within(c, 3) for c in idle)  # after 1 s, not never
        answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)  # the slots are free again
        assert answer.status_code == 200
        with httpx.Client(timeout=5) as client:  # a kept-alive connection serves request after request
            assert [client.get(f"http://127.0.0.1:{port}/health").status_code for _ in range(3)] == [200] * 3
        for connection in [slow, extra, *idle]:
            connection.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_serve_command_runs_with_the_connection_limits(monkeypatch):
    import uvicorn

    from diffusers_nft.rewards import serve

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.update(kwargs))
    serve.main(["--reward", "jpeg_compressibility", "--header_timeout", "2.5", "--max_connections", "7"])
    protocol = served["http"]
    assert protocol.__name__ == "GuardedH11Protocol" and served["port"] == 8000
    assert serve.CONNECTION_LIMITS == {"header_timeout": 10.0, "max_connections": 256}
