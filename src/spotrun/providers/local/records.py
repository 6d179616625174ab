"""The durable record of a local instance: what a restarted controller reads to find it again.

One directory per instance under `<root>/instances/`, one writer per file, so no update is
ever lost: the provider writes `spec.json` (what to run) once before the launcher starts, the
launcher's first fork writes `launcher.json` (its pid), and the launcher alone writes
`state.json` while it lives. Every file is replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from spotrun.providers.base import Instance, InstanceState
from spotrun.sdk.atomic import save_atomic

FINAL_STATES = frozenset(
    {InstanceState.RECLAIMED, InstanceState.EXITED, InstanceState.TERMINATED, InstanceState.GONE}
)


def instance_id_for(token: str) -> str:
    """The id is a function of the client token, so a repeated launch finds its instance."""
    return "local-" + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Spec:
    id: str
    token: str
    job_id: str
    attempt: int
    run: str
    setup: str | None
    workdir: str | None
    env: dict[str, str]
    spot: bool
    instance_type: str | None
    zone: str
    price_per_hour: float
    cloud: str
    lead_s: float
    notice_at: float | None  # when the market reclaims it; None: never (on-demand)
    agent_args: list[str]
    scratch: str
    log_path: str
    launched_at: float
    owner: str | None = None  # LaunchRequest.owner; records from before owners existed have none


@dataclass(frozen=True)
class State:
    state: InstanceState = InstanceState.PENDING
    launcher_pid: int | None = None
    agent_pid: int | None = None
    emulator_url: str | None = None
    heartbeat: float = field(default_factory=time.time)
    notice_deadline: float | None = None
    returncode: int | None = None
    ended_at: float | None = None
    detail: str | None = None  # why it ended, for people reading `spotrun` output
    # Whether a process of the instance may have outlived its end: False once the final state
    # was written after a kill that left none (records from before this field: unknown, True).
    stragglers: bool = True

    def to(self, state: InstanceState, **changes: Any) -> State:
        if state in FINAL_STATES and self.ended_at is None:
            changes.setdefault("ended_at", time.time())
        return replace(self, state=state, heartbeat=time.time(), **changes)


class InstanceDir:
    """Paths and reads/writes of one instance's record."""

    def __init__(self, root: Path, instance_id: str) -> None:
        self.id = instance_id
        self.path = root / "instances" / instance_id

    @property
    def spec_file(self) -> Path:
        return self.path / "spec.json"

    @property
    def launcher_file(self) -> Path:
        return self.path / "launcher.json"

    @property
    def state_file(self) -> Path:
        return self.path / "state.json"

    @property
    def launcher_log(self) -> Path:
        return self.path / "launcher.log"

    @property
    def agent_exit_file(self) -> Path:
        """The agent's `--exit-file`: how its command ended, should the agent not live to say."""
        return self.path / "agent-exit.json"

    def agent_exit_code(self) -> int | None:
        try:
            data = _read_json(self.agent_exit_file)
            return int(data["code"]) if data else None
        except (ValueError, KeyError, TypeError):  # torn or foreign: as if not written
            return None

    @property
    def lock_file(self) -> Path:
        return self.path.parent / f".{self.id}.lock"

    def write_spec(self, spec: Spec) -> None:
        save_atomic(self.spec_file, json.dumps(asdict(spec), indent=1))

    def read_spec(self) -> Spec | None:
        data = _read_json(self.spec_file)
        return Spec(**data) if data else None

    def write_state(self, state: State) -> None:
        data = asdict(state)
        data["state"] = state.state.value
        save_atomic(self.state_file, json.dumps(data, indent=1))

    def read_state(self) -> State | None:
        data = _read_json(self.state_file)
        if not data:
            return None
        data["state"] = InstanceState(data["state"])
        return State(**data)

    def launcher_pid(self) -> int | None:
        data = _read_json(self.launcher_file)
        return int(data["pid"]) if data else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def to_instance(spec: Spec, state: State) -> Instance:
    return Instance(
        id=spec.id,
        token=spec.token,
        job_id=spec.job_id,
        attempt=spec.attempt,
        state=state.state,
        spot=spec.spot,
        zone=spec.zone,
        instance_type=spec.instance_type,
        price_per_hour=spec.price_per_hour,
        launched_at=spec.launched_at,
        ended_at=state.ended_at,
        returncode=state.returncode,
        log_path=spec.log_path,
        owner=spec.owner,
    )


def gone(instance_id: str) -> Instance:
    return Instance(id=instance_id, token="", job_id="", attempt=0, state=InstanceState.GONE, spot=False)
