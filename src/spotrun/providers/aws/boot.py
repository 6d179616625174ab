"""Run on the instance by the boot script: unpack the job's workdir from the store.

`python -m spotrun.providers.aws.boot STORE_URL KEY DEST`. The instance reads the store with its
own IAM role, so the boot script carries no credential and no pre-signed URL.
"""

from __future__ import annotations

import asyncio
import sys
import tarfile
import tempfile
from pathlib import Path


async def fetch_workdir(store_url: str, key: str, dest: Path) -> None:
    from spotrun.store.backend import Backend

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "workdir.tar.gz"
        if not await Backend(store_url).download(key, archive):
            raise SystemExit(f"the job's workdir {key} is not in {store_url}: relaunch the job")
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")  # refuses absolute paths, escapes, devices
                return
            root = dest.resolve()
            for member in tar.getmembers():  # a Python before 3.11.4: the same refusals by hand
                path = (root / member.name).resolve()
                target = (path.parent / member.linkname).resolve() if member.issym() else path
                if not (member.isfile() or member.isdir() or member.issym()) or not (
                        path.is_relative_to(root) and target.is_relative_to(root)):
                    raise SystemExit(f"the workdir archive {key} has an unsafe entry {member.name!r}")
            tar.extractall(dest)


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m spotrun.providers.aws.boot STORE_URL KEY DEST")
    asyncio.run(fetch_workdir(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
