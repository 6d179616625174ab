"""Command-line interface: one module per part, all attached to one Typer app.

Modules import their heavy dependencies inside the command functions so that `spotrun exec`
starts fast on a fresh instance.
"""

from spotrun.cli import agent, check, ckpt, dashboard, demo, emulate, jobs, market, outputs  # noqa: F401  (registers commands)
from spotrun.cli.app import app


def main() -> None:
    app()
