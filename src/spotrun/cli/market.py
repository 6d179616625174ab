"""`spotrun simulate`, `spotrun advise`, `spotrun prices`: the spot market, studied before you pay for it."""

from __future__ import annotations

from typing import Optional

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, err_console, fail, needs, print_json, require_extra
from spotrun.market.policy import DEFAULT_ON_DEMAND_PRICE, DEFAULT_SPOT_PRICE

DEFAULT_POLICIES = "on-demand,greedy,up,adaptive,optimum"


def _hours(text: str, what: str) -> float:
    from spotrun.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        fail(f"{what}: {exc}")


def _split(values: list[str]) -> list[str]:
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def _pm(stats: dict) -> str:
    return f"{stats['mean']:.1f}±{stats['std']:.1f}"


def _list_traces(as_json: bool) -> None:
    from rich.table import Table

    from spotrun.market.trace import bundled, bundled_kind, load_trace

    rows = []
    for name in bundled():
        t = load_trace(name)
        rows.append({"name": name, "kind": bundled_kind(name), "nodes": t.nodes, "nodes_from": t.nodes_from, "gap_s": t.gap_s,
                     "hours": round(t.hours, 1), "availability": round(t.availability, 3)})
    if as_json:
        print_json(rows)
        return
    table = Table(title="Bundled traces (skypilot-org/spot-traces)")
    for col in ("name", "kind", "N", "tick", "hours", "avail"):
        table.add_column(col, justify="left" if col in ("name", "kind") else "right", no_wrap=True)
    for r in rows:
        table.add_row(r["name"], {"availability": "avail"}.get(r["kind"], r["kind"]), str(r["nodes"]), f"{r['gap_s']:g}s", f"{r['hours']:g}",
                      f"{r['availability']:.0%}")
    console.print(table)


@app.command(rich_help_panel="Market")
@needs("market")
def simulate(
    traces: list[str] = typer.Option(
        ["aws-10-26-2022/*"], "--traces", "-t",
        help="Bundled trace names, globs over them (`availability/*`), or trace files. Repeat or comma-separate.",
    ),
    policies: str = typer.Option(DEFAULT_POLICIES, "--policies", "-p", help="Comma-separated: " + DEFAULT_POLICIES + " (default)."),
    starts: int = typer.Option(300, "--starts", min=1, help="Random start times per trace (a sweep)."),
    start: Optional[int] = typer.Option(None, "--start", min=0, help="One run from this tick instead of a sweep."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random start times."),
    compute: str = typer.Option("48h", "--compute", "-c", help="Compute time C the job needs."),
    job_fraction: float = typer.Option(0.8, "--job-fraction", help="C / deadline; ignored when --deadline is given."),
    deadline: Optional[str] = typer.Option(None, "--deadline", "-D", help="Deadline from the start (e.g. 60h)."),
    changeover: str = typer.Option("0.2h", "--changeover", "-d", help="Delay d paid on every launch (setup + lost work)."),
    spot_price: float = typer.Option(DEFAULT_SPOT_PRICE, "--spot-price", help="Spot $/h where the trace has no prices of its own."),
    nodes: Optional[int] = typer.Option(
        None, "--nodes", min=1,
        help="Gang size: spot counts only when this many instances are available. Default: the trace's "
             "metadata.nodes, else its `<kind>/<N>-node/<date>/<zone>.json` folder, else 1.",
    ),
    on_demand_price: float = typer.Option(DEFAULT_ON_DEMAND_PRICE, "--on-demand-price", help="On-demand $/h."),
    zones: bool = typer.Option(False, "--zones", help="Treat the traces as zones of one market the job may hop between."),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes for a sweep."),
    plot: Optional[str] = typer.Option(None, "--plot", help="Save a PNG of cost against deadline slack per policy."),
    per_trace: bool = typer.Option(False, "--per-trace", help="Also show spot use against the optimum per trace."),
    list_traces: bool = typer.Option(False, "--list-traces", help="List the bundled traces and exit."),
    controller: bool = typer.Option(
        False, "--controller",
        help="Replay the same runs through the real controller (its reconciler and policies on the sim provider, "
             "in virtual time) instead of the simulator's loop; the optimum stays the simulator's bound. Slower: "
             "start with --starts 10.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Replay a deadline job through real spot traces under each policy, in virtual time.

    Prints the paper's Table 3: per policy the hours of compute done on on-demand (OD h) and
    on spot (mean±std over start times), the mean cost, the saving against on-demand, spot use
    against the omniscient optimum (vs opt), launches per job (every one pays the changeover)
    and deadline misses; then, per trace, the gang size and
    the spot prices it used (the trace's own where it has them, else --spot-price). The
    changeover is exact in seconds; the optimum refuses one that shares no step of at least
    1/64 tick with the tick, and says which would do.

    With --controller every run is a job of the real controller on the sim provider, so the
    table checks the controller against the model: on the same trace the two agree (docs/sim.md).

    Example: spotrun simulate --traces 'aws-10-26-2022/*' --starts 300 --compute 48h --job-fraction 0.8
    """
    if controller:
        require_extra("controller", "spotrun simulate --controller")
        if plot:
            fail("--plot sweeps deadlines with the simulator alone; drop --controller or --plot")
    if list_traces:
        _list_traces(as_json)
        return
    from spotrun.market.policies import ALL
    from spotrun.market.policy import JobSpec
    from spotrun.market.sim import Market
    from spotrun.market.trace import resolve

    names = _split([policies])
    unknown = [p for p in names if p not in ALL]
    if unknown:
        fail(f"unknown policy {', '.join(unknown)}; choose from {', '.join(ALL)}")
    c = _hours(compute, "--compute")
    if deadline is not None:
        d_s = _hours(deadline, "--deadline")
    elif not 0 < job_fraction <= 1:
        fail("--job-fraction must be in (0, 1]: it is compute time / deadline")
    else:
        d_s = c / job_fraction
    try:
        job = JobSpec(c, d_s, _hours(changeover, "--changeover"), spot_price, on_demand_price)
        found = resolve(_split(traces), nodes)
        markets = [Market.of(found)] if zones else [Market.of([t]) for t in found]
        for m in markets:
            m.window_ticks(job)
        if controller:
            results = _through_controller(job, markets, names, starts, seed, start)
        elif start is not None:
            results = _single(job, markets, names, start)
        else:
            results = _sweep(job, markets, names, starts, seed, workers, quiet=as_json)
    except ValueError as exc:
        fail(str(exc))
    from spotrun.market.sweep import per_market, summarize

    summary = summarize(results, names)
    report = {
        "job": {"compute_h": c / 3600, "deadline_h": d_s / 3600, "changeover_h": job.changeover_s / 3600,
                "changeover_s": job.changeover_s, "spot_price": spot_price, "on_demand_price": on_demand_price},
        "markets": [m.name for m in markets],
        "traces": [_trace_facts(t, spot_price) for t in found],
        "starts": 1 if start is not None else starts,
        "seed": seed,
        "engine": "controller" if controller else "simulator",
        "policies": summary,
    }
    if per_trace:
        report["per_market"] = per_market(results, names)
    if plot:
        try:
            report["plot"] = _plot(plot, job, markets, names, starts if start is None else 1, seed, workers, as_json)
        except ValueError as exc:
            fail(str(exc))
    if as_json:
        print_json(report)
        return
    _print_table(report, on_demand_price * c / 3600)


def _trace_facts(t, spot_price: float) -> dict:
    """What the simulation used for a trace: its gang size (and where that came from) and its spot prices."""
    facts = {"name": t.name, "nodes": t.nodes, "nodes_from": t.nodes_from, "gap_s": t.gap_s,
             "hours": round(t.hours, 1), "availability": round(t.availability, 3)}
    if t.prices is None:
        facts.update(prices_from="--spot-price", spot_price_mean=spot_price)
    else:
        facts.update(prices_from="trace", spot_price_mean=round(float(t.prices.mean()), 4),
                     spot_price_min=float(t.prices.min()), spot_price_max=float(t.prices.max()))
    return facts


def _through_controller(job, markets, names, starts: int, seed: int, start: int | None):
    """The sweep's own start ticks, each run a job of the real controller; the optimum, a bound
    computed from the whole trace, is no policy a controller can run, so it stays the solver's."""
    import numpy as np

    from spotrun.controller.replay import replay
    from spotrun.market.policies import OPTIMUM
    from spotrun.market.policies.optimum import solve

    ticks = [np.array([start]) if start is not None else m.random_starts(job, starts, seed + i) for i, m in enumerate(markets)]
    online = [p for p in names if p != OPTIMUM]
    with err_console.status(f"replaying {sum(map(len, ticks)) * len(online)} runs through the controller"):
        results = replay(job, markets, online, ticks)
    if OPTIMUM in names:
        results += [r for m, t in zip(markets, ticks) for r in solve(job, m, t)]
    return results


def _single(job, markets, names, start: int):
    from spotrun.market.sweep import run_sweep_at

    return run_sweep_at(job, markets, names, start)


def _sweep(job, markets, names, starts, seed, workers, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from spotrun.market.sweep import run_sweep

    total = starts * len(markets) * len(names)
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, disable=quiet, transient=True) as progress:
        task = progress.add_task("runs", total=total)
        return run_sweep(job, markets, names, starts, seed, workers, on_done=lambda n: progress.advance(task, n))


def _print_table(report: dict, od_cost: float) -> None:
    from rich.table import Table

    job = report["job"]
    title = (f"C={job['compute_h']:g}h, deadline {job['deadline_h']:g}h, d={job['changeover_s']:g}s, "
             f"{report['starts']} start(s) x {len(report['markets'])} market(s)"
             + (", through the controller" if report["engine"] == "controller" else ""))
    table = Table(title=title)
    for col in ("policy", "OD h", "spot h", "cost $", "saved", "vs opt", "launch", "miss"):
        table.add_column(col, justify="left" if col == "policy" else "right", no_wrap=True,
                         min_width=9 if col == "policy" else None)
    for r in report["policies"]:
        vs = "-" if r["spot_vs_optimum"] is None else f"{r['spot_vs_optimum']:.0%}"
        table.add_row(r["policy"], _pm(r["on_demand_hours"]), _pm(r["spot_hours"]), f"{r['cost']['mean']:.2f}",
                      f"{1 - r['cost']['mean'] / od_cost:.0%}", vs, f"{r['changeovers']:.1f}", str(r["deadline_misses"]))
    console.print(table)
    for t in report["traces"]:
        prices = (f"trace prices ${t['spot_price_min']:g}-{t['spot_price_max']:g}/h" if t["prices_from"] == "trace"
                  else f"spot ${t['spot_price_mean']:g}/h (--spot-price)")
        console.print(f"  {t['name']}: {t['nodes']} node(s) ({t['nodes_from']}), {t['gap_s']:g}s ticks, "
                      f"{t['availability']:.0%} available, {prices}")
    for market, rows in (report.get("per_market") or {}).items():
        cells = ", ".join(f"{r['policy']} {r['spot_vs_optimum']:.0%}" for r in rows if r["spot_vs_optimum"] is not None)
        console.print(f"  {market}: {cells}")
    if "plot" in report:
        console.print(f"plot saved to {report['plot']['path']}")


def _plot(path: str, job, markets, names, starts, seed, workers, quiet: bool) -> dict:
    """Mean cost (relative to on-demand) against deadline slack, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spotrun.market.policy import JobSpec
    from spotrun.market.sweep import summarize

    fractions = sorted({0.6, 0.7, 0.8, 0.9, round(job.compute_s / job.deadline_s, 3)})
    od_cost = job.on_demand_price * job.compute_s / 3600
    lines: dict[str, list[tuple[float, float]]] = {p: [] for p in names}
    for f in fractions:
        deadline = job.compute_s / f
        if deadline < job.compute_s + job.changeover_s:
            continue
        j = JobSpec(job.compute_s, deadline, job.changeover_s, job.spot_price, job.on_demand_price)
        if any(m.window_ticks(j) > m.ticks for m in markets):
            continue
        for row in summarize(_sweep(j, markets, names, starts, seed, workers, quiet), names):
            lines[row["policy"]].append(((deadline - job.compute_s) / 3600, row["cost"]["mean"] / od_cost))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p, pts in lines.items():
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=p)
    ax.set_xlabel("deadline slack D - C (hours)")
    ax.set_ylabel("mean cost / on-demand cost")
    ax.set_title(f"C = {job.compute_s / 3600:g}h, d = {job.changeover_s / 3600:g}h")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"path": path, "lines": {p: [{"slack_h": x, "cost_vs_on_demand": y} for x, y in pts] for p, pts in lines.items()}}


@app.command(rich_help_panel="Market")
def advise(
    checkpoint_time: str = typer.Option(..., "--checkpoint-time", help="Time to write one checkpoint (e.g. 30s)."),
    reclaims_per_hour: Optional[float] = typer.Option(None, "--reclaims-per-hour", help="Reclaim rate of the spot capacity."),
    trace: Optional[str] = typer.Option(None, "--trace", help="Measure the reclaim rate from this trace instead."),
    hours: Optional[float] = typer.Option(None, "--hours", help="Compute hours of a job, to estimate its saving."),
    instance_type: Optional[str] = typer.Option(None, "--instance-type", help="Prices from the bundled table (`spotrun prices`)."),
    provider: str = typer.Option("aws", "--provider", help="Provider of --instance-type."),
    restart_time: str = typer.Option("0s", "--restart-time", help="Time to get a new instance running after a reclaim."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The checkpoint interval worth using on spot, and what spot saves.

    Young's interval sqrt(2 x write time x mean time between reclaims) and Daly's refinement;
    the hourly cost of checkpointing and of work redone after reclaims; with --hours and
    --instance-type, the job's expected spot cost against on-demand.

    Example: spotrun advise --checkpoint-time 30s --trace aws-10-26-2022/us-west-2a_v100_1 --hours 48 --instance-type p3.2xlarge
    """
    from spotrun.market.advise import advise as compute_advice

    write_s = _hours(checkpoint_time, "--checkpoint-time")
    restart_s = _hours(restart_time, "--restart-time")
    if (reclaims_per_hour is None) == (trace is None):
        fail("give exactly one of --reclaims-per-hour or --trace")
    prices = None
    try:
        if trace is not None:
            from spotrun.market.trace import load_trace

            reclaims_per_hour = load_trace(trace).reclaims_per_hour()
        if instance_type:
            from spotrun.market.prices import lookup

            prices = lookup(provider, instance_type)
        result = compute_advice(write_s, reclaims_per_hour, hours, prices, restart_s, instance_type)
    except (ValueError, KeyError) as exc:
        fail(str(exc).strip('"'))
    if as_json:
        print_json(result.to_dict())
        return
    from spotrun.durations import format_duration

    console.print(f"reclaims: {result.reclaims_per_hour:.3f}/h (one every {result.mtbf_hours:.2f}h)")
    console.print(f"checkpoint every [bold]{format_duration(result.daly_interval_s)}[/] "
                  f"(Daly; Young: {format_duration(result.young_interval_s)})")
    console.print(f"per running hour: {format_duration(result.checkpoint_overhead_s_per_hour)} writing checkpoints, "
                  f"{format_duration(result.work_lost_s_per_hour)} of work redone ({result.waste_fraction:.1%} waste)")
    if result.saving is not None:
        console.print(f"{result.job_hours:g}h job on {result.instance_type}: spot ${result.spot_cost:.2f} vs on-demand "
                      f"${result.on_demand_cost:.2f}, saving ${result.saving:.2f} ({result.saving_fraction:.0%})")


@app.command(rich_help_panel="Market")
def prices(
    instance_types: list[str] = typer.Option([], "--instance-types", "-i", help="Types to show; repeat or comma-separate."),
    provider: Optional[str] = typer.Option(None, "--provider", help="aws, gcp or azure (bundled table)."),
    history: bool = typer.Option(False, "--history", help="Fetch live spot price history from AWS instead."),
    region: str = typer.Option("us-east-1", "--region", help="AWS region for --history and --scores."),
    since: str = typer.Option("1d", "--since", help="How far back --history goes (e.g. 6h, 7d)."),
    scores: bool = typer.Option(False, "--scores", help="Also show AWS spot placement scores (1-10) per zone."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", help="EC2 endpoint (e.g. a local moto server)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Spot and on-demand prices: the bundled table, or AWS's live spot price history.

    Example: spotrun prices --history --region us-west-2 -i p3.2xlarge --since 7d --scores
    """
    from datetime import timedelta

    from rich.table import Table

    from spotrun.market import prices as market_prices

    types = _split(instance_types)
    if not history:
        if scores:
            fail("--scores asks AWS; use it with --history")
        rows = market_prices.rows(provider, types)
        if not rows:
            fail("no such instance type in the bundled table; run `spotrun prices` to see them all")
        meta = market_prices.table()
        if as_json:
            print_json({"compiled": meta["compiled"], "note": meta["note"], "prices": rows})
            return
        table = Table(title=f"Bundled prices ($/h), compiled {meta['compiled']}", caption=meta["note"])
        width = max(len(f"{r['provider']} {r['instance_type']}") for r in rows)
        table.add_column("instance", no_wrap=True, min_width=width)
        table.add_column("hardware")
        for col in ("on-demand", "spot", "off"):
            table.add_column(col, justify="right", no_wrap=True)
        table.add_column("source", no_wrap=True)
        for r in rows:
            source = "paper" if r["source"].startswith("Can't Be Late") else "approx."
            table.add_row(f"{r['provider']} {r['instance_type']}", r["hardware"], f"{r['on_demand']:.3f}",
                          f"{r['spot']:.3f}", f"{1 - r['spot'] / r['on_demand']:.0%}", source)
        console.print(table)
        return
    if not types:
        fail("--history needs --instance-types (e.g. -i p3.2xlarge)")
    require_extra("aws", "spotrun prices --history")
    try:
        since_td = timedelta(seconds=_hours(since, "--since"))
        found = market_prices.spot_history(region, types, since_td, endpoint_url)
        score_map = market_prices.placement_scores(region, types, endpoint_url=endpoint_url) if scores else None
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        print_json({"region": region, "history": found, **({"scores": score_map} if scores else {})})
        return
    table = Table(title=f"AWS spot price history, {region}, last {since}")
    for col in ("zone", "type", "spot $/h", "time") + (("score",) if scores else ()):
        table.add_column(col, no_wrap=col in ("zone", "type"))
    for r in found:
        extra = (str(score_map.get(r["zone"], "-")),) if scores else ()
        table.add_row(r["zone"], r["instance_type"], f"{r['spot']:.4f}", r["time"] or "-", *extra)
    console.print(table)
