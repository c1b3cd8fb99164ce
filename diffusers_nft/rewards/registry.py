"""Rewards by name. A reward is any callable `(images, prompts, metadata) -> sequence of floats`.

- `images`: float tensor `(B, 3, H, W)` in [0, 1];
- `prompts`: list of B strings;
- `metadata`: list of B dicts, the prompt dataset's other columns.

A reward may also return a dict with the floats under `"scores"` and other per-image floats (logged, not
optimised), as `geneval` does with `"strict"`.
"""

from typing import Callable, Dict, Union

from .jpeg import jpeg_compressibility, jpeg_incompressibility
from .video import temporal_consistency

RewardFunc = Callable[..., object]


def _model(module: str, name: str):
    """A factory that imports `name` from `module` (relative to this package) only when the reward is used."""

    def factory(**kwargs):
        import importlib

        return getattr(importlib.import_module(module, __package__), name)(**kwargs)

    return factory


_REGISTRY: Dict[str, Callable[..., RewardFunc]] = {
    "jpeg_compressibility": lambda **_: jpeg_compressibility,
    "jpeg_incompressibility": lambda **_: jpeg_incompressibility,
    "temporal_consistency": lambda **_: temporal_consistency,
    "clipscore": _model(".clip", "ClipScore"),
    "pickscore": _model(".clip", "PickScore"),
    "hpsv2": _model(".clip", "HPSv2"),
    "aesthetic": _model(".aesthetic", "Aesthetic"),
    "geneval": _model(".geneval", "GenEval"),
    "vlm_judge": _model(".vlm", "VLMJudge"),  # options: model_id, question, normalize
    "digit_eval": _model("..demo.reward", "DigitEval"),  # the bundled demo world's reward
    "digit_eval_robust": _model("..demo.reward", "RobustDigitEval"),  # its probabilities over 8 views of each image
    "digit_eval_ensemble": _model("..demo.reward", "EnsembleDigitEval"),  # five classifiers of its class, averaged
    "digit_judge": _model("..demo.judge", "DigitJudge"),  # its held-out judge: another model, never trained on
    "ocr": lambda det_limit_side_len=None, **_: _model(".ocr", "OCRReward")(det_limit_side_len=det_limit_side_len),
}
_LOADED: Dict[tuple, RewardFunc] = {}


def register_reward(name: str, factory: Callable[..., RewardFunc]) -> None:
    """Register `factory` under `name`. It is called once, with the reward options (`device`, `dtype`, ...)."""
    _REGISTRY[name] = factory
    for key in [k for k in _LOADED if k[0] == name]:
        del _LOADED[key]


def available_rewards():
    return sorted(_REGISTRY)


def load_reward(reward: Union[str, RewardFunc], **options) -> RewardFunc:
    """A reward callable from a registered name (built once per process and options), or the callable itself.

    Args:
        reward: A registered name, or a callable.
        **options: For model rewards: `device`, `dtype`, `batch_size`, and model ids such as `model_id`.
    """
    if callable(reward):
        return reward
    check_reward(reward)
    key = (reward, tuple(sorted((k, str(v)) for k, v in options.items())))
    if key not in _LOADED:
        _LOADED[key] = _REGISTRY[reward](**options)
    return _LOADED[key]


def check_reward(reward: Union[str, RewardFunc]) -> None:
    """Raise a clear error for a name that is not registered (without loading anything)."""
    if not callable(reward) and reward not in _REGISTRY:
        raise ValueError(f"Unknown reward {reward!r}. Registered rewards: {available_rewards()}; or pass a callable.")


def reward_name(reward: Union[str, RewardFunc]) -> str:
    if isinstance(reward, str):
        return reward
    return getattr(reward, "__name__", None) or type(reward).__name__
