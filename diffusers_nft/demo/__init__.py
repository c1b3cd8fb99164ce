"""The bundled demo worlds: coloured handwritten digits, a tiny pretrained text-to-image pipeline, its reward and
its held-out judge (`DEMO`); and edits of those digits, a tiny pretrained FLUX.1 Kontext-shaped editing pipeline,
its reward and its held-out judge (`EDIT_DEMO`).

    from diffusers_nft.demo import DEMO, EDIT_DEMO
    pipe = DEMO.load_pipeline()                      # offline, from the package folder
    train, records = DEMO.train_prompts(), DEMO.eval_records()

Importing it registers its rewards (`digit_eval`, `digit_eval_robust`, `digit_eval_ensemble`, `digit_judge`,
`digit_edit`, `digit_edit_judge`); the package names it in the `diffusers_nft.plugins` entry points, so those names
also work without the import. `DEMO` and `EDIT_DEMO` are all the training scripts and `diffusers_nft.evaluate` know
of it.
"""

import os

from ..rewards.registry import register_reward
from .world import HELD_OUT, prompt_dataset, prompt_records

WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
PIPELINE = os.path.join(WEIGHTS, "pipeline")
EDIT_PIPELINE = os.path.join(WEIGHTS, "edit_pipeline")


def load_demo_pipeline():
    """The bundled `StableDiffusion3Pipeline` (32 px, float32), loaded with `from_pretrained` from the package."""
    import torch
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline.from_pretrained(PIPELINE, dtype=torch.float32)


def load_edit_pipeline():
    """The bundled `FluxKontextPipeline` of the edit world (32 px, float32), loaded with `from_pretrained`."""
    import torch
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline.from_pretrained(EDIT_PIPELINE, dtype=torch.float32)


def _digit_eval(**options):
    from .reward import DigitEval

    return DigitEval(**options)


def _digit_eval_robust(**options):  # its probabilities over 8 views of each image
    from .reward import RobustDigitEval

    return RobustDigitEval(**options)


def _digit_eval_ensemble(**options):  # five classifiers of its class, averaged
    from .reward import EnsembleDigitEval

    return EnsembleDigitEval(**options)


def _digit_judge(**options):  # the held-out judge: another model, never trained on
    from .judge import DigitJudge

    return DigitJudge(**options)


def _digit_edit(**options):  # the edit world's reward: the instructed digit and colour, the stroke kept
    from .edit_reward import DigitEdit

    return DigitEdit(**options)


def _digit_edit_judge(**options):  # the edit world's held-out judge
    from .edit_reward import DigitEditJudge

    return DigitEditJudge(**options)


for _name, _factory in (("digit_eval", _digit_eval), ("digit_eval_robust", _digit_eval_robust),
                        ("digit_eval_ensemble", _digit_eval_ensemble), ("digit_judge", _digit_judge),
                        ("digit_edit", _digit_edit), ("digit_edit_judge", _digit_edit_judge)):
    register_reward(_name, _factory)

from .entry import DEMO, EDIT_DEMO  # noqa: E402  (after the registrations it relies on)

__all__ = ["DEMO", "EDIT_DEMO", "EDIT_PIPELINE", "HELD_OUT", "PIPELINE", "WEIGHTS", "load_demo_pipeline",
           "load_edit_pipeline", "prompt_dataset", "prompt_records"]
