"""The controller's tables. The schema itself is created by the alembic migrations beside this
file (`migrations/`); these classes only describe it to SQLAlchemy.

Times are unix seconds (floats): the same on SQLite and PostgreSQL, and cheap to compare.
"""

from __future__ import annotations

import enum
import zlib

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobStatus(str, enum.Enum):
    PENDING = "PENDING"  # accepted, waiting for its first launch
    PROVISIONING = "PROVISIONING"  # an attempt is being launched
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"  # the last attempt ended (reclaim or retryable error); relaunching
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


ACTIVE = [s.value for s in JobStatus if not s.terminal]


class Cause(str, enum.Enum):
    """Why an attempt ended; reclaims and errors draw on separate budgets."""

    SUCCESS = "success"
    RECLAIM = "reclaim"  # the cloud took the machine (exit 75, RECLAIMED, lost instance)
    ERROR = "error"  # the user's command failed
    CANCEL = "cancel"
    REFUSED = "refused"  # the provider would not launch (no capacity, price); never ran
    SWITCH = "switch"  # stopped to move to the capacity the deadline policy chose; no budget used


SHARDS = 1024  # controllers share jobs by shard: assignment costs O(shards), not O(jobs)


def shard_of(job_id: str) -> int:
    return zlib.crc32(job_id.encode()) % SHARDS


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"
    # `spotrun jobs` pages through jobs in submission order (created_at, id), all of them or one
    # state's or one sweep's: each an index in that order, so a page costs the same at 10 000
    # jobs as at 10 and is never sorted.
    __table_args__ = (
        Index("ix_jobs_created_id", "created_at", "id"),
        Index("ix_jobs_status_created_id", "status", "created_at", "id"),
        Index("ix_jobs_sweep_created_id", "sweep", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    sweep: Mapped[str | None] = mapped_column(String(220), nullable=True)  # the launch it came from
    spec: Mapped[str] = mapped_column(Text)  # JobSpec as JSON
    provider: Mapped[str] = mapped_column(String(40))
    desired: Mapped[str] = mapped_column(String(16), default="run")  # run | cancel
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reclaims: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    refusals: Mapped[int] = mapped_column(Integer, default=0)  # consecutive, reset by a launch
    next_launch_at: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    on_demand_cost: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[float] = mapped_column(Float)
    submitted_at: Mapped[float] = mapped_column(Float)  # launch or last resume: deadline origin
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The controller driving the job; it holds it while its row in `controllers` is live.
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    lease_expires: Mapped[float] = mapped_column(Float, default=0.0)  # before 0004; leases follow heartbeats now
    # Fencing token: raised by every change of owner; a write carrying an older one is refused.
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    shard: Mapped[int] = mapped_column(Integer, default=lambda ctx: shard_of(ctx.get_current_parameters()["id"]))


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "number", name="uq_attempts_job_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    instance_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    spot: Mapped[bool] = mapped_column(Boolean)
    zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    instance_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    price: Mapped[float | None] = mapped_column(Float, nullable=True)  # $/h paid
    on_demand_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cause: Mapped[str | None] = mapped_column(String(16), nullable=True)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    instance_log: Mapped[str | None] = mapped_column(Text, nullable=True)  # provider's live log


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int | None] = mapped_column(Integer, nullable=True)
    at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class Controller(Base):
    """One row per running controller: its heartbeat is the lease on every job it holds.

    Times here are the database's clock, so controllers on machines whose clocks disagree
    still agree on who is alive."""

    __tablename__ = "controllers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    passes: Mapped[int] = mapped_column(Integer, default=0)
    jobs: Mapped[int] = mapped_column(Integer, default=0)  # active jobs held at the last pass
    pass_s: Mapped[float] = mapped_column(Float, default=0.0)  # the last pass's duration
    lag_s: Mapped[float] = mapped_column(Float, default=0.0)  # oldest unrecorded instance end seen


class Identity(Base):
    """One row: the id stamped on every instance this database's controllers launch."""

    __tablename__ = "identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
