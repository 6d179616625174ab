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
            tar.extractall(dest, filter="data")  # refuses absolute paths and escapes


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m spotrun.providers.aws.boot STORE_URL KEY DEST")
    asyncio.run(fetch_workdir(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
