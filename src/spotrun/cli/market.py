"""`spotrun` commands: market."""

from spotrun.cli.app import app  # noqa: F401
