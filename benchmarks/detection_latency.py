"""Detection latency: from a notice being published to the command receiving its signal.

For each notice source a fresh `spotrun exec` (default settings) supervises a tiny command that
writes `time.time()` when SIGTERM arrives; the harness records `time.time()` just before it
publishes the notice (emulator trigger, SIGTERM to the agent, or the watched file appearing).
Trials run in rounds: every lane starts its agent, waits until the watcher has made its first
request, then all lanes trigger at random offsets (so the poll phase is random). No agent is
starting while notices are being measured, which keeps start-up CPU out of the numbers.

The baseline is the usual hand-written handler measured in the same run: a loop doing
`GET /latest/meta-data/spot/instance-action` every 5 s against the AWS emulator, which then
SIGTERMs the same command. Last, the agent's own CPU use while watching (no notice) is read
from /proc/<pid>/stat over --cpu-seconds, beside the baseline loop's.

usage: .venv/bin/python benchmarks/detection_latency.py [--trials 100] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun.emulators.alibaba import AlibabaEmulator
from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.azure import AzureEmulator
from spotrun.emulators.base import Emulator
from spotrun.emulators.eci import EciEmulator
from spotrun.emulators.gcp import GcpEmulator

EMULATORS: dict[str, type[Emulator]] = {
    "aws": AwsEmulator, "gcp": GcpEmulator, "azure": AzureEmulator,
    "alibaba": AlibabaEmulator, "eci": EciEmulator,
}
TRIGGERS: dict[str, dict[str, Any]] = {
    "aws": {"action": "terminate", "lead_s": 120.0},
    "gcp": {},
    "azure": {"action": "Preempt", "lead_s": 30.0},
    "alibaba": {},
    "eci": {},
}
SOURCES = ("aws", "gcp", "azure", "alibaba", "eci", "kubernetes", "file")
TARGET_P99_S = {"aws": 1.2, "azure": 1.2, "alibaba": 1.2, "eci": 1.2, "gcp": 0.2, "kubernetes": 0.2, "file": 0.2}
TARGET_CPU_PCT = 0.5
BASELINE = "5s-poll"
BASELINE_INTERVAL_S = 5.0
WAIT_S = 30.0
MAX_FAILED_STARTS = 5  # per lane, then it gives up rather than loop on a broken agent

# The supervised command: records when SIGTERM arrives, then exits.
CHILD = """
import os, signal, sys, time
out = sys.argv[1]
def on_term(signum, frame):
    now = time.time()
    with open(out + ".tmp", "w") as f:
        f.write(repr(now))
    os.replace(out + ".tmp", out)
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
with open(out + ".ready", "w") as f:
    f.write(str(os.getpid()))
while True:
    signal.pause()
"""

# The usual hand-written handler: poll every 5 s, SIGTERM the job on a 200.
POLLER = """
import signal, subprocess, sys, time, urllib.error, urllib.request
url, out, child = sys.argv[1], sys.argv[2], sys.argv[3]
job = subprocess.Popen([sys.executable, "-S", "-c", child, out])
while True:
    try:
        with urllib.request.urlopen(url + "/latest/meta-data/spot/instance-action", timeout=2) as r:
            if r.status == 200:
                job.send_signal(signal.SIGTERM)
                break
    except urllib.error.URLError:
        pass
    time.sleep(%r)
job.wait()
""" % BASELINE_INTERVAL_S


@dataclass
class Lane:
    """One place trials run, one after another: its own emulator, paths and log."""

    source: str
    index: int
    tmp: Path
    emulator: Emulator | None = None
    url: str = ""
    latencies: list[float] = field(default_factory=list)
    missed: int = 0  # notices published that never reached the command
    failed_starts: int = 0  # agents that were not watching within WAIT_S (a loaded machine)
    trial: int = 0

    async def open(self) -> None:
        cloud = "aws" if self.source == BASELINE else self.source
        if cloud in EMULATORS:
            # the hand-written baseline handler takes no IMDSv2 token
            self.emulator = AwsEmulator(imdsv2_required=False) if self.source == BASELINE else EMULATORS[cloud]()
            if cloud == "eci":
                self.url = await self.emulator.start(socket_path=str(self.tmp / f"eci-{self.index}.sock"))
            else:
                self.url = await self.emulator.start(host="127.0.0.1", port=0)

    async def close(self) -> None:
        if self.emulator is not None:
            await self.emulator.stop()

    @property
    def log(self) -> Path:
        return self.tmp / f"{self.source}-{self.index}.log"

    def paths(self) -> tuple[Path, Path]:
        base = self.tmp / f"{self.source}-{self.index}-{self.trial}"
        return base.with_suffix(".signal"), base.with_suffix(".watch")

    def command(self) -> list[str]:
        out, watch = self.paths()
        child = [sys.executable, "-S", "-c", CHILD, str(out)]
        if self.source == BASELINE:
            return [sys.executable, "-S", "-c", POLLER, self.url, str(out), CHILD]
        args = ["--provider", self.source, "--notice-file", str(out.with_suffix(".notice"))]
        if self.source == "file":
            args += ["--watch-file", str(watch)]
        elif self.source != "kubernetes":
            args += ["--metadata-url", self.url]
        return [sys.executable, "-m", "spotrun", "exec", *args, "--", *child]

    def pending(self, trials: int) -> bool:
        return len(self.latencies) + self.missed < trials and self.failed_starts < MAX_FAILED_STARTS

    def ready_file(self) -> Path:
        return Path(str(self.paths()[0]) + ".ready")

    async def start(self) -> asyncio.subprocess.Process | None:
        """Start the agent (or baseline loop); returns it once it is watching, None if it never was."""
        self.trial += 1
        if self.emulator is not None:
            self.emulator.clear()
            self.emulator.requests.clear()
        with open(self.log, "ab") as log:
            proc = await asyncio.create_subprocess_exec(*self.command(), stdout=log, stderr=log)
        RUNNING.append((proc, self.ready_file()))
        ready = self.ready_file()
        try:
            await until(lambda: ready.exists() and (self.emulator is None or sum(self.emulator.requests.values()) > 0))
        except TimeoutError:
            self.failed_starts += 1
            await stop(proc, ready, at_once=True)
            return None
        return proc

    def trigger(self, proc: asyncio.subprocess.Process) -> float:
        """Publish the notice; returns the time just before it became visible."""
        _, watch = self.paths()
        now = time.time()
        if self.source == "kubernetes":
            proc.send_signal(signal.SIGTERM)
        elif self.source == "file":
            watch.with_suffix(".tmp").write_text("")
            os.replace(watch.with_suffix(".tmp"), watch)
        else:
            self.emulator.trigger(**TRIGGERS.get(self.source, TRIGGERS["aws"]))
        return now

    async def run_trial(self, proc: asyncio.subprocess.Process, spread_s: float) -> None:
        out, _ = self.paths()
        await asyncio.sleep(random.uniform(0, spread_s))  # a random poll phase
        sent = self.trigger(proc)
        try:
            await until(out.exists)
            self.latencies.append(float(out.read_text()) - sent)
        except TimeoutError:
            self.missed += 1
        await stop(proc, self.ready_file())


async def until(condition: Any, timeout: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# Every process started, so that none outlives the benchmark whatever happens.
RUNNING: list[tuple[asyncio.subprocess.Process, Path]] = []


async def stop(proc: asyncio.subprocess.Process, ready: Path, at_once: bool = False) -> None:
    try:
        if at_once:
            raise TimeoutError
        await asyncio.wait_for(proc.wait(), WAIT_S)
    except TimeoutError:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    try:  # a command left behind by a killed agent lives in its own process group
        os.killpg(int(ready.read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


async def measure_latency(lanes: list[Lane], trials: int, spread_s: float) -> None:
    while active := [lane for lane in lanes if lane.pending(trials_for(lane, lanes, trials))]:
        procs = await asyncio.gather(*(lane.start() for lane in active))
        await asyncio.gather(*(lane.run_trial(p, spread_s) for lane, p in zip(active, procs) if p))


def trials_for(lane: Lane, lanes: list[Lane], trials: int) -> int:
    """This lane's share of the source's trials (lanes of a source split them evenly)."""
    same = [x for x in lanes if x.source == lane.source]
    share, extra = divmod(trials, len(same))
    return share + (1 if same.index(lane) < extra else 0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def measure_cpu(lanes: list[Lane], seconds: float) -> dict[str, float]:
    """CPU % of one core used by each idle agent (and the baseline loop) over `seconds`."""
    procs = await asyncio.gather(*(lane.start() for lane in lanes))
    if not all(procs):
        raise SystemExit("an idle agent did not start; the machine is too loaded to measure CPU")
    await asyncio.sleep(2.0)  # past start-up: only the steady watching is measured
    before = {lane.source: cpu_seconds(p.pid) for lane, p in zip(lanes, procs)}
    started = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - started
    used = {lane.source: 100 * (cpu_seconds(p.pid) - before[lane.source]) / elapsed for lane, p in zip(lanes, procs)}
    for lane, proc in zip(lanes, procs):
        lane.trigger(proc)
    await asyncio.gather(*(stop(p, lane.ready_file()) for lane, p in zip(lanes, procs)))
    return used


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: a value that was actually measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="spotrun-bench-"))
    sources = (*args.sources, BASELINE)
    lanes = [Lane(s, i, tmp) for s in args.sources for i in range(args.lanes)]
    baseline_lanes = [Lane(BASELINE, i, tmp) for i in range(args.baseline_lanes)]
    idle = [Lane(s, 100, tmp) for s in sources]
    for lane in (*lanes, *baseline_lanes, *idle):
        await lane.open()
    try:
        started = time.monotonic()
        await measure_latency(lanes, args.trials, spread_s=1.0)
        await measure_latency(baseline_lanes, args.trials, spread_s=BASELINE_INTERVAL_S)
        latency_s = time.monotonic() - started
        cpu = await measure_cpu(idle, args.cpu_seconds)
    finally:
        for proc, ready in RUNNING:
            if proc.returncode is None:
                await stop(proc, ready, at_once=True)
        for lane in (*lanes, *baseline_lanes, *idle):
            await lane.close()
        shutil.rmtree(tmp, ignore_errors=True)
    base = [x for lane in baseline_lanes for x in lane.latencies]
    base_p50 = percentile(base, 50)
    results = []
    for source in sources:
        group = [lane for lane in (*lanes, *baseline_lanes) if lane.source == source]
        values = [x for lane in group for x in lane.latencies]
        p50, p99 = percentile(values, 50), percentile(values, 99)
        target = TARGET_P99_S.get(source)
        results.append({
            "source": source, "trials": len(values), "missed": sum(lane.missed for lane in group),
            "failed_starts": sum(lane.failed_starts for lane in group),
            "p50_s": p50, "p99_s": p99, "max_s": max(values, default=float("nan")),
            "target_p99_s": target, "meets_target": None if target is None else p99 <= target,
            "p50_speedup_vs_5s_poll": base_p50 / p50 if p50 > 0 else None,
            "idle_cpu_pct": cpu[source],
        })
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "trials_per_source": args.trials, "latency_phase_s": latency_s,
        "cpu_window_s": args.cpu_seconds, "cpu_target_pct": TARGET_CPU_PCT,
        "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "results": results,
    }


def show(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    def ms(value: float) -> str:
        return f"{value * 1000:.0f}ms"

    table = Table(title=f"Notice -> signal latency ({report['trials_per_source']} trials per source)")
    columns = ("source", "trials", "missed", "no start", "p50", "p99", "max", "p99 target",
               "p50 speed-up vs 5 s poll", "idle CPU")
    for column in columns:
        table.add_column(column, justify="left" if column == "source" else "right")
    for r in report["results"]:
        target = "-" if r["target_p99_s"] is None else f"≤{ms(r['target_p99_s'])} " + ("ok" if r["meets_target"] else "MISSED")
        speedup = "baseline" if r["source"] == BASELINE else f"{r['p50_speedup_vs_5s_poll']:.0f}x"
        table.add_row(
            r["source"], str(r["trials"]), str(r["missed"]), str(r["failed_starts"]),
            ms(r["p50_s"]), ms(r["p99_s"]), ms(r["max_s"]),
            target, speedup, f"{r['idle_cpu_pct']:.2f}%",
        )
    console = Console(width=max(Console().width, 110))
    console.print(table)
    console.print(
        f"idle CPU target ≤ {report['cpu_target_pct']} % of one core, over {report['cpu_window_s']:.0f} s; "
        f"{report['cores']} cores, load average {report['load_avg_1m']:.2f} "
        "(a loaded machine adds scheduling delay to every number)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per source (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 trials per source, 10 s CPU window")
    parser.add_argument("--lanes", type=int, default=3, help="concurrent trials per source (default 3)")
    parser.add_argument("--baseline-lanes", type=int, default=25, help="concurrent baseline trials (default 25)")
    parser.add_argument("--cpu-seconds", type=float, default=30.0, help="idle CPU window (default 30 s)")
    parser.add_argument("--sources", type=lambda v: tuple(v.split(",")), default=SOURCES,
                        help=f"comma-separated subset of {','.join(SOURCES)} (default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ns = parser.parse_args()
    if unknown := set(ns.sources) - set(SOURCES):
        parser.error(f"unknown source(s) {', '.join(sorted(unknown))}; choose from {', '.join(SOURCES)}")
    if ns.quick:
        ns.trials, ns.cpu_seconds = min(ns.trials, 20), min(ns.cpu_seconds, 10.0)
    report = asyncio.run(main(ns))
    if ns.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
