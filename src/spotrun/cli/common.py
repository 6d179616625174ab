"""Output conventions shared by every command: Rich for people, `--json` for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer
from rich.console import Console

def _console(stderr: bool = False) -> Console:
    """Rich, but never hard-wrapping a line that is not going to a terminal: a pipe or a log
    file gets each error and path on one line, whatever width Rich assumes (80 without COLUMNS)."""
    made = Console(stderr=stderr)
    made.soft_wrap = not made.is_terminal
    return made


console = _console()
err_console = _console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop with a message that says what went wrong and what to do; never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def duration_arg(text: str) -> float:
    from spotrun.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
