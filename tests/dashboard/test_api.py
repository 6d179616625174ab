"""The JSON API and /metrics over HTTP on SQLite and PostgreSQL, and the guards of
`spotrun dashboard`: loopback by default, a token for anything else, actions need a header."""

from __future__ import annotations

import subprocess
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.controller.models import Job
from spotrun.controller.spec import load_spec

from tests.controller.helpers import WAIT_S

TOKEN = "s3cret-token-for-tests-0123"


def seed(db_url: str, n: int, names: str = "sweep-{i}") -> list[str]:
    """`n` jobs through repo.create_job; every third FAILED, the rest PENDING."""
    db = Database(db_url)
    try:
        ids = [repo.create_job(db, load_spec({"name": names.format(i=i), "run": "true"})) for i in range(n)]
        with db.session() as s:
            s.execute(update(Job).where(Job.id.in_(ids[::3])).values(status="FAILED", finished_at=time.time()))
        return ids
    finally:
        db.close()


@pytest.fixture
def stops_daemon(providers: dict):
    """For a test whose actions start the background controller (as `spotrun resume` does)."""
    from spotrun.controller.service import stop_daemon

    yield
    stop_daemon()


def test_pages_filters_and_errors(db_url: str, dashboard, stops_daemon) -> None:
    ids = seed(db_url, 120)
    seed(db_url, 1, names="odd_50%_name")  # FAILED too: 41 FAILED, 80 PENDING in all
    dash = dashboard()

    first = dash.get("/api/jobs?limit=50")
    assert first.status_code == 200 and len(first.json()) == 50
    assert first.headers["x-total-count"] == "121"
    assert 'rel="next"' in first.headers["link"] and "offset=50" in first.headers["link"]
    last = dash.get("/api/jobs?limit=50&offset=100&order=oldest").json()
    assert [v["id"] for v in last] == ids[100:] + [last[-1]["id"]] and "link" not in dash.get("/api/jobs?limit=50&offset=100").headers
    failed = dash.get("/api/jobs?state=failed&limit=1000")
    assert failed.headers["x-total-count"] == "41" and {v["status"] for v in failed.json()} == {"FAILED"}
    both = dash.get("/api/jobs?state=FAILED,PENDING&limit=1").headers["x-total-count"]
    assert both == "121"
    assert [v["name"] for v in dash.get("/api/jobs", params={"q": "_50%"}).json()] == ["odd_50%_name"]
    assert dash.get("/api/jobs", params={"q": ids[7][:6]}).json()[0]["id"] == ids[7]

    summary = dash.get("/api/summary").json()
    assert summary["states"]["FAILED"] == 41 and summary["states"]["PENDING"] == 80
    assert summary["controller"]["active_jobs"] == 80

    families = {f.name: f for f in text_string_to_metric_families(dash.get("/metrics").text)}
    by_state = {s.labels["state"]: s.value for s in families["spotrun_jobs"].samples}
    assert by_state["FAILED"] == 41 and by_state["PENDING"] == 80 and by_state["RUNNING"] == 0

    missing = dash.get("/api/jobs/nope")
    assert missing.status_code == 404 and "no job 'nope'" in missing.json()["error"]
    bad = dash.get("/api/jobs?limit=lots")
    assert bad.status_code == 400 and bad.json() == {"error": "limit='lots' is not a whole number"}
    assert dash.get("/api/jobs?limit=0").status_code == 400
    assert "not a job state" in dash.get("/api/jobs?state=RUNING").json()["error"]
    assert dash.get(f"/api/jobs/{ids[1]}/logs").json()["attempts"] == []
    assert dash.get(f"/api/jobs/{ids[1]}/progress").json() == {"id": ids[1], "source": "none", "attempts": [], "lost": []}
    assert dash.get(f"/api/jobs/{ids[1]}/snapshots").json()["note"] == "this job keeps no checkpoints"

    forged = dash.post(f"/api/jobs/{ids[0]}/resume")
    assert forged.status_code == 403 and "x-spotrun-action" in forged.json()["error"]
    act = {"x-spotrun-action": "1"}
    finished = dash.post(f"/api/jobs/{ids[1]}/interrupt", headers=act)
    assert finished.status_code == 409 and "no running instance" in finished.json()["error"]
    assert dash.post(f"/api/jobs/{ids[0]}/cancel", headers=act).status_code == 409  # FAILED already
    assert dash.post(f"/api/jobs/{ids[0]}/explode", headers=act).status_code == 404
    assert dash.post(f"/api/jobs/{ids[0]}/interrupt", headers=act, json={"lead_time": "soon"}).status_code == 400
    db = Database(db_url)  # the controller resume starts should run one job, not all 80 waiting
    with db.session() as s:
        s.execute(update(Job).where(Job.status == "PENDING").values(status="CANCELLED", finished_at=time.time()))
    db.close()
    resumed = dash.post(f"/api/jobs/{ids[0]}/resume", headers=act)
    assert resumed.json() == {"action": "resume", "id": ids[0], "status": "PENDING"}
    assert dash.get("/api/controller").json()["running"] is True  # started to act on it, as the CLI does


def test_loopback_only_unless_a_token_guards_it(spotrun_cmd: list[str], spotrun_home, dashboard) -> None:
    refused = subprocess.run([*spotrun_cmd, "dashboard", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=WAIT_S,
                             env={k: v for k, v in __import__("os").environ.items() if k != "SPOTRUN_DASHBOARD_TOKEN"})
    assert refused.returncode == 2 and "refusing to serve on 0.0.0.0 without a token" in " ".join(refused.stderr.split())
    assert "Traceback" not in refused.stderr
    weak = subprocess.run([*spotrun_cmd, "dashboard", "--token", "short"], capture_output=True, text=True, timeout=WAIT_S)
    assert weak.returncode == 2 and "too short" in weak.stderr

    open_ = dashboard()
    assert open_.get("/api/jobs").status_code == 200
    for foreign in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "["):
        rebound = open_.get("/api/jobs", headers={"host": foreign})
        assert rebound.status_code == 400, foreign  # DNS rebinding: a foreign Host never reaches the API
    assert open_.get("/api/jobs", headers={"host": f"localhost:{open_.port}"}).status_code == 200
    page = open_.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    taken = subprocess.run([*spotrun_cmd, "dashboard", "--port", str(open_.port)], capture_output=True, text=True, timeout=WAIT_S)
    assert taken.returncode == 2 and "--port" in taken.stderr and "Traceback" not in taken.stderr

    guarded = dashboard(env={"SPOTRUN_DASHBOARD_TOKEN": TOKEN})
    assert TOKEN not in guarded.log.read_text()
    assert guarded.get("/api/jobs").status_code == 401
    assert guarded.get("/metrics").status_code == 401
    assert guarded.get("/api/jobs", headers={"authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    assert guarded.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    with httpx.Client(base_url=guarded.url, timeout=WAIT_S) as browser:
        login = browser.get(f"/jobs/abc?token={TOKEN}&x=1")
        assert login.status_code == 303 and login.headers["location"] == "/jobs/abc?x=1"
        cookie = browser.cookies.get("spotrun_dashboard")
        assert cookie and TOKEN not in cookie  # the cookie holds an HMAC of the token, not the token
        assert browser.get("/api/jobs").status_code == 200


@pytest.mark.parametrize("bad_port", ["-1", "70000"])
def test_bad_port_is_one_line(spotrun_cmd: list[str], bad_port: str) -> None:
    proc = subprocess.run([*spotrun_cmd, "dashboard", "--port", bad_port], capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 2 and "--port" in proc.stderr and "Traceback" not in proc.stderr


def test_fleet_and_metrics_aggregate_attempts_and_events(db_url: str, dashboard) -> None:
    """Known attempts and events, as the reconciler writes them: one job reclaimed in zone a (notice
    3 s before its relaunch), one failing on-demand in zone b, one policy decision."""
    from spotrun.controller.models import Attempt, Event

    spot_job, od_job = seed(db_url, 2)
    t = time.time() - 3600
    db = Database(db_url)
    with db.session() as s:
        def attempt(job: str, n: int, spot: bool, zone: str, start: float, end: float, cause: str) -> None:
            s.add(Attempt(job_id=job, number=n, token=f"{job}-{n}", instance_id=f"i-{job}-{n}", spot=spot, zone=zone,
                          instance_type="g5.xlarge", price=0.3 if spot else 1.0, on_demand_price=1.0, created_at=start,
                          started_at=start, ended_at=end, cause=cause))

        attempt(spot_job, 1, True, "a", t, t + 1800, "reclaim")
        attempt(spot_job, 2, True, "a", t + 1803, t + 3600, "success")
        attempt(od_job, 1, False, "b", t, t + 900, "error")
        for job, n, at, kind in ((spot_job, 1, t + 1800, "notice"), (spot_job, 1, t + 1800.5, "reclaim"),
                                 (spot_job, 2, t + 1803, "launched"), (od_job, None, t + 5, "decision")):
            s.add(Event(job_id=job, attempt=n, at=at, kind=kind, message=f"{kind} message"))
    db.close()
    dash = dashboard()

    fleet = dash.get("/api/fleet").json()
    assert fleet["hours"] == {"spot": pytest.approx(3597 / 3600, abs=1e-4), "on_demand": 0.25}
    assert fleet["cost"]["on_demand"] == pytest.approx(0.25) and fleet["cost"]["spot"] == pytest.approx(0.3 * 3597 / 3600, abs=1e-4)
    assert fleet["cost"]["saving"] == pytest.approx(0.7 * 3597 / 3600, abs=1e-4)
    zones = {z["zone"]: (z["attempts"], z["reclaims"], z["errors"]) for z in fleet["zones"]}
    assert zones == {"a": (2, 1, 0), "b": (1, 0, 1)}
    over_time = fleet["reclaims_over_time"]
    assert [(s["key"], sum(s["counts"])) for s in over_time["zone"]["series"]] == [("local/a", 1)]
    assert [s["key"] for s in over_time["instance_type"]["series"]] == ["g5.xlarge"]
    assert [(d["job_id"], d["message"]) for d in fleet["decisions"]] == [(od_job, "decision message")]

    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(dash.get("/metrics").text) for s in f.samples}
    local = (("provider", "local"),)
    assert samples[("spotrun_notice_to_relaunch_seconds_count", local)] == 1
    assert samples[("spotrun_notice_to_relaunch_seconds_sum", local)] == pytest.approx(3.0)
    assert samples[("spotrun_notice_to_relaunch_seconds_bucket", (("le", "2.0"), *local))] == 0
    assert samples[("spotrun_notice_to_relaunch_seconds_bucket", (("le", "5.0"), *local))] == 1
    assert samples[("spotrun_reclaims_total", (*local, ("zone", "a")))] == 1
    assert samples[("spotrun_errors_total", (*local, ("zone", "b")))] == 1
    assert samples[("spotrun_attempts_total", (("capacity", "spot"), *local, ("zone", "a")))] == 2
    assert samples[("spotrun_attempts_total", (("capacity", "on_demand"), *local, ("zone", "b")))] == 1
    assert samples[("spotrun_on_demand_cost_dollars_total", (("capacity", "on_demand"), *local))] == pytest.approx(0.25)
    assert samples[("spotrun_saving_dollars", local)] == pytest.approx(fleet["cost"]["saving"], abs=1e-6)
