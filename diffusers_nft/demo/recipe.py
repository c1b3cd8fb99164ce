"""The demo world's training recipe: the `NFTConfig` values that `examples/train_nft_sd3.py` uses without a model,
and that `benchmarks/digits_claims.py` varies one at a time.

    from diffusers_nft.demo.recipe import DEMO_REWARD, demo_config
    args = demo_config(output_dir="nft-demo", seed=0)
"""

from ..config import NFTConfig
from .world import MAX_SEQUENCE_LENGTH

DEMO_REWARD = "digit_eval"

DEMO_CONFIG = dict(
    resolution=32,
    max_sequence_length=MAX_SEQUENCE_LENGTH,
    prompts_per_iteration=16,
    group_size=8,
    # 8 sampler steps (the release takes 10), a higher learning rate and 24 iterations: the demo runs in about 2
    # minutes on 2 CPU cores, so in under 5 on the slowest machine of that kind (benchmarks/demo_time.py;
    # docs/results.md has the numbers, and those of 20, 28 and 32 iterations).
    num_sampling_steps=8,
    sample_batch_size=128,
    train_batch_size=128,
    # Each image trains at 4 of the 8 sampler noise levels, one optimizer step per 128 (image, level) pairs: 4 steps
    # per iteration. Half the release's fraction makes an iteration cheaper for about the same accuracy here.
    timestep_fraction=0.5,
    learning_rate=7e-4,
    gradient_accumulation_steps=1,
    # The release's strength for OCR and multi-reward runs. With 1.0 the policy moves less per iteration (claim d of
    # benchmarks/digits_claims.py; the README has the numbers).
    nft_beta=0.1,
    kl_beta=0.0,
    max_steps=24,
    save_steps=12,
    validation_steps=12,
    validation_prompts=["a handwritten seven in red", "a handwritten two in magenta", "a handwritten four in green"],
    num_validation_images=4,
)


EDIT_REWARD = "digit_edit"

# The edit world's recipe: the digits recipe, on instructions with their source image (`image_column`), shown on
# held-out sources in its grids (`edit_world.edit_records("eval")`).
EDIT_CONFIG = dict(
    DEMO_CONFIG,
    image_column="image",
    # 28 iterations, as measured in docs/results.md (the digits recipe went to 24 to fit its 5-minute target).
    max_steps=28,
    save_steps=14,
    validation_steps=14,
    validation_prompts=None,  # image-conditioned runs show their rows' sources with their instructions
)


def demo_config(**overrides) -> NFTConfig:
    """`NFTConfig` with the demo recipe, and `overrides` (any `NFTConfig` field) on top; `objective="flow_grpo"` gives
    a `FlowGRPOConfig`, whose own fields may be overridden too."""
    from ..objectives import config_from_values

    return config_from_values({**DEMO_CONFIG, **overrides})
