"""Callbacks in the shape of transformers/TRL: `on_step_end(args, state, control, **kwargs)` and friends.

A callback is any object with some of these methods; `transformers.TrainerCallback` subclasses work as they are
(they define every method). Setting `control.should_training_stop = True` ends training after the current
iteration, with the final LoRA saved as usual.

    class StopWhenGood(NFTCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs["reward/total/mean"] > 0.9:
                control.should_training_stop = True

    NFTTrainer(pipe, rewards, args, prompts, callbacks=[StopWhenGood()])
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

EVENTS = ("on_train_begin", "on_step_end", "on_log", "on_evaluate", "on_save", "on_train_end")


@dataclass
class TrainerState:
    """What the loop has done: `global_step` counts NFT iterations; `log_history` has one metrics dict each.

    The rest is what transformers' own callbacks read: which process this is, and the best value so far of
    `metric_for_best_model` (`EarlyStoppingCallback` compares each evaluation with it).
    """

    global_step: int = 0
    max_steps: int = 0
    log_history: List[Dict[str, float]] = field(default_factory=list)
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    best_metric: Optional[float] = None
    best_global_step: Optional[int] = None


def evaluation_metrics(results: Dict[str, float]) -> Dict[str, float]:
    """`results` (`eval/<judge>/mean`) with transformers' names beside them (`eval_<judge>`), which
    `metric_for_best_model` and `EarlyStoppingCallback` look up."""
    aliases = {f"eval_{key[len('eval/'):-len('/mean')]}": value for key, value in results.items()
               if key.startswith("eval/") and key.endswith("/mean")}
    return {**results, **aliases}


def update_best_metric(state: TrainerState, args, metrics: Dict[str, float]) -> None:
    """After an evaluation (and its callbacks): `state.best_metric` follows `args.metric_for_best_model`."""
    name = getattr(args, "metric_for_best_model", None)
    if not name:
        return
    value = metrics.get(name if name.startswith("eval_") else f"eval_{name}")
    if value is None:
        return
    better = (lambda a, b: a > b) if args.greater_is_better else (lambda a, b: a < b)
    if state.best_metric is None or better(value, state.best_metric):
        state.best_metric, state.best_global_step = value, state.global_step


@dataclass
class TrainerControl:
    """What callbacks ask of the loop."""

    should_training_stop: bool = False


class NFTCallback:
    """Base class with every hook as a no-op; override the ones you need."""

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        pass

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After each NFT iteration; `metrics` holds the iteration's values."""

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        """When metrics are logged (every `logging_steps` iterations)."""

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        """After the held-out evaluation on `eval_dataset`."""

    def on_save(self, args, state: TrainerState, control: TrainerControl, checkpoint=None, **kwargs):
        """After a checkpoint folder was written."""

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        pass


class CallbackList:
    """Calls each callback's hook, in order; a callback without the hook is skipped."""

    def __init__(self, callbacks: Sequence = (), trainer=None):
        self.callbacks = [c() if isinstance(c, type) else c for c in callbacks]  # classes, as transformers allows
        self.trainer = trainer  # passed to every hook as `trainer=`, as transformers passes the model
        for callback in self.callbacks:
            if not any(callable(getattr(callback, event, None)) for event in EVENTS):
                raise TypeError(f"{type(callback).__name__} has none of the callback methods {EVENTS}.")

    def call(self, event: str, args, state: TrainerState, control: TrainerControl, **kwargs) -> TrainerControl:
        for callback in self.callbacks:
            hook = getattr(callback, event, None)
            if callable(hook):
                hook(args, state, control, trainer=self.trainer, **kwargs)
        return control
