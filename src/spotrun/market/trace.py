"""Spot availability traces: load and check them, synthesize them, find the bundled ones.

Format (skypilot-org/spot-traces): `{"metadata": {"gap_seconds": N}, "data": [...], "prices": [...]}`.
`data[i]` counts the spot instances available at tick i; a gang of N nodes runs only when the
count equals N, so an N-node trace is reduced to one boolean per tick at load time. The gang
size is said, never guessed: `--nodes`, else `metadata.nodes`, else the public traces' layout
`<kind>/<N>-node/<date>/<zone>.json` (the file's grandparent folder, and only that folder).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

_NODES_FOLDER = re.compile(r"(\d+)-node")


@dataclass(frozen=True, eq=False)
class Trace:
    """One zone's spot availability, one boolean per tick of `gap_s` seconds."""

    name: str
    gap_s: float
    available: np.ndarray  # bool, one per tick
    prices: np.ndarray | None = None  # spot $/h per tick, when the trace carries them
    nodes: int = 1
    nodes_from: str = "default"  # where the gang size came from: --nodes, metadata, folder or default

    @property
    def ticks(self) -> int:
        return len(self.available)

    @property
    def hours(self) -> float:
        return self.ticks * self.gap_s / 3600

    @property
    def availability(self) -> float:
        return float(self.available.mean())

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """Lengths in seconds of the available runs and of the gaps between them."""
        a = self.available.astype(np.int8)
        edges = np.flatnonzero(np.diff(a)) + 1
        bounds = np.concatenate(([0], edges, [len(a)]))
        lengths = np.diff(bounds) * self.gap_s
        first_up = bool(a[0])
        kinds = np.array([(first_up if i % 2 == 0 else not first_up) for i in range(len(lengths))])
        return lengths[kinds], lengths[~kinds]

    def reclaims_per_hour(self) -> float:
        """Reclaims per hour of spot held: ends of available runs that the trace saw end."""
        up, _ = self.runs()
        ended = len(up) - int(bool(self.available[-1]))
        held_h = float(up.sum()) / 3600
        if held_h == 0:
            raise ValueError(f"trace {self.name} is never available, so it has no reclaim rate")
        return ended / held_h


def parse_trace(data: Any, name: str = "trace", nodes: int | None = None, folder_nodes: int | None = None) -> Trace:
    """Check a decoded trace and build a Trace; every problem is a ValueError saying what to fix.

    The gang size is `nodes` (the user's `--nodes`), else `metadata.nodes`, else `folder_nodes`
    (the `N-node` folder of the public layout); the last two must agree when both are there.
    """
    where = f"trace {name}"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object with 'metadata' and 'data'")
    for key in ("metadata", "data"):
        if key not in data:
            raise ValueError(f"{where}: missing key {key!r} (format: {{'metadata': {{'gap_seconds': N}}, 'data': [...]}})")
    meta = data["metadata"]
    if not isinstance(meta, dict) or "gap_seconds" not in meta:
        raise ValueError(f"{where}: missing key 'metadata.gap_seconds'")
    gap = meta["gap_seconds"]
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or gap <= 0:
        raise ValueError(f"{where}: gap_seconds must be a positive number, got {gap!r}")
    values = data["data"]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: 'data' must be a non-empty list of instance counts")
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 0), None)
    if bad is not None:
        raise ValueError(f"{where}: 'data' values must be non-negative integers, found {bad!r}")
    counts = np.asarray(values, dtype=np.int64)
    nodes, nodes_from = _gang_size(where, meta, nodes, folder_nodes, int(counts.max()))
    prices = None
    if "prices" in data:
        raw = data["prices"]
        if not isinstance(raw, list) or len(raw) != len(values):
            got = len(raw) if isinstance(raw, list) else type(raw).__name__
            raise ValueError(f"{where}: 'prices' must have one entry per tick ({len(values)}), got {got}")
        try:
            prices = np.asarray(raw, dtype=float)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: 'prices' must be numbers ($/h)") from None
        if (prices < 0).any() or not np.isfinite(prices).all():
            raise ValueError(f"{where}: 'prices' must be finite and not negative")
    return Trace(name=name, gap_s=float(gap), available=counts >= nodes, prices=prices, nodes=nodes,
                 nodes_from=nodes_from)


def _gang_size(where: str, meta: dict, given: int | None, folder: int | None, most: int) -> tuple[int, str]:
    """(gang size, where it came from); a count above it, or a multi-node trace nobody sized, is an error."""
    said = meta.get("nodes")
    if said is not None and (isinstance(said, bool) or not isinstance(said, int) or said < 1):
        raise ValueError(f"{where}: metadata.nodes must be a positive integer, got {said!r}")
    if said is not None and folder is not None and said != folder:
        raise ValueError(f"{where}: metadata.nodes is {said} but the file sits in a {folder}-node folder; "
                         "fix one of them or give --nodes")
    if given is not None and given < 1:
        raise ValueError(f"--nodes must be a positive integer, got {given}")
    nodes, source = next(((n, s) for n, s in ((given, "--nodes"), (said, "metadata"), (folder, "folder"))
                          if n is not None), (1, "default"))
    if most > nodes:
        hint = ("give --nodes N, set metadata.nodes, or store it as <kind>/<N>-node/<date>/<zone>.json"
                if source == "default" else "check the gang size")
        raise ValueError(f"{where}: a count of {most} exceeds the gang size {nodes} (from {source}): {hint}")
    return nodes, source


def folder_nodes(path: Path) -> int | None:
    """N when the file sits in the public layout `<kind>/<N>-node/<date>/<zone>.json`, else None.

    Only the grandparent folder counts, and only when its whole name is `N-node`: a folder
    named `run-2-node-copies/` anywhere in the path says nothing about the gang.
    """
    m = _NODES_FOLDER.fullmatch(path.parent.parent.name)
    return int(m.group(1)) if m else None


def read_trace(path: str | Path, name: str | None = None, nodes: int | None = None) -> Trace:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise ValueError(f"trace {path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"trace {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    return parse_trace(data, name=name or str(path), nodes=nodes, folder_nodes=folder_nodes(path.absolute()))


def _bundled_root() -> Path:
    return Path(str(resources.files("spotrun.market") / "traces"))


def bundled() -> dict[str, Path]:
    """Bundled traces by name, e.g. `aws-10-26-2022/us-west-2a_v100_1` -> file."""
    root = _bundled_root()
    return {f"{p.parent.name}/{p.stem}": p for p in sorted(root.rglob("*.json"))}


def bundled_kind(name: str) -> str:
    """'availability' or 'preemption': the top folder the bundled trace lives in."""
    return bundled()[name].relative_to(_bundled_root()).parts[0]


def load_trace(spec: str | Path, nodes: int | None = None) -> Trace:
    """A bundled trace by name, or any trace file by path; `nodes` overrides the gang size."""
    table = bundled()
    key = str(spec).removesuffix(".json")
    if key in table:
        return read_trace(table[key], name=key, nodes=nodes)
    if Path(spec).exists():
        return read_trace(spec, nodes=nodes)
    raise ValueError(f"no trace {spec!r}: give a file path or a bundled name ({', '.join(list(table)[:3])}, ...; "
                     "`spotrun simulate --list-traces` shows all)")


def resolve(specs: list[str], nodes: int | None = None) -> list[Trace]:
    """Traces for names, globs over bundled names and their paths (`availability/*`), or files."""
    table = bundled()
    root = _bundled_root()
    found: list[Trace] = []
    for spec in specs:
        if any(ch in spec for ch in "*?["):
            names = [n for n, p in table.items()
                     if fnmatch.fnmatch(n, spec) or fnmatch.fnmatch(str(p.relative_to(root).with_suffix("")), spec)]
            files = sorted(glob.glob(spec)) if not names else []
            if not names and not files:
                raise ValueError(f"no trace matches {spec!r}")
            found += [read_trace(table[n], name=n, nodes=nodes) for n in names] + [read_trace(f, nodes=nodes) for f in files]
        else:
            found.append(load_trace(spec, nodes))
    return found


def synthetic(
    hours: float,
    gap_s: float,
    availability: float,
    mean_lifetime_s: float,
    seed: int = 0,
    name: str | None = None,
) -> Trace:
    """Alternating available/unavailable runs with exponential lengths, for tests and what-ifs.

    Runs last `mean_lifetime_s` on average; gaps are sized so the long-run fraction available
    is `availability`.
    """
    if not 0 < availability <= 1:
        raise ValueError(f"availability must be in (0, 1], got {availability}")
    if mean_lifetime_s <= 0 or gap_s <= 0 or hours <= 0:
        raise ValueError("hours, gap_s and mean_lifetime_s must be positive")
    rng = np.random.default_rng(seed)
    n = max(1, int(round(hours * 3600 / gap_s)))
    mean_gap_s = mean_lifetime_s * (1 - availability) / availability
    out = np.zeros(n, dtype=bool)
    i, up = 0, bool(rng.random() < availability)
    while i < n:
        mean = mean_lifetime_s if up else mean_gap_s
        length = 0 if mean == 0 else max(1, int(round(rng.exponential(mean) / gap_s)))
        out[i : i + length] = up
        i += length
        up = not up if mean_gap_s > 0 else True
    label = name or f"synthetic(a={availability:g},life={mean_lifetime_s:g}s,seed={seed})"
    return Trace(name=label, gap_s=float(gap_s), available=out)
