"""Run by tests/test_deepspeed.py under `accelerate launch`: train the tiny SD3 pipeline, then dump each rank's state.

    deepspeed_run.py PIPELINE_DIR OUTPUT_DIR MAX_STEPS RESUME(-|latest) DUMP_DIR MIXED_PRECISION

accelerate runs DeepSpeed only on GPUs: on a machine without one it gives DeepSpeed no process-group backend and
counts one process. DeepSpeed itself runs on the CPU (DS_ACCELERATOR=cpu, gloo), so this script hands accelerate the
gloo backend; everything else is the real path: `accelerate launch --config_file
examples/accelerate_configs/deepspeed_zero2.yaml`, the DeepSpeed engine, ZeRO-2 and its checkpoints.
"""

import functools
import os
import sys

import accelerate
import torch
from accelerate.utils import InitProcessGroupKwargs
from diffusers import StableDiffusion3Pipeline

from diffusers_nft import NFTTrainer

sys.path.insert(0, os.path.dirname(__file__))
from conftest import PROMPTS, tiny_config  # noqa: E402


def _with_gloo(init):
    @functools.wraps(init)
    def wrapped(self, *args, **kwargs):
        kwargs["kwargs_handlers"] = list(kwargs.get("kwargs_handlers") or []) + [InitProcessGroupKwargs(backend="gloo")]
        init(self, *args, **kwargs)

    return wrapped


def main(pipeline_dir, output_dir, max_steps, resume, dump_dir, mixed_precision):
    if not torch.cuda.is_available():
        accelerate.Accelerator.__init__ = _with_gloo(accelerate.Accelerator.__init__)
    pipe = StableDiffusion3Pipeline.from_pretrained(pipeline_dir)
    config = tiny_config(output_dir, max_steps=max_steps, prompts_per_iteration=2, group_size=4, sample_batch_size=4,
                         train_batch_size=2, gradient_accumulation_steps=3, save_steps=2, learning_rate=1e-2,
                         resume_from_checkpoint=resume, mixed_precision=mixed_precision)
    trainer = NFTTrainer(pipe, "jpeg_incompressibility", config, PROMPTS)
    accelerator = trainer.accelerator
    rank, num_processes = accelerator.process_index, accelerator.num_processes  # before train() ends the group
    kind = str(accelerator.distributed_type)
    thetas, old_params, step = [], {}, trainer.step

    def recording_step():
        metrics = step()
        thetas.append(trainer.policy.state_dict("default"))
        # the old adapter as its forward uses it (train() removes the adapter when it ends)
        old_params.update({name: p.detach().float().clone() for name, p in trainer.policy._params["old"].items()})
        return metrics

    trainer.step = recording_step
    trainer.train()
    theta = trainer.policy.trainable_parameters()[0]
    os.makedirs(dump_dir, exist_ok=True)
    torch.save(
        {
            "lora": {which: trainer.policy.state_dict(which) for which in ("default", "old", "ema")},
            "old_adapter": old_params,  # what the old policy's forward uses
            "theta_after_each_iteration": thetas,
            "theta_dtype": str(theta.dtype),
            "distributed_type": kind,
            "num_processes": num_processes,
            "optimizer_step": trainer.optimizer_step,
            "history": trainer.history,
        },
        os.path.join(dump_dir, f"rank{rank}.pt"),
    )


if __name__ == "__main__":
    pipeline_dir, output_dir, steps, resume, dump_dir, mixed_precision = sys.argv[1:7]
    main(pipeline_dir, output_dir, int(steps), None if resume == "-" else resume, dump_dir, mixed_precision)
