"""The sim provider with 10 000 instances, against 100: launch, list, query, terminate, memory.

    .venv/bin/python benchmarks/sim_provider.py                  # 10 000 instances vs 100
    .venv/bin/python benchmarks/sim_provider.py --instances 100000 --json

Spot instances on a bundled trace played 600x faster than real time (a tick a second), so
states move while they are listed. Per instance: the median over `--rounds` of launching the
fleet, listing it (`list_instances`, what a reconciler pass calls once), querying each one, and
terminating each one; memory is what tracemalloc sees allocated by the fleet. A provider whose
calls cost the same per instance at any fleet size shows ratios near 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import tracemalloc
from dataclasses import replace

from spotrun.providers.base import LaunchRefused, LaunchRequest
from spotrun.providers.local.market import MarketConfig
from spotrun.providers.sim import SimConfig, SimProvider

TRACE = "aws-10-26-2022/us-west-2a_v100_1"


def _fleet(n: int) -> tuple[SimProvider, list[LaunchRequest]]:
    sim = SimProvider(SimConfig(market=MarketConfig(trace=TRACE, time_scale=1 / 600, lead_s=2.0, zone="sim-a"),
                                boot_s=1.0))
    # A quarter on-demand; the rest spot, on-demand where the trace refuses (as `spot: auto` would).
    requests = [LaunchRequest(token=f"t{i}", job_id=f"j{i}", attempt=1, run="x", spot=i % 4 != 0,
                              cloud={"sim": {"work": 3600}}) for i in range(n)]
    return sim, requests


async def _launch_all(sim: SimProvider, requests: list[LaunchRequest]) -> list[str]:
    ids = []
    for r in requests:
        try:
            ids.append((await sim.launch(r)).id)
        except LaunchRefused:
            ids.append((await sim.launch(replace(r, spot=False))).id)
    return ids


async def one_round(n: int) -> dict[str, float]:
    sim, requests = _fleet(n)
    t = time.perf_counter()
    ids = await _launch_all(sim, requests)
    launch = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(5):
        await sim.list_instances()
    listing = (time.perf_counter() - t) / 5
    t = time.perf_counter()
    for i in ids:
        await sim.query(i)
    query = time.perf_counter() - t
    t = time.perf_counter()
    for i in ids:
        await sim.terminate(i)
    terminate = time.perf_counter() - t
    # Memory apart: tracemalloc slows every allocation, so it never runs while timing.
    sim, requests = _fleet(n)
    tracemalloc.start()
    await _launch_all(sim, requests)
    memory = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"launch_us": launch / n * 1e6, "list_us": listing / n * 1e6, "query_us": query / n * 1e6,
            "terminate_us": terminate / n * 1e6, "memory_bytes": memory / n}


def measure(n: int, rounds: int) -> dict[str, float]:
    runs = [asyncio.run(one_round(n)) for _ in range(rounds)]
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base, big = measure(args.baseline, args.rounds * 4), measure(args.instances, args.rounds)
    report = {"instances": args.instances, "baseline_instances": args.baseline, "per_instance": big, "baseline_per_instance": base,
              "ratio": {k: round(big[k] / base[k], 2) for k in big}}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'per instance':16s} {args.baseline:>10,d} {args.instances:>10,d} {'ratio':>7s}")
    for k in big:
        print(f"{k:16s} {base[k]:10.2f} {big[k]:10.2f} {report['ratio'][k]:7.2f}")


if __name__ == "__main__":
    main()
