"""Signal names as people type them: `TERM`, `SIGTERM`, `sigint`, `15`."""

from __future__ import annotations

import signal

# What the agent passes on to the command's process group when it receives them itself.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def parse_signal(text: str | int) -> signal.Signals:
    """The signal `text` names; ValueError listing the usual choices when it names none."""
    raw = str(text).strip()
    try:
        if raw.isdigit():
            return signal.Signals(int(raw))
        name = raw.upper()
        return signal.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    except (KeyError, ValueError):
        raise ValueError(
            f"not a signal: {text!r} (use a name such as TERM, INT, USR1 or SIGTERM, or a number)"
        ) from None
