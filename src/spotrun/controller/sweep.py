"""A sweep: one spec, many jobs, each with its own values of the parameters.

Job i of a sweep is the spec with `{{ name }}` in `run`, `setup` and `env` replaced by its
values, those values also in its environment (`lr=0.01`), `SPOTRUN_ARRAY_INDEX=i` and
`SPOTRUN_SWEEP=<label>`; it is named `<name>-<i>` and carries the sweep's label, so
`spotrun jobs --sweep <label>` lists exactly its jobs. Grid order is the product's: the last
parameter varies fastest.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

from spotrun.controller.spec import INDEX, TEMPLATE, JobSpec, Sweep

ARRAY_INDEX_ENV = "SPOTRUN_ARRAY_INDEX"
SWEEP_ENV = "SPOTRUN_SWEEP"


def new_label(spec: JobSpec) -> str:
    """Unique per launch: the same spec launched twice makes two sweeps."""
    return f"{spec.display_name()}-{secrets.token_hex(3)}"


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def combinations(sweep: Sweep) -> Iterator[dict[str, str]]:
    if sweep.grid is None:
        yield from ({} for _ in range(sweep.array or 0))
        return
    names = list(sweep.grid)
    for values in itertools.product(*sweep.grid.values()):
        yield {n: _text(v) for n, v in zip(names, values)}


def expand(spec: JobSpec, label: str) -> list[JobSpec]:
    """The sweep's jobs, in index order; each a plain spec (no `sweep:`)."""
    assert spec.sweep is not None
    base = spec.display_name()
    jobs = []
    for i, values in enumerate(combinations(spec.sweep)):
        subst = {**values, INDEX: str(i)}

        def render(text: str) -> str:
            return TEMPLATE.sub(lambda m: subst[m.group(1)], text)

        env = {k: render(v) for k, v in spec.env.items()} | values | {ARRAY_INDEX_ENV: str(i), SWEEP_ENV: label}
        jobs.append(spec.model_copy(update={
            "name": f"{base}-{i}", "run": render(spec.run), "setup": render(spec.setup) if spec.setup else None,
            "env": env, "sweep": None,
        }))
    return jobs
