"""`spotrun ckpt`: inspect, restore, verify and clean a checkpoint store.

The store itself is imported inside each command so that `spotrun exec` starts fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC
from typing import Any, TypeVar

import typer

from spotrun.cli.app import app
from spotrun.cli.common import JSON_OPTION, console, duration_arg, fail, print_json

T = TypeVar("T")


def _table(title: str):
    from rich.table import Table  # not at import: every command module loads when `spotrun exec` starts

    return Table(title=title)

ckpt = typer.Typer(
    help=(
        "Inspect and manage a checkpoint store (file:///dir, ./dir, s3://bucket/prefix, gs://..., az://...).\n\n"
        "A snapshot id like a2-s5 means attempt 2, sequence 5; the newest snapshot is what a restarted "
        "job restores. For S3-compatible stores add ?endpoint=http://host:port or set AWS_ENDPOINT_URL.\n\n"
        "Examples:\n\n"
        "  spotrun ckpt ls s3://bucket/ckpt  # jobs in the store\n\n"
        "  spotrun ckpt ls s3://bucket/ckpt --job train-7  # that job's snapshots\n\n"
        "  spotrun ckpt restore s3://bucket/ckpt ./ckpt --job train-7 --fallback\n\n"
        "  spotrun ckpt verify s3://bucket/ckpt  # exit 1 names damaged files\n\n"
        "  spotrun ckpt gc s3://bucket/ckpt --keep 3  # retention, then unused packs"
    ),
    no_args_is_help=True,
)
app.add_typer(ckpt, name="ckpt")

STORE_ARG = typer.Argument(
    ...,
    metavar="STORE_URL",
    help="The store: file:///dir, a local path, s3://bucket/prefix, gs://..., az://...",
)
JOB_OPTION = typer.Option(..., "--job", "-j", help="The job id whose snapshots to use.")
SNAPSHOT_OPTION = typer.Option(
    None, "--snapshot", "-s", help="A snapshot id from `spotrun ckpt ls` (e.g. a2-s5); default: the latest."
)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run one store coroutine; a StoreError becomes a clear message and exit status 2."""
    from spotrun.store import StoreError

    try:
        return asyncio.run(make())
    except StoreError as exc:
        fail(str(exc))


def _open(url: str, *, create: bool = False):
    from spotrun.store import Store, StoreError

    try:
        return Store.open(url, create=create)
    except StoreError as exc:
        fail(str(exc))


@contextmanager
def _bytes_progress(description: str, total: int, enabled: bool):
    """A progress bar for people; nothing when printing JSON or when there is little to do."""
    if not enabled or total < 32 * 1024 * 1024:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


async def snapshot_rows(store: Any, job: str) -> list[dict[str, Any]]:
    """A job's snapshots, oldest first, as `ckpt ls --job --json` (and the dashboard) show them.
    One bad manifest hides none of the others: it is listed with `invalid` set to the reason."""
    from spotrun.store import HostileManifest, NoSnapshot

    pinned = await store.pins(job)
    rows = []
    for ref in await store.snapshots(job):
        row: dict[str, Any] = {"id": ref.id, "attempt": ref.attempt, "sequence": ref.sequence}
        try:
            m = await store.manifest(ref)
        except (HostileManifest, NoSnapshot) as exc:
            row.update(created_at=None, files=None, size=None, host=None, uploaded_bytes=None, duration_s=None)
            row["invalid"] = str(exc)
        else:
            row.update(
                created_at=m.created_at,
                files=len(m.files),
                size=m.total_size,
                host=m.host,
                uploaded_bytes=m.extra.get("uploaded_bytes"),
                duration_s=m.extra.get("duration_s"),
                invalid=None,
            )
        rows.append({**row, "pinned": ref.name in pinned})
    return rows


@ckpt.command("ls")
def ls_cmd(
    store_url: str = STORE_ARG,
    job: str = typer.Option(None, "--job", "-j", help="List this job's snapshots instead of the jobs."),
    json_out: bool = JSON_OPTION,
) -> None:
    """List the jobs in a store, or one job's snapshots (newest last).

    A snapshot whose manifest is refused (damaged, hostile, from a newer spotrun) is listed as
    invalid with the reason (JSON: `invalid`); restore --fallback skips it.
    """
    store = _open(store_url)

    async def jobs() -> list[dict[str, Any]]:
        rows = []
        for job_id in await store.jobs():
            refs = await store.snapshots(job_id)
            rows.append(
                {
                    "job": job_id,
                    "snapshots": len(refs),
                    "latest": refs[-1].id if refs else None,
                    "updated": refs[-1].last_modified.isoformat() if refs else None,
                }
            )
        return rows

    rows = _run(lambda: snapshot_rows(store, job) if job else jobs())
    if json_out:
        print_json(rows)
        return
    if not rows:
        console.print(f"no {'snapshots of job ' + repr(job) if job else 'jobs'} in {store.url}")
        return
    table = _table(f"{'snapshots of ' + job if job else 'jobs'} in {store.url}")
    if job:
        for col in ("ID", "created", "files", "size", "host", "pinned"):
            table.add_column(col, justify="right" if col in ("files", "size") else "left")
        for r in rows:
            if r["invalid"]:
                from rich.markup import escape

                bad = f"[red]invalid: {escape(r['invalid'])}[/]"
                table.add_row(r["id"], bad, "-", "-", "-", "yes" if r["pinned"] else "")
                continue
            table.add_row(
                r["id"],
                r["created_at"][:19],
                str(r["files"]),
                _size(r["size"]),
                r["host"],
                "yes" if r["pinned"] else "",
            )
    else:
        for col in ("job", "snapshots", "latest", "updated"):
            table.add_column(col)
        for r in rows:
            table.add_row(r["job"], str(r["snapshots"]), r["latest"] or "-", (r["updated"] or "-")[:19])
    console.print(table)


@ckpt.command("show")
def show_cmd(
    store_url: str = STORE_ARG,
    job: str = JOB_OPTION,
    snapshot: str = SNAPSHOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """List the files in a snapshot: path, size, mode, modification time, chunks."""
    store = _open(store_url)

    async def load():
        return await store.manifest(await store.find(job, snapshot))

    manifest = _run(load)
    if json_out:
        print_json(
            {
                "id": manifest.id,
                **asdict(manifest),
                "total_size": manifest.total_size,
            }
        )
        return
    from datetime import datetime

    table = _table(f"job {job}, snapshot {manifest.id} ({manifest.created_at[:19]}, {manifest.host})")
    for col in ("path", "size", "mode", "modified", "chunks"):
        table.add_column(col, justify="right" if col in ("size", "chunks") else "left")
    for f in manifest.files:
        when = datetime.fromtimestamp(f.mtime_ns / 1e9, UTC).isoformat()[:19]
        table.add_row(f.path, _size(f.size), oct(f.mode), when, str(len(f.chunks)))
    console.print(table)
    console.print(f"{len(manifest.files)} files, {_size(manifest.total_size)}")


@ckpt.command("snapshot")
def snapshot_cmd(
    store_url: str = STORE_ARG,
    src: str = typer.Argument(..., help="The directory to snapshot."),
    job: str = JOB_OPTION,
    attempt: int = typer.Option(
        1, "--attempt", "-a", help="The attempt number; a newer attempt's snapshots fence older ones."
    ),
    rehash: bool = typer.Option(
        False,
        "--rehash",
        help="Read every file and name every chunk by its BLAKE3 hash again, trusting neither "
        "modification times, chunk fingerprints nor the SDK's write hints.",
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Snapshot a directory by hand (the agent does this itself during `spotrun exec`)."""
    from pathlib import Path

    from spotrun.store.scan import scan

    store = _open(store_url, create=True)
    total = sum(f.st.st_size for f in scan(Path(src))) if Path(src).is_dir() else 0

    async def go():
        with _bytes_progress("snapshotting", total, not json_out) as progress:
            return await store.snapshot(job, attempt, src, progress=progress, rehash=rehash)

    info = _run(go)
    if json_out:
        print_json(info.to_dict())
    elif info.published:
        console.print(
            f"published {info.id} of job {job}: {info.files} files, {_size(info.total_size)}, "
            f"read {_size(info.read_bytes)}, uploaded {_size(info.uploaded_bytes)} "
            f"({info.uploaded_chunks} new chunks, {info.reused_chunks} reused)"
        )
    else:
        console.print(f"no snapshot published: {info.note}")


@ckpt.command("restore")
def restore_cmd(
    store_url: str = STORE_ARG,
    dest: str = typer.Argument(
        ...,
        metavar="DEST",
        help="Directory to restore into (created; must be empty unless --force).",
    ),
    job: str = JOB_OPTION,
    snapshot: str = SNAPSHOT_OPTION,
    fallback: bool = typer.Option(
        False, "--fallback", help="If the snapshot fails verification, restore the one before it."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Restore into DEST even when it is not empty: files identical to the snapshot's are "
        "replaced, anything else is moved to DEST.spotrun-kept-TIME beside it, never deleted.",
    ),
    json_out: bool = JSON_OPTION,
) -> None:
    """Restore a snapshot into any directory; every chunk is verified against its hash."""
    from spotrun.store import HostileManifest, NoSnapshot, restore

    store = _open(store_url)

    async def go():
        try:  # only to size the progress bar: an invalid manifest is restore's to refuse or skip
            total = (await store.manifest(await store.find(job, snapshot))).total_size
        except (HostileManifest, NoSnapshot):
            total = 0
        with _bytes_progress("restoring", total, not json_out) as progress:
            return await restore(
                store, job, dest, snapshot=snapshot, fallback=fallback, replace=force, progress=progress
            )

    info = _run(go)
    if json_out:
        print_json(asdict(info))
        return
    for s in info.skipped:
        console.print(f"[yellow]skipped {s['snapshot']}[/]: {s['reason']}")
    if info.kept_in:
        from rich.markup import escape

        console.print(f"[yellow]{escape(info.kept_line())}[/]")
    console.print(
        f"restored {info.snapshot} of job {job}: {info.files} files, {_size(info.bytes)} into {info.dest}"
    )


@ckpt.command("verify")
def verify_cmd(
    store_url: str = STORE_ARG,
    job: str = typer.Option(None, "--job", "-j", help="Only this job (default: every job)."),
    snapshot: str = SNAPSHOT_OPTION,
    json_out: bool = JSON_OPTION,
) -> None:
    """Re-download and re-hash every chunk; exits 1 and names each damaged file."""
    from spotrun.store import verify

    store = _open(store_url)

    async def go():
        sizes = sum(o.size for o in await store.pack_objects())
        with _bytes_progress("verifying", sizes, not json_out) as progress:
            return await verify(store, job, snapshot, progress)

    report = _run(go)
    if json_out:
        print_json({"ok": report.ok, **asdict(report)})
    elif report.ok:
        console.print(
            f"ok: {report.snapshots} snapshots, {report.chunks} chunks, {_size(report.bytes)} verified"
        )
    else:
        table = _table(f"damaged files in {store.url}")
        for col in ("job", "snapshot", "path", "problem"):
            table.add_column(col)
        for b in report.bad:
            table.add_row(b.job_id, b.snapshot, b.path, b.problem)
        console.print(table)
        console.print("[red]restore with --fallback to use the newest snapshot that is intact[/]")
    if not report.ok:
        raise typer.Exit(1)


@ckpt.command("gc")
def gc_cmd(
    store_url: str = STORE_ARG,
    keep: int = typer.Option(
        None, "--keep", "-k", help="Keep only the newest N snapshots of each job (pinned ones stay)."
    ),
    grace: float = typer.Option(
        "1h",
        "--grace",
        parser=duration_arg,
        metavar="DURATION",
        help="Only delete unreferenced packs older than this; keep it above your longest sync.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be deleted, delete nothing."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Apply retention and delete packs no snapshot references (safe beside running jobs)."""
    from spotrun.store import gc

    store = _open(store_url)
    report = _run(lambda: gc(store, keep=keep, grace_s=grace, dry_run=dry_run))
    if json_out:
        print_json(asdict(report))
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"{verb} {len(report.pruned)} snapshots and {report.deleted_packs} packs ({_size(report.freed_bytes)}); "
        f"{report.young_unreferenced} unreferenced packs are younger than the grace period and stay"
    )


@ckpt.command("du")
def du_cmd(store_url: str = STORE_ARG, json_out: bool = JSON_OPTION) -> None:
    """Space used per job: latest snapshot size, bytes only that job references, and the total."""
    from spotrun.store import du

    store = _open(store_url)
    usage, total, unreferenced = _run(lambda: du(store))
    if json_out:
        print_json(
            {"jobs": [asdict(u) for u in usage], "total_bytes": total, "unreferenced_bytes": unreferenced}
        )
        return
    table = _table(f"space in {store.url}")
    for col in ("job", "snapshots", "latest", "latest size", "referenced", "only this job"):
        table.add_column(col, justify="left" if col in ("job", "latest") else "right")
    for u in usage:
        table.add_row(
            u.job_id,
            str(u.snapshots),
            u.latest or "-",
            _size(u.latest_size),
            _size(u.referenced_bytes),
            _size(u.unique_bytes),
        )
    console.print(table)
    console.print(
        f"total stored: {_size(total)} (unreferenced, reclaimable by `spotrun ckpt gc`: {_size(unreferenced)})"
    )


@ckpt.command("pin")
def pin_cmd(
    store_url: str = STORE_ARG,
    job: str = JOB_OPTION,
    snapshot: str = typer.Option(..., "--snapshot", "-s", help="The snapshot id to pin (e.g. a2-s5)."),
    unpin: bool = typer.Option(False, "--unpin", help="Remove the pin instead."),
    json_out: bool = JSON_OPTION,
) -> None:
    """Pin a snapshot so retention (`--keep`) never deletes it."""
    store = _open(store_url)
    ref = _run(lambda: store.pin(job, snapshot, unpin=unpin))
    if json_out:
        print_json({"job": job, "snapshot": ref.id, "pinned": not unpin})
    else:
        console.print(f"{'unpinned' if unpin else 'pinned'} {ref.id} of job {job}")
