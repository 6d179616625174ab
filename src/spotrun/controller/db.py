"""Opening the controller's database: SQLite by default, PostgreSQL via `SPOTRUN_DB_URL`.

Opening always brings the schema to the newest alembic revision, under a lock (a file lock on
SQLite, an advisory lock on PostgreSQL) so a CLI call and the controller daemon opening a
fresh database at the same moment do not both create it.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, event, insert, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker

from spotrun.paths import default_db_url, private_file

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0004"  # the newest migration; opening an up-to-date database skips alembic
_PG_MIGRATE_LOCK = 0x5370_7472  # advisory lock key: any constant shared by all controllers
EVENTS = "spotrun.events"  # Session.info key: events queued by repo.add_event


class DatabaseError(RuntimeError):
    """The database cannot be opened; the message says which URL and what to check."""


class Database:
    def __init__(self, url: str | None = None):
        self.url = url or default_db_url()
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self.sqlite_path = Path(parsed.database) if self.is_sqlite and parsed.database else None
        if self.sqlite_path and parsed.database != ":memory:":
            private_file(self.sqlite_path)  # SQLite gives its -wal and -shm files the same mode
        self.engine = _engine(self.url, self.is_sqlite)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        try:
            self._upgrade()
            with self.engine.connect() as conn:
                # Read once: a controller whose database file was deleted under it keeps the
                # identity it launched with, and so never claims another database's instances.
                self.identity: str = conn.execute(text("SELECT id FROM identity")).scalar_one()
        except OperationalError as exc:
            self.engine.dispose()
            raise DatabaseError(
                f"cannot open the spotrun database {parsed.render_as_string(hide_password=True)}: "
                f"{' '.join(str(exc.orig).split())} Check SPOTRUN_DB_URL (or unset it to use the local SQLite file)."
            ) from None

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back on error. Events the
        block queued (`repo.add_event`) go in last, as one executemany INSERT."""
        with self._sessions() as s, s.begin():
            yield s
            if events := s.info.pop(EVENTS, None):
                from spotrun.controller.models import Event

                s.execute(insert(Event), events)

    def close(self) -> None:
        self.engine.dispose()

    def _current_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except ProgrammingError:  # PostgreSQL: no such table yet
            return None
        except OperationalError as exc:  # SQLite says "no such table" the same way as "cannot open"
            if "no such table" in str(exc.orig):
                return None
            raise

    def _upgrade(self) -> None:
        if self._current_revision() == SCHEMA_HEAD:
            return
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self._migration_lock(), self.engine.begin() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        if self.sqlite_path is None:
            yield
            return
        with open(f"{self.sqlite_path}.migrate.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield


def _engine(url: str, is_sqlite: bool) -> Engine:
    if not is_sqlite:
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:  # WAL: readers (CLI) never block the controller
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives the controller's crash (SIGKILL), only a power loss
        # may drop the newest few; FULL's fsync per commit (ms each) stalled whole passes.
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine
