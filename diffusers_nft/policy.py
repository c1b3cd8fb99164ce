"""The three policies of NFT on one transformer, with PEFT LoRA, and the weights a run publishes.

- `"default"`: the trainable LoRA adapter, v_theta.
- `"old"`: a second LoRA adapter that collects data, v_old; it starts as a copy of theta and follows it by a soft
  update once per iteration.
- `"reference"`: the frozen base model, every adapter disabled.

An EMA of theta, kept in float32 beside the model, is used for evaluation and for the saved LoRA. The old
adapter's weights are kept in float32 beside the model too, and copied into it after each soft update: under
DeepSpeed with bf16 the engine casts every weight of the model to bf16, where an update of `(1 - decay)` times a
small difference would round away.

Under FSDP2 every LoRA tensor is sharded alike (a `DTensor`), so the soft update and the EMA run on each process's
slice; `state_dict` gathers whole tensors and `load_state_dict` slices them again.

Outside this module the weights have public names (`WEIGHTS`): `"trained"`, `"old"`, `"ema"` and `"base"`. After
training (`finish`), the transformer keeps one adapter, `"default"`, holding the published weights, active.
"""

import re
import warnings
from contextlib import contextmanager
from functools import partial
from typing import Dict, Iterator, List, Optional, Sequence

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer

from .sharding import full_tensor, shard_like

TRAINED, OLD, REFERENCE = "default", "old", "reference"  # PEFT's adapter names, and no adapter
MIXED_BATCH_BASE = "__base__"  # PEFT's name, in a mixed adapter batch, for the rows that take no adapter
# The weights a user can generate with, by their public names (`NFTPolicy.weights`).
WEIGHTS = ("ema", "trained", "old", "base")


def matching_modules(model: torch.nn.Module, targets: Sequence[str]) -> List[str]:
    """Names of the linear modules that PEFT's suffix matching would pick for `targets`."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]


def make_lora_config(
    transformer: torch.nn.Module,
    targets: Optional[Sequence[str]] = None,
    default_targets: Sequence[str] = (),
    rank: int = 32,
    alpha: float = 64,
    init: str = "gaussian",
) -> LoraConfig:
    """The LoRA of an NFT run (release: rank 32, alpha 64, gaussian init).

    Args:
        transformer: The transformer to adapt.
        targets: Module-name suffixes chosen by the user, such as `"attn.to_q"`; each must match a linear module.
        default_targets: The family's defaults, used when `targets` is empty; those this model lacks are dropped,
            so one list covers SD3 and SD3.5 (only SD3.5 has `attn2`).
        rank: LoRA rank.
        alpha: LoRA alpha.
        init: PEFT `init_lora_weights`.

    Raises:
        ValueError: If a chosen target (or every default target) matches no linear module.
    """
    if targets:
        targets = list(targets)
    else:
        targets = [t for t in default_targets if matching_modules(transformer, [t])] or list(default_targets)
        targets = _linear_only(transformer, targets)
    check_lora_targets(transformer, targets)
    check_lora_shape(rank, alpha)
    return LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=init, target_modules=targets)


def _linear_only(transformer: torch.nn.Module, targets: Sequence[str]) -> List[str]:
    """Targets with each suffix that also names a non-linear module replaced by the linear modules' full names.

    PEFT matches suffixes on every module: FLUX.2's `attn.to_out` is a linear layer in its single-stream blocks
    but a `ModuleList` in its double-stream blocks, which PEFT refuses.
    """
    names = [name for name, _ in transformer.named_modules()]
    expanded = []
    for target in targets:
        matched = [n for n in names if n == target or n.endswith("." + target)]
        linear = matching_modules(transformer, [target])
        expanded += [target] if len(matched) == len(linear) else linear
    return expanded


def check_lora_shape(rank: int, alpha: float) -> None:
    """Raise `ValueError` for a LoRA rank below 1 or an alpha that is not a positive finite number."""
    if not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"LoRA rank must be an integer >= 1 (got {rank}); the release uses 32.")
    if not (0 < alpha < float("inf")):
        raise ValueError(f"lora_alpha must be a finite number > 0 (got {alpha}); the release uses 64.")


def check_lora_targets(transformer: torch.nn.Module, targets) -> None:
    """Raise a clear error if a LoRA target (a suffix, or a PEFT regex string) matches no linear module."""
    linear = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]
    if isinstance(targets, str):
        unmatched = [] if any(re.fullmatch(targets, n) for n in linear) else [targets]
    else:
        unmatched = [t for t in targets if not matching_modules(transformer, [t])]
    if unmatched or not targets:
        raise ValueError(
            f"LoRA target(s) {unmatched or targets} match no linear module of {type(transformer).__name__}. "
            f"Targets are module-name suffixes; this model has modules such as {linear[:6]}."
        )
    for target in [] if isinstance(targets, str) else targets:  # PEFT would fail on those, deep inside
        others = [n for n, m in transformer.named_modules() if (n == target or n.endswith("." + target))
                  and not isinstance(m, torch.nn.Linear)]
        if others:
            raise ValueError(
                f"LoRA target {target!r} also names {len(others)} module(s) that are not linear layers (such as "
                f"{others[0]!r}); name linear layers only, such as {matching_modules(transformer, [target])[:2]}."
            )


def _with_adapter_names(names, module, args, kwargs):
    """A forward pre-hook handing a LoRA layer the adapter of each row (as PEFT's `PeftModel` does)."""
    return args, {**kwargs, "adapter_names": names}


def _canonical(name: str, adapter: str) -> str:
    return name.replace(f".{adapter}.", ".")


class NFTPolicy:
    """Trainable, old and reference policies on one transformer, plus an EMA of the trainable one.

    Args:
        transformer: A diffusers transformer (a `PeftAdapterMixin` model). Its base weights are frozen.
        lora_config: The LoRA of both adapters.
    """

    def __init__(self, transformer: torch.nn.Module, lora_config: LoraConfig):
        check_lora_targets(transformer, lora_config.target_modules)
        transformer.requires_grad_(False)
        transformer.add_adapter(lora_config, adapter_name=TRAINED)
        with warnings.catch_warnings():  # PEFT warns about a second adapter; two are the point here.
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            transformer.add_adapter(lora_config, adapter_name=OLD)
        self.transformer = transformer
        self.lora_config = lora_config
        self._layers = [m for m in transformer.modules() if isinstance(m, BaseTunerLayer)]
        self._params = {adapter: self._adapter_params(adapter) for adapter in (TRAINED, OLD)}
        if self._params[TRAINED].keys() != self._params[OLD].keys():
            raise RuntimeError("The 'default' and 'old' adapters do not have the same tensors.")
        self.use(TRAINED)
        for p in self.trainable_parameters():
            p.data = p.data.float()  # LoRA in fp32 even when the base model is in half precision
        self.old = {name: p.detach().float().clone() for name, p in self._params[TRAINED].items()}
        self.ema = {name: p.detach().float().clone() for name, p in self._params[TRAINED].items()}
        self._write_old()
        self.published: Optional[str] = None  # after `finish`: "ema" or "trained", what the default adapter holds
        self._raw: Dict[str, torch.Tensor] = {}  # after `finish`: theta's own weights

    def bind(self) -> None:
        """Find the LoRA tensors again after the transformer was wrapped for training.

        `accelerator.prepare` under FSDP2 replaces every parameter with a sharded one; the policy must then update
        those, not the tensors it held before. The EMA is sliced the same way. Without sharding nothing changes.
        """
        params = {adapter: self._adapter_params(adapter) for adapter in (TRAINED, OLD)}
        if params[TRAINED].keys() != self._params[TRAINED].keys():
            raise RuntimeError(
                "Wrapping the transformer renamed its LoRA parameters. Use FSDP version 2 (fully_shard), DDP or "
                "DeepSpeed ZeRO-2; FSDP version 1 is not supported."
            )
        self._params = params
        self.old = {name: shard_like(self.old[name], p, torch.float32) for name, p in params[OLD].items()}
        self.ema = {name: shard_like(self.ema[name], p, torch.float32) for name, p in params[TRAINED].items()}

    def _adapter_params(self, adapter: str) -> Dict[str, torch.nn.Parameter]:
        return {
            _canonical(name, adapter): p
            for name, p in self.transformer.named_parameters()
            if f".{adapter}." in name and "lora_" in name
        }

    def trainable_parameters(self) -> List[torch.nn.Parameter]:
        return list(self._params[TRAINED].values())

    def use(self, policy: str) -> None:
        """Route the transformer's forward through `"default"`, `"old"` or `"reference"` (no adapter)."""
        for layer in self._layers:
            if policy == REFERENCE:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(policy)
        # PEFT's switch also flips `requires_grad`; keep it fixed (theta trains, old never does). FSDP2 fixes its
        # gradient dtypes at the first forward, and the first forward runs with the old policy.
        for adapter, trains in ((TRAINED, True), (OLD, False)):
            for p in self._params[adapter].values():
                p.requires_grad_(trains)

    @property
    def lora_layers(self) -> Dict[str, torch.nn.Module]:
        """The transformer's LoRA layers by module name."""
        return {name: m for name, m in self.transformer.named_modules() if isinstance(m, BaseTunerLayer)}

    @contextmanager
    def mixed(self, policies: Sequence[str]) -> Iterator[None]:
        """Inside the block, row `i` of each forward's batch goes through `policies[i]`, `"old"` or `"reference"`
        (PEFT's mixed adapter batches); `frozen_pair.OldAndReference` checks once that the rows map to samples."""
        names = [MIXED_BATCH_BASE if p == REFERENCE else p for p in policies]
        hooks = [layer.register_forward_pre_hook(partial(_with_adapter_names, names), with_kwargs=True)
                 for layer in self._layers]
        try:
            with self.using(OLD):  # adapters on; each row takes its own
                yield
        finally:
            for hook in hooks:
                hook.remove()

    @contextmanager
    def using(self, policy: str) -> Iterator[None]:
        """Use `policy` inside the block, then return to the trainable policy."""
        self.use(policy)
        try:
            yield
        finally:
            self.use(TRAINED)

    @torch.no_grad()
    def update_old(self, decay: float) -> None:
        """Soft update `old <- decay * old + (1 - decay) * theta` (in float32, then into the old adapter)."""
        for name, theta in self._params[TRAINED].items():
            self.old[name].mul_(decay).add_(theta.detach().float(), alpha=1 - decay)
        self._write_old()

    @torch.no_grad()
    def _write_old(self) -> None:
        for name, p in self._params[OLD].items():
            p.copy_(self.old[name])

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """`ema <- decay * ema + (1 - decay) * theta`."""
        for name, theta in self._params[TRAINED].items():
            ema = self.ema[name]
            ema.mul_(decay).add_(theta.detach().to(ema.device, ema.dtype), alpha=1 - decay)

    def state_dict(self, which: str) -> Dict[str, torch.Tensor]:
        """LoRA tensors of `"trained"` (also `"default"`), `"old"` or `"ema"`, keyed like `get_peft_model_state_dict`,
        on the CPU."""
        source = self._source(which)
        return {name: full_tensor(t.detach()).cpu().clone().contiguous() for name, t in source.items()}

    @torch.no_grad()
    def load_state_dict(self, which: str, tensors: Dict[str, torch.Tensor]) -> None:
        """Load tensors written by `state_dict(which)`."""
        target = self._source(which)
        if tensors.keys() != target.keys():
            missing, extra = target.keys() - tensors.keys(), tensors.keys() - target.keys()
            raise ValueError(
                f"LoRA tensors for {which!r} do not match this model: {len(missing)} missing "
                f"(e.g. {sorted(missing)[:2]}), {len(extra)} unexpected (e.g. {sorted(extra)[:2]}). "
                "Was the checkpoint written with another model or LoRA config?"
            )
        shapes = {n: (tuple(t.shape), tuple(full_tensor(target[n]).shape)) for n, t in tensors.items()}
        wrong = {n: pair for n, pair in shapes.items() if pair[0] != pair[1]}
        if wrong:
            name, (saved, here) = sorted(wrong.items())[0]
            raise ValueError(
                f"LoRA tensors for {which!r} have other shapes than this model's: {name} is {saved} in the checkpoint "
                f"and {here} here. The LoRA rank differs (checkpoint {min(saved)}, this run {min(here)}): resume "
                f"with --rank {min(saved)}."
            )
        for name, tensor in tensors.items():
            target[name].copy_(shard_like(tensor, target[name]))
        if which == OLD:
            self._write_old()

    def _source(self, which: str) -> Dict[str, torch.Tensor]:
        """Where `which` is kept: theta in the model, the old adapter and the EMA in their float32 copies."""
        theta = self._raw if self.published == "ema" else self._params[TRAINED]
        return {TRAINED: theta, "trained": theta, OLD: self.old, "ema": self.ema}[which]

    @contextmanager
    def ema_weights(self, enabled: bool = True) -> Iterator[None]:
        """Temporarily put the EMA weights into the trainable adapter (for evaluation)."""
        with self._holding(self.ema if enabled else None):
            yield

    @contextmanager
    def _holding(self, tensors: Optional[Dict[str, torch.Tensor]]) -> Iterator[None]:
        """The trainable adapter holds `tensors` inside the block (None: as it is), then its own weights again."""
        if tensors is None:
            yield
            return
        theta = self._params[TRAINED]
        with torch.no_grad():
            backup = {name: p.detach().clone() for name, p in theta.items()}
            for name, p in theta.items():
                p.copy_(tensors[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in theta.items():
                    p.copy_(backup[name])

    @contextmanager
    def weights(self, name: str) -> Iterator[None]:
        """The transformer computes with the weights `name` (one of `WEIGHTS`) inside the block: `"trained"`
        (theta), `"old"` (the data-collection policy), `"ema"` (theta's EMA) or `"base"` (no LoRA).

        Raises:
            ValueError: For another name.
        """
        if name not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS} (got {name!r}).")
        if name == "base":
            with self.using(REFERENCE):
                yield
        elif self.published is None and name == OLD:
            with self.using(OLD):
                yield
        elif self.published is None:
            with self._holding(self.ema if name == "ema" else None), self.using(TRAINED):
                yield
        else:  # one adapter left, holding the published weights: the others visit it
            held = {"ema": self.ema, OLD: self.old, "trained": self._raw}[name]
            with self._holding(None if name == self.published else held), self.using(TRAINED):
                yield

    @torch.no_grad()
    def finish(self, published: str) -> None:
        """End of training: the trainable adapter holds the published weights (`"ema"` or `"trained"`) and stays
        active, and the old adapter is removed, so the pipeline is the trained model with one LoRA adapter.
        `weights()`, `state_dict()` and `ema_weights()` keep working; `resume()` undoes it to train on."""
        if self.published is not None:
            return
        self._raw = {name: p.detach().float().clone() for name, p in self._params[TRAINED].items()}
        if published == "ema":
            for name, p in self._params[TRAINED].items():
                p.copy_(self.ema[name])
        for layer in self._layers:
            layer.delete_adapter(OLD)
        for module in self.transformer.modules():
            if isinstance(getattr(module, "peft_config", None), dict):
                module.peft_config.pop(OLD, None)
        self._params[OLD] = {}
        self.published = published
        self.use(TRAINED)

    @torch.no_grad()
    def resume(self) -> None:
        """Undo `finish` to train on: the old adapter again, and theta's own weights back in the trainable one."""
        if self.published is None:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            self.transformer.add_adapter(self.lora_config, adapter_name=OLD)
        self._layers = [m for m in self.transformer.modules() if isinstance(m, BaseTunerLayer)]
        self._params[OLD] = self._adapter_params(OLD)
        for name, p in self._params[TRAINED].items():
            p.copy_(self._raw[name])
        self._write_old()
        self.published, self._raw = None, {}
        self.use(TRAINED)

    @torch.no_grad()
    def deviation(self) -> float:
        """L2 norm of the difference between the trainable and old LoRA tensors."""
        total = sum(full_tensor(((t.float() - self._params[OLD][n].float()) ** 2).sum())
                    for n, t in self._params[TRAINED].items())
        return float(total) ** 0.5 if self._params[TRAINED] else 0.0
