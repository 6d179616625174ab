"""Which optional part of spotrun is installed, read from the package's own metadata.

The core package is only the agent (`spotrun exec` installs on every relaunch of a bare VM), so
the controller, the market tools, the aws provider and the emulators are extras. A command whose
extra is missing says in one line what to install instead of dying on an ImportError deep inside;
the extras' contents are read from pyproject's metadata, so this never drifts from it.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import metadata

_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


class MissingExtra(RuntimeError):
    """An optional part is not installed; the message is the one line to show."""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _requirements() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """extra -> [(distribution, its own extras)], from spotrun's installed metadata."""
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for line in metadata.requires("spotrun") or []:
        spec, _, marker = line.partition(";")
        extra = _EXTRA.search(marker)
        name = _NAME.match(spec)
        if extra and name:
            nested = tuple(_canonical(e) for e in (name.group(2) or "").split(",") if e.strip())
            out.setdefault(_canonical(extra.group(1)), []).append((_canonical(name.group(1)), nested))
    return out


def missing(extra: str) -> list[str]:
    """The distributions of `extra` (and of the spotrun extras it includes) that are not installed."""
    absent: list[str] = []
    for dist, nested in _requirements().get(_canonical(extra), []):
        if dist == "spotrun":
            absent += [d for e in nested for d in missing(e) if d not in absent]
            continue
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            absent.append(dist)
    return absent


def require(extra: str, what: str) -> None:
    """Raise `MissingExtra` naming the pip command when `what` cannot run without `extra`."""
    if absent := missing(extra):
        raise MissingExtra(
            f"{what} needs the {extra} extra ({', '.join(absent)} not installed): pip install 'spotrun[{extra}]'"
        )
