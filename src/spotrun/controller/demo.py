"""`spotrun demo`: a training job survives reclaims on this machine, next to an uninterrupted twin.

Two jobs run `examples/train.py` under the real controller, provider and agent: one on the
local spot market, which reclaims instances every few tens of seconds with a short notice,
and one on on-demand capacity, never reclaimed. The summary compares them: same final weights,
work lost per reclaim, wall time and cost.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spotrun.controller import api, repo
from spotrun.controller.db import Database
from spotrun.controller.models import JobStatus
from spotrun.controller.reconciler import Reconciler
from spotrun.paths import default_store_url, home
from spotrun.sdk.events import EVENTS_ENV, read_events


@dataclass(frozen=True)
class DemoConfig:
    script: Path
    steps: int = 300
    step_time: float = 0.15
    reclaim_every: float = 20.0  # mean spot lifetime on the local market
    lead_time: float = 3.0
    seed: int | None = None
    timeout: float = 300.0
    cloud: str = "local"  # or "aws": moto's EC2 and S3 with the VM runner (spotrun.emulators.local_aws)


AWS_ZONES = ["us-east-1a", "us-east-1b"]


def default_script() -> Path:
    """`examples/train.py` of a source checkout (the package lives in src/spotrun)."""
    return Path(__file__).resolve().parents[3] / "examples" / "train.py"


def job_specs(cfg: DemoConfig, out_dir: Path) -> dict[str, dict]:
    def spec(name: str, spot: bool) -> dict:
        args = f"--steps {cfg.steps} --step-time {cfg.step_time} --every 25 --output {out_dir / name}.json"
        job: dict[str, Any] = {
            "name": name,
            "run": f"{sys.executable} {cfg.script} {args}",
            "resources": {"spot": spot} if cfg.cloud == "local" else {"cloud": cfg.cloud, "spot": spot, "zones": AWS_ZONES},
            "recovery": {"max_reclaims": 100, "backoff": {"base": "200ms", "max": "2s"}},
            "notice": {"lead_time": cfg.lead_time},
            "env": {EVENTS_ENV: str(out_dir / f"{name}.events.jsonl")},
            # On a cloud, the provider's own store (one its instances reach), not this machine's.
            "checkpoint": {"dir": "checkpoints", "sync_interval": "2s", "keep": 2,
                           **({"store": default_store_url()} if cfg.cloud == "local" else {})},
        }
        return job

    return {"spot": spec("demo-spot", True), "on-demand": spec("demo-on-demand", False)}


@dataclass
class Progress:
    """What a job's events file says: its newest step, and the steps each reclaim cost."""

    step: int = -1
    lost: list[int] = field(default_factory=list)
    result: dict | None = None


def read_progress(out_dir: Path, name: str) -> Progress:
    """From the `progress` events train.py reports (one JSON line per step, tagged with the
    attempt) and its `--output` file; a step reported again on a later attempt was lost work."""
    by_attempt: dict[str, list[int]] = {}
    for event in read_events(out_dir / f"{name}.events.jsonl"):
        if event["event"] == "progress":
            by_attempt.setdefault(str(event.get("attempt")), []).append(int(event["step"]))
    p = Progress()
    for steps in by_attempt.values():  # attempts in the order they ran
        if p.step >= 0:
            p.lost.append(max(0, p.step - steps[0] + 1))
        p.step = max(p.step, *steps)
    result = out_dir / f"{name}.json"
    if result.exists():
        p.result = json.loads(result.read_text())
    return p


async def run_demo(cfg: DemoConfig, providers: dict, on_update: Callable[[dict], None]) -> dict[str, Any]:
    """Run both jobs to the end under an in-process reconciler; return the summary."""
    db = Database()
    out_dir = home() / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = job_specs(cfg, out_dir)
    ids = {kind: repo.create_job(db, api.prepare_spec(spec)) for kind, spec in specs.items()}
    reconciler = Reconciler(db, providers, interval=0.2, exclusive=True)
    stop = asyncio.Event()
    task = asyncio.create_task(reconciler.run(stop))
    deadline = time.monotonic() + cfg.timeout
    try:
        while True:
            rows = {
                kind: (repo.get_view(db, job_id), read_progress(out_dir, specs[kind]["name"]))
                for kind, job_id in ids.items()
            }
            on_update(rows)
            if all(JobStatus(v["status"]).terminal for v, _ in rows.values()):
                break
            if time.monotonic() > deadline:
                for job_id in ids.values():
                    repo.request_cancel(db, job_id)
                deadline = float("inf")
            await asyncio.sleep(0.25)
    finally:
        stop.set()
        await task
        provider = providers[cfg.cloud]
        for inst in await provider.list_instances():
            await provider.terminate(inst.id)
        db.close()
    return summarize(rows, cfg.steps)


def summarize(rows: dict, steps: int) -> dict[str, Any]:
    spot, spot_p = rows["spot"]
    od, od_p = rows["on-demand"]
    same = bool(spot_p.result and od_p.result and spot_p.result["weights_sha256"] == od_p.result["weights_sha256"])
    return {
        "completed": spot["status"] == "SUCCEEDED",
        "status": spot["status"],
        "reason": spot["reason"],
        "reclaims": spot["reclaims"],
        "attempts": spot["attempts"],
        "steps": steps,
        "work_lost_steps_per_reclaim": spot_p.lost,
        "same_result_as_uninterrupted": same,
        "wall_s": spot["wall_s"],
        "uninterrupted_wall_s": od["wall_s"],
        "wall_ratio": round(spot["wall_s"] / od["wall_s"], 3) if od["wall_s"] else None,
        "cost": spot["cost"],
        "on_demand_cost": od["cost"],
        "saving_pct": round(100 * (1 - spot["cost"] / od["cost"]), 1) if od["cost"] else None,
        "on_demand_status": od["status"],
    }
