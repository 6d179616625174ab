"""spotrun: run ML jobs on spot capacity without losing work when the cloud takes the machine back.

The SDK a training script uses lives here; everything works with or without the agent.
"""

__version__ = "0.1.0"
