"""The local provider: spot instances as process groups on this machine, with a spot market."""

from spotrun.providers.local.market import MarketConfig
from spotrun.providers.local.provider import LocalProvider

__all__ = ["LocalProvider", "MarketConfig"]
