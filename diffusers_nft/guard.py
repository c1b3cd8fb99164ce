"""A guard against reward hacking, as a callback: it watches a held-out judge and the drift monitors.

    trainer = NFTTrainer(pipe, "pickscore", args, train_prompts, eval_dataset=held_out,
                         eval_reward_funcs=["clipscore"], callbacks=[HackingGuard(judge="clipscore")])

Rules (each fires once, the first time it holds):

- `judge_drop`: the held-out judge has fallen by this much from its best while the training reward has risen
  above its value at that best;
- `diversity_floor`: within-group diversity is below this fraction of its first value;
- `brightness_drift`: mean brightness has moved by more than this from its first value.

Actions: `warn` logs the rule; `save_best` keeps `best/pytorch_lora_weights.safetensors`, the LoRA at the judge's
best evaluation, with `best/best.json` (the iteration, the value); `stop` ends training when a rule fires. The
model card says which LoRA is which.
"""

import json
import logging
import os
from typing import Dict, List, Optional, Sequence

from .callbacks import NFTCallback
from .metrics import TOTAL, eval_key, eval_names, monitor_key, reward_key

logger = logging.getLogger(__name__)

GUARD_ACTIONS = ("warn", "save_best", "stop")
BEST_FOLDER = "best"


class HackingGuard(NFTCallback):
    """Watch a held-out judge and the drift monitors; warn, keep the best LoRA, or stop.

    Args:
        judge: The evaluation reward to watch (its `eval/<judge>/mean`); default: the first one logged.
        judge_drop: The fall of the judge from its best that fires the rule (with the training reward risen).
        diversity_floor: Fires when `monitor/diversity` is below this fraction of its first value.
        brightness_drift: Fires when `monitor/brightness` has moved this far from its first value.
        actions: Any of `GUARD_ACTIONS`; default: warn and save_best.
    """

    def __init__(self, judge: Optional[str] = None, judge_drop: float = 0.05, diversity_floor: float = 0.5,
                 brightness_drift: float = 0.15, actions: Sequence[str] = ("warn", "save_best")):
        unknown = [a for a in actions if a not in GUARD_ACTIONS]
        if unknown:
            raise ValueError(f"Unknown guard actions {unknown}; choose from {GUARD_ACTIONS}.")
        self.judge, self.judge_drop = judge, judge_drop
        self.diversity_floor, self.brightness_drift = diversity_floor, brightness_drift
        self.actions = tuple(actions)
        self.best: Optional[Dict[str, float]] = None  # step, judge value, training reward then
        self.first: Dict[str, float] = {}
        self.events: List[Dict[str, object]] = []

    def on_log(self, args, state, control, logs=None, trainer=None, **kwargs):
        logs = logs or {}
        for name in ("diversity", "brightness"):
            if monitor_key(name) in logs:
                self.first.setdefault(name, logs[monitor_key(name)])
        judge = self._judge_value(logs)
        if judge is not None and (self.best is None or judge > self.best["value"]):
            self.best = {"step": logs.get("step", state.global_step), "value": judge,
                         "reward": logs.get(reward_key(TOTAL), float("nan"))}
            if "save_best" in self.actions and trainer is not None:
                self._save_best(trainer)
        for rule, message in self.check(logs, judge):
            self._fire(rule, message, logs.get("step", state.global_step), control)

    def _judge_value(self, logs: Dict[str, float]) -> Optional[float]:
        if self.judge is None:
            names = eval_names(logs)
            if not names:
                return None
            self.judge = names[0]
        return logs.get(eval_key(self.judge))

    def check(self, logs: Dict[str, float], judge: Optional[float]):
        """The rules that hold for these metrics and have not fired yet: `(rule, message)` pairs."""
        fired = {event["rule"] for event in self.events}
        reward = logs.get(reward_key(TOTAL))
        if judge is not None and self.best and "judge_drop" not in fired and reward is not None:
            if self.best["value"] - judge >= self.judge_drop and reward > self.best["reward"]:
                yield "judge_drop", (f"held-out {self.judge} fell from {self.best['value']:.4g} (iteration "
                                     f"{self.best['step']}) to {judge:.4g} while the training reward rose from "
                                     f"{self.best['reward']:.4g} to {reward:.4g}")
        diversity, start = logs.get(monitor_key("diversity")), self.first.get("diversity")
        if diversity is not None and "diversity" not in fired and diversity < self.diversity_floor * start:
            yield "diversity", (f"within-group diversity {diversity:.4g} is below {self.diversity_floor:g} of its "
                                f"first value {start:.4g}")
        brightness, start = logs.get(monitor_key("brightness")), self.first.get("brightness")
        if brightness is not None and "brightness" not in fired and abs(brightness - start) > self.brightness_drift:
            yield "brightness", f"brightness moved from {start:.4g} to {brightness:.4g}"

    def _fire(self, rule: str, message: str, step: int, control) -> None:
        self.events.append({"rule": rule, "step": step, "message": message})
        if "warn" in self.actions:
            logger.warning("Reward-hacking guard, iteration %s: %s.", step, message)
        if "stop" in self.actions:
            logger.warning("Reward-hacking guard: stopping (rule %s).", rule)
            control.should_training_stop = True

    def _save_best(self, trainer) -> None:
        folder = os.path.join(trainer.args.output_dir, BEST_FOLDER)
        trainer.save_lora(folder)
        if trainer.accelerator.is_main_process:
            record = {"step": self.best["step"], "judge": self.judge, "value": self.best["value"],
                      "training_reward": self.best["reward"], "events": self.events}
            with open(os.path.join(folder, "best.json"), "w") as f:
                json.dump(record, f, indent=1)

    def on_train_end(self, args, state, control, trainer=None, **kwargs):
        """Write the events beside the best LoRA, so that the card can say what happened."""
        if "save_best" in self.actions and self.best and trainer is not None and trainer.accelerator.is_main_process:
            path = os.path.join(trainer.args.output_dir, BEST_FOLDER, "best.json")
            if os.path.isfile(path):
                with open(path) as f:
                    record = json.load(f)
                record["events"] = self.events
                with open(path, "w") as f:
                    json.dump(record, f, indent=1)
