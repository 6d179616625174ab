"""`spotrun check`: the reclaim-readiness test for a training script."""

from __future__ import annotations

from pathlib import Path

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, fail, needs, print_json

CHECK_HELP = """Prove that COMMAND survives spot reclaims: run it once uninterrupted, then again with --reclaims reclaims at random points, and compare.

Each attempt runs as on a new machine: under the real agent (`spotrun exec`) with a local AWS metadata emulator, on a fresh copy of --workdir, with its own $TMPDIR and $HOME and, where the kernel allows, a private mount namespace in which /tmp and fixed directories start empty; only what the checkpoint store holds carries over. The verdict says whether the script heard each notice, resumed from its checkpoint, from state a real next machine would not have, or started over, how much work each reclaim lost, whether it finished, and whether its declared --output files match the uninterrupted run's. Exit status: 0 pass, 1 fail, 2 the check could not run, 3 inconclusive (the evidence cannot tell; the advice says what to print).

Progress is read from spotrun.report_progress(step), 'step N' lines, {"step": N} or "global_step" JSON lines, tqdm bars (N/M), 'epoch N' lines, and Lightning's and Transformers' own checkpoints and "Restored" lines. Two checks can run side by side.

Examples:

  spotrun check --output result.json -- python examples/train.py --output result.json

  spotrun check --reclaims 3 --seed 7 --output result.json -- python train.py

  spotrun check --json --tolerance 1e-6 --output metrics.json -- python train.py

  spotrun check --checkpoint-dir /tmp/ckpt --signal none -o out.json -- python train.py   # a fixed path; the script polls the notice itself
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
    signal_name: str = typer.Option("SIGTERM", "--signal", help="The signal the agent sends on a notice, or `none` (the notice comes by $SPOTRUN_NOTICE_FILE and the metadata endpoint only)."),
    checkpoint_dir: str = typer.Option(".spotrun/checkpoints", "--checkpoint-dir", help="The directory the script keeps its checkpoints in, as `spotrun exec --checkpoint-dir` takes it: relative to --workdir, or a fixed absolute path."),
    outputs_dir: str | None = typer.Option(None, "--outputs-dir", help="As `spotrun exec --outputs-dir`: files written here are uploaded once each; earlier attempts' are under _previous/."),
    restart_dir: str | None = typer.Option(None, "--restart-dir", help="As `spotrun exec --restart-dir` (Valohai's `_restart`): earlier attempts' outputs, modification times kept."),
    isolation_mode: str = typer.Option("auto", "--isolation", help="auto: a private mount namespace where the kernel allows, else private $TMPDIR/$HOME only; namespace: require it; env: never (for a command that needs files under /tmp)."),
    timeout: float | None = typer.Option(None, "--timeout", parser=duration_arg, help="Per attempt (default: 3x the uninterrupted run)."),
    json_out: bool = JSON_OPTION,
) -> None:
    import asyncio

    from spotrun.check import CheckConfig, judge, run_check
    from spotrun.check.runner import EXIT_INCONCLUSIVE, CheckError

    config = CheckConfig(
        command=command, reclaims=reclaims, seed=seed, workdir=workdir.resolve(), outputs=outputs,
        compare_outputs=compare, tolerance=tolerance, lead_time=lead_time, signal=signal_name, timeout=timeout,
        checkpoint_dir=checkpoint_dir, outputs_dir=outputs_dir, restart_dir=restart_dir, isolation=isolation_mode,
    )
    report = (lambda _m: None) if json_out else (lambda m: console.print(f"[dim]check:[/] {m}"))
    try:
        baseline, attempts, session = asyncio.run(run_check(config, report))
    except CheckError as exc:
        fail(str(exc))
    verdict = judge(config, baseline, attempts)
    verdict.workdir, verdict.isolation = str(session.root), session.isolation_note
    if json_out:
        print_json(verdict.to_dict())
    else:
        _show(verdict)
    raise typer.Exit(0 if verdict.passed else EXIT_INCONCLUSIVE if verdict.inconclusive else 1)


def _show(verdict) -> None:
    from rich.table import Table

    if verdict.reclaims:
        table = Table(title="Reclaims")
        for col in ("#", "attempt", "at step", "heard notice", "resumed from", "steps lost", "work lost"):
            table.add_column(col, justify="right")
        for r in verdict.reclaims:
            table.add_row(
                str(r.number), str(r.attempt), _s(r.at_step), "yes" if r.saw_notice else "[red]no[/]",
                _s(r.resumed_from), _s(r.lost_steps), r.work_lost,
            )
        console.print(table)
    console.print(
        f"uninterrupted: {verdict.baseline_seconds:.1f}s; with reclaims: {verdict.interrupted_seconds:.1f}s "
        f"over {verdict.attempts} attempt(s); finished: {'yes' if verdict.finished else 'no'}"
    )
    for f in verdict.findings:
        colour = {"fail": "red", "inconclusive": "magenta", "note": "cyan"}.get(f.level, "yellow")
        console.print(f"[{colour}]{f.level}:[/] {f.message}")
        if f.advice:
            console.print(f"  [bold]→[/] {f.advice}")
    console.print({"pass": "[bold green]PASS[/]: the script survives reclaims", "fail": "[bold red]FAIL[/]",
                   "inconclusive": "[bold magenta]INCONCLUSIVE[/]: the evidence cannot tell; see the advice"}[verdict.word])
    console.print(f"[dim]isolation: {verdict.isolation}[/]")
    console.print(f"[dim]logs and outputs: {verdict.workdir}[/]")


def _s(value) -> str:
    return "-" if value is None else str(value)
