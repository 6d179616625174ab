"""`spotrun check`: does a training script really survive reclaims? Run it and find out.

The script runs once without interruption, then again with reclaims at random points of its
work, each time through the real agent, a local cloud emulator and the checkpoint store, on a
fresh scratch copy of its working directory (a new machine's disk). The evidence is compared
and turned into a verdict with advice.
"""

from spotrun.check.runner import CheckConfig, run_check
from spotrun.check.verdict import Verdict, judge

__all__ = ["CheckConfig", "Verdict", "judge", "run_check"]
