"""The engine's optimizer: AdamW's fused kernel where it is asked for (by default on CUDA devices)."""

from diffusers_nft import NFTTrainer

from conftest import PROMPTS, lora_norm, tiny_config


def test_fused_adamw_is_on_where_asked_and_trains_as_the_plain_one(tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusion3Pipeline

    trained = {}
    for fused in (None, True):  # None: the default, off on this CPU
        pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
        trainer = NFTTrainer(pipe, "jpeg_incompressibility", tiny_config(tmp_path / str(fused), max_steps=1,
                                                                         fused_adamw=fused), PROMPTS)
        assert bool(trainer.optimizer.optimizer.defaults["fused"]) is bool(fused)
        trainer.end_iteration(trainer.step())  # one optimizer step on the same gradients
        trained[fused] = trainer.policy.state_dict("trained")
    assert lora_norm(trained[None], trained[True]) < 1e-5 * (1 + sum(v.norm() for v in trained[None].values()))
