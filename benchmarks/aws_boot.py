"""What every relaunch pays on a bare VM: boot-script start -> agent running.

On the local AWS's VM runner, a job is launched with its boot script installing spotrun into a
clean venv from a wheelhouse in the store (`install: wheelhouse:<dir>`: one tar, fetched with
the standard library, `pip install --no-index`). Timed from the script's first line to the
agent's first status record (`started_at` in `status/<job>/a000001/beat`). Baseline in the same
run: an image with spotrun already installed (`install: python:<path>`), which pays only the
agent's own start.

    .venv/bin/pip wheel --wheel-dir /tmp/wheelhouse .      # once: the core package (the agent) and its dependencies
    .venv/bin/python benchmarks/aws_boot.py --wheelhouse /tmp/wheelhouse [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


async def _boot_s(root: Path, install: str, n: int) -> float:
    from spotrun.emulators.local_aws import LocalAws
    from spotrun.providers.aws import AwsConfig, AwsProvider
    from spotrun.providers.base import LaunchRequest
    from spotrun.store.backend import Backend

    with LocalAws(root / f"aws-{n}") as aws:
        os.environ.update(aws.env)
        os.environ["SPOTRUN_AWS_INSTALL"] = install
        provider = AwsProvider(AwsConfig.from_env())
        inst = await provider.launch(LaunchRequest(token=f"boot-{n}", job_id=f"boot-{n}", attempt=1, run="true"))
        backend = Backend(aws.env["SPOTRUN_AWS_STORE"])
        deadline = time.monotonic() + 600
        while (beat := await backend.get(f"status/boot-{n}/a000001/beat")) is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the agent never started; see the VM's boot.log")
            await asyncio.sleep(0.05)
        started = json.loads(beat)["started_at"]
        log = (aws.runner.vms[inst.id.rpartition(":")[2]].root / "boot.log").read_text()
        stamp = re.search(r"\[spotrun boot\] (\S+) start", log).group(1)  # type: ignore[union-attr]
        return started - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheelhouse", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    wheels = sorted(args.wheelhouse.resolve().glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="spotrun-boot-bench-") as tmp:
        os.environ["SPOTRUN_HOME"] = tmp
        image = [asyncio.run(_boot_s(Path(tmp), f"python:{sys.executable}", n)) for n in range(args.runs)]
        house = [asyncio.run(_boot_s(Path(tmp), f"wheelhouse:{args.wheelhouse.resolve()}", 100 + n))
                 for n in range(args.runs)]
    result = {
        "wheels": len(wheels), "wheelhouse_mb": round(sum(w.stat().st_size for w in wheels) / 2**20, 1),
        "preinstalled_s": statistics.median(image), "wheelhouse_s": statistics.median(house),
        "runs": {"preinstalled": image, "wheelhouse": house},
    }
    result["ratio"] = result["wheelhouse_s"] / result["preinstalled_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"boot-script start -> agent running, median of {args.runs}:")
    print(f"  spotrun preinstalled on the image     {result['preinstalled_s']:6.2f}s")
    print(f"  clean venv from the store's wheelhouse {result['wheelhouse_s']:6.2f}s "
          f"({result['wheels']} wheels, {result['wheelhouse_mb']} MiB; x{result['ratio']:.1f})")


if __name__ == "__main__":
    main()
