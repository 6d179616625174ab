"""What a training script asks about a reclaim: `notice()`, `should_stop()`, `on_notice(cb)`.

The agent publishes the notice in the file named by `$SPOTRUN_NOTICE_FILE` (a child cannot see
its parent's environment change) and signals the process group with `$SPOTRUN_SIGNAL`. Without
the agent every function here is a harmless no-op, so the same script runs on a laptop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from spotrun.notices.base import Notice, NoticeKind

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.1
Callback = Callable[[Notice], Any]

_lock = threading.RLock()  # re-entrant: the signal handler may interrupt its own thread holding it
_signalled = threading.Event()
_callbacks: list[Callback] = []
_fired: set[int] = set()  # ids of callbacks already called; each fires once
_watching = False


def _notice_path() -> Path | None:
    path = os.environ.get("SPOTRUN_NOTICE_FILE")
    return Path(path) if path else None


def notice() -> Notice | None:
    """The notice the agent published, or None (no agent, no notice yet, or a file mid-write)."""
    path = _notice_path()
    if path is None:
        return None
    try:
        return Notice.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def should_stop() -> bool:
    """True once a reclaim notice exists, or once the agent's signal arrived (after `on_notice`).

    Cheap enough to call every training step: one `stat` when there is no notice.
    """
    if _signalled.is_set():
        return True
    path = _notice_path()
    if path is None or not path.exists():
        return False
    current = notice()
    return current is not None and current.kind is NoticeKind.RECLAIM


def on_notice(callback: Callback) -> None:
    """Call `callback(notice)` once when the agent stops this job; never without the agent.

    It fires from whichever comes first: a daemon thread that sees a reclaim notice in the
    notice file, or the agent's signal (`$SPOTRUN_SIGNAL`, installed here when called from the
    main thread; it replaces the signal's default action and chains to a previous handler).
    """
    global _watching
    if _notice_path() is None:
        return
    with _lock:
        _callbacks.append(callback)
        start = not _watching
        _watching = True
    if start:
        _install_signal_handler()
        threading.Thread(target=_watch_file, name="spotrun-notice", daemon=True).start()
    current = notice()
    if _signalled.is_set() or (current is not None and current.kind is NoticeKind.RECLAIM):
        _fire(current)


def _fire(current: Notice | None) -> None:
    with _lock:
        pending = [cb for cb in _callbacks if id(cb) not in _fired]
        _fired.update(id(cb) for cb in pending)
    for callback in pending:
        try:
            callback(current if current is not None else _signal_notice())
        except Exception:
            log.exception("a spotrun on_notice callback failed")


def _signal_notice() -> Notice:
    """What a callback gets when the signal came but the notice file could not be read."""
    return Notice(provider="signal", kind=NoticeKind.RECLAIM, action="terminate", deadline=None)


def _watch_file() -> None:
    while not _signalled.wait(POLL_INTERVAL):
        current = notice()
        if current is not None and current.kind is NoticeKind.RECLAIM:
            _fire(current)
            return


def _install_signal_handler() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # Python lets only the main thread set handlers; the file watcher still works
    name = os.environ.get("SPOTRUN_SIGNAL", "SIGTERM")
    if name == "none":
        return  # `spotrun exec --signal none`: the notice file is the only word
    try:
        sig = signal.Signals[name]
    except KeyError:
        log.warning("$SPOTRUN_SIGNAL=%r is not a signal name; watching the notice file only", name)
        return
    previous = signal.getsignal(sig)

    def handler(signum: int, frame: FrameType | None) -> None:
        _signalled.set()
        _fire(notice())
        if callable(previous):
            previous(signum, frame)

    signal.signal(sig, handler)


class NoticeListener:
    """Base for integrations that save on a notice (the Checkpointer, the callbacks).

    Registering with `on_notice` turns the agent's signal into a flag the training loop checks
    at a safe point, instead of a default action that kills the process mid-step; `notice`
    keeps what arrived, for the script's log.
    """

    def __init__(self, listen: bool) -> None:
        self.notice: Notice | None = None
        if listen:
            on_notice(self._heard)

    def _heard(self, received: Notice) -> None:
        self.notice = received
