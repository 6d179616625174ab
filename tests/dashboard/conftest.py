"""Dashboard fixtures: `spotrun dashboard` in a child process, and Debian's Chromium driven by
Playwright (never `playwright install`: the browser comes from the system's packages, which
`scripts/test` installs when missing)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, free_port
from tests.controller.conftest import db_url, local_root, pg_server, providers  # noqa: F401  (fixtures)
from tests.controller.helpers import WAIT_S, wait_until

CHROMIUM = os.environ.get("SPOTRUN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots are kept for people to look at (CI uploads the folder)."""
    path = Path(os.environ.get("SPOTRUN_TEST_ARTIFACTS", REPO / "test-artifacts")) / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Module-scoped: Playwright's sync API holds an event loop in the main thread while it runs,
    and every later test's `asyncio.run()` would find it running."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/test, or apt-get install chromium"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, device_scale_factor=1)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    # An API answering 4xx is logged by the browser too; the page shows those itself.
    p.on("console", lambda msg: msg.type == "error" and "/api/" not in msg.location.get("url", "") and errors.append(msg.text))
    yield p
    context.close()
    assert not errors, f"the page logged errors: {errors}"


class Dashboard:
    """`spotrun dashboard` as a user starts it, on a free port."""

    def __init__(self, home: Path, extra: list[str] | None = None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / f"dashboard-{self.port}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "spotrun", "dashboard", "--port", str(self.port), *(extra or [])],
                env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_until(self._up, what=f"the dashboard on port {self.port}")

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            httpx.get(f"{self.url}/api/controller", timeout=2)
            return True
        except httpx.TransportError:
            return False

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=WAIT_S, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=WAIT_S, **kw)

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def dashboard(spotrun_home: Path) -> Iterator[Callable[..., Dashboard]]:
    """Start dashboards with `dashboard(extra_args, env)`; all are stopped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda extra=None, env=None: stack.enter_context(Dashboard(spotrun_home, extra, env))
