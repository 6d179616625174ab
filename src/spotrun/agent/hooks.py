"""What other parts (the checkpoint store, outputs) plug into the supervisor.

The supervisor owns the child process and the notice; a hook owns one kind of durable state.
Keeping this interface tiny lets the store be tested without the supervisor and vice versa.
A hook that reports to a controller may also have `async command_ended(returncode)`: called
the moment the command ends, before `after_exit` (the status record's early word).
"""

from __future__ import annotations

from typing import Protocol

from spotrun.notices.base import Notice


class AgentHook(Protocol):
    async def before_start(self, env: dict[str, str]) -> None:
        """Prepare the job's state before the command starts (restore); may add to `env`."""

    async def while_running(self) -> None:
        """Background work for the command's lifetime (periodic sync); cancelled at the end."""

    async def on_notice(self, notice: Notice, budget_s: float | None) -> None:
        """Make everything durable within `budget_s` seconds (None: no deadline known)."""

    async def after_exit(self, returncode: int) -> None:
        """Final sync once the command has exited, whatever the reason."""
