"""`spotrun check`: the reclaim-readiness test for a training script."""

from __future__ import annotations

from pathlib import Path

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, fail, needs, print_json

CHECK_HELP = """Prove that COMMAND survives spot reclaims: run it once uninterrupted, then again with --reclaims reclaims at random points, and compare.

Each attempt runs under the real agent (`spotrun exec`) with a local AWS metadata emulator, on a fresh copy of --workdir (a new machine's disk), with the checkpoint store in between. The verdict says whether the script heard each notice, resumed from its checkpoint or started over, how much work each reclaim lost, whether it finished, and whether its declared --output files match the uninterrupted run's. Exit status: 0 pass, 1 fail, 2 the check could not run.

Scripts make the evidence precise by calling spotrun.report_progress(step); printing 'step N' lines works too.

Examples:

  spotrun check --output result.json -- python examples/train.py --output result.json

  spotrun check --reclaims 3 --seed 7 --output result.json -- python train.py

  spotrun check --json --tolerance 1e-6 --output metrics.json -- python train.py
"""


@app.command("check", help=CHECK_HELP, context_settings={"allow_interspersed_args": False}, no_args_is_help=True)
@needs("emulate")
def check(
    command: list[str] = typer.Argument(..., metavar="COMMAND", help="The training command, after `--`."),
    reclaims: int = typer.Option(2, "--reclaims", "-k", min=1, help="How many reclaims to inflict."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for the reclaim points (same seed, same points)."),
    outputs: list[str] = typer.Option([], "--output", "-o", help="A file the script writes (relative to --workdir) to compare with the uninterrupted run; repeatable."),
    workdir: Path = typer.Option(Path("."), "--workdir", help="The job's directory, copied fresh for every attempt."),
    tolerance: float = typer.Option(0.0, "--tolerance", min=0.0, help="Relative tolerance for numbers in JSON outputs (for nondeterministic scripts)."),
    compare: bool = typer.Option(True, "--compare-outputs/--no-compare-outputs", help="Compare declared outputs (off for scripts whose output varies run to run)."),
    lead_time: float = typer.Option(10.0, "--lead-time", parser=duration_arg, help="Warning each reclaim gives before the kill (real clouds: 30s-2m)."),
    signal_name: str = typer.Option("SIGTERM", "--signal", help="The signal the agent sends on a notice."),
    timeout: float | None = typer.Option(None, "--timeout", parser=duration_arg, help="Per attempt (default: 3x the uninterrupted run)."),
    json_out: bool = JSON_OPTION,
) -> None:
    import asyncio

    from spotrun.check import CheckConfig, judge, run_check
    from spotrun.check.runner import CheckError

    config = CheckConfig(
        command=command, reclaims=reclaims, seed=seed, workdir=workdir.resolve(), outputs=outputs,
        compare_outputs=compare, tolerance=tolerance, lead_time=lead_time, signal=signal_name, timeout=timeout,
    )
    report = (lambda _m: None) if json_out else (lambda m: console.print(f"[dim]check:[/] {m}"))
    try:
        baseline, attempts, root = asyncio.run(run_check(config, report))
    except CheckError as exc:
        fail(str(exc))
    verdict = judge(config, baseline, attempts)
    verdict.workdir = str(root)
    if json_out:
        print_json(verdict.to_dict())
    else:
        _show(verdict)
    raise typer.Exit(0 if verdict.passed else 1)


def _show(verdict) -> None:
    from rich.table import Table

    if verdict.reclaims:
        table = Table(title="Reclaims")
        for col in ("#", "attempt", "at step", "heard notice", "resumed from", "steps lost", "work lost"):
            table.add_column(col, justify="right")
        for r in verdict.reclaims:
            table.add_row(
                str(r.number), str(r.attempt), _s(r.at_step), "yes" if r.saw_notice else "[red]no[/]",
                _s(r.resumed_from), _s(r.lost_steps), "-" if r.lost_seconds is None else f"{r.lost_seconds:.1f}s",
            )
        console.print(table)
    console.print(
        f"uninterrupted: {verdict.baseline_seconds:.1f}s; with reclaims: {verdict.interrupted_seconds:.1f}s "
        f"over {verdict.attempts} attempt(s); finished: {'yes' if verdict.finished else 'no'}"
    )
    for f in verdict.findings:
        colour = "red" if f.level == "fail" else "yellow"
        console.print(f"[{colour}]{f.level}:[/] {f.message}")
        if f.advice:
            console.print(f"  [bold]→[/] {f.advice}")
    console.print("[bold green]PASS[/]: the script survives reclaims" if verdict.passed else "[bold red]FAIL[/]")
    console.print(f"[dim]logs and outputs: {verdict.workdir}[/]")


def _s(value) -> str:
    return "-" if value is None else str(value)
