"""Decay schedules of the old policy and of the EMA. Pure functions of the optimizer step."""

OLD_POLICY_DECAYS = ("linear", "delayed", "constant")


def old_policy_decay(step: int, schedule: str = "linear", constant: float = 0.0) -> float:
    """Decay `eta` of the soft update `old <- eta * old + (1 - eta) * theta`.

    Args:
        step: Number of optimizer steps taken so far.
        schedule: `"linear"`: `min(0.001 * step, 0.5)` (the release default); `"delayed"`: 0 for the first 75
            steps, then `min(0.0075 * (step - 75), 0.999)` (the release's OCR runs); `"constant"`: `constant`.
        constant: The value of the `"constant"` schedule, in [0, 1).

    Returns:
        `eta` in [0, 1).
    """
    if schedule == "linear":
        return min(0.001 * step, 0.5)
    if schedule == "delayed":
        return 0.0 if step < 75 else min(0.0075 * (step - 75), 0.999)
    if schedule == "constant":
        return constant
    raise ValueError(f"old_policy_decay must be one of {OLD_POLICY_DECAYS}, got {schedule!r}.")


def ema_decay(step: int, max_decay: float = 0.9) -> float:
    """Decay of the evaluation EMA of theta: `min((1 + step) / (10 + step), max_decay)`."""
    return min((1 + step) / (10 + step), max_decay)
