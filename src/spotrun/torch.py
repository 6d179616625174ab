"""`from spotrun.torch import Checkpointer`: async, bit-exact checkpoints for PyTorch loops."""

from spotrun.sdk.torch_checkpointer import Checkpointer, ResumePoint, rng_state, set_rng_state

__all__ = ["Checkpointer", "ResumePoint", "rng_state", "set_rng_state"]
