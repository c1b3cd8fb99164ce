"""`DEMO` and `EDIT_DEMO`: what a training script or `diffusers_nft.evaluate` runs without a model. The scripts
know the demo worlds only through these objects."""

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from .recipe import DEMO_CONFIG, DEMO_REWARD, EDIT_CONFIG, EDIT_REWARD

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoWorld:
    """The bundled digits world as a script sees it.

    Attributes:
        reward: The reward it trains on by default.
        output_dir: Where a demo run writes.
        config: The `NFTConfig` values of its recipe (`diffusers_nft.demo.recipe`).
        base_loader: How the model card's snippet builds the bundled base pipeline (`hub.call_snippet`).
    """

    reward: str = DEMO_REWARD
    output_dir: str = "nft-demo"
    description: str = "digits world (coloured handwritten digits, a tiny text-to-image SD3 pipeline)"
    config: Dict[str, object] = field(default_factory=lambda: dict(DEMO_CONFIG))
    base_loader: Tuple[str, str] = ("from diffusers_nft.demo import load_demo_pipeline", "load_demo_pipeline()")

    def load_pipeline(self):
        from . import load_demo_pipeline

        return load_demo_pipeline()

    def train_prompts(self):
        from .world import prompt_dataset

        return prompt_dataset("train")

    def eval_records(self) -> List[dict]:
        from .world import prompt_records

        return prompt_records("eval")

    def report(self, trainer) -> str:
        """After a demo run: `results.md` (base and NFT on the 60 evaluation prompts, by the reward and by the
        held-out judge), which the model card then shows."""
        return write_results(trainer)


def write_results(trainer) -> str:
    """Strict accuracy on the 60 evaluation prompts (2 seeds, 40 steps, no CFG), base vs NFT, as a table: by the
    training reward and by the held-out judge (`diffusers_nft.demo.judge`)."""
    from .accuracy import accuracy

    with trainer.policy.weights("base"):
        base = accuracy(trainer.pipeline)
    with trainer.policy.weights(trainer.published_weights):
        tuned = accuracy(trainer.pipeline)
    rows = [f"| {key} | {base[key]:.3f} | {tuned[key]:.3f} | {base['judge_' + key]:.3f} | {tuned['judge_' + key]:.3f} |"
            for key in ("strict", "digit", "color", "strict_held_out")]
    names = trainer.rewards.names  # `--reward digit_eval_ensemble` trains on another reward than the one scored here
    role = "trained on" if names == [DEMO_REWARD] else "the run trained on " + " + ".join(names)
    table = (f"| accuracy (no CFG) | base ({DEMO_REWARD}, {role}) | NFT ({DEMO_REWARD}) | base (digit_judge, held out) "
             "| NFT (digit_judge) |\n| --- | ---: | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n")
    path = os.path.join(trainer.args.output_dir, "results.md")
    with open(path, "w") as f:
        f.write(table)
    logger.info("Demo results (also in %s):\n%s", path, table)
    return path


@dataclass(frozen=True)
class EditDemoWorld:
    """The bundled edit world as a script sees it: a tiny FLUX.1 Kontext-shaped pipeline that edits a coloured
    digit ("make it blue", "turn it into a seven"), the `digit_edit` reward and the `digit_edit_judge`.

    Attributes:
        reward: The reward it trains on by default.
        output_dir: Where a demo run writes.
        config: The `NFTConfig` values of its recipe (`diffusers_nft.demo.recipe.EDIT_CONFIG`).
        base_loader: How the model card's snippet builds the bundled base pipeline (`hub.call_snippet`).
    """

    reward: str = EDIT_REWARD
    output_dir: str = "nft-edit-demo"
    description: str = "edit world (instructions that recolour or redraw a coloured digit, a tiny Kontext pipeline)"
    config: Dict[str, object] = field(default_factory=lambda: dict(EDIT_CONFIG))
    base_loader: Tuple[str, str] = ("from diffusers_nft.demo import load_edit_pipeline", "load_edit_pipeline()")

    def load_pipeline(self):
        from . import load_edit_pipeline

        return load_edit_pipeline()

    def train_prompts(self):
        from .edit_world import edit_dataset

        return edit_dataset("train")

    def eval_records(self) -> List[dict]:
        from .edit_world import edit_records

        return edit_records("eval")

    def report(self, trainer) -> str:
        """After a demo run: `results.md` (the base, the base with its best CFG, and NFT without CFG on the 60
        held-out edits, by the reward and by the held-out judge), which the model card then shows."""
        from .edit_accuracy import write_edit_results

        return write_edit_results(trainer)


DEMO = DemoWorld()
EDIT_DEMO = EditDemoWorld()
