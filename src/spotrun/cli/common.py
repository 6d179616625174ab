"""Output conventions shared by every command: Rich for people, `--json` for scripts."""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

# Width of tables in a pipe or log file when COLUMNS is unset: Rich would assume 80 and cut
# the headers and cells of wider tables (`spotrun jobs`, the demo's) to "…".
PIPE_WIDTH = 200


def _console(stderr: bool = False) -> Console:
    """Rich, but never hard-wrapping a line or cutting a table that is not going to a terminal:
    a pipe or a log file gets each error and path on one line and every table whole."""
    made = Console(stderr=stderr)
    if not made.is_terminal:
        made.soft_wrap = True
        if "COLUMNS" not in os.environ:
            made.width = PIPE_WIDTH
    return made


console = _console()
err_console = _console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = 2) -> NoReturn:
    """Stop with a message that says what went wrong and what to do; never a traceback."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])
_CTX = "_spotrun_ctx"


def needs(extra: str) -> Callable[[F], F]:
    """Mark a command as needing an optional part of spotrun (`spotrun.extras`): without it the
    command stops with one line naming the pip command, as it does when a provider it reaches
    later (the aws one) turns out to miss its extra."""

    def mark(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            from spotrun.extras import MissingExtra

            require_extra(extra, _command_name(kwargs.pop(_CTX)))
            try:
                return command(*args, **kwargs)
            except MissingExtra as exc:
                fail(escape(str(exc)))

        # Typer hands the context to a parameter typed `typer.Context`: one more, hidden from the command.
        sig = inspect.signature(command)
        ctx = inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)
        run.__signature__ = sig.replace(parameters=[*sig.parameters.values(), ctx])  # type: ignore[attr-defined]
        run.__annotations__ = {**command.__annotations__, _CTX: typer.Context}
        return run  # type: ignore[return-value]

    return mark


def require_extra(extra: str, what: str) -> None:
    """Stop with one line when `what` (a command, or one of its options) needs a missing extra."""
    from spotrun.extras import MissingExtra, require

    try:
        require(extra, what)
    except MissingExtra as exc:
        fail(escape(str(exc)))


def _command_name(ctx: typer.Context) -> str:
    """`spotrun controller start`, however the program was started (`python -m spotrun`, a venv path)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(["spotrun", *reversed(names)])


def duration_arg(text: str) -> float:
    from spotrun.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
