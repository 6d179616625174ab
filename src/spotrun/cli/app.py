"""The `spotrun` Typer application that every command module attaches to."""

import typer

app = typer.Typer(
    name="spotrun",
    help=(
        "Run training, sweeps and batch jobs on spot capacity without losing work.\n\n"
        "Start with `spotrun demo` to watch a job survive reclaims on your laptop."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from spotrun import __version__

        typer.echo(f"spotrun {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass
