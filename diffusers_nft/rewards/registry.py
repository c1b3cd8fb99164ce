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


# Model rewards import their libraries (transformers, open_clip, rapidocr) only when they are used.
def _clipscore(**options):
    from .clip import ClipScore

    return ClipScore(**options)


def _pickscore(**options):
    from .clip import PickScore

    return PickScore(**options)


def _hpsv2(**options):
    from .clip import HPSv2

    return HPSv2(**options)


def _aesthetic(**options):
    from .aesthetic import Aesthetic

    return Aesthetic(**options)


def _geneval(**options):
    from .geneval import GenEval

    return GenEval(**options)


def _geneval_evaluator(**options):
    from .geneval import GenEval

    return GenEval(**{**options, "rules": "evaluator"})


def _vlm_judge(**options):  # options: model_id, question, normalize
    from .vlm import VLMJudge

    return VLMJudge(**options)


def _vlm_edit_judge(**options):  # vlm_judge shown the source, then the edit (editing runs)
    from .vlm import VLMJudge

    return VLMJudge(**{**options, "with_source": True})


def _edit_consistency(**options):  # options: model_id, pixel_weight
    from .edit import EditConsistency

    return EditConsistency(**options)


def _ocr(det_limit_side_len=None, **_):
    from .ocr import OCRReward

    return OCRReward(det_limit_side_len=det_limit_side_len)


_REGISTRY: Dict[str, Callable[..., RewardFunc]] = {
    "jpeg_compressibility": lambda **_: jpeg_compressibility,
    "jpeg_incompressibility": lambda **_: jpeg_incompressibility,
    "temporal_consistency": lambda **_: temporal_consistency,
    "clipscore": _clipscore,
    "pickscore": _pickscore,
    "hpsv2": _hpsv2,
    "aesthetic": _aesthetic,
    "geneval": _geneval,
    "geneval_evaluator": _geneval_evaluator,
    "vlm_judge": _vlm_judge,
    "vlm_edit_judge": _vlm_edit_judge,
    "edit_consistency": _edit_consistency,
    "ocr": _ocr,
}
# Packages add rewards by naming a module in this entry-point group; importing it calls `register_reward`. The
# bundled demo world registers its rewards this way (`diffusers_nft.demo`).
PLUGIN_GROUP = "diffusers_nft.plugins"
_plugins_loaded = False
_LOADED: Dict[tuple, RewardFunc] = {}


def register_reward(name: str, factory: Callable[..., RewardFunc]) -> None:
    """Register `factory` under `name`. It is called once, with the reward options (`device`, `dtype`, ...)."""
    _REGISTRY[name] = factory
    for key in [k for k in _LOADED if k[0] == name]:
        del _LOADED[key]


def available_rewards():
    _load_plugins()
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


def _load_plugins() -> None:
    """Import the modules of `PLUGIN_GROUP` once: they register their rewards."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()


def check_reward(reward: Union[str, RewardFunc]) -> None:
    """Raise a clear error for a name that is not registered (without loading any reward model)."""
    if not callable(reward) and reward not in _REGISTRY:
        _load_plugins()
    if not callable(reward) and reward not in _REGISTRY:
        raise ValueError(f"Unknown reward {reward!r}. Registered rewards: {available_rewards()}; or pass a callable.")


def reward_name(reward: Union[str, RewardFunc]) -> str:
    if isinstance(reward, str):
        return reward
    return getattr(reward, "__name__", None) or type(reward).__name__
