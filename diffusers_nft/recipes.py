"""The public release's training configurations (`config/nft.py`), and Flow-GRPO's CFG-free one, by name.

    config = NFTConfig.from_recipe("sd35m_ocr", output_dir="sd35-ocr")   # explicit values override the recipe

Every recipe is SD3.5-Medium at 512 px: 48 prompts x 24 images per iteration, 10-step data collection without CFG
(DPM-Solver++ for NFT, the SDE for Flow-GRPO), 40-step Euler evaluation, on the release's prompt sets. Each sets every value that the release
sets for that run; the rest are `NFTConfig`'s defaults, which are the release's too.
"""

from typing import Dict

_SD35M = dict(
    resolution=512,
    prompts_per_iteration=48,
    group_size=24,
    num_sampling_steps=10,
    eval_num_steps=40,
    sampler="dpm_solver",
    guidance_scale=1.0,
    max_sequence_length=128,
    kl_beta=1e-4,
    adv_mode="all",
    learning_rate=3e-4,
)

# name -> (NFTConfig values, rewards with weights, the prompt set the release trains on and its file format)
RECIPES: Dict[str, dict] = {
    "sd35m_geneval": dict(
        config=dict(_SD35M, nft_beta=1.0, old_policy_decay="linear", optimizer_steps_per_iteration=1),
        rewards={"geneval": 1.0},
        prompts="GenEval metadata, one JSON record a line (train_metadata.jsonl: prompt, tag, include, exclude); "
        "`python -m diffusers_nft.geneval_prompts` writes such a set",
    ),
    "sd35m_ocr": dict(
        config=dict(_SD35M, nft_beta=0.1, old_policy_decay="delayed", optimizer_steps_per_iteration=2),
        rewards={"ocr": 1.0},
        prompts='text prompts, one a line (train.txt), each with the text to render between double quotes',
    ),
    "sd35m_pickscore": dict(
        config=dict(_SD35M, nft_beta=1.0, old_policy_decay="linear", optimizer_steps_per_iteration=1),
        rewards={"pickscore": 1.0},
        prompts="text prompts, one a line (train.txt: the release's PickScore prompt set)",
    ),
    "sd35m_hpsv2": dict(
        config=dict(_SD35M, nft_beta=1.0, old_policy_decay="linear", optimizer_steps_per_iteration=1),
        rewards={"hpsv2": 1.0},
        prompts="text prompts, one a line (train.txt: the release's PickScore prompt set)",
    ),
    "sd35m_multi_reward": dict(
        config=dict(_SD35M, nft_beta=0.1, old_policy_decay="linear", optimizer_steps_per_iteration=1,
                    num_sampling_steps=25),
        rewards={"pickscore": 1.0, "hpsv2": 1.0, "clipscore": 1.0},
        prompts="text prompts, one a line (train.txt: the release's PickScore prompt set)",
    ),
    # Flow-GRPO's CFG-free configuration (reference `config/grpo.py`, `geneval_sd3_fast_nocfg`): no CFG while
    # sampling, training or evaluating, clip 1e-5, no KL, SDE noise level 0.8, the SD3 geometry (48 x 24 images, 2
    # optimizer steps per iteration, global std, EMA). The reference trains it with its "fast" SDE window (3 SDE
    # steps within the first 5, CPS sampling); here every step is an SDE step and 9 of 10 transitions train, as in
    # its CFG configurations.
    "flow_grpo_nocfg": dict(
        config=dict(_SD35M, objective="flow_grpo", grpo_guidance_scale=1.0, grpo_clip_range=1e-5, grpo_kl_beta=0.0,
                    grpo_noise_level=0.8, optimizer_steps_per_iteration=2, timestep_fraction=0.99),
        rewards={"geneval": 1.0},
        prompts="GenEval metadata, one JSON record a line (train_metadata.jsonl: prompt, tag, include, exclude); "
        "`python -m diffusers_nft.geneval_prompts` writes such a set",
    ),
}


def recipe(name: str) -> dict:
    """The recipe `name`: `{"config": NFTConfig values, "rewards": {name: weight}, "prompts": what to train on}`."""
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose one of {sorted(RECIPES)}.")
    return RECIPES[name]
