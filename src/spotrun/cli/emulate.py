"""`spotrun` commands: emulate."""

from spotrun.cli.app import app  # noqa: F401
