"""The AWS provider on the local AWS (moto EC2 + S3, VM runner): how fast a reclaim is seen and
replaced, and how many EC2 calls a reconciler pass costs as the fleet grows.

1. Recovery: a job runs on a spot instance booted from its real user data; the VM runner gives
   EC2's notice (IMDS `spot/instance-action`) and terminates it in moto with
   `Server.SpotInstanceTermination` at the deadline. Timed from the notice: the controller
   records the reclaim, and the replacement's `RunInstances` reaches EC2. Baseline in the same
   run: the same reclaim with the notice endpoint silenced, so only EC2's state tells (the
   path of a notice that never came). Anchor: SkyPilot's managed jobs poll every 15 s.
2. Scale: N jobs running (instances left unbooted, so only the control plane is measured); the
   EC2 calls of each steady reconciler pass, counted at the fault proxy. Baseline: N = 1.

    .venv/bin/python benchmarks/aws_recovery.py [--reclaims 5] [--jobs 1 100] [--lead 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

LEAD_S = 3.0
INTERVAL_S = 1.0  # the controller's default pass interval


def _env(aws) -> None:
    os.environ.update(aws.env)


async def _recovery(root: Path, reclaims: int, lead_s: float, silent: bool) -> list[dict[str, float]]:
    from spotrun.controller import api, repo
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler
    from spotrun.emulators.local_aws import LocalAws
    from spotrun.providers.aws import AwsConfig, AwsProvider

    os.environ["SPOTRUN_HOME"] = str(root / ("silent" if silent else "notice"))
    os.environ.pop("SPOTRUN_DB_URL", None)
    out = []
    with LocalAws(root / ("aws-silent" if silent else "aws"), lead_s=lead_s) as aws:
        _env(aws)
        db = Database()
        reconciler = Reconciler(db, {"aws": AwsProvider(AwsConfig.from_env())}, interval=INTERVAL_S)
        stop = asyncio.Event()
        task = asyncio.create_task(reconciler.run(stop))
        job = api.launch({"run": "sleep 3600", "resources": {"cloud": "aws"},
                          "recovery": {"max_reclaims": reclaims + 1}}, start_controller=False).id
        try:
            for n in range(reclaims):
                instance = await _wait(lambda: _running(db, job, n + 1))
                vm = await _wait(lambda: aws.runner.vms.get(instance.rpartition(":")[2]))
                await _wait(lambda: (vm.root / "boot.log").exists() and "watching" in (vm.root / "boot.log").read_text())
                if silent:
                    aws.call(vm.emulator.stop())
                before = len(aws.proxy.history)
                aws.reclaim(instance)
                await _wait(lambda: repo.get_view(db, job)["reclaims"] == n + 1, timeout=120)
                await _wait(lambda: any(a == "RunInstances" for _, a in aws.proxy.history[before:]))
                notice_at = aws.runner.reclaims[-1]["notice_at"]
                recorded = next(e["at"] for e in repo.get_view(db, job)["events"] if e["kind"] == "reclaim" and e["attempt"] == n + 1)
                requested = next(t for t, a in aws.proxy.history[before:] if a == "RunInstances")
                out.append({"recorded_s": recorded - notice_at, "requested_s": requested - notice_at})
        finally:
            repo.request_cancel(db, job)
            await _wait(lambda: repo.get_view(db, job)["status"] == "CANCELLED", timeout=60)
            stop.set()
            await task
            db.close()
    return out


def _running(db, job: str, attempt: int) -> str | None:
    from spotrun.controller import repo

    with db.session() as s:
        live = [a for a in repo.attempts_of(s, job) if a.ended_at is None and a.instance_id and a.number == attempt]
    return live[0].instance_id if live else None


async def _wait(predicate, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise TimeoutError("benchmark step timed out")


async def _scale(root: Path, jobs: int, passes: int = 5) -> dict[str, float]:
    from spotrun.controller import api
    from spotrun.controller.db import Database
    from spotrun.controller.reconciler import Reconciler
    from spotrun.emulators.local_aws import LocalAws
    from spotrun.providers.aws import AwsConfig, AwsProvider

    os.environ["SPOTRUN_HOME"] = str(root / f"scale-{jobs}")
    with LocalAws(root / f"aws-scale-{jobs}", boot=False) as aws:
        _env(aws)
        db = Database()
        provider = AwsProvider(AwsConfig.from_env())
        reconciler = Reconciler(db, {"aws": provider}, interval=INTERVAL_S, sweep_every=passes)
        for _ in range(jobs):
            api.launch({"run": "sleep 3600", "resources": {"cloud": "aws"}}, start_controller=False)
        await reconciler.run_once()  # launches every job
        await asyncio.sleep(INTERVAL_S)
        counts = []
        for _ in range(passes):
            before = sum(aws.proxy.calls.values())
            await reconciler.run_once()
            counts.append(sum(aws.proxy.calls.values()) - before)
            await asyncio.sleep(INTERVAL_S)
        db.close()
    return {"jobs": jobs, "ec2_calls_per_pass": statistics.mean(counts), "max": max(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reclaims", type=int, default=5)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--lead", type=float, default=LEAD_S)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import logging

    logging.getLogger("spotrun").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="spotrun-aws-bench-") as tmp:
        root = Path(tmp)
        notice = asyncio.run(_recovery(root, args.reclaims, args.lead, silent=False))
        silent = asyncio.run(_recovery(root, args.reclaims, args.lead, silent=True))
        scale = [asyncio.run(_scale(root, n)) for n in args.jobs]
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    result = {
        "lead_s": args.lead, "pass_interval_s": INTERVAL_S,
        "notice_to_reclaim_recorded_s": med(notice, "recorded_s"),
        "notice_to_replacement_requested_s": med(notice, "requested_s"),
        "silent_notice_to_reclaim_recorded_s": med(silent, "recorded_s"),
        "silent_notice_to_replacement_requested_s": med(silent, "requested_s"),
        "runs": {"notice": notice, "silent": silent},
        "scale": scale,
        "calls_ratio": scale[-1]["ec2_calls_per_pass"] / scale[0]["ec2_calls_per_pass"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"reclaim with a {args.lead:g}s notice, pass interval {INTERVAL_S:g}s, median of {args.reclaims}:")
    print(f"  notice -> reclaim recorded        {result['notice_to_reclaim_recorded_s']:6.2f}s "
          f"(EC2 state only: {result['silent_notice_to_reclaim_recorded_s']:.2f}s; SkyPilot polls every 15s)")
    print(f"  notice -> replacement requested   {result['notice_to_replacement_requested_s']:6.2f}s "
          f"(EC2 state only: {result['silent_notice_to_replacement_requested_s']:.2f}s)")
    for row in scale:
        print(f"  {row['jobs']:4d} running jobs: {row['ec2_calls_per_pass']:.1f} EC2 calls per pass (max {row['max']})")
    print(f"  ratio {scale[-1]['jobs']} jobs / {scale[0]['jobs']} job: x{result['calls_ratio']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
