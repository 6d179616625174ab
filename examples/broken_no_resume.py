"""DELIBERATELY BROKEN: saves checkpoints but never loads them, so every attempt starts over.

    python examples/broken_no_resume.py --steps 300 --output result.json

The same job as examples/train.py with the one line that matters missing. Under reclaims it
redoes all its work on every attempt (and with enough reclaims never finishes); `spotrun check`
exists to catch exactly this before it costs real money.
"""

from __future__ import annotations

import sys

from train import run  # examples/ is on sys.path when this file runs as a script

if __name__ == "__main__":
    sys.exit(run(resume=False))
