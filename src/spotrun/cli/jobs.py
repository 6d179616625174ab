"""`spotrun` commands: jobs."""

from spotrun.cli.app import app  # noqa: F401
