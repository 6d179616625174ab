"""The emulated instance's facts (id, type, zone, lifecycle, name), given once, served everywhere.

A handler that reads the instance id from `meta-data/instance-id` and again from the identity
document, or checks `instance-life-cycle` before watching for a reclaim (Metaflow's sidecar
does, reference/notices.md §5), must see one machine. So every emulator takes one profile and
derives each path's answer from it; a fact left out gets the cloud's own default.

`spotrun emulate aws --profile id=i-0abc...,type=p4d.24xlarge,zone=us-west-2b,lifecycle=on-demand`
or `--profile instance.yaml` (a mapping with the same keys, YAML or JSON).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIFECYCLES = ("spot", "on-demand")
KEYS = ("id", "type", "zone", "lifecycle", "name", "user-data")
MAX_FILE_BYTES = 64 * 1024
MAX_USER_DATA = 16 * 1024  # EC2's own limit on user data
_FACT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,254}$")


class ProfileError(ValueError):
    """A profile that cannot describe an instance; the message says which key and why."""


@dataclass(frozen=True)
class InstanceProfile:
    id: str | None = None
    type: str | None = None
    zone: str | None = None
    lifecycle: str = "spot"
    name: str | None = None
    user_data: str | None = None  # AWS `/latest/user-data`; None serves EC2's 404, as on a real instance

    def __post_init__(self) -> None:
        for key in ("id", "type", "zone", "name"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, str) and _FACT.match(value)):
                raise ProfileError(
                    f"profile {key} {value!r:.60} is not an instance fact: use letters, digits and . _ : / -"
                )
        if self.lifecycle not in LIFECYCLES:
            raise ProfileError(f"profile lifecycle {self.lifecycle!r:.40} must be one of {', '.join(LIFECYCLES)}")
        if self.user_data is not None and (not isinstance(self.user_data, str) or len(self.user_data) > MAX_USER_DATA):
            raise ProfileError(f"profile user-data must be text of at most {MAX_USER_DATA} bytes")

    @property
    def spot(self) -> bool:
        return self.lifecycle == "spot"

    def or_defaults(self, **defaults: str) -> InstanceProfile:
        """This profile with every fact it leaves out taken from the cloud's `defaults`."""
        filled = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **filled)

    @classmethod
    def parse(cls, text: str) -> InstanceProfile:
        """`key=value,key=value`, or the path of a YAML/JSON file holding that mapping."""
        if "=" not in text:
            return cls.from_mapping(_load_file(Path(text)), where=text)
        pairs: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise ProfileError(f"profile item {item!r:.40} is not key=value; keys: {', '.join(KEYS)}")
            pairs[key.strip()] = value.strip()
        return cls.from_mapping(pairs, where="--profile")

    @classmethod
    def from_mapping(cls, data: Any, *, where: str) -> InstanceProfile:
        if not isinstance(data, dict):
            raise ProfileError(f"{where}: a profile is a mapping of {', '.join(KEYS)}")
        unknown = sorted(str(k) for k in data if k not in KEYS)
        if unknown:
            raise ProfileError(f"{where}: unknown profile key {unknown[0]!r}; use {', '.join(KEYS)}")
        facts = {key.replace("-", "_"): value for key, value in data.items()}
        return cls(**facts)


def _load_file(path: Path) -> Any:
    import yaml

    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ProfileError(f"profile file {path} is {size} bytes; a profile is at most {MAX_FILE_BYTES}")
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(
            f"no profile file {path}; pass a YAML/JSON file or key=value pairs ({', '.join(KEYS)})"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ProfileError(f"cannot read profile file {path}: {type(exc).__name__}") from None
