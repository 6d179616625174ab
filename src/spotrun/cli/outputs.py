"""`spotrun outputs`: fetch the files a job declared as outputs, after (or while) it runs."""

from __future__ import annotations

from pathlib import Path

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, fail, print_json

OUTPUTS_HELP = """Download JOB's outputs into DEST: every attempt's, the newest attempt's file winning a name, modification times kept.

JOB is a launched job (id, unique id prefix or name; its spec's `outputs:` directory, in its checkpoint store) or the job id of a `spotrun exec --outputs-dir` run (with --store when it used one).

Examples:

  spotrun outputs fit-line ./results

  spotrun outputs job-3f2a9c1e4b7d ./results --store s3://bucket/spotrun
"""


@app.command("outputs", help=OUTPUTS_HELP, no_args_is_help=True)
def outputs(
    job: str = typer.Argument(..., help="Job id, unique prefix or name (or a `spotrun exec` job id)."),
    dest: Path = typer.Argument(Path("."), help="Where to put the files (created if missing)."),
    store: str | None = typer.Option(None, "--store", envvar="SPOTRUN_STORE", help="The store (default: the job's own, or under $SPOTRUN_HOME)."),
    json_out: bool = JSON_OPTION,
) -> None:
    import asyncio

    job_id, url = _locate(job, store)
    try:
        files = asyncio.run(_download(url, job_id, dest))
    except OSError as exc:
        fail(f"cannot write to {dest}: {exc.strerror or exc}")
    if not files:
        fail(f"job {job_id} has no outputs in {url} (does its spec declare `outputs:`, or did its exec get --outputs-dir?)", 1)
    if json_out:
        print_json({"job": job_id, "store": url, "dest": str(dest), "files": files})
    else:
        console.print(f"{len(files)} output file(s) of job {job_id} in {dest}:")
        for name in files:
            console.print(f"  {name}", highlight=False)


def _locate(ref: str, store: str | None) -> tuple[str, str]:
    """A launched job's id and store, from the controller's database; else `ref` as an exec job id."""
    from spotrun.paths import default_store_url

    try:
        from spotrun.controller.db import Database
        from spotrun.controller.repo import JobNotFound, find_job
        from spotrun.controller.spec import JobSpec

        with Database().session() as s:
            job = find_job(s, ref)
            return job.id, store or JobSpec.model_validate_json(job.spec).store_url(default_store_url())
    except JobNotFound:
        return ref, store or default_store_url()
    except Exception:  # no controller database here: an exec job id
        return ref, store or default_store_url()


async def _download(url: str, job_id: str, dest: Path) -> list[str]:
    import shutil
    import tempfile

    from spotrun.store import OutputsSync, StoreError
    from spotrun.store.agent_hooks import _set_writable

    with tempfile.TemporaryDirectory(prefix="spotrun-outputs-") as tmp:
        try:
            sync = OutputsSync(url, tmp, job_id, attempt=0, restart_dir=dest)
            await sync.before_start({})
        except StoreError as exc:
            fail(str(exc))
        previous = Path(tmp) / OutputsSync.PREVIOUS
        names = {str(p.relative_to(a)) for a in previous.glob("attempt-*") for p in a.rglob("*") if p.is_file()}
        _set_writable(previous, True)
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(names)
