"""Run by tests/test_fsdp.py: the NFT policy on a transformer sharded with FSDP2 over 2 CPU processes (gloo).

Each rank builds the same tiny SD3 transformer twice: one copy stays whole, the other is sharded with `fully_shard`
(what accelerate's FSDP version 2 does). Both go through the same NFT operations; each rank saves what the two
copies hold so the test can compare them.

    python tests/fsdp_run.py OUT_DIR
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TINY_SD3 = dict(
    sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=32,
    num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=32,
    pos_embed_max_size=8, dual_attention_layers=(0,), qk_norm="rms_norm",
)


def build(sharded: bool, mixed_precision: bool = False):
    """The tiny transformer with its NFT policy, sharded over all processes or whole. `mixed_precision`: accelerate's
    FSDP2 with bf16 (base weights bf16, LoRA fp32, bf16 all-gathers, fp32 gradient reduction)."""
    from diffusers import SD3Transformer2DModel
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from diffusers_nft.policy import NFTPolicy, make_lora_config

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(**TINY_SD3)
    if mixed_precision:
        transformer.to(torch.bfloat16)
    policy = NFTPolicy(transformer, make_lora_config(transformer, default_targets=["attn.to_q", "attn.to_k", "ff.net.2"]))
    if sharded:
        options = dict(mesh=init_device_mesh("cpu", (dist.get_world_size(),)))
        if mixed_precision:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in transformer.transformer_blocks:
            fully_shard(block, **options)
        fully_shard(transformer, **options)
    policy.bind()
    optimizer = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    return transformer, policy, optimizer


def inputs(seed: int):
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(2, 4, 8, 8, generator=g),
        encoder_hidden_states=torch.randn(2, 5, 32, generator=g),
        pooled_projections=torch.randn(2, 32, generator=g),
        timestep=torch.tensor([300.0, 700.0]),
    )


def train_step(transformer, optimizer, seed: int) -> None:
    out = transformer(**inputs(seed), return_dict=False)[0]
    out.square().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run(transformer, policy, optimizer) -> dict:
    """The NFT operations, in the trainer's order, recording what a file or a metric would see."""
    from diffusers_nft.policy import OLD, REFERENCE, TRAINED
    from diffusers_nft.sharding import gather_optimizer_state, shard_optimizer_state

    record = {}
    train_step(transformer, optimizer, seed=1)
    policy.update_old(0.5)
    policy.update_ema(0.9)
    with torch.no_grad():
        for which in (TRAINED, OLD, REFERENCE):
            with policy.using(which):
                record[f"forward_{which}"] = transformer(**inputs(2), return_dict=False)[0]
        with policy.ema_weights():
            record["forward_ema"] = transformer(**inputs(2), return_dict=False)[0]
        record["forward_after_ema"] = transformer(**inputs(2), return_dict=False)[0]
    record["deviation"] = torch.tensor(policy.deviation())
    for which in (TRAINED, OLD, "ema"):
        record.update({f"{which}/{k}": v for k, v in policy.state_dict(which).items()})
    # A checkpoint round trip: whole tensors out, sliced back in, then one more identical step.
    saved_lora, saved_optimizer = policy.state_dict(TRAINED), gather_optimizer_state(optimizer)
    record.update({f"optimizer/{i}/{k}": v.clone() for i, s in saved_optimizer["state"].items() for k, v in s.items()})
    train_step(transformer, optimizer, seed=3)
    record.update({f"uninterrupted/{k}": v for k, v in policy.state_dict(TRAINED).items()})
    policy.load_state_dict(TRAINED, saved_lora)
    optimizer.load_state_dict(shard_optimizer_state(saved_optimizer, optimizer))
    train_step(transformer, optimizer, seed=3)
    record.update({f"resumed/{k}": v for k, v in policy.state_dict(TRAINED).items()})
    return {k: v.detach().clone() for k, v in record.items()}


def mixed_precision_change() -> float:
    """Sharded in bf16 mixed precision, the first forward collects data with the old policy (as in the trainer);
    then one training step. Returns how far theta moved."""
    from diffusers_nft.policy import OLD, TRAINED

    transformer, policy, optimizer = build(sharded=True, mixed_precision=True)
    before = policy.state_dict(TRAINED)
    with torch.no_grad(), policy.using(OLD):
        transformer(**inputs(0), return_dict=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        train_step(transformer, optimizer, seed=1)
    return max((policy.state_dict(TRAINED)[k] - v).abs().max().item() for k, v in before.items())


def worker(rank: int, world_size: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("FSDP_TEST_PORT", "29561"))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        sharded_model = build(sharded=True)
        lora = next(p for n, p in sharded_model[0].named_parameters() if "lora_A.default" in n)
        whole, sharded = run(*build(sharded=False)), run(*sharded_model)
        torch.save({"whole": whole, "sharded": sharded, "local_rows": lora.to_local().shape[0],
                    "rows": lora.shape[0], "mixed_precision_change": mixed_precision_change()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(2, sys.argv[1]), nprocs=2)
