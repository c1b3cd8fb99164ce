"""A reward server, so that heavy or conflicting reward environments live apart from training.

    python -m diffusers_nft.rewards.serve --reward pickscore --port 8000 [--device cuda] [--dtype bf16]

`POST /score` takes `{"images": [base64 PNG, ...], "prompts": [...], "metadata": [{...}, ...]}` and answers
`{"scores": [...], "extras": {"strict": [...]}}`. Requests that arrive together are scored in one call of the
reward model, up to `--max_batch` images (`batching.py`), so that many training processes share one GPU's reward
model in full batches. Bad requests get a 4xx answer with the reason; a reward that
fails gets a 500 with the reward's error. `GET /health` names the reward. Use `RemoteReward(url)` to train with it.

What a request may cost is bounded: its body size (413), its images (413), each image's pixels, read from the PNG
header before anything is decoded (413), its bit depth (400: 8 bits), the time between two chunks of its body (408),
and the bytes of all bodies in flight (503). So are the connections: headers must be complete within
`--header_timeout` seconds, and at most `--max_connections` are open at once (`connections.py`). With `--api_key`
(or `DIFFUSERS_NFT_API_KEY`) every request must carry `Authorization: Bearer <key>` (401 otherwise).
"""

import argparse
import asyncio
import hmac
import ipaddress
import json
import os
import warnings
from typing import Any, Dict, List, Optional

from .base import require
from .batching import BatchingScorer
from .combine import RewardError, WeightedRewards
from .wire import ImageTooLarge, decode_images, decode_metadata

API_KEY_ENV = "DIFFUSERS_NFT_API_KEY"
DEFAULT_LIMITS = dict(max_body_bytes=64 * 2**20, max_images=256, max_pixels=2048 * 2048, body_timeout=30.0,
                      max_bytes_in_flight=128 * 2**20)
# What the server's connections may cost (`connections.guarded_protocol`): seconds to send a request's headers, and
# connections open at once (well below the common limit of 1,024 open files).
CONNECTION_LIMITS = dict(header_timeout=10.0, max_connections=256)


class RequestGuard:
    """ASGI middleware: the API key, then the body read in bounded chunks, before the app sees the request; the
    bodies of all requests being read or scored together are bounded too (503, which `RemoteReward` retries).

    Args:
        app: The ASGI app to guard.
        api_key: The shared secret, or None for none.
        max_body_bytes: Largest body accepted.
        body_timeout: Seconds to wait for each chunk of the body.
        max_bytes_in_flight: Most body bytes held at once over every request (a body costs several times its size
            in memory while it is decoded and scored).
    """

    def __init__(self, app, api_key: Optional[str], max_body_bytes: int, body_timeout: float,
                 max_bytes_in_flight: int = DEFAULT_LIMITS["max_bytes_in_flight"]):
        self.app, self.api_key = app, api_key
        self.max_body_bytes, self.body_timeout, self.max_bytes_in_flight = max_body_bytes, body_timeout, max_bytes_in_flight
        self.in_flight = 0  # body bytes of the requests being read or served now (one event loop: no lock needed)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and not _authorized(headers.get(b"authorization", b""), self.api_key):
            return await _reject(send, 401, "missing or wrong API key (Authorization: Bearer <key>)")
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await _reject(send, 413, f"body of {int(declared)} bytes: more than {self.max_body_bytes}")
        held = [0]  # this request's share of in_flight, released whatever happens
        try:
            body = await self._read_body(receive, send, held)
            if body is None:
                return None
            return await self.app(scope, _replay(body, receive), send)
        finally:
            self.in_flight -= held[0]

    async def _read_body(self, receive, send, held) -> Optional[bytes]:
        """The whole body, or None once the request was answered (408, 413, 503) or dropped."""
        chunks = []
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                return await _reject(send, 408, f"no body data for {self.body_timeout:g} s")
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            held[0] += len(chunks[-1])
            self.in_flight += len(chunks[-1])
            if held[0] > self.max_body_bytes:
                return await _reject(send, 413, f"body of more than {self.max_body_bytes} bytes")
            if self.in_flight > self.max_bytes_in_flight:
                return await _reject(send, 503, f"busy: more than {self.max_bytes_in_flight} bytes of requests in "
                                     "flight; retry shortly")
            if not message.get("more_body"):
                return b"".join(chunks)


def _authorized(header: bytes, api_key: str) -> bool:
    expected = f"Bearer {api_key}".encode()
    return hmac.compare_digest(header, expected)


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _reject(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(reward, name: Optional[str] = None, api_key: Optional[str] = None,
               max_images: int = DEFAULT_LIMITS["max_images"], max_pixels: int = DEFAULT_LIMITS["max_pixels"],
               max_body_bytes: int = DEFAULT_LIMITS["max_body_bytes"],
               body_timeout: float = DEFAULT_LIMITS["body_timeout"],
               max_bytes_in_flight: int = DEFAULT_LIMITS["max_bytes_in_flight"], max_batch: int = 1,
               max_wait: float = 0.0, **options):
    """An ASGI app serving one reward (a registered name or a callable), with the request limits above.

    Args:
        reward: A registered reward name or a callable.
        name: The reward's name in `/health`.
        api_key: A shared secret every request must send as `Authorization: Bearer <key>`; None for none.
        max_images: Most images per request.
        max_pixels: Most pixels per image.
        max_body_bytes: Largest request body.
        body_timeout: Seconds to wait for each chunk of a request body.
        max_bytes_in_flight: Most body bytes of all requests held at once (503 beyond, retried by the client).
        max_batch: Score the requests that arrive together in one call of up to this many images
            (`BatchingScorer`); 1 scores each request alone. Either way one thread calls the model, one request
            or batch at a time: a model's lazy loading and its tokenizers are not safe to call from many threads.
        max_wait: Seconds to wait for more requests before scoring a batch that is not full.
        **options: Reward options (`device`, `dtype`, `batch_size`, and a model reward's own: `model_id`, ...).
    """
    rewards = WeightedRewards([reward], **options)
    scorer = BatchingScorer(rewards, max_batch, max_wait)
    app = _score_app(scorer, rewards.names[0], name, max_images, max_pixels)
    return RequestGuard(app, api_key, max_body_bytes, body_timeout, max_bytes_in_flight)


def _score_app(scorer, scored_name: str, name: Optional[str], max_images: int, max_pixels: int):
    """The FastAPI app; `scorer(images, prompts, metadata)` answers `{scored_name: ..., scored_name/key: ...}`."""
    fastapi = require("fastapi", "serve")
    from pydantic import BaseModel, Field

    reward_name = name or scored_name

    class ScoreRequest(BaseModel):
        images: List[str]
        prompts: List[str]
        metadata: Optional[List[Dict[str, Any]]] = Field(default=None)

    app = fastapi.FastAPI(title=f"diffusers-nft reward: {reward_name}")
    app.state.scorer = scorer

    @app.get("/health")
    def health():
        return {"reward": reward_name, "status": "ok"}

    @app.post("/score")
    def score(request: ScoreRequest):
        metadata = request.metadata if request.metadata is not None else [{} for _ in request.prompts]
        if not request.images:
            raise fastapi.HTTPException(400, "no images")
        if len(request.images) > max_images:
            raise fastapi.HTTPException(413, f"{len(request.images)} images: at most {max_images} per request")
        if not (len(request.images) == len(request.prompts) == len(metadata)):
            raise fastapi.HTTPException(
                400, f"{len(request.images)} images, {len(request.prompts)} prompts and {len(metadata)} metadata "
                "entries: give one of each per image"
            )
        try:
            images = decode_images(request.images, max_pixels=max_pixels)
            metadata = decode_metadata(metadata, max_pixels=max_pixels)  # source images and masks of edits
        except ImageTooLarge as error:
            raise fastapi.HTTPException(413, str(error)) from error
        except ValueError as error:
            raise fastapi.HTTPException(400, str(error)) from error
        try:
            scores = scorer(images, request.prompts, metadata)
        except RewardError as error:
            raise fastapi.HTTPException(500, str(error)) from error
        prefix = scored_name + "/"
        return {
            "scores": scores[scored_name].tolist(),
            "extras": {k[len(prefix):]: v.tolist() for k, v in scores.items() if k.startswith(prefix)},
        }

    return app


def api_key_of(args) -> Optional[str]:
    """The server's key: `--api_key_file`'s first line, else `--api_key` (with a warning: `ps` shows it), else
    `$DIFFUSERS_NFT_API_KEY`, else none."""
    if args.api_key_file and args.api_key:
        raise ValueError("Give the key once: --api_key_file or --api_key, not both.")
    if args.api_key_file:
        with open(args.api_key_file) as f:
            key = f.readline().strip()
        if not key:
            raise ValueError(f"--api_key_file {args.api_key_file}: the first line is empty.")
        return key
    if args.api_key:
        warnings.warn(f"--api_key is visible to every user of this machine (`ps`) and in shell histories; set "
                      f"${API_KEY_ENV} or pass --api_key_file instead.")
        return args.api_key
    return os.environ.get(API_KEY_ENV)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a diffusers-nft reward over HTTP.")
    parser.add_argument("--reward", required=True, help="A registered reward name.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per forward of the reward model.")
    parser.add_argument("--max_batch", type=int, default=None,
                        help="Score concurrent requests together, up to this many images per call (default: "
                             "--batch_size); 1 scores each request alone.")
    parser.add_argument("--max_wait", type=float, default=0.0,
                        help="Seconds to wait for more requests before scoring a batch that is not full.")
    parser.add_argument("--model_id", default=None, help="The reward's model (Hub id or folder), for model rewards.")
    parser.add_argument("--question", default=None,
                        help="vlm_judge: the question template, e.g. 'Does this image show {prompt}? Answer yes or no.'")
    parser.add_argument("--api_key", default=None,
                        help=f"Shared secret required as 'Authorization: Bearer <key>'. Visible to every user of the "
                             f"machine (`ps`): prefer ${API_KEY_ENV} or --api_key_file.")
    parser.add_argument("--api_key_file", default=None, help="A file holding the shared secret (its first line).")
    for flag, default in {**DEFAULT_LIMITS, **CONNECTION_LIMITS}.items():
        parser.add_argument(f"--{flag}", type=type(default), default=default, help=f"Request limit (default {default}).")
    args = parser.parse_args(argv)
    from ..command_line import exit_on_setup_error

    args.api_key = exit_on_setup_error(lambda: api_key_of(args))
    if not _is_loopback(args.host) and not args.api_key:
        warnings.warn(f"Serving on {args.host} beyond loopback without --api_key: anyone who reaches the port can "
                      "use the reward model. Set --api_key (or $DIFFUSERS_NFT_API_KEY).")
    options = {"dtype": args.dtype, "batch_size": args.batch_size}
    options.update({k: getattr(args, k) for k in ("device", "model_id", "question") if getattr(args, k)})
    limits = {flag: getattr(args, flag) for flag in DEFAULT_LIMITS}
    uvicorn = exit_on_setup_error(lambda: require("uvicorn", "serve"))
    batching = dict(max_batch=args.max_batch or args.batch_size, max_wait=args.max_wait)
    app = exit_on_setup_error(lambda: create_app(args.reward, api_key=args.api_key, **limits, **batching, **options))
    from .connections import guarded_protocol

    uvicorn.run(app, host=args.host, port=args.port,
                http=guarded_protocol(args.header_timeout, args.max_connections))


if __name__ == "__main__":
    main()
