"""Which controller drives which job, when several share one PostgreSQL database.

A controller's row in `controllers` is its lease: each pass renews it (`expires_at`, on the
database's clock, so controllers whose clocks disagree still agree on who is alive). Jobs are
spread over the live controllers by shard (`jobs.shard`, a hash of the id): each of the 1 024
shards goes to the live controller that wins rendezvous hashing for it, so a controller joining
or dying moves only its own share, and computing the split costs O(shards), never O(jobs).

A job is claimed only when free or when its owner's lease has run out; every claim raises the
job's fencing token (`jobs.lease_token`). Each write a controller makes for a job first checks,
inside the same transaction and under the row's lock, that it still holds the job with the
token it read: a controller that paused past its lease and woke after another took over finds
its write refused (`LeaseLost`) instead of driving the job alongside the new owner.

On SQLite one controller holds the database's lock (`exclusive`): it owns every shard and takes
over its dead predecessor's jobs at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Float, delete, extract, func, literal_column, or_, select, update
from sqlalchemy.orm import Session

from spotrun.controller.db import Database
from spotrun.controller.models import ACTIVE, SHARDS, Controller, Job

GONE_AFTER_LEASES = 20  # a dead controller's row stays this many lease times, for `controller status`


class LeaseLost(RuntimeError):
    """This controller no longer holds the job: another has taken it over. The write is refused."""


def db_clock(db: Database) -> ColumnElement[float]:
    """Now, in unix seconds, on the database server's clock."""
    if db.is_sqlite:
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Float)
    return extract("epoch", func.clock_timestamp()).cast(Float)


def owner_of(shard: int, live: Sequence[str]) -> str:
    """Rendezvous hashing: the live controller with the highest hash of (controller, shard)."""
    return max(live, key=lambda c: hashlib.blake2b(f"{c}/{shard}".encode(), digest_size=8).digest())


@dataclass
class Claimed:
    """A job this controller just took: its spec (to parse once) and its fencing token."""

    id: str
    spec: str
    token: int


@dataclass
class Leases:
    db: Database
    owner: str
    lease_s: float
    exclusive: bool = False
    live: list[str] = field(default_factory=list)
    _shards: tuple[tuple[str, ...], list[int]] | None = None

    def heartbeat(self, stats: dict[str, Any]) -> list[str]:
        """Renew this controller's lease (registering it when new or swept) with its last pass's
        figures; returns the live controllers, this one included."""
        clock = db_clock(self.db)
        with self.db.session() as s:
            renewed = s.execute(
                update(Controller).where(Controller.id == self.owner)
                .values(heartbeat_at=clock, expires_at=clock + self.lease_s, **stats)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not renewed:
                now = s.scalar(select(clock))
                s.add(Controller(id=self.owner, started_at=now, heartbeat_at=now, expires_at=now + self.lease_s,
                                 **{"passes": 0, "jobs": 0, "pass_s": 0.0, "lag_s": 0.0, **stats}))
        if self.exclusive:
            self.live = [self.owner]
        else:
            with self.db.session() as s:
                self.live = sorted(s.scalars(select(Controller.id).where(Controller.expires_at > clock)))
        return self.live

    def my_shards(self) -> list[int]:
        live = tuple(self.live)
        if self._shards is None or self._shards[0] != live:
            self._shards = (live, [n for n in range(SHARDS) if owner_of(n, live) == self.owner])
        return self._shards[1]

    def claim(self, busy: set[str]) -> list[Claimed]:
        """Take the active jobs of this controller's shards that are free or whose owner's lease
        ran out, and hand back those of shards now another's (except `busy` ones, whose action
        is under way: they go at a later pass). One statement each, whatever the number of jobs."""
        clock = db_clock(self.db)
        take = update(Job).where(Job.status.in_(ACTIVE))
        if self.exclusive:
            take = take.where(or_(Job.lease_owner.is_(None), Job.lease_owner != self.owner))
        else:
            alive = select(Controller.id).where(Controller.expires_at > clock)
            take = take.where(Job.shard.in_(self.my_shards()), or_(Job.lease_owner.is_(None), Job.lease_owner.not_in(alive)))
        with self.db.session() as s:
            rows = s.execute(
                take.values(lease_owner=self.owner, lease_token=Job.lease_token + 1)
                .returning(Job.id, Job.spec, Job.lease_token).execution_options(synchronize_session=False)
            ).all()
            if not self.exclusive and len(self.live) > 1:
                mine = set(self.my_shards())
                leaving = [j for j, shard in s.execute(select(Job.id, Job.shard).where(
                    Job.lease_owner == self.owner, Job.status.in_(ACTIVE), Job.shard.not_in(mine)))
                    if j not in busy]
                if leaving:
                    s.execute(update(Job).where(Job.id.in_(leaving), Job.lease_owner == self.owner)
                              .values(lease_owner=None).execution_options(synchronize_session=False))
        return [Claimed(*row) for row in rows]

    def fence(self, s: Session, tokens: dict[str, int]) -> dict[str, Job]:
        """The jobs of `tokens` (id -> the fencing token the writer read) this controller still
        holds with that token, by id. Their rows stay locked (PostgreSQL) until `s` commits, so
        no takeover slips in before the write lands. Keep the dict while writing: the session
        holds loaded rows weakly, and while they live the writer's `s.get(Job, id)` is free."""
        ids, held = list(tokens), {}
        for at in range(0, len(ids), 1000):
            for job in s.scalars(select(Job).where(Job.id.in_(ids[at:at + 1000]), Job.lease_owner == self.owner)
                                 .order_by(Job.id).with_for_update()):  # one lock order: no deadlock between writers
                if job.lease_token == tokens[job.id]:
                    held[job.id] = job
        return held

    def sweep_dead(self) -> None:
        """Forget controllers dead for a long while (recently dead ones stay visible in status)."""
        with self.db.session() as s:
            s.execute(delete(Controller).where(Controller.expires_at < db_clock(self.db) - GONE_AFTER_LEASES * self.lease_s))

    def leave(self) -> None:
        """A clean stop: free this controller's jobs for the others now, not after the lease."""
        with self.db.session() as s:
            s.execute(update(Job).where(Job.lease_owner == self.owner).values(lease_owner=None)
                      .execution_options(synchronize_session=False))
            s.execute(delete(Controller).where(Controller.id == self.owner))


def controllers_view(db: Database) -> list[dict[str, Any]]:
    """Every controller the database knows: alive or not, its active jobs, its last pass and lag."""
    with db.session() as s:
        now = s.scalar(select(db_clock(db)))
        held = dict(s.execute(select(Job.lease_owner, func.count()).where(Job.status.in_(ACTIVE))
                              .group_by(Job.lease_owner)).all())
        rows = s.scalars(select(Controller).order_by(Controller.started_at)).all()
        return [
            {"id": c.id, "alive": c.expires_at > now, "jobs": held.get(c.id, 0), "passes": c.passes,
             "heartbeat_age_s": round(now - c.heartbeat_at, 3), "lease_left_s": round(c.expires_at - now, 3),
             "pass_s": round(c.pass_s, 4), "lag_s": round(c.lag_s, 3), "started_at": c.started_at}
            for c in rows
        ] + ([{"id": None, "alive": False, "jobs": held[None], "unassigned": True}] if held.get(None) else [])
