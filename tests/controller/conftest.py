"""Controller fixtures: every database test runs on SQLite and on a real PostgreSQL server.

`scripts/test` starts PostgreSQL and sets SPOTRUN_TEST_PG_URL; when it is unset (a local run
of this folder alone) a private server is started here from the system's PostgreSQL binaries.
Each test gets its own fresh database.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

from .helpers import ControllerProcess




def _start_private_pg(base: Path) -> tuple[str, Callable[[], None]]:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    assert bins, "PostgreSQL is not installed: run scripts/test, or set SPOTRUN_TEST_PG_URL"
    bindir = bins[-1].parent
    as_pg = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    base.mkdir(parents=True, exist_ok=True)
    if as_pg:
        shutil.chown(base, "postgres")
    port = free_port()
    subprocess.run([*as_pg, bindir / "initdb", "-D", base / "data", "-U", "postgres", "--auth=trust"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [*as_pg, bindir / "pg_ctl", "-D", base / "data", "-l", base / "log", "-w",
         "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off", "start"],
        check=True, stdout=subprocess.DEVNULL,
    )

    def stop() -> None:
        subprocess.run([*as_pg, bindir / "pg_ctl", "-D", base / "data", "-m", "immediate", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SPOTRUN_TEST_PG_URL")
    if url:
        yield url
        return
    base = Path("/tmp") / f"spotrun-ctl-pg-{secrets.token_hex(4)}"
    url, stop = _start_private_pg(base)
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(base, ignore_errors=True)


def _fresh_pg_database(server_url: str) -> tuple[str, Callable[[], None]]:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    name = f"spotrun_t_{secrets.token_hex(6)}"
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, spotrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database URL, also exported as SPOTRUN_DB_URL for child processes."""
    if request.param == "sqlite":
        url, drop = f"sqlite:///{spotrun_home / 'spotrun.db'}", lambda: None
    else:
        url, drop = _fresh_pg_database(request.getfixturevalue("pg_server"))
    monkeypatch.setenv("SPOTRUN_DB_URL", url)
    try:
        yield url
    finally:
        drop()


@pytest.fixture
def db(db_url: str):
    from spotrun.controller.db import Database

    database = Database(db_url)
    yield database
    database.close()


@pytest.fixture
def local_root(spotrun_home: Path) -> Path:
    """Where `spotrun.controller.service.make_providers` keeps local instances."""
    return spotrun_home / "local"


@pytest.fixture
def providers(local_root: Path) -> Iterator[dict]:
    """The real local provider; every instance it still holds is terminated after the test."""
    from spotrun.providers.local.provider import LocalProvider

    provider = LocalProvider(local_root)
    yield {"local": provider}
    _terminate_all(provider)


def _terminate_all(provider) -> None:
    async def go() -> None:
        for inst in await provider.list_instances():
            await provider.terminate(inst.id)

    asyncio.run(go())


@pytest.fixture
def controller_process(spotrun_home: Path) -> Iterator[Callable[..., ControllerProcess]]:
    started: list[ControllerProcess] = []

    def start(env: dict[str, str] | None = None, args: list[str] | None = None) -> ControllerProcess:
        proc = ControllerProcess(spotrun_home, env, args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
