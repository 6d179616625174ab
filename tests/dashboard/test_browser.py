"""The dashboard in a real headless Chromium, over a real controller, agent and local provider:
a job is reclaimed from the page and relaunched, another cancelled from the page, and /metrics
and the API agree with the database and the CLI."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import spotrun
from spotrun.controller.demo import DemoConfig, default_script, job_specs

from tests.controller.conftest import _terminate_all as terminate_all
from tests.controller.helpers import WAIT_S, counter_job

PAGE_WAIT_MS = WAIT_S * 1000


def cli_json(spotrun_cmd: list[str], *args: str):
    proc = subprocess.run([*spotrun_cmd, *args, "--json"], capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def metrics(dash) -> dict[str, dict[tuple, float]]:
    """Every sample by name, keyed by its sorted labels, as Prometheus' own parser reads it."""
    res = dash.get("/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(res.text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def daemon(spotrun_home: Path, local_root: Path, spotrun_cmd: list[str], monkeypatch: pytest.MonkeyPatch):
    """The background controller, as `spotrun launch` starts it; afterwards no instance is left."""
    from spotrun.controller.service import stop_daemon
    from spotrun.providers.local.provider import LocalProvider

    monkeypatch.setenv("SPOTRUN_DB_URL", f"sqlite:///{spotrun_home / 'spotrun.db'}")
    cli_json(spotrun_cmd, "controller", "start", "--interval", "200ms")
    yield
    stop_daemon()
    # In a thread: Playwright's sync API keeps an event loop on this one, so asyncio.run fails here.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(terminate_all, LocalProvider(local_root)).result()


def test_reclaim_relaunch_and_cancel_from_the_page(
    tmp_path: Path, spotrun_cmd: list[str], daemon, dashboard, page, artifacts: Path
) -> None:
    # Long enough never to finish by itself while the (loaded) test machine gets to the clicks; a
    # notice lead that leaves the save and its upload time after the agent's 1-s metadata poll.
    spec = job_specs(DemoConfig(script=default_script(), steps=5000, step_time=0.05, lead_time=6.0), tmp_path)["spot"]
    train = spotrun.launch({**spec, "name": "train-spot", "checkpoint": {**spec["checkpoint"], "sync_interval": "500ms"}})
    idle = spotrun.launch(counter_job(tmp_path, "idle", steps=100_000, step_s=0.1))
    dash = dashboard()

    page.goto(dash.url + "/")
    page.wait_for_selector(f'tr[data-job="{idle.id}"]', timeout=PAGE_WAIT_MS)
    assert page.locator(f'tr[data-job="{train.id}"] a').inner_text() == "train-spot"
    page.screenshot(path=artifacts / "jobs.png", full_page=True)

    # Reclaim the training job from its page, with the confirmation dialog.
    page.click(f'tr[data-job="{train.id}"] a')
    page.wait_for_url(f"**/jobs/{train.id}")
    page.wait_for_selector('svg.progress g.pattempt[data-attempt="1"]', timeout=PAGE_WAIT_MS, state="attached")
    page.click('button[data-action="interrupt"]', timeout=PAGE_WAIT_MS)
    assert page.locator("dialog#confirm").is_visible()
    page.click("#confirm-ok")

    # Live, without a reload: the notice, the reclaim, the relaunch arrow, attempt 2 running.
    page.wait_for_selector('svg.timeline g.attempt[data-attempt="1"][data-cause="reclaim"] .notice', timeout=PAGE_WAIT_MS, state="attached")
    page.wait_for_selector('svg.timeline path.relaunch[data-from="1"][data-to="2"]', timeout=PAGE_WAIT_MS, state="attached")
    page.wait_for_selector('svg.timeline g.attempt[data-attempt="2"][data-cause="live"] rect.bar', timeout=PAGE_WAIT_MS, state="attached")
    page.wait_for_selector('svg.progress g.pattempt[data-attempt="2"]', timeout=PAGE_WAIT_MS, state="attached")
    lost = page.locator('tr[data-lost="1"] td').all_inner_texts()
    assert lost[3] == "0", lost  # train.py saves on the notice: the relaunch resumes where it stopped
    page.wait_for_selector("#log:has-text('starting at step')", timeout=PAGE_WAIT_MS, state="attached")
    page.click('button[data-attempt="1"]')
    page.wait_for_selector("#log:has-text('notice: saved step')", timeout=PAGE_WAIT_MS, state="attached")
    page.wait_for_function("document.querySelectorAll('#main table tbody tr td.mono').length >= 1")
    page.screenshot(path=artifacts / "job.png", full_page=True)

    # Cancel it from the page; the timeline ends attempt 2 as cancelled.
    page.click('button[data-action="cancel"]', timeout=PAGE_WAIT_MS)
    page.click("#confirm-ok")
    page.wait_for_selector('.badge[data-state="CANCELLED"]', timeout=PAGE_WAIT_MS)
    page.wait_for_selector('svg.timeline g.attempt[data-attempt="2"][data-cause="cancel"]', timeout=PAGE_WAIT_MS, state="attached")
    assert train.status() == "CANCELLED"
    assert page.locator('button[data-action="resume"]').is_visible()

    # The jobs list follows a cancel made elsewhere (the CLI), and filters.
    page.goto(dash.url + "/")
    subprocess.run([*spotrun_cmd, "cancel", idle.id], check=True, capture_output=True, timeout=WAIT_S)
    page.wait_for_selector(f'tr[data-job="{idle.id}"] .badge[data-state="CANCELLED"]', timeout=PAGE_WAIT_MS)
    page.click('button[data-filter="SUCCEEDED"]')
    page.wait_for_selector("td.empty:has-text('no job matches these filters')", timeout=PAGE_WAIT_MS)
    page.click('button[data-filter="SUCCEEDED"]')
    page.wait_for_selector(f'tr[data-job="{idle.id}"]', timeout=PAGE_WAIT_MS)
    page.fill("input.search", "train-")
    page.wait_for_selector(f'tr[data-job="{idle.id}"]', state="detached", timeout=PAGE_WAIT_MS)
    assert page.locator("tr[data-job]").count() == 1 and page.locator(f'tr[data-job="{train.id}"]').is_visible()
    before = page.inner_text("#live")  # after the next live refresh, the search box still has the focus
    page.wait_for_function("t => document.getElementById('live').textContent !== t", arg=before, timeout=PAGE_WAIT_MS)
    assert page.evaluate("document.activeElement.classList.contains('search')")

    page.goto(dash.url + "/jobs/no-such-job")
    assert "no job 'no-such-job'" in page.wait_for_selector("#notfound", timeout=PAGE_WAIT_MS).inner_text()

    page.goto(dash.url + "/fleet")
    page.wait_for_selector('svg.reclaims rect[data-series="local/default"]', timeout=PAGE_WAIT_MS, state="attached")
    page.screenshot(path=artifacts / "fleet.png", full_page=True)
    page.click("button:has-text('by instance type')")
    page.wait_for_selector('svg.reclaims rect[data-series="default"]', timeout=PAGE_WAIT_MS, state="attached")
    assert page.locator('tr[data-zone="default"] td').nth(2).inner_text() == "1"  # its one reclaim

    # The API is the CLI's --json; /metrics agrees with the database.
    assert dash.get("/api/jobs?order=oldest").json() == cli_json(spotrun_cmd, "jobs")
    assert dash.get(f"/api/jobs/{train.id}").json() == cli_json(spotrun_cmd, "status", train.id)
    m = metrics(dash)
    views = cli_json(spotrun_cmd, "jobs")
    assert m["spotrun_jobs"][(("state", "CANCELLED"),)] == 2 and m["spotrun_jobs"][(("state", "RUNNING"),)] == 0
    assert sum(m["spotrun_jobs"].values()) == len(views)
    assert sum(m["spotrun_reclaims_total"].values()) == sum(v["reclaims"] for v in views) == 1
    assert sum(m["spotrun_attempts_total"].values()) == sum(v["attempts"] for v in views) == 3
    assert sum(m["spotrun_cost_dollars_total"].values()) == pytest.approx(sum(v["cost"] for v in views), abs=1e-5)
    assert m["spotrun_saving_dollars"][(("provider", "local"),)] == pytest.approx(sum(v["saving"] for v in views), abs=1e-5)
    relaunch = m["spotrun_notice_to_relaunch_seconds_count"][(("provider", "local"),)]
    assert relaunch == 1 and 0 < m["spotrun_notice_to_relaunch_seconds_sum"][(("provider", "local"),)] < WAIT_S
    stored = cli_json(spotrun_cmd, "ckpt", "ls", spec["checkpoint"]["store"], "--job", train.id)
    assert stored and m["spotrun_snapshots_total"][()] == len(stored)
    assert m["spotrun_snapshot_duration_seconds_count"][()] == len(stored)
