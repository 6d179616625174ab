"""`spotrun` commands: agent."""

from spotrun.cli.app import app  # noqa: F401
