"""The policies by name. `optimum` is a bound computed from the whole trace, not an online policy."""

from __future__ import annotations

from typing import Callable

from spotrun.market.policies.adaptive import Adaptive
from spotrun.market.policies.greedy import Greedy
from spotrun.market.policies.on_demand import OnDemand
from spotrun.market.policies.optimum import NAME as OPTIMUM
from spotrun.market.policies.uniform_progress import UniformProgress
from spotrun.market.policy import Policy

ONLINE: dict[str, Callable[[], Policy]] = {
    "on-demand": OnDemand,
    "greedy": Greedy,
    "up": UniformProgress,
    "adaptive": Adaptive,
}
ALL = [*ONLINE, OPTIMUM]


def make(name: str) -> Policy:
    try:
        return ONLINE[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(ALL)}") from None
