"""`spotrun` commands: ckpt."""

from spotrun.cli.app import app  # noqa: F401
