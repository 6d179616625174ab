"""`spotrun demo`: watch a training job survive spot reclaims on this machine, no cloud account."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, fail, needs, print_json, require_extra


@app.command()
@needs("controller")
def demo(
    steps: int = typer.Option(300, "--steps", min=10, help="Training steps of examples/train.py."),
    step_time: str = typer.Option("150ms", "--step-time", help="Time per step (the demo's pace)."),
    reclaim_every: str = typer.Option("20s", "--reclaim-every", help="Mean time before the local market reclaims a spot instance."),
    lead_time: str = typer.Option("3s", "--lead-time", help="Notice the job gets before each reclaim."),
    seed: int = typer.Option(None, "--seed", help="Seed the market for reproducible reclaim times."),
    timeout: str = typer.Option("5m", "--timeout", help="Give up (cancel both jobs) after this long."),
    script: Path = typer.Option(None, "--script", help="Training script to run (default: examples/train.py)."),
    home: Path = typer.Option(None, "--home", help="Keep the demo's state here (default: a temporary folder, removed after)."),
    cloud: str = typer.Option(
        "local", "--cloud",
        help="local: spot instances as local processes. aws: the AWS provider against moto's EC2 and S3 on "
        "127.0.0.1, each instance booted from its real user data by a local VM runner (no account needed).",
    ),
    json_: bool = JSON_OPTION,
) -> None:
    """Run a training job on a simulated spot market that keeps reclaiming it, beside an
    uninterrupted on-demand twin, and show that it finishes with the same result for less money.

    Everything runs here: the controller, spot instances as local processes with their own
    metadata endpoint and notices, the agent, and the checkpoint store. Takes two to three minutes.
    With --cloud aws the same jobs take the AWS path: run_instances on a local EC2 (moto), user data
    that boots the agent, checkpoints and status records in a local S3, reclaims as EC2 gives them.
    """
    if cloud not in ("local", "aws"):
        fail(f"--cloud {cloud!r}: use local or aws")
    if cloud == "aws":
        require_extra("local-aws", "spotrun demo --cloud aws")
    from spotrun.controller.demo import DemoConfig, default_script

    script = (script or default_script()).resolve()
    if not script.is_file():
        fail(f"training script {script} not found; pass --script PATH (e.g. examples/train.py of a spotrun checkout)")
    cfg = DemoConfig(
        script=script, steps=steps, step_time=duration_arg(step_time), reclaim_every=duration_arg(reclaim_every),
        lead_time=duration_arg(lead_time), seed=seed, timeout=duration_arg(timeout), cloud=cloud,
    )
    private = home is None
    root = Path(tempfile.mkdtemp(prefix="spotrun-demo-")) if private else home.resolve()
    saved = dict(os.environ)
    os.environ["SPOTRUN_HOME"] = str(root)
    os.environ.pop("SPOTRUN_DB_URL", None)  # the demo's own SQLite file, never a shared database
    try:
        with contextlib.ExitStack() as stack:
            summary = _run(cfg, json_, _aws_providers(cfg, root, stack) if cloud == "aws" else None)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if private:
            shutil.rmtree(root, ignore_errors=True)
    if json_:
        print_json(summary)
    else:
        _print_summary(summary)
    raise typer.Exit(0 if summary["completed"] else 1)


def _aws_providers(cfg, root: Path, stack: contextlib.ExitStack) -> dict:
    """A local AWS for the demo's lifetime, its reclaims on the demo's schedule; the AWS provider on it."""
    import logging
    import sys

    from spotrun.controller.demo import AWS_ZONES
    from spotrun.emulators.local_aws import LocalAws
    from spotrun.providers.aws import AwsConfig, AwsProvider

    logging.getLogger("spotrun.aws").setLevel(logging.ERROR)  # the table tells the story
    aws = stack.enter_context(LocalAws(root / "aws", python=sys.executable, lead_s=cfg.lead_time,
                                       lifetime_s=cfg.reclaim_every, seed=cfg.seed))
    os.environ.update(aws.env)  # dummy credentials and 127.0.0.1 endpoints, for this process only
    aws.proxy.spot_prices.update({("m5.large", zone): price for zone, price in zip(AWS_ZONES, (0.034, 0.029))})
    return {"aws": AwsProvider(AwsConfig.from_env())}


def _run(cfg, quiet: bool, providers: dict | None) -> dict:
    import asyncio

    from rich.live import Live

    from spotrun.controller.demo import run_demo
    from spotrun.controller.service import local_market, make_providers

    providers = providers or make_providers(local_market(cfg.reclaim_every, cfg.lead_time, cfg.seed))
    if quiet:
        return asyncio.run(run_demo(cfg, providers, lambda rows: None))
    where = "a local AWS (moto EC2 + S3, each instance booted from its user data)" if cfg.cloud == "aws" else "this machine"
    console.print(
        f"[bold]spotrun demo[/] on {where}: {cfg.script.name}, {cfg.steps} steps, spot reclaimed every ~{cfg.reclaim_every:g}s "
        f"with a {cfg.lead_time:g}s notice, beside an on-demand twin. Ctrl-C stops it."
    )
    with Live(_table({}, cfg.steps), console=console, refresh_per_second=4) as live:
        summary = asyncio.run(run_demo(cfg, providers, lambda rows: live.update(_table(rows, cfg.steps))))
    console.print()
    return summary


def _table(rows: dict, steps: int):
    from rich.table import Table

    table = Table(title="jobs")
    for col in ("capacity", "status", "attempt", "step", "reclaims", "lost", "cost", "saved"):
        table.add_column(col, no_wrap=True)
    for kind, (view, progress) in rows.items():
        bar = f"{progress.step + 1}/{steps}"
        table.add_row(
            kind, view["status"], str(view["attempts"]), bar, str(view["reclaims"]),
            str(sum(progress.lost)), f"${view['cost']:.5f}", f"{view['saving_pct']:.0f}%",
        )
    return table


def _print_summary(s: dict) -> None:
    from rich.table import Table

    ok = "[green]completed[/]" if s["completed"] else f"[red]{s['status']}[/] {s['reason'] or ''}"
    table = Table(title="summary: spot job vs uninterrupted on-demand twin", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    lost = s["work_lost_steps_per_reclaim"]
    rows = [
        ("outcome", ok),
        ("reclaims survived", f"{s['reclaims']} ({s['attempts']} attempts)"),
        ("work lost per reclaim", f"{', '.join(map(str, lost)) or '-'} steps of {s['steps']}"),
        ("same final weights", "yes" if s["same_result_as_uninterrupted"] else "[red]no[/]"),
        ("wall time", f"{s['wall_s']:.1f}s vs {s['uninterrupted_wall_s']:.1f}s uninterrupted (x{s['wall_ratio']})"),
        ("cost", f"${s['cost']:.5f} vs ${s['on_demand_cost']:.5f} on-demand ({s['saving_pct']}% saved)"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
