"""A reward server, so that heavy or conflicting reward environments live apart from training.

    python -m diffusers_nft.rewards.serve --reward pickscore --port 8000 [--device cuda] [--dtype bf16]

`POST /score` takes `{"images": [base64 PNG, ...], "prompts": [...], "metadata": [{...}, ...]}` and answers
`{"scores": [...], "extras": {"strict": [...]}}`. Bad requests get a 4xx answer with the reason; a reward that
fails gets a 500 with the reward's error. `GET /health` names the reward. Use `RemoteReward(url)` to train with it.
"""

import argparse
from typing import Any, Dict, List, Optional

from .base import require
from .combine import RewardError, WeightedRewards
from .wire import decode_images


def create_app(reward, name: Optional[str] = None, **options):
    """A FastAPI app serving one reward (a registered name or a callable)."""
    fastapi = require("fastapi", "serve")
    from pydantic import BaseModel, Field

    rewards = WeightedRewards([reward], **options)
    reward_name = name or rewards.names[0]

    class ScoreRequest(BaseModel):
        images: List[str]
        prompts: List[str]
        metadata: Optional[List[Dict[str, Any]]] = Field(default=None)

    app = fastapi.FastAPI(title=f"diffusers-nft reward: {reward_name}")

    @app.get("/health")
    def health():
        return {"reward": reward_name, "status": "ok"}

    @app.post("/score")
    def score(request: ScoreRequest):
        metadata = request.metadata if request.metadata is not None else [{} for _ in request.prompts]
        if not request.images:
            raise fastapi.HTTPException(400, "no images")
        if not (len(request.images) == len(request.prompts) == len(metadata)):
            raise fastapi.HTTPException(
                400, f"{len(request.images)} images, {len(request.prompts)} prompts and {len(metadata)} metadata "
                "entries: give one of each per image"
            )
        try:
            images = decode_images(request.images)
        except ValueError as error:
            raise fastapi.HTTPException(400, str(error)) from error
        try:
            scores = rewards(images, request.prompts, metadata)
        except RewardError as error:
            raise fastapi.HTTPException(500, str(error)) from error
        prefix = rewards.names[0] + "/"
        return {
            "scores": scores[rewards.names[0]].tolist(),
            "extras": {k[len(prefix):]: v.tolist() for k, v in scores.items() if k.startswith(prefix)},
        }

    return app


def main(argv=None):
    parser = argparse.ArgumentParser(description="Serve a diffusers-nft reward over HTTP.")
    parser.add_argument("--reward", required=True, help="A registered reward name.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    uvicorn = require("uvicorn", "serve")
    options = {"dtype": args.dtype, "batch_size": args.batch_size}
    if args.device:
        options["device"] = args.device
    uvicorn.run(create_app(args.reward, **options), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
