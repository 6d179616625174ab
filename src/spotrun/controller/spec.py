"""The job spec: what a user writes in `job.yaml`, validated with errors that point at the line.

A one-line `run: python train.py` is a complete job; every other section has defaults that
suit a training job on the local provider. Errors name the field and the YAML line/column,
because "validation error" without a place is what makes YAML configs painful.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from spotrun.agent.signals import parse_signal
from spotrun.durations import parse_duration


class SpecError(ValueError):
    """A job spec that cannot run; `str()` is one line per problem, `file:line:col: field: why`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


def _duration(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a duration, e.g. 30, 90s, 2m, 1h30m, 250ms")
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Resources(_Section):
    provider: str = "local"
    instance_type: str | None = None
    zones: list[str] = Field(default_factory=list)
    spot: bool | Literal["auto"] = True
    # With `spot: auto` and `recovery.deadline`, `compute` (the job's time on one uninterrupted
    # machine) turns on the deadline-aware market policy (default adaptive), which picks spot,
    # on-demand or waiting; `changeover` is what each new instance costs before it makes
    # progress (boot, restore, the notice lead of the one it replaces).
    policy: Literal["adaptive", "up", "greedy"] | None = None
    compute: Duration | None = None
    changeover: Duration = 60.0

    @field_validator("spot", mode="before")
    @classmethod
    def _spot(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError("must be true, false or auto")


class Checkpoint(_Section):
    dir: str = "checkpoints"  # relative to the instance's working directory
    store: str | None = None  # default: spotrun.paths.default_store_url() of the controller
    sync_interval: Duration | None = None
    keep: int | None = Field(default=None, ge=1)


class Outputs(_Section):
    dir: str = "outputs"  # relative to the instance's working directory; each finished file uploaded once


class Backoff(_Section):
    base: Duration = 1.0
    max: Duration = 60.0


class Recovery(_Section):
    max_reclaims: int = Field(default=20, ge=0)
    max_errors: int = Field(default=0, ge=0)  # restarts after the user's own failure
    backoff: Backoff = Field(default_factory=Backoff)
    deadline: Duration | None = None  # from launch; past it the job fails instead of retrying


class NoticeSpec(_Section):
    signal: str = "SIGTERM"
    lead_time: Duration | None = None  # default lead of `spotrun interrupt`

    @field_validator("signal", mode="before")
    @classmethod
    def _signal(cls, value: Any) -> str:
        try:
            return parse_signal(value).name
        except ValueError:
            raise ValueError(f"unknown signal {str(value)!r} (use e.g. SIGTERM, SIGINT, SIGUSR1)") from None


class JobSpec(_Section):
    name: str | None = None
    run: str = Field(min_length=1)
    setup: str | None = None
    workdir: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    checkpoint: Checkpoint | None = None
    outputs: Outputs | None = None
    recovery: Recovery = Field(default_factory=Recovery)
    notice: NoticeSpec = Field(default_factory=NoticeSpec)
    max_price: float | None = Field(default=None, gt=0)
    on_success: Literal["keep", "delete"] = "keep"

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): "" if v is None else str(v) for k, v in value.items()}
        return value

    @property
    def deadline_aware(self) -> bool:
        """`spot: auto` with a deadline and a compute estimate: the market policy picks capacity."""
        res = self.resources
        return res.spot == "auto" and self.recovery.deadline is not None and res.compute is not None

    def display_name(self) -> str:
        return self.name or self.run.split()[0].rsplit("/", 1)[-1]

    def agent_args(self, default_store: str) -> tuple[str, ...]:
        """The `spotrun exec` options this spec implies (checkpoint sync, notice signal)."""
        args: list[str] = ["--signal", self.notice.signal]
        if self.checkpoint is not None:
            ck = self.checkpoint
            args += ["--checkpoint-dir", ck.dir, "--store", self.store_url(default_store)]
            if ck.sync_interval is not None:
                args += ["--sync-interval", f"{ck.sync_interval}s"]
            if ck.keep is not None:
                args += ["--keep", str(ck.keep)]
        if self.outputs is not None:
            args += ["--outputs-dir", self.outputs.dir]
            if self.checkpoint is None:
                args += ["--store", default_store]
        return tuple(args)

    def store_url(self, default_store: str) -> str:
        """Where this job's snapshots and outputs live."""
        return (self.checkpoint.store if self.checkpoint else None) or default_store


# --- loading with positions -------------------------------------------------------------------

Pos = tuple[int, int]


def _positions(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, Pos]:
    """Map each key path to the (line, col) of its key, 1-based, as editors show them."""
    out = {} if out is None else out
    out.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out[sub] = (key.start_mark.line + 1, key.start_mark.column + 1)
            _positions(value, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _positions(item, path + (i,), out)
    return out


def _clean_loc(loc: tuple) -> tuple:
    """Drop pydantic's union-branch tags (`bool`, `literal['auto']`) so a loc is a YAML path."""
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p == "bool")))


def _cross_checks(spec: JobSpec) -> list[tuple[tuple, str]]:
    """Rules that span sections (a deadline-driven policy needs compute < deadline), as (loc, why)."""
    res, deadline = spec.resources, spec.recovery.deadline
    if res.spot != "auto" or deadline is None:
        field = "compute" if res.compute is not None else "policy" if res.policy is not None else None
        if field:
            return [(("resources", field), "only used with `spot: auto` and `recovery.deadline`; set both or remove it")]
        return []
    if res.compute is None:
        if res.policy is None:
            return []  # plain `spot: auto`: on-demand after repeated spot refusals
        why = "required by `policy`: how long the job runs on one uninterrupted machine, e.g. `compute: 6h`"
        return [(("resources", "compute"), why)]
    if res.compute <= 0 or res.changeover <= 0:
        return [(("resources", "compute" if res.compute <= 0 else "changeover"), "must be a positive duration")]
    if res.compute + res.changeover > deadline:
        why = (f"compute {res.compute:g}s plus one changeover {res.changeover:g}s does not fit in "
               f"recovery.deadline {deadline:g}s: not even on-demand can make it; give a later deadline")
        return [(("resources", "compute"), why)]
    return []


def _describe(err: dict, model: type[BaseModel]) -> tuple[tuple, str]:
    loc = _clean_loc(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        field = str(loc[-1])
        known = _fields_at(model, loc[:-1])
        hint = difflib.get_close_matches(field, known, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else f" (known: {', '.join(sorted(known))})"
        return loc, f"unknown field{did}"
    if kind == "missing":
        return loc, "required field is missing"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return loc, msg


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def _dedupe_union_errors(errors: list[dict]) -> list[dict]:
    """A union field (e.g. `spot: bool | "auto"`) yields one error per branch; keep one per place."""
    seen: dict[tuple, dict] = {}
    for err in errors:
        key = _clean_loc(err["loc"])
        if key not in seen or "Value error" in err["msg"]:
            seen[key] = err
    return list(seen.values())


def parse_spec(data: Any, source: str = "<spec>", positions: dict[tuple, Pos] | None = None) -> JobSpec:
    """Validate a dict (already parsed YAML); raise SpecError with file:line:col per problem."""
    if not isinstance(data, dict):
        where = _where(source, positions or {}, ())
        raise SpecError([f"{where}: a job spec is a mapping with at least `run: COMMAND`"])
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        found = [_describe(err, JobSpec) for err in _dedupe_union_errors(exc.errors())]
    else:
        found = _cross_checks(spec)
        if not found:
            return spec
    problems = []
    for loc, msg in found:
        field = ".".join(str(p) for p in loc) or "(top level)"
        problems.append((_pos(positions or {}, loc), f"{_where(source, positions or {}, loc)}: {field}: {msg}"))
    raise SpecError([text for _, text in sorted(problems, key=lambda p: p[0])])


def _pos(positions: dict[tuple, Pos], loc: tuple) -> Pos:
    """The nearest known place: the field itself, else its closest enclosing section."""
    for n in range(len(loc), -1, -1):
        pos = positions.get(tuple(loc[:n]))
        if pos is not None:
            return pos
    return (0, 0)


def _where(source: str, positions: dict[tuple, Pos], loc: tuple) -> str:
    line, col = _pos(positions, loc)
    return f"{source}:{line}:{col}" if line else source


def load_spec_text(text: str, source: str = "<spec>") -> JobSpec:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{where}: invalid YAML: {problem}"]) from None
    if node is None:
        raise SpecError([f"{source}: the file is empty; a job needs at least `run: COMMAND`"])
    return parse_spec(data, source, _positions(node))


def load_spec(spec: JobSpec | str | Path | dict) -> JobSpec:
    """A JobSpec from a spec object, a YAML file path, or a dict."""
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    path = Path(spec)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror}"]) from None
    return load_spec_text(text, str(path))
