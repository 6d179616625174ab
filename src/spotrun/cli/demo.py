"""`spotrun` commands: demo."""

from spotrun.cli.app import app  # noqa: F401
