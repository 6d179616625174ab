"""Watcher latency and CPU: from a notice appearing on the endpoint to `watch()` yielding it.

Each cloud's emulator runs as a child process (`spotrun emulate <cloud>`), so only the
watcher's own work is counted in this process. For each trial the harness waits a random
fraction of the poll interval (so the poll phase is random), reads the clock, triggers the
notice through the control API and records when the default-configured watcher yields it.
Then it measures this process's CPU time while the watcher watches with no notice for
--cpu-seconds, next to an idle event loop over the same time (the baseline to subtract).

Latency baseline, measured in the same run: the hand-written handler AWS documents and
Metaflow ships, `GET spot/instance-action` (fresh connection) every 5 s.

Targets from the brief: p99 <= 1.2 s for polled endpoints, <= 0.2 s for GCP's hanging GET,
<= 0.5 % of one core while watching.

usage: .venv/bin/python benchmarks/watcher_latency.py [--trials 40] [--cpu-seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from spotrun.notices.base import Watcher
from spotrun.notices.detect import WatchOptions, make_watchers
from spotrun.notices.http import DEFAULT_POLL_INTERVAL

CLOUDS = ("aws", "gcp", "azure", "alibaba", "eci")
TARGET_S = {"gcp": 0.2}  # hanging GET; every other cloud is polled
POLLED_TARGET_S = 1.2
BASELINE_INTERVAL_S = 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Endpoint:
    """An emulator in a child process, and a control client for it."""

    def __init__(self, cloud: str, workdir: Path, *extra: str) -> None:
        args = [sys.executable, "-m", "spotrun", "emulate", cloud, *extra]
        if cloud == "eci":
            args += ["--socket", str(workdir / "eci.sock")]
        self.child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.child.stdout.readline().strip()  # type: ignore[union-attr]
        uds = self.url.removeprefix("unix://") if self.url.startswith("unix://") else None
        self.control = httpx.AsyncClient(
            base_url="http://emulator" if uds else self.url,
            transport=httpx.AsyncHTTPTransport(uds=uds) if uds else None,
            trust_env=False,
        )

    async def op(self, name: str, **body: Any) -> None:
        (await self.control.post(f"/_spotrun/{name}", json=body)).raise_for_status()

    async def close(self) -> None:
        await self.control.aclose()
        self.child.terminate()
        self.child.wait(timeout=30)


async def latencies(
    watch: Callable[[], Any], trigger: Callable[[int], Awaitable[None]], reset: Callable[[], Awaitable[None]],
    trials: int, phase_s: float,
) -> list[float]:
    """Seconds from each trigger to the matching yield."""
    queue: asyncio.Queue[float] = asyncio.Queue()

    async def consume() -> None:
        async for _ in watch():
            queue.put_nowait(time.perf_counter())

    task = asyncio.create_task(consume())
    await asyncio.sleep(1.0)  # first requests, token, VM name
    found = []
    for i in range(trials):
        await reset()
        await asyncio.sleep(0.3 + random.uniform(0, phase_s))
        start = time.perf_counter()
        await trigger(i)
        found.append(await asyncio.wait_for(queue.get(), 60) - start)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return found


async def cpu_share(seconds: float, watcher: Watcher | None) -> float:
    """Fraction of one core this process used over `seconds` (watching, or idle if None)."""
    task = None
    if watcher is not None:
        async def drain() -> None:
            async for _ in watcher.watch():
                pass

        task = asyncio.create_task(drain())
        await asyncio.sleep(1.0)  # skip start-up (token, first connections)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    if task:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return share


async def bench_cloud(cloud: str, trials: int, cpu_seconds: float, workdir: Path) -> dict[str, Any]:
    endpoint = Endpoint(cloud, workdir)
    try:
        [watcher] = await make_watchers(WatchOptions(provider=cloud, metadata_url=endpoint.url))
        reset_pause = 0.3 if cloud == "gcp" else 0.0  # let the hanging GET see FALSE again

        async def trigger(i: int) -> None:
            await endpoint.op("trigger", kind="reclaim", lead_s=None if cloud in ("gcp", "azure") else 120 + i)

        async def reset() -> None:
            await endpoint.op("clear")
            await asyncio.sleep(reset_pause)

        found = await latencies(watcher.watch, trigger, reset, trials, DEFAULT_POLL_INTERVAL)
        await endpoint.op("clear")
        share = await cpu_share(cpu_seconds, watcher)
        await watcher.aclose()
    finally:
        await endpoint.close()
    return {
        "source": cloud,
        "method": "hanging GET" if cloud == "gcp" else f"poll every {DEFAULT_POLL_INTERVAL:g} s",
        "trials": trials,
        "p50_s": percentile(found, 50),
        "p99_s": percentile(found, 99),
        "max_s": max(found),
        "target_p99_s": TARGET_S.get(cloud, POLLED_TARGET_S),
        "cpu_core_pct": share * 100,
    }


async def bench_baseline(trials: int, workdir: Path) -> dict[str, Any]:
    """The documented hand-written handler: GET instance-action every 5 s, new connection each."""
    endpoint = Endpoint("aws", workdir, "--allow-imdsv1")  # the hand-written handler takes no token
    path = f"{endpoint.url}/latest/meta-data/spot/instance-action"

    async def naive():  # type: ignore[no-untyped-def]
        while True:
            async with httpx.AsyncClient(trust_env=False) as client:
                if (await client.get(path)).status_code == 200:
                    yield True
            await asyncio.sleep(BASELINE_INTERVAL_S)

    async def trigger(i: int) -> None:
        await endpoint.op("trigger", kind="reclaim", lead_s=120 + i)

    try:
        found = await latencies(naive, trigger, lambda: endpoint.op("clear"), trials, BASELINE_INTERVAL_S)
    finally:
        await endpoint.close()
    return {
        "source": "baseline: aws, GET every 5 s",
        "method": "poll every 5 s",
        "trials": trials,
        "p50_s": percentile(found, 50),
        "p99_s": percentile(found, 99),
        "max_s": max(found),
        "target_p99_s": None,
        "cpu_core_pct": None,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [await bench_cloud(c, args.trials, args.cpu_seconds, Path(tmp)) for c in CLOUDS]
        rows.append(await bench_baseline(args.baseline_trials, Path(tmp)))
    idle = await cpu_share(args.cpu_seconds, None)
    return {"rows": rows, "idle_loop_cpu_core_pct": idle * 100}


def show(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="notice -> watch() yield latency, and CPU while watching")
    for column in ("source", "method", "trials", "p50", "p99", "max", "p99 target", "CPU % of a core"):
        table.add_column(column, justify="left" if column in ("source", "method") else "right")
    baseline_p50 = result["rows"][-1]["p50_s"]
    for row in result["rows"]:
        table.add_row(
            row["source"], row["method"], str(row["trials"]),
            f"{row['p50_s'] * 1000:.0f} ms", f"{row['p99_s'] * 1000:.0f} ms", f"{row['max_s'] * 1000:.0f} ms",
            f"{row['target_p99_s'] * 1000:.0f} ms" if row["target_p99_s"] else "-",
            f"{row['cpu_core_pct']:.2f}" if row["cpu_core_pct"] is not None else "-",
        )
    console = Console()
    console.print(table)
    console.print(f"idle event loop (CPU baseline): {result['idle_loop_cpu_core_pct']:.2f} % of a core")
    for row in result["rows"][:-1]:
        console.print(f"{row['source']}: p50 {baseline_p50 / row['p50_s']:.0f}x faster than the 5 s baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="notices per cloud")
    parser.add_argument("--baseline-trials", type=int, default=8, help="notices for the 5 s baseline")
    parser.add_argument("--cpu-seconds", type=float, default=10.0, help="idle watching time per cloud")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args()
    outcome = asyncio.run(main(options))
    if options.json:
        print(json.dumps(outcome, indent=2))
    else:
        show(outcome)
