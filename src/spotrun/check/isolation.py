"""Each check attempt sees only what a real next machine would: what spotrun restores.

Every attempt gets its own `$TMPDIR`, `$HOME` and working directory. Where the kernel allows
unprivileged user and mount namespaces, the attempt also runs in a private mount namespace in
which /tmp, /var/tmp, /dev/shm and any fixed directory the job names start as empty tmpfs, so a
checkpoint saved to a fixed absolute path is gone on the next attempt, as on a new VM. The
namespace lists what the attempt left in those machine-local places before it disappears, so
the verdict can name the path. Without namespaces (containers that forbid them, old kernels)
the check says so and scans the same places itself.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

MACHINE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm")
LOCAL_WRITES = "local-writes.txt"  # what an attempt wrote in machine-local places, one path a line
_SCAN_LIMIT = 200_000  # entries looked at per place (a shared /tmp holds many test trees)
CHECK_PREFIX = "spotrun-check-"  # each check's own directory

# Runs as root of a new user+mount namespace: hides each place under a fresh tmpfs (the check's
# own directory is bound back in), drops back to the caller's uid in a nested user namespace to
# run the agent, then lists the files the attempt wrote in those places.
_SCRIPT = r"""
set -e
root=$1 uid=$2 gid=$3 out=$4; shift 4
hold=$(mktemp -d "$root/.hold.XXXXXX")
places=""
while [ "$1" != "--" ]; do
  d=$1; shift
  [ -d "$d" ] || continue
  mount -t tmpfs -o mode=1777 spotrun-check "$hold"
  case "$root/" in "$d"/*) mkdir -p "$hold${root#"$d"}"; mount --bind "$root" "$hold${root#"$d"}";; esac
  mount --move "$hold" "$d"
  places="$places $d"
done
shift
rmdir "$hold"
cd "$(pwd)"  # the working directory again, through the new mounts: else renames into it cross devices
touch "$out.start"
set +e
unshare --user --map-user="$uid" --map-group="$gid" -- "$@"
rc=$?
[ -z "$places" ] || find $places -path "$root" -prune -o -type f -newer "$out.start" -print > "$out" 2>/dev/null
exit $rc
"""


@functools.cache
def namespaces_work() -> str | None:
    """None when private mount namespaces work here, else why not (for the report)."""
    if shutil.which("unshare") is None:
        return "the `unshare` command is missing (util-linux)"
    with tempfile.TemporaryDirectory(prefix="spotrun-probe-") as root:
        try:
            proc = subprocess.run(
                wrap(Path(root), Path(root) / LOCAL_WRITES, [], ["true"]), capture_output=True, text=True, timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return None


def wrap(root: Path, writes: Path, fixed: list[Path], command: list[str]) -> list[str]:
    """`command` run in a private mount namespace hiding the machine-local places and `fixed`;
    the files it wrote in them are listed in `writes`."""
    places = [*MACHINE_LOCAL, *(str(p) for p in fixed if not under_machine_local(p))]
    return [
        "unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
        "sh", "-c", _SCRIPT, "spotrun-isolate", str(root), str(os.getuid()), str(os.getgid()), str(writes),
        *places, "--", *command,
    ]


def under_machine_local(path: Path) -> bool:
    return any(path == Path(p) or Path(p) in path.parents for p in MACHINE_LOCAL)


def written_since(places: list[str], since: float, skip: Path) -> list[str]:
    """Files modified since `since` in `places` (a few levels deep, never under `skip`)."""
    found: set[str] = set()
    for place in places:
        seen = 0
        for dirpath, dirnames, filenames in os.walk(place):
            here = Path(dirpath)
            # no check's own directory (this one's, or another running beside it)
            dirnames[:] = [d for d in dirnames if here / d != skip and not d.startswith(CHECK_PREFIX)
                           and not (here / d).is_symlink()]
            seen += len(dirnames) + len(filenames)
            for name in filenames:
                try:
                    if (here / name).stat().st_mtime >= since:
                        found.add(str(here / name))
                except OSError:
                    continue
            if seen > _SCAN_LIMIT or len(here.relative_to(place).parts) >= 8:
                dirnames[:] = []
    return sorted(found)


def local_writes(isolated: bool, attempt_dir: Path, since: float, skip: Path) -> list[str]:
    """What an attempt wrote where a next machine would not have it.

    In a namespace $HOME is not hidden (the venv may live there), so it is scanned either way.
    """
    places = [str(Path.home())]
    if isolated:
        listed = attempt_dir / LOCAL_WRITES
        found = listed.read_text().splitlines() if listed.exists() else []
    else:
        found, places = [], [*MACHINE_LOCAL, tempfile.gettempdir(), *places]
    return sorted(set(found) | set(written_since(places, since, skip)))
