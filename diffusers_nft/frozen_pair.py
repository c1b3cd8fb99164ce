"""The old policy's and the reference's predictions of a micro-step in one forward of twice the batch.

Both are frozen forwards of the same inputs through the same transformer, the old adapter on and every adapter off.
PEFT's mixed adapter batches (`adapter_names`, with `"__base__"` for no adapter) give each row of a LoRA layer's
input its own adapter, so one forward of `[x, x]` does both. That is right only where every LoRA layer sees one row
per sample; a model that puts tokens or frames first would mix them silently, and one that routes rows to experts
(Wan 2.2) hands its layers a part of them. So the first pair is preceded by a probe, one forward of `[x; x with
sample 0 changed]` in place of the first old forward: every LoRA layer must run on all the rows, and the two halves
of its input may differ in row 0 only. Where that fails, or where PEFT refuses (DoRA, attention layers), the two
forwards stay, and a log line says why. Every process decides alike:
sharded and replicated models need the same number of forwards on every process.
"""

import logging
from typing import Callable, Dict, Optional, Tuple

import torch

from .machines import agreed_max
from .pipelines.base import select_conditioning
from .policy import OLD, REFERENCE

logger = logging.getLogger(__name__)

# A row of a LoRA layer's input "changed" when its change is above this fraction of sample 0's own row's change.
LEAK = 1e-2


class OldAndReference:
    """`(v_old, v_ref)` of a micro-step: one forward of twice the batch once the probe allows it, else two.

    Args:
        policy: The `NFTPolicy` (`using`, `mixed`, `lora_layers`).
        predict: `predict(x, sigma, cond) -> v`, the family's velocity.
        batched: Allow the single forward (False: always two forwards).
    """

    def __init__(self, policy, predict: Callable, batched: bool = True):
        self.policy, self.predict = policy, predict
        self.batched: Optional[bool] = None if batched else False  # None: not probed yet
        self.reason = "" if batched else "turned off"

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.batched is None and x.shape[0] > 1:  # one sample cannot show whether rows are samples
            self._decide(*self._probe(x, sigma, cond))
        if self.batched:
            try:
                return self._pair(x, sigma, cond)
            except ValueError as refusal:  # PEFT: a layer saw another number of rows (a model routing them)
                if "adapter_names" not in str(refusal):
                    raise
                self._decide(False, f"PEFT refused a later mixed batch ({refusal})")
        with self.policy.using(OLD):
            v_old = self.predict(x, sigma, cond)
        with self.policy.using(REFERENCE):
            return v_old, self.predict(x, sigma, cond)

    def _pair(self, x, sigma, cond):
        rows = x.shape[0]
        both = torch.arange(rows, device=x.device).repeat(2)
        with self.policy.mixed([OLD] * rows + [REFERENCE] * rows):
            v = self.predict(x[both], sigma[both] if sigma.dim() else sigma, select_conditioning(cond, both))
        return v[:rows], v[rows:]

    def _probe(self, x, sigma, cond) -> Tuple[bool, str]:
        """One mixed forward of `[x; x with sample 0 changed]`, every row through the old adapter (so PEFT checks
        the layers it would refuse): every LoRA layer must run on all its rows, and the two halves of its input may
        differ in row 0 only."""
        layers, rows, sketch, reason = self.policy.lora_layers, x.shape[0], {}, ""
        if not layers:
            return False, "the model has no LoRA layers to route"
        try:
            with _sketching(layers, sketch), self.policy.mixed([OLD] * (2 * rows)):
                self.predict(*_probe_inputs(x, sigma, cond))
        except (ValueError, TypeError) as refusal:  # PEFT refuses mixed batches for some layers
            reason = f"PEFT refuses a mixed adapter batch here ({refusal})"
        for name in layers:
            reason = reason or _row_fault(name, sketch.get(name), rows)
        if agreed_max(float(bool(reason)), x.device) > 0:
            return False, reason or "another process found a LoRA layer that does not see one row per sample"
        return True, f"every LoRA layer sees one row per sample (probed on {len(sketch)} layers)"

    def _decide(self, batched: bool, reason: str) -> None:
        self.batched, self.reason = batched, reason
        logger.info("The old and reference predictions of each micro-step run as %s: %s.",
                    "one forward of twice the batch" if batched else "two forwards", reason)


class _sketching:
    """Record, for each named LoRA layer, its input's first dimension and two sums over each row (a change to
    any value of a row moves them)."""

    def __init__(self, layers: Dict[str, torch.nn.Module], sketch: dict):
        self.layers, self.sketch, self.hooks = layers, sketch, []

    def __enter__(self):
        for name, layer in self.layers.items():
            self.hooks.append(layer.register_forward_pre_hook(self._record(name), with_kwargs=True))
        return self

    def _record(self, name):
        def hook(module, args, kwargs):
            rows = (args[0] if args else next(iter(kwargs.values()))).detach().float().flatten(1)
            self.sketch[name] = (rows.shape[0], torch.stack([rows.sum(1), rows.square().sum(1)], 1).cpu())
        return hook

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


def _row_fault(name: str, sketch, rows: int) -> str:
    """Why the LoRA layer `name` does not see one row per sample in the probe, or "" when it does."""
    if sketch is None:
        return f"the LoRA layer {name} did not run on the probe's batch (a model that routes its rows)"
    size, sums = sketch
    if size != 2 * rows:
        return f"the LoRA layer {name} saw {size} rows for {2 * rows} samples"
    change = (sums[rows:] - sums[:rows]).abs()  # (rows, 2): each sample's row, moved half against plain half
    if (change[1:] > LEAK * change.max()).any():  # only sample 0 may move (or none: cannot tell)
        return f"the LoRA layer {name} does not see one row per sample"
    return ""


def _probe_inputs(x, sigma, cond):
    """`[x; x]` with sample 0 of the second half changed: its latents and its float conditioning (not its noise
    level, which stays one the model is called at)."""
    rows = x.shape[0]
    both = torch.arange(rows, device=x.device).repeat(2)
    doubled = x[both]  # a copy: indexing with a tensor
    doubled[rows] += 1.0
    return doubled, sigma[both] if sigma.dim() else sigma, _moved_row(select_conditioning(cond, both), rows, 2 * rows)


def _moved_row(cond, row: int, rows: int):
    """`cond` with row `row` of every float tensor of `rows` rows moved."""
    moved = {}
    for key, value in cond.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() and value.shape[0] == rows:
            value = value.clone()
            value[row] += 0.5
        elif isinstance(value, dict):
            value = _moved_row(value, row, rows)
        moved[key] = value
    return moved
