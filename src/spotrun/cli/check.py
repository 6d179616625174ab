"""`spotrun` commands: check."""

from spotrun.cli.app import app  # noqa: F401
