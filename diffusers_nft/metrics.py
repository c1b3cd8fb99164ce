"""The names of the logged metrics, in one place: the trainer builds them, the card and the plots read them.

    reward/<name>/{mean,std,min,max}   the iteration's samples, per reward and for the weighted "total"
    eval/<name>/mean                   the held-out evaluation on eval_dataset
    loss/{total,policy,kl}             the objective's loss terms, averaged over the iteration's micro-steps
    time/{sampling,reward,training,iteration}
    monitor/{brightness,saturation,diversity,velocity_norm_ratio,kl}   drift monitors (see `monitors`)
"""

from typing import Dict, List

TOTAL = "total"  # the weighted sum of the rewards
REWARD_STATS = ("mean", "std", "min", "max")


def reward_key(name: str, stat: str = "mean") -> str:
    """`reward/<name>/<stat>`."""
    return f"reward/{name}/{stat}"


def eval_key(name: str) -> str:
    """`eval/<name>/mean`: the held-out evaluation of reward `name`."""
    return f"eval/{name}/mean"


def loss_key(part: str) -> str:
    """`loss/<part>`: `total`, `policy` or `kl`."""
    return f"loss/{part}"


def time_key(part: str) -> str:
    """`time/<part>`, in seconds per iteration."""
    return f"time/{part}"


def monitor_key(name: str) -> str:
    """`monitor/<name>`: a drift monitor of `diffusers_nft.monitors`."""
    return f"monitor/{name}"


def eval_names(metrics: Dict[str, float]) -> List[str]:
    """The judges a metrics row has an `eval/<name>/mean` for, in its order."""
    prefix, suffix = "eval/", "/mean"
    return [k[len(prefix) : -len(suffix)] for k in metrics if k.startswith(prefix) and k.endswith(suffix)]


def reward_names(metrics: Dict[str, float]) -> List[str]:
    """The rewards a metrics row has a mean for, in its order: each reward, extras such as `geneval/strict`, the
    total."""
    prefix, suffix = "reward/", "/mean"
    return [k[len(prefix) : -len(suffix)] for k in metrics if k.startswith(prefix) and k.endswith(suffix)]


def reward_stats(name: str, values) -> Dict[str, float]:
    """The four `reward/<name>/*` values of a tensor of per-image rewards."""
    values = values.double()
    return {reward_key(name, "mean"): values.mean().item(), reward_key(name, "std"): values.std(unbiased=False).item(),
            reward_key(name, "min"): values.min().item(), reward_key(name, "max"): values.max().item()}
