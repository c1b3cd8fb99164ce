"""The LoRA file loads at the trained strength however it is read: with diffusers' metadata, with `<module>.alpha`
tensors the way ComfyUI reads them, and with neither; and every checkpoint holds one."""

import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from safetensors import safe_open
from safetensors.torch import load_file

from diffusers_nft import NFTTrainer
from diffusers_nft.lora_file import portable_lora
from diffusers_nft.pipelines import get_family

from conftest import PROMPTS, max_diff, small_lora, tiny_config


def _velocity(pipe) -> torch.Tensor:
    family = get_family(pipe)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *family.latent_shape(64), generator=g)
    cond = family.encode_prompts(["a red cat", "a blue dog"], torch.device("cpu"), 16)
    with torch.no_grad():
        return family.predict_velocity(x, torch.tensor([0.3, 0.8]), cond)


def _merge_by_hand(pipe, path, honour_alpha_tensors: bool) -> None:
    """A loader of another tool: W += scale * B @ A per module, scale = alpha / r from `<module>.alpha` tensors
    (ComfyUI) when asked and present, else 1; the file's metadata is never read."""
    tensors = load_file(path)
    modules = dict(pipe.transformer.named_modules())
    with torch.no_grad():
        for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
            name = key[: -len(".lora_A.weight")]
            down, up = tensors[key], tensors[f"{name}.lora_B.weight"]
            alpha = tensors.get(f"{name}.alpha") if honour_alpha_tensors else None
            scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
            modules[name.removeprefix("transformer.")].weight += scale * up @ down


@pytest.fixture
def trained(tiny_pipeline, tmp_path):
    """A trainer whose EMA LoRA (rank 4, alpha 16: scale 4) has moved well away from zero."""
    config = tiny_config(tmp_path, max_steps=2, save_steps=2)
    trainer = NFTTrainer(tiny_pipeline, "jpeg_compressibility", config, PROMPTS,
                         peft_config=small_lora(tiny_pipeline.transformer, rank=4, alpha=16))
    trainer.train()
    g = torch.Generator().manual_seed(1)
    moved = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in trainer.policy.state_dict("ema").items()}
    trainer.policy.load_state_dict("ema", moved)
    trainer.save_lora(str(tmp_path))
    with trainer.policy.ema_weights():
        return trainer, _velocity(trainer.pipeline)


@pytest.mark.parametrize("loader", ["diffusers_metadata", "alpha_tensors", "ignores_both"])
def test_every_loader_gets_the_trained_strength(trained, tiny_pipeline_dir, tmp_path, loader):
    trainer, velocity = trained
    path = str(tmp_path / "pytorch_lora_weights.safetensors")
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    base = _velocity(pipe)
    if loader == "diffusers_metadata":
        pipe.load_lora_weights(str(tmp_path), weight_name="pytorch_lora_weights.safetensors")
    else:
        _merge_by_hand(pipe, path, honour_alpha_tensors=loader == "alpha_tensors")
    assert (velocity - base).abs().max() > 1e-2  # the LoRA matters, so a wrong strength would show
    torch.testing.assert_close(_velocity(pipe), velocity, atol=1e-5, rtol=1e-5)


def test_the_file_says_alpha_equals_rank_and_holds_the_folded_update(trained, tmp_path):
    trainer, _ = trained
    path = str(tmp_path / "pytorch_lora_weights.safetensors")
    with safe_open(path, "pt") as f:
        import json

        metadata = json.loads(f.metadata()["lora_adapter_metadata"])  # diffusers' key, "transformer."-prefixed
    assert metadata["transformer.r"] == metadata["transformer.lora_alpha"] == 4
    assert metadata["transformer.use_rslora"] is False
    saved = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
    ema = trainer.policy.state_dict("ema")
    assert max_diff({k: v for k, v in saved.items() if "lora_A" in k}, {k: v for k, v in ema.items() if "lora_A" in k}) == 0
    assert max_diff({k: v for k, v in saved.items() if "lora_B" in k},
                    {k: 4 * v for k, v in ema.items() if "lora_B" in k}) < 1e-6
    # The same unfolded: a loader ignoring metadata would apply a quarter of the trained update.
    assert max_diff(saved, ema) > 1e-3


def test_rslora_and_alpha_patterns_fold_per_module():
    from peft import LoraConfig

    weights = {"a.lora_A.weight": torch.ones(4, 3), "a.lora_B.weight": torch.ones(5, 4),
               "b.lora_A.weight": torch.ones(4, 3), "b.lora_B.weight": torch.ones(5, 4)}
    folded, metadata = portable_lora(weights, LoraConfig(r=4, lora_alpha=8, alpha_pattern={"b": 2}, target_modules=["a", "b"]))
    assert float(folded["a.lora_B.weight"][0, 0]) == 2.0 and float(folded["b.lora_B.weight"][0, 0]) == 0.5
    folded, _ = portable_lora(weights, LoraConfig(r=4, lora_alpha=8, use_rslora=True, target_modules=["a", "b"]))
    assert float(folded["a.lora_B.weight"][0, 0]) == 4.0  # alpha / sqrt(r)
    assert metadata["lora_alpha"] == 4 and metadata["alpha_pattern"] == {}


def test_each_checkpoint_holds_a_loadable_lora(trained, tiny_pipeline_dir, tmp_path):
    """`load_lora_weights(checkpoint-N)` loads the EMA LoRA of iteration N, as diffusers' scripts' checkpoints do."""
    trainer, _ = trained
    checkpoint = tmp_path / "checkpoint-2"
    pipe = StableDiffusion3Pipeline.from_pretrained(tiny_pipeline_dir)
    base = _velocity(pipe)
    pipe.load_lora_weights(str(checkpoint))
    # checkpoint-2 was written before the EMA was moved in the fixture: it holds the EMA of iteration 2
    ema_at_2 = load_file(checkpoint / "lora_ema.safetensors")
    folded, _ = portable_lora(ema_at_2, trainer.policy.lora_config)
    saved = {k.removeprefix("transformer."): v for k, v in load_file(checkpoint / "pytorch_lora_weights.safetensors").items()}
    assert max_diff(saved, folded) == 0
    assert (_velocity(pipe) - base).abs().max() > 0
