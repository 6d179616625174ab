"""`spotrun launch | jobs | status | logs | cancel | resume | interrupt | controller`.

These commands only record what the user wants in the database (and read it back); the
controller daemon does the work, so they return at once and work while it is down.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, err_console, fail, needs, print_json

controller_app = typer.Typer(
    help="The background controller that launches, watches and recovers jobs.", no_args_is_help=True
)
app.add_typer(controller_app, name="controller")

FOLLOW_POLL_S = 0.5
DEFAULT_PAGE = 100  # `spotrun jobs` rows per page: a screenful that costs the same at 10 000 jobs
STATUS_STYLE = {
    "SUCCEEDED": "green", "FAILED": "red", "CANCELLED": "yellow", "RUNNING": "cyan",
    "RECOVERING": "magenta", "PROVISIONING": "blue", "PENDING": "dim", "CANCELLING": "yellow",
}


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the controller's expected failures into one clear line each, never a traceback."""
    from spotrun.controller.db import DatabaseError
    from spotrun.controller.repo import JobNotFound, JobStateError
    from spotrun.controller.service import ControllerBusy, ControllerError
    from spotrun.controller.spec import SpecError

    try:
        yield
    except SpecError as exc:
        for line in exc.problems:
            err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except (DatabaseError, JobNotFound, JobStateError, ControllerBusy, ControllerError, LookupError) as exc:
        fail(str(exc).strip("'\""))


def _db():
    from spotrun.controller.db import Database

    return Database()


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def _money(x: float) -> str:
    return f"${x:.4f}" if x < 1 else f"${x:,.2f}"


def _styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


@app.command()
@needs("controller")
def launch(
    spec: Path = typer.Argument(..., help="The job spec, e.g. job.yaml (a one-line `run: python train.py` is enough)."),
    name: str = typer.Option(None, "--name", "-n", help="Name shown in `spotrun jobs` (default: from the spec); a sweep's jobs are NAME-0, NAME-1, ..."),
    array: int = typer.Option(
        None, "--array",
        help="Launch N copies of the spec as one sweep; each gets SPOTRUN_ARRAY_INDEX=0..N-1 (and {{ index }} in run).",
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Stream the logs of every attempt until the job ends."),
    json_: bool = JSON_OPTION,
) -> None:
    """Submit a job, or a sweep of jobs; the controller (started if needed) runs them on spot and
    recovers them from reclaims.

    A spec with `sweep: {grid: {lr: [0.1, 0.01], seed: [1, 2]}}` launches one job per combination
    (here 4), each with its values in its environment (lr=0.1) and in `{{ lr }}` in run/setup/env;
    `--array N` launches N copies. Their jobs share a sweep label: `spotrun jobs --sweep LABEL`.

    Example: `spotrun launch job.yaml --follow`; `spotrun launch sweep.yaml`; `spotrun launch job.yaml --array 100`
    """
    from spotrun.controller.api import prepare_launch, submit

    with _user_errors():
        prepared = prepare_launch(spec, name=name, array=array)
        if prepared.sweep is not None and follow:
            fail("--follow streams one job's logs; a sweep has many: `spotrun jobs --sweep LABEL`, then `spotrun logs NAME -f`")
        label, handles = submit(prepared)
        if label is not None:
            _launched_sweep(label, handles, json_)
            return
        handle = handles[0]
        view = handle.info(detail=False)
    if json_ and not follow:
        print_json(view)
        return
    console.print(f"launched job [bold]{handle.id}[/] ({view['name']}); `spotrun status {handle.id}` shows its timeline")
    if follow:
        status = _follow(handle.id)
        if json_:
            with _user_errors():
                print_json(handle.info(detail=False))
        raise typer.Exit(0 if status == "SUCCEEDED" else 1)


def _launched_sweep(label: str, handles: list, as_json: bool) -> None:
    from spotrun.controller.repo import list_views

    jobs = list_views(_db(), sweep=label)
    if as_json:
        print_json({"sweep": label, "count": len(jobs), "jobs": [{"id": v["id"], "name": v["name"]} for v in jobs]})
        return
    shown = jobs[0]["name"] if len(jobs) == 1 else f"{jobs[0]['name']} ... {jobs[-1]['name']}"
    console.print(f"launched sweep [bold]{label}[/]: {len(jobs)} jobs ({shown}); "
                  f"`spotrun jobs --sweep {label}` lists them")


def _states(values: list[str]) -> list[str]:
    from spotrun.controller.models import JobStatus

    states = [p.strip().upper() for v in values for p in v.split(",") if p.strip()]
    unknown = [s for s in states if s not in JobStatus.__members__]
    if unknown:
        fail(f"--state {', '.join(unknown).lower()}: not a job state; choose from {', '.join(s.lower() for s in JobStatus.__members__)}")
    return states


@app.command("jobs")
@needs("controller")
def list_jobs(
    state: list[str] = typer.Option([], "--state", "-s", help="Only jobs in these states (repeat or comma-separate: running,recovering)."),
    name: str = typer.Option(None, "--name", help="Only jobs with this name, or matching this glob (`train-*`)."),
    sweep: str = typer.Option(None, "--sweep", help="Only the jobs of this sweep (its label, printed by `spotrun launch`)."),
    limit: int = typer.Option(DEFAULT_PAGE, "--limit", min=0, help="Jobs per page, oldest first; 0 for all."),
    after: str = typer.Option(None, "--after", help="Start after this job id: the last id of the previous page."),
    json_: bool = JSON_OPTION,
) -> None:
    """List jobs: status, attempts, reclaims, cost and the saving against on-demand.

    One page at a time, oldest first: the footer says how many match and the --after that
    shows the next page (with --json, the next page starts after the last id printed).

    Example: `spotrun jobs --sweep train-3fa2c1 --state failed`; `spotrun jobs --limit 0 --json`
    """
    from rich.table import Table

    from spotrun.controller.repo import jobs_page

    states = _states(state)
    with _user_errors():
        views, total = jobs_page(_db(), states=states, name=name, sweep=sweep, after=after, limit=limit or None)
    if json_:
        print_json(views)
        return
    if not views:
        filtered = states or name or sweep or after
        console.print("no jobs match" if filtered else "no jobs yet; `spotrun launch job.yaml` submits one, `spotrun demo` shows one")
        return
    table = Table(title="spotrun jobs")
    for col in ("id", "name", "status", "attempts", "reclaims", "cost", "saving", "submitted"):
        table.add_column(
            col, justify="right" if col in ("attempts", "reclaims", "cost", "saving") else "left",
            no_wrap=col in ("id", "status"),
        )
    for v in views:
        table.add_row(
            v["id"], v["name"], _styled(v["status"]), str(v["attempts"]), str(v["reclaims"]),
            _money(v["cost"]), f"{_money(v['saving'])} ({v['saving_pct']:.0f}%)", _when(v["created_at"]),
        )
    console.print(table)
    if limit and len(views) == limit:
        console.print(f"{len(views)} of {total} matching jobs shown; next page: --after {views[-1]['id']}")


@app.command()
@needs("controller")
def status(job: str = typer.Argument(..., help="Job id (or a unique prefix, or its name), or a sweep's label."), json_: bool = JSON_OPTION) -> None:
    """One job's timeline: its attempts, reclaims, errors, costs and every event; or a sweep at a
    glance (its jobs per state, reclaims and cost so far): `spotrun status train-3fa2c1`."""
    from rich.table import Table

    from spotrun.controller.repo import get_view, sweep_view

    with _user_errors():
        db = _db()
        sweep = sweep_view(db, job)
        v = get_view(db, job) if sweep is None else sweep
    if sweep is not None:
        _print_sweep(sweep, json_)
        return
    if json_:
        print_json(v)
        return
    console.print(
        f"[bold]{v['id']}[/] {v['name']}  {_styled(v['status'])}  attempts {v['attempts']}  "
        f"reclaims {v['reclaims']}  errors {v['errors']}  cost {_money(v['cost'])}  "
        f"saved {_money(v['saving'])} ({v['saving_pct']:.0f}%) vs on-demand"
    )
    if v["reason"]:
        console.print(f"[bold]reason:[/] {v['reason']}", highlight=False)
    attempts = Table(title="attempts")
    for col in ("#", "instance", "capacity", "zone", "$/h", "started", "ended", "exit", "cause", "cost"):
        attempts.add_column(col)
    for a in v["attempt_list"]:
        attempts.add_row(
            str(a["number"]), a["instance_id"] or "-", "spot" if a["spot"] else "on-demand", a["zone"] or "-",
            f"{a['price']:.3f}" if a["price"] is not None else "-", _when(a["started_at"]), _when(a["ended_at"]),
            "-" if a["exit_status"] is None else str(a["exit_status"]), a["cause"] or "live", _money(a["cost"]),
        )
    console.print(attempts)
    events = Table(title="events")
    for col in ("time", "attempt", "event", "detail"):
        events.add_column(col)
    for e in v["events"]:
        events.add_row(_when(e["at"]), str(e["attempt"] or ""), e["kind"], e["message"].splitlines()[0])
    console.print(events)


def _print_sweep(v: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(v)
        return
    states = "  ".join(f"{_styled(k)} {n}" for k, n in v["states"].items())
    console.print(f"sweep [bold]{v['sweep']}[/]: {v['jobs']} jobs  {states}")
    console.print(f"attempts {v['attempts']}  reclaims {v['reclaims']}  errors {v['errors']}  cost {_money(v['cost'])}  "
                  f"saved {_money(v['saving'])} ({v['saving_pct']:.0f}%) vs on-demand")
    console.print(f"`spotrun jobs --sweep {v['sweep']} --state failed` lists its failed jobs")


@app.command()
@needs("controller")
def logs(
    job: str = typer.Argument(..., help="Job id (or a unique prefix, or its name)."),
    attempt: int = typer.Option(None, "--attempt", "-a", help="Only this attempt (default: every attempt, in order)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new output until the job ends."),
) -> None:
    """Print a job's logs; every attempt's log is kept, also after its instance is gone."""
    from spotrun.controller.api import read_attempt_log, read_log
    from spotrun.controller.repo import attempts_of, find_job

    if follow:
        _follow(job, only=attempt)
        return
    db = _db()
    with _user_errors():
        if attempt is not None:
            typer.echo(read_log(db, job, attempt), nl=False)
            return
        with db.session() as s:
            j = find_job(s, job)
            attempts = [(a.number, a.instance_log) for a in attempts_of(s, j.id) if a.instance_id is not None]
        for n, instance_log in attempts:
            err_console.print(f"[dim]── attempt {n} ──[/]")
            typer.echo(read_attempt_log(j.id, n, instance_log), nl=False)


def _follow(ref: str, only: int | None = None) -> str:
    """Stream attempt logs as they grow, across relaunches; return the final status."""
    from spotrun.controller.api import read_attempt_log
    from spotrun.controller.models import JobStatus
    from spotrun.controller.repo import attempts_of, find_job

    db = _db()
    printed: dict[int, int] = {}
    while True:
        with _user_errors(), db.session() as s:
            job = find_job(s, ref)
            status = job.status
            attempts = [(a.number, a.instance_log) for a in attempts_of(s, job.id) if a.instance_id]
        for number, instance_log in attempts:
            if only is not None and number != only:
                continue
            text = read_attempt_log(job.id, number, instance_log)
            if number not in printed:
                err_console.print(f"[dim]── attempt {number} ──[/]")
                printed[number] = 0
            if len(text) > printed[number]:
                typer.echo(text[printed[number]:], nl=False)
                printed[number] = len(text)
        if JobStatus(status).terminal:
            err_console.print(f"job {job.id} {_styled(status)}")
            return status
        time.sleep(FOLLOW_POLL_S)


@app.command()
@needs("controller")
def cancel(job: str = typer.Argument(..., help="Job id (or a unique prefix, or its name).")) -> None:
    """Stop a job: its instance is terminated and it ends CANCELLED (checkpoints are kept)."""
    from spotrun.controller.repo import request_cancel

    with _user_errors():
        job_id = request_cancel(_db(), job)
        _ensure_controller()
    console.print(f"cancelling job {job_id}; `spotrun status {job_id}` shows when it is done")


@app.command()
@needs("controller")
def resume(job: str = typer.Argument(..., help="Job id (or a unique prefix, or its name) of a finished job.")) -> None:
    """Run a finished, failed or cancelled job again from its kept checkpoint (same id, fresh budgets)."""
    from spotrun.controller.repo import request_resume

    with _user_errors():
        job_id = request_resume(_db(), job)
        _ensure_controller()
    console.print(f"resuming job {job_id}")


@app.command()
@needs("controller")
def interrupt(
    job: str = typer.Argument(..., help="Job id (or a unique prefix, or its name)."),
    lead_time: str = typer.Option(None, "--lead-time", "-l", help="Notice before the reclaim, e.g. 10s (default: the spec's notice.lead_time, else the cloud's own)."),
) -> None:
    """Reclaim the job's instance now, with a notice, as the cloud would (local provider).

    The job should save on the notice and continue on a new instance: the way to test recovery.
    """
    lead = duration_arg(lead_time) if lead_time is not None else None
    with _user_errors():
        sent = interrupt_job(_db(), job, lead)
    console.print(f"reclaim notice sent to {sent['instance_id']} (job {sent['id']}, attempt {sent['attempt']})")


def interrupt_job(db: Any, ref: str, lead: float | None = None) -> dict[str, Any]:
    """Send the cloud's reclaim notice to the job's live instance (`spotrun interrupt`, the
    dashboard's Interrupt). JobStateError when nothing runs; the spec's lead time by default."""
    import asyncio

    from spotrun.controller.models import JobStatus
    from spotrun.controller.repo import JobStateError, attempts_of, find_job
    from spotrun.controller.service import make_providers
    from spotrun.controller.spec import JobSpec

    with db.session() as s:
        j = find_job(s, ref)
        live = [a for a in attempts_of(s, j.id) if a.ended_at is None and a.instance_id]
        spec = JobSpec.model_validate_json(j.spec)
    if not live or JobStatus(j.status).terminal:
        raise JobStateError(f"job {j.id} has no running instance to interrupt (it is {j.status})")
    provider = make_providers()[j.provider]
    lead = lead if lead is not None else spec.notice.lead_time
    try:
        asyncio.run(provider.interrupt(live[-1].instance_id, lead))
    except Exception as exc:  # noqa: BLE001  the instance may have ended a moment ago
        raise JobStateError(
            f"could not interrupt {live[-1].instance_id}: {exc or type(exc).__name__}; `spotrun status {j.id}` shows where it is"
        ) from None
    return {"id": j.id, "instance_id": live[-1].instance_id, "attempt": live[-1].number}


def _ensure_controller() -> None:
    from spotrun.controller.service import start_daemon

    start_daemon()


# --- controller ----------------------------------------------------------------------------


def _run_args(lifetime: str | None, lead: str | None, seed: int | None, interval: str | None) -> list[str]:
    args = ["--interval", interval] if interval else []
    if lifetime:
        args += ["--reclaim-every", lifetime]
    if lead:
        args += ["--lead-time", lead]
    if seed is not None:
        args += ["--seed", str(seed)]
    return args


_LIFETIME_OPT = typer.Option(None, "--reclaim-every", help="Local market: reclaim spot instances after a random lifetime with this mean, e.g. 30s.")
_LEAD_OPT = typer.Option(None, "--lead-time", help="Local market: notice lead time before a reclaim, e.g. 5s (default: the cloud's own).")
_SEED_OPT = typer.Option(None, "--seed", help="Local market: seed for reproducible reclaim times.")
_INTERVAL_OPT = typer.Option("1s", "--interval", help="Time between reconcile passes.")


@controller_app.command("start")
@needs("controller")
def controller_start(
    reclaim_every: str = _LIFETIME_OPT, lead_time: str = _LEAD_OPT, seed: int = _SEED_OPT,
    interval: str = _INTERVAL_OPT, json_: bool = JSON_OPTION,
) -> None:
    """Start the background controller (`spotrun launch` does this on first use)."""
    from spotrun.controller.service import start_daemon

    for d in (reclaim_every, lead_time, interval):
        if d is not None:
            duration_arg(d)
    with _user_errors():
        info = start_daemon(_run_args(reclaim_every, lead_time, seed, interval))
    if json_:
        print_json(info)
    else:
        console.print(f"controller running (pid {info['pid']}) on {info['db']}")


@controller_app.command("stop")
@needs("controller")
def controller_stop(json_: bool = JSON_OPTION) -> None:
    """Stop the background controller; jobs keep running and are picked up at the next start."""
    from spotrun.controller.service import stop_daemon

    pid = stop_daemon()
    if json_:
        print_json({"stopped": pid is not None, "pid": pid})
    else:
        console.print(f"controller (pid {pid}) stopped" if pid else "no controller was running")


@controller_app.command("status")
@needs("controller")
def controller_status(json_: bool = JSON_OPTION) -> None:
    """Whether the background controller runs, where its log is, and how many jobs are active;
    then every controller on the database (several share one PostgreSQL): alive or not, the
    active jobs it holds, its last pass, and its lag (how long its oldest unrecorded instance
    end waited)."""
    with _user_errors():
        data = controller_view(_db())
    if json_:
        print_json(data)
        return
    if data["running"]:
        console.print(f"controller [green]running[/] (pid {data['pid']}) on {data['db']}; {data['active_jobs']} active jobs; log {data['log']}")
    else:
        console.print(f"controller [yellow]not running[/] here; {data['active_jobs']} active jobs (`spotrun controller start`)")
    if data["controllers"]:
        from rich.table import Table

        table = Table(title="controllers on this database")
        for col in ("controller", "state", "jobs", "passes", "last pass s", "lag s", "heartbeat age s"):
            table.add_column(col, justify="left" if col in ("controller", "state") else "right")
        for c in data["controllers"]:
            if c["id"] is None:
                table.add_row("(none)", "unassigned", str(c["jobs"]), "", "", "", "")
                continue
            table.add_row(c["id"], "[green]alive[/]" if c["alive"] else "[red]lease expired[/]", str(c["jobs"]),
                          str(c["passes"]), f"{c['pass_s']:.3f}", f"{c['lag_s']:.1f}", f"{c['heartbeat_age_s']:.1f}")
        console.print(table)


def controller_view(db: Any) -> dict[str, Any]:
    """What `controller status --json` (and the dashboard's header) says about the daemon."""
    from spotrun.controller.leases import controllers_view
    from spotrun.controller.repo import count_active
    from spotrun.controller.service import daemon_info, log_file

    info = daemon_info()
    return {"running": info is not None, **(info or {}), "active_jobs": count_active(db), "log": str(log_file()),
            "controllers": controllers_view(db)}


@controller_app.command("run", hidden=True)
@needs("controller")
def controller_run(
    reclaim_every: str = _LIFETIME_OPT, lead_time: str = _LEAD_OPT, seed: int = _SEED_OPT,
    interval: str = _INTERVAL_OPT,
    lease: str = typer.Option("30s", "--lease", help="PostgreSQL: how long a job stays leased to this controller without renewal."),
) -> None:
    """Run the controller in the foreground (what the daemon runs)."""
    import logging

    from spotrun.controller.service import local_market, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    lifetime = duration_arg(reclaim_every) if reclaim_every else None
    lead = duration_arg(lead_time) if lead_time else None
    with _user_errors():
        serve(market=local_market(lifetime, lead, seed), interval=duration_arg(interval), lease_s=duration_arg(lease))
