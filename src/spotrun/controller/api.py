"""The Python API: `spotrun.launch(...)` returns a JobHandle, as the CLI's `spotrun launch` does.

Launching only records the job; the controller daemon (started here on first use) runs it.
Pass `start_controller=False` when a Reconciler runs in your own process (tests, the demo).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from spotrun.controller import repo
from spotrun.controller.db import Database
from spotrun.controller.models import JobStatus
from spotrun.controller.spec import JobSpec, SpecError, load_spec, parse_spec
from spotrun.redact import redact_url

KNOWN_PROVIDERS = ("local", "aws", "kubernetes", "sim")
STORE_SCHEMES = ("file", "s3", "gs", "az", "azure", "abfs", "memory")


class JobHandle:
    def __init__(self, job_id: str, db: Database):
        self.id = job_id
        self._db = db

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def info(self, detail: bool = True) -> dict[str, Any]:
        """Status, reclaims, cost; with `detail` also every attempt and the event timeline."""
        return repo.get_view(self._db, self.id, detail=detail)

    def status(self) -> str:
        return self.info(detail=False)["status"]

    def logs(self, attempt: int | None = None) -> str:
        """One attempt's log (default: the latest), from the controller's kept copy."""
        return read_log(self._db, self.id, attempt)

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> str:
        """Block until the job finishes; return its final status. TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not JobStatus(status := self.status()).terminal:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {status} after {timeout:g}s")
            time.sleep(poll)
        return status

    def cancel(self) -> None:
        repo.request_cancel(self._db, self.id)


def read_log(db: Database, ref: str, attempt: int | None = None) -> str:
    with db.session() as s:
        job = repo.find_job(s, ref)
        attempts = [a for a in repo.attempts_of(s, job.id) if a.instance_id is not None]
    if not attempts:
        return ""
    chosen = attempts[-1] if attempt is None else next((a for a in attempts if a.number == attempt), None)
    if chosen is None:
        numbers = ", ".join(str(a.number) for a in attempts)
        raise LookupError(f"job {job.id} has no attempt {attempt} (it has: {numbers})")
    return read_attempt_log(job.id, chosen.number, chosen.instance_log)


def read_attempt_log(job_id: str, number: int, instance_log: str | None) -> str:
    """The longer of the live instance log and the kept copy (the copy lags by one pass)."""
    if instance_log:
        from spotrun.providers.status import watch_log

        with contextlib.suppress(OSError):  # reading matters more than the marker
            watch_log(instance_log)  # a cloud instance's log is then copied every pass, not only at its end
    texts = []
    for path in (instance_log, repo.kept_log(job_id, number)):
        if path:
            try:
                texts.append(Path(path).read_text(errors="replace"))
            except FileNotFoundError:
                pass
    return max(texts, key=len, default="")


def prepare_spec(spec: JobSpec | str | Path | dict) -> JobSpec:
    """Load and check what only launch time can check: provider, workdir, store URL."""
    base = Path(spec).resolve().parent if isinstance(spec, (str, Path)) else Path.cwd()
    job = load_spec(spec)
    problems = []
    if job.resources.provider not in KNOWN_PROVIDERS:
        problems.append(f"resources.provider: unknown provider {job.resources.provider!r} (available: {', '.join(KNOWN_PROVIDERS)})")
    if job.resources.provider in ("aws", "kubernetes"):  # the controller's configuration, in one line
        try:
            if job.resources.provider == "aws":
                from spotrun.providers.aws.config import AwsConfig

                AwsConfig.from_env()
            else:
                from spotrun.providers.kubernetes.config import KubeConfig

                image = KubeConfig.from_env().image or job.resources.image or (job.kubernetes and job.kubernetes.image)
                if not image:
                    problems.append("kubernetes.image: required (or SPOTRUN_KUBERNETES_IMAGE): an image with spotrun installed")
                if job.workdir is not None:
                    problems.append("workdir: not copied into pods on kubernetes; build the code into kubernetes.image")
        except ValueError as exc:
            problems.append(f"resources.cloud: {exc}")
    if job.resources.provider == "sim":
        from spotrun.providers.sim import SimConfig

        try:
            SimConfig.from_env()
        except ValueError as exc:
            problems.append(f"resources.cloud: {exc}")
    if job.workdir is not None:
        workdir = (base / job.workdir).resolve()
        if not workdir.is_dir():
            problems.append(f"workdir: {workdir} is not a directory")
        job = job.model_copy(update={"workdir": str(workdir)})
    if job.checkpoint is not None and job.checkpoint.store is not None:
        problems += _store_problems(job.checkpoint.store)
        if job.resources.provider != "local" and urlparse(job.checkpoint.store).scheme == "file":
            problems.append(f"checkpoint.store: {job.resources.provider} instances cannot reach {redact_url(job.checkpoint.store)}; "
                            "use s3://bucket/prefix, or leave it out for the provider's own store")
    for secret, ref in job.secrets.items():  # `env:` names the controller's environment: checked at launch
        if ref.file is not None and not os.access(Path(ref.file).expanduser(), os.R_OK):
            problems.append(f"secrets.{secret}: cannot read {ref.file} (the controller reads it at each launch)")
    if problems:
        raise SpecError(problems)
    return job


def _store_problems(url: str) -> list[str]:
    parsed = urlparse(url)
    if parsed.scheme not in STORE_SCHEMES:
        return [f"checkpoint.store: {redact_url(url)!r} is not a store URL (use file:///path, s3://bucket/prefix, gs://..., az://...)"]
    if parsed.scheme == "file":
        root = Path(parsed.path)
        probe = next((p for p in (root, *root.parents) if p.exists()), None)
        if probe is None or not probe.is_dir() or not _writable(probe):
            return [f"checkpoint.store: cannot write under {root} (the nearest existing folder is not writable)"]
    return []


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def launch(
    spec: JobSpec | str | Path | dict,
    *,
    name: str | None = None,
    db_url: str | None = None,
    start_controller: bool = True,
) -> JobHandle:
    """Submit a job (spec object, YAML path or dict) and return its handle.

    Raises SpecError (one line per problem, with file:line:col) for a spec that cannot run.
    """
    job = prepare_launch(spec, name=name)
    if job.sweep is not None:
        raise SpecError([f"the spec is a sweep of {job.sweep.size} jobs: submit it with launch_sweep()"])
    return submit(job, db_url=db_url, start_controller=start_controller)[1][0]


def launch_sweep(
    spec: JobSpec | str | Path | dict,
    *,
    array: int | None = None,
    name: str | None = None,
    db_url: str | None = None,
    start_controller: bool = True,
) -> tuple[str, list[JobHandle]]:
    """Submit the spec's `sweep:` (or `array` copies of a plain spec): (the sweep's label, a handle per job)."""
    job = prepare_launch(spec, name=name, array=array)
    if job.sweep is None:
        raise SpecError(["the spec has no `sweep:` section: add `sweep: {grid: {NAME: [values]}}` or give array=N"])
    label, handles = submit(job, db_url=db_url, start_controller=start_controller)
    assert label is not None
    return label, handles


def prepare_launch(spec: JobSpec | str | Path | dict, *, name: str | None = None, array: int | None = None) -> JobSpec:
    """`prepare_spec`, with the launch's own name and `--array N` (a sweep of N copies)."""
    job = prepare_spec(spec)
    if name is not None:
        job = job.model_copy(update={"name": name})
    if array is not None:
        if job.sweep is not None:
            raise SpecError(["--array: the spec has a `sweep:` section already; give one of them"])
        job = parse_spec({**job.model_dump(exclude_none=True), "sweep": {"array": array}}, "--array")
    return job


def submit(job: JobSpec, *, db_url: str | None = None, start_controller: bool = True) -> tuple[str | None, list[JobHandle]]:
    """One prepared job, or every job of its sweep in one transaction: (the sweep's label or None, handles)."""
    from spotrun.controller.sweep import expand, new_label

    label = new_label(job) if job.sweep is not None else None
    db = Database(db_url)
    ids = repo.create_jobs(db, expand(job, label) if label else [job], sweep=label)
    if start_controller:
        from spotrun.controller.service import start_daemon

        start_daemon()
    return label, [JobHandle(i, db) for i in ids]


def job(job_id: str, db_url: str | None = None) -> JobHandle:
    """A handle on an existing job, by id, id prefix or name."""
    db = Database(db_url)
    with db.session() as s:
        return JobHandle(repo.find_job(s, job_id).id, db)
