"""The database: migrations on open (SQLite and PostgreSQL), and the user-request rules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect, text

from spotrun.controller import repo
from spotrun.controller.db import MIGRATIONS, SCHEMA_HEAD, Database, DatabaseError
from spotrun.controller.models import Base, Job, JobStatus
from spotrun.controller.spec import load_spec_text


def test_open_migrates_to_head_and_matches_models(db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
        assert {"jobs", "attempts", "events"} <= set(inspect(conn).get_table_names())
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    Database(db.url).close()  # opening again is a no-op upgrade


def test_schema_head_constant_is_alembic_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == SCHEMA_HEAD


def test_concurrent_first_opens_do_not_collide(db_url: str) -> None:
    code = "from spotrun.controller.db import Database; Database(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1].decode()[-500:] for r in results]


def test_unreachable_postgres_is_a_clear_error() -> None:
    from tests.conftest import free_port

    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nope"
    with pytest.raises(DatabaseError, match=r"cannot open the spotrun database postgresql\+psycopg://postgres@127.0.0.1:\d+/nope.*SPOTRUN_DB_URL"):
        Database(url)


def test_find_cancel_resume_rules(db: Database) -> None:
    spec = load_spec_text("name: bert\nrun: python train.py")
    job_id = repo.create_job(db, spec)
    with db.session() as s:
        assert repo.find_job(s, job_id[:5]).id == job_id
        assert repo.find_job(s, "bert").id == job_id
        with pytest.raises(repo.JobNotFound, match="no job 'zzz'"):
            repo.find_job(s, "zzz")
    with pytest.raises(repo.JobStateError, match="still PENDING; resume is for finished jobs"):
        repo.request_resume(db, job_id)
    assert repo.request_cancel(db, job_id) == job_id
    view = repo.get_view(db, job_id)
    assert view["status"] == "CANCELLING"
    assert [e["kind"] for e in view["events"]] == ["submitted", "cancel"]
    with db.session() as s:
        job = s.get(Job, job_id)
        job.status, job.errors = JobStatus.FAILED.value, 3
    with pytest.raises(repo.JobStateError, match="already finished"):
        repo.request_cancel(db, job_id)
    repo.request_resume(db, job_id)
    view = repo.get_view(db, job_id)
    assert (view["status"], view["errors"], view["finished_at"]) == ("PENDING", 0, None)
    with db.session() as s:
        assert s.get(Job, job_id).desired == "run"
