"""spotrun: run ML jobs on spot capacity without losing work when the cloud takes the machine back.

The SDK a training script uses lives here; everything works with or without the agent.
"""

__version__ = "0.1.0"

from spotrun.sdk.atomic import atomic_write, save_atomic  # noqa: E402
from spotrun.sdk.notice import notice, on_notice, should_stop  # noqa: E402
from spotrun.sdk.checkpoint import attempt, checkpoint_dir, job_id, list_checkpoints, load_latest, save  # noqa: E402
from spotrun.sdk.events import report_progress  # noqa: E402


def __getattr__(name: str):
    """`spotrun.launch` / `spotrun.job` load the controller (SQLAlchemy, alembic) only when used,
    so `import spotrun` in a training script stays light."""
    if name in ("launch", "launch_sweep", "job", "JobHandle"):
        from spotrun.controller import api

        return getattr(api, name)
    raise AttributeError(f"module 'spotrun' has no attribute {name!r}")


__all__ = [
    "atomic_write", "save_atomic",
    "notice", "on_notice", "should_stop",
    "attempt", "checkpoint_dir", "job_id", "list_checkpoints", "load_latest", "save",
    "report_progress",
    "launch", "launch_sweep", "job", "JobHandle",
]
