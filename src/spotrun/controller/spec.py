"""The job spec: what a user writes in `job.yaml`, validated with errors that point at the line.

A one-line `run: python train.py` is a complete job; every other section has defaults that
suit a training job on the local provider. Errors name the field and the YAML line/column,
because "validation error" without a place is what makes YAML configs painful.
"""

from __future__ import annotations

import codecs
import difflib
import math
import re
import signal as signals
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from spotrun.agent.signals import parse_signal
from spotrun.durations import parse_duration


class SpecError(ValueError):
    """A job spec that cannot run; `str()` is one line per problem, `file:line:col: field: why`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


MAX_DURATION_S = 366 * 86400.0  # a year: anything longer is a typo (1e308, .inf), not a plan
MAX_COUNT = 1_000_000  # budgets and `keep`: bounded so a typo cannot overflow anything downstream
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names that carry credentials: their values belong in `secrets:`, never in the stored, shown spec.
SECRET_NAME = re.compile(r"(^|_)(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIALS?|(API|ACCESS|PRIVATE)_?KEY)(_|$)", re.I)


def _duration(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a duration, e.g. 30, 90s, 2m, 1h30m, 250ms")
    seconds = parse_duration(value)
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ValueError(f"must be a finite duration of at most 366d, not {value!r}")
    return seconds


def _positive(value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise ValueError("must be a positive duration, e.g. 30s (0 would mean no pause at all)")
    return value


def _text(value: Any) -> Any:
    """No NUL: the OS cannot pass it in an argument or an environment value, so every launch would fail."""
    if isinstance(value, str) and "\0" in value:
        raise ValueError("contains a NUL character, which no command line or environment can carry")
    return value


Duration = Annotated[float, BeforeValidator(_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_duration), AfterValidator(_positive)]
Text = Annotated[str, BeforeValidator(_text)]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]


def _inside_disk(value: str | None) -> str | None:
    """A folder on the instance's disk: relative to the working directory and inside it, or
    absolute (then `allow_paths` must name a root above it; see the cross-checks)."""
    if value is None:
        return None
    path = PurePosixPath(value)
    if not value.strip() or path == PurePosixPath("."):
        raise ValueError("must name a folder inside the working directory, e.g. `checkpoints`, not the directory itself")
    if ".." in path.parts:
        raise ValueError(f"{value!r} leaves the working directory (`..`); use a folder inside it, e.g. `checkpoints`")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Resources(_Section):
    provider: str = "local"
    cloud: Text | None = None  # the same as `provider` (`cloud: aws` reads better)
    # Cloud placement (docs/aws.md): launches go through `instance_type` (one or a list to fall
    # back through), then `zones` (else `regions`, else `region`), each next after a refusal.
    instance_type: Text | list[Text] | None = Field(default=None, max_length=100)
    zones: list[Text] = Field(default_factory=list, max_length=100)
    region: Text | None = None
    regions: list[Text] = Field(default_factory=list, max_length=100)
    image: Text | None = None  # an AMI id, or ssm:/parameter/path that names one
    disk_gb: int | None = Field(default=None, ge=8, le=65536)
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

    @field_validator("instance_type")
    @classmethod
    def _types(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one instance type, or leave it out")
        return value

    @model_validator(mode="after")
    def _cloud_is_provider(self) -> Resources:
        if self.cloud is not None:
            if "provider" in self.model_fields_set and self.provider != self.cloud:
                raise ValueError(f"cloud {self.cloud!r} and provider {self.provider!r} disagree; give one of them")
            self.provider = self.cloud
        return self

    @property
    def instance_types(self) -> list[str | None]:
        value = self.instance_type
        return list(value) if isinstance(value, list) else [value]

    def placements(self) -> list[tuple[str | None, str | None]]:
        """(zone or region, instance type) in the order launches try them; None: the provider's default."""
        places: list[str | None] = list(self.zones or self.regions) or [self.region]
        return [(place, itype) for itype in self.instance_types for place in places]


class Checkpoint(_Section):
    # Relative to the instance's working directory: on relaunch the agent fills it from the
    # store, so it must be the job's own folder, never an arbitrary place on the machine.
    dir: Annotated[Text, AfterValidator(_inside_disk)] = "checkpoints"
    store: Text | None = None  # default: spotrun.paths.default_store_url() of the controller
    sync_interval: PositiveDuration | None = None
    keep: int | None = Field(default=None, ge=1, le=MAX_COUNT)


class Outputs(_Section):
    # Each finished file here is uploaded once (`spotrun exec --outputs-dir`); fetched with
    # `spotrun outputs`. The same confinement as checkpoint.dir.
    dir: Annotated[Text, AfterValidator(_inside_disk)] = "outputs"


def _outputs(value: Any) -> Any:
    """`outputs: results` is short for `outputs: {dir: results}`."""
    return {"dir": value} if isinstance(value, str) else value


class Backoff(_Section):
    base: Duration = 1.0
    max: Duration = 60.0


class Recovery(_Section):
    max_reclaims: Count = 20
    max_errors: Count = 0  # restarts after the user's own failure
    backoff: Backoff = Field(default_factory=Backoff)
    deadline: Duration | None = None  # from launch; past it the job fails instead of retrying


class NoticeSpec(_Section):
    signal: str = "SIGTERM"
    lead_time: Duration | None = None  # default lead of `spotrun interrupt`

    @field_validator("signal", mode="before")
    @classmethod
    def _signal(cls, value: Any) -> str:
        try:
            sig = parse_signal(value)
        except ValueError:
            raise ValueError(f"unknown signal {str(value)!r} (use e.g. SIGTERM, SIGINT, SIGUSR1)") from None
        if sig in (signals.SIGKILL, signals.SIGSTOP):
            raise ValueError(f"{sig.name} cannot be caught, so the command could never save its work; use SIGTERM, SIGINT or SIGUSR1")
        return sig.name


def _check_env_name(name: Any) -> None:
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise ValueError(f"{str(name)!r} is not an environment variable name (letters, digits and _, not starting with a digit; no `=` or NUL)")


class SecretRef(_Section):
    """Where the controller reads a secret when it launches an instance; the value itself is
    never part of the spec, so it is never stored in the database or shown by `status`."""

    file: Text | None = None  # a file readable by the controller (trailing newline dropped)
    env: Text | None = None  # a variable in the controller's own environment

    @model_validator(mode="before")
    @classmethod
    def _reference(cls, value: Any) -> Any:
        given = {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else None
        if given is None or len(given) != 1 or not {"file", "env"} & set(given):
            raise ValueError("give `{file: PATH}` or `{env: NAME}`: a secret's value never goes in the spec")
        if "env" in given:
            _check_env_name(given["env"])
        return given


class AwsSection(_Section):
    """Network and IAM for the aws provider; everything else has defaults (docs/aws.md)."""

    subnet_id: Text | dict[Text, Text] | None = None  # one, or one per zone
    security_group_ids: list[Text] = Field(default_factory=list, max_length=100)
    key_name: Text | None = None
    iam_instance_profile: Text | None = None  # name or ARN; the instance reads the store with it
    install: Text | None = None  # pip:<requirement> or python:<path>; default the controller's version


class SimSection(_Section):
    """What a job does on the sim provider, which runs no command (docs/sim.md)."""

    work: PositiveDuration | None = None  # compute it needs; None: runs until stopped or reclaimed
    exit_code: int = Field(default=0, ge=0, le=255)  # how it exits once its work is done


MAX_SWEEP_JOBS = 100_000  # one launch; more is a typo in a grid, not a plan
# `{{ lr }}` in run/setup/env takes the job's value of sweep parameter `lr` (`{{ index }}`: its
# index). Only identifiers: `{{.ID}}` (docker, Go templates) passes through untouched.
TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
INDEX = "index"


class Sweep(_Section):
    """Many jobs from one spec: every combination of a parameter grid, or an array of N."""

    grid: dict[str, list[Any]] | None = None
    array: int | None = None

    @field_validator("array")
    @classmethod
    def _array(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_SWEEP_JOBS:
            raise ValueError(f"must be 1 to {MAX_SWEEP_JOBS:,} jobs, not {value:,}")
        return value

    @field_validator("grid", mode="before")
    @classmethod
    def _grid(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, dict) or not value:
            raise ValueError("give each parameter a list of values, e.g. `grid: {lr: [0.1, 0.01], seed: [1, 2]}`")
        for name, values in value.items():
            _check_env_name(name)  # each one is also set in the job's environment
            if name == INDEX:
                raise ValueError("`index` is each job's place in the sweep ({{ index }}); name the parameter otherwise")
            if SECRET_NAME.search(name):
                raise ValueError(f"{name} looks like a credential: a sweep's values are stored and shown; use `secrets:`")
            if not isinstance(values, list) or not values:
                raise ValueError(f"{name}: give a non-empty list of values, e.g. `{name}: [1, 2]`")
            bad = next((v for v in values if v is None or isinstance(v, (dict, list)) or (isinstance(v, str) and "\0" in v)), ())
            if bad != ():
                raise ValueError(f"{name}: every value must be a number, a string or true/false, not {bad!r}")
        size = math.prod(len(v) for v in value.values())
        if size > MAX_SWEEP_JOBS:
            raise ValueError(f"expands into {size:,} jobs, more than {MAX_SWEEP_JOBS:,} in one launch; split the sweep")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Sweep:
        if (self.grid is None) == (self.array is None):
            raise ValueError("give `grid:` (a parameter grid) or `array: N` (N jobs), one of them")
        return self

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values()) if self.grid is not None else self.array or 0

    @property
    def names(self) -> set[str]:
        """What the templates may name."""
        return {*(self.grid or {}), INDEX}


class JobSpec(_Section):
    name: Text | None = Field(default=None, max_length=200)
    run: Text = Field(min_length=1)
    setup: Text | None = None
    workdir: Text | None = None
    env: dict[str, Text] = Field(default_factory=dict, max_length=1000)
    secrets: dict[str, SecretRef] = Field(default_factory=dict, max_length=1000)
    # Absolute folders on the instance that checkpoint.dir / outputs may name (e.g. a local NVMe).
    allow_paths: list[Text] = Field(default_factory=list, max_length=20)
    resources: Resources = Field(default_factory=Resources)
    checkpoint: Checkpoint | None = None
    outputs: Annotated[Outputs | None, BeforeValidator(_outputs)] = None
    recovery: Recovery = Field(default_factory=Recovery)
    notice: NoticeSpec = Field(default_factory=NoticeSpec)
    max_price: float | None = Field(default=None, gt=0)
    aws: AwsSection | None = None
    sim: SimSection | None = None
    sweep: Sweep | None = None
    on_success: Literal["keep", "delete"] = "keep"

    @field_validator("run")
    @classmethod
    def _run(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank: give the command to run, e.g. `run: python train.py`")
        return value

    @field_validator("env", "secrets", mode="before")
    @classmethod
    def _names(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, dict):
            return value
        for name in value:
            _check_env_name(name)
            if info.field_name == "env" and SECRET_NAME.search(name):
                raise ValueError(f"{name} looks like a credential: move it to `secrets:` "
                                 f"(e.g. `secrets: {{{name}: {{file: ~/.{name.lower()}}}}}`) so it is never stored or shown")
        if info.field_name == "env":
            return {k: "" if v is None else v if isinstance(v, str) else str(v) for k, v in value.items()}
        return value

    @field_validator("allow_paths")
    @classmethod
    def _allow_paths(cls, value: list[str]) -> list[str]:
        for root in value:
            path = PurePosixPath(root)
            if not path.is_absolute() or ".." in path.parts or path == PurePosixPath("/"):
                raise ValueError(f"{root!r}: each entry is an absolute folder other than / with no `..`, e.g. /mnt/nvme")
        return value

    @property
    def deadline_aware(self) -> bool:
        """`spot: auto` with a deadline and a compute estimate: the market policy picks capacity."""
        res = self.resources
        return res.spot == "auto" and self.recovery.deadline is not None and res.compute is not None

    def cloud_settings(self, zone: str | None) -> dict[str, Any]:
        """What a cloud provider needs beyond `LaunchRequest`'s own fields."""
        res = self.resources
        settings: dict[str, Any] = {"region": res.region if zone is None else None, "image": res.image,
                                    "disk_gb": res.disk_gb,
                                    # every place the job may go, so the first launch can check them all
                                    "places": list(dict.fromkeys(p for p, _ in res.placements() if p)) or None}
        if self.aws is not None:
            settings["aws"] = self.aws.model_dump(exclude_none=True)
            settings["install"] = self.aws.install
        if self.sim is not None:
            settings["sim"] = self.sim.model_dump(exclude_none=True)
        return {k: v for k, v in settings.items() if v is not None}

    def display_name(self) -> str:
        return self.name or self.run.split()[0].rsplit("/", 1)[-1]

    def agent_args(self) -> tuple[str, ...]:
        """The `spotrun exec` options this spec implies (checkpoint sync, outputs, notice signal).
        The store URL is not one of them: it may carry credentials, so it goes by `agent_env`."""
        args: list[str] = ["--signal", self.notice.signal]
        ck = self.checkpoint
        if ck is not None:
            args += ["--checkpoint-dir", ck.dir]
            if ck.sync_interval is not None:
                args += ["--sync-interval", f"{ck.sync_interval}s"]
            if ck.keep is not None:
                args += ["--keep", str(ck.keep)]
        if self.outputs is not None:
            args += ["--outputs-dir", self.outputs.dir]
        return tuple(args)

    def store_url(self, default_store: str) -> str:
        """Where this job's snapshots and outputs live."""
        return (self.checkpoint.store if self.checkpoint else None) or default_store

    def agent_env(self, default_store: str) -> dict[str, str]:
        """What the agent reads from its environment ($SPOTRUN_STORE): handed to the instance
        like a secret, never on a command line (`ps`) or in a record."""
        if self.checkpoint is None and self.outputs is None:
            return {}
        return {"SPOTRUN_STORE": self.store_url(default_store)}


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


def _confinement(spec: JobSpec) -> list[tuple[tuple, str]]:
    """An absolute checkpoint.dir / outputs must lie under a root that `allow_paths` names."""
    found = []
    for loc, value in ((("checkpoint", "dir"), spec.checkpoint.dir if spec.checkpoint else None), (("outputs", "dir"), spec.outputs.dir if spec.outputs else None)):
        if value is None or not PurePosixPath(value).is_absolute():
            continue
        if not any(PurePosixPath(value).is_relative_to(root) for root in spec.allow_paths):
            found.append((loc, f"{value!r} is outside the instance's working directory; use a relative folder, "
                               f"or name a root above it in `allow_paths`"))
    return found


def _cross_checks(spec: JobSpec) -> list[tuple[tuple, str]]:
    """Rules that span sections (a deadline-driven policy needs compute < deadline), as (loc, why)."""
    clash = [(("secrets", name), "also set in `env`; give it in one place") for name in spec.secrets if name in spec.env]
    return clash + _confinement(spec) + _capacity_checks(spec) + _sweep_checks(spec)


def _sweep_checks(spec: JobSpec) -> list[tuple[tuple, str]]:
    """Every `{{ name }}` names a sweep parameter; no parameter is also set in `env`."""
    if spec.sweep is None:
        return []
    known = spec.sweep.names
    found: list[tuple[tuple, str]] = []
    texts = [(("run",), spec.run), (("setup",), spec.setup or ""), *((("env", k), v) for k, v in spec.env.items())]
    for loc, text in texts:
        for name in dict.fromkeys(m.group(1) for m in TEMPLATE.finditer(text)):
            if name not in known:
                found.append((loc, f"unknown template {{{{ {name} }}}}: the sweep defines {', '.join(sorted(known))}"))
    found += [(("env", k), "also a sweep.grid parameter, which sets it for each job; give it in one place")
              for k in spec.env if k in (spec.sweep.grid or {})]
    return found


def _capacity_checks(spec: JobSpec) -> list[tuple[tuple, str]]:
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


# Bounds on a job file, checked before anything is built from it: a job spec is a few dozen
# lines, so these only stop hostile or broken files (a "billion laughs" of nested aliases,
# 5000-deep nesting, a 5000-digit number) from costing time, memory or a traceback.
MAX_SPEC_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_VALUES = 10_000  # nodes after expanding aliases
MAX_ALIASES = 100
MAX_INT_DIGITS = 30


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, with integers of bounded size (CPython refuses > 4300 digits with a
    ValueError deep inside the constructor; a job spec never needs more than a few)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_DIGITS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number of {len(node.value)} characters is out of range", node.start_mark)
        return super().construct_yaml_int(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _at(source: str, mark: yaml.Mark | None) -> str:
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source


def _check_shape(text: str, source: str) -> None:
    """Depth, alias and value counts from the event stream, which PyYAML parses without recursion."""
    depth = aliases = values = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise SpecError([f"{_at(source, event.start_mark)}: nested more than {MAX_DEPTH} levels deep; a job spec needs a few"])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise SpecError([f"{_at(source, event.start_mark)}: more than {MAX_ALIASES} aliases (*name); write the values out"])
        values += 1
        if values > MAX_VALUES:
            raise SpecError([f"{_at(source, event.start_mark)}: more than {MAX_VALUES} values; a job spec needs a few dozen"])


def _check_expansion(node: yaml.Node, source: str) -> None:
    """Aliases share nodes; count what they expand to, and refuse one that contains itself."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in open_:
            raise SpecError([f"{_at(source, n.start_mark)}: an alias refers to the value that contains it"])
        if key not in sizes:
            open_.add(key)
            children = [c for pair in n.value for c in pair] if isinstance(n, yaml.MappingNode) else (
                n.value if isinstance(n, yaml.SequenceNode) else [])
            total = 1
            for child in children:
                total += size(child)
                if total > MAX_VALUES:
                    raise SpecError([f"{_at(source, n.start_mark)}: aliases expand to more than {MAX_VALUES} values (a \"billion laughs\"?); write the values out"])
            open_.discard(key)
            sizes[key] = total
        return sizes[key]

    size(node)


def _yaml_error(exc: yaml.YAMLError, source: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    return SpecError([f"{_at(source, mark)}: invalid YAML: {' '.join(str(problem).split())}"])


def load_spec_text(text: str, source: str = "<spec>") -> JobSpec:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError([f"{source}: larger than {MAX_SPEC_BYTES // 1024} KiB; a job spec is a few dozen lines"])
    try:
        _check_shape(text, source)
        loader = _BoundedLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_expansion(node, source)
                data = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from None
    if node is None:
        raise SpecError([f"{source}: the file is empty; a job needs at least `run: COMMAND`"])
    return parse_spec(data, source, _positions(node))


def decode_spec(raw: bytes, source: str) -> str:
    """The text of a job file; UTF-8 only (a UTF-8 BOM is fine), with what to do otherwise."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SpecError([f"{source}: the file is UTF-16 (or UTF-32) text; save it as UTF-8"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"]) from None


def load_spec(spec: JobSpec | str | Path | dict) -> JobSpec:
    """A JobSpec from a spec object, a YAML file path, or a dict."""
    if isinstance(spec, JobSpec):
        return spec
    if isinstance(spec, dict):
        return parse_spec(spec)
    path = Path(spec)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read: {exc.strerror}"]) from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError([f"{path}: larger than {MAX_SPEC_BYTES // 1024} KiB; a job spec is a few dozen lines"])
    return load_spec_text(decode_spec(raw, str(path)), str(path))
