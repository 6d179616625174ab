"""A child process for the kill -9 test: changes a checkpoint dir and snapshots it, forever.

Every file it writes ends with the blake3 of the rest, so the parent can tell a torn file.
Usage: churn.py STORE_URL SRC_DIR JOB ATTEMPT
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import blake3

from spotrun.sdk.atomic import save_atomic
from spotrun.store import Store


def payload(size: int) -> bytes:
    body = os.urandom(size)
    return body + blake3.blake3(body).digest()


async def main(url: str, src: Path, job: str, attempt: int) -> None:
    store = Store.open(url, create=True, chunk_size=16 * 1024)
    step = 0
    while True:
        step += 1
        for _ in range(random.randint(1, 3)):
            save_atomic(src / f"shard-{random.randint(0, 5)}.bin", payload(random.randint(1, 200) * 1024))
        save_atomic(src / "step.txt", payload(8))
        files = sorted(src.glob("shard-*.bin"))
        if len(files) > 4:
            random.choice(files).unlink()
        await store.snapshot(job, attempt, src)
        if step % 3 == 0:
            await store.prune(job, 3)
        print("synced", step, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
