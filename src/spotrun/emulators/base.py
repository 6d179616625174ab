"""What every cloud emulator shares: the aiohttp server, the control API and fault injection.

Control API (served by every emulator next to the cloud's own paths; never subject to the
cloud's header or token rules, so a test or `spotrun emulate trigger` can always reach it):

    POST /_spotrun/trigger  {"kind": "reclaim"|"rebalance"|"maintenance",
                             "action": "...", "lead_s": 120}        -> 200 {"event": ...}
    POST /_spotrun/clear                                             -> 200 (back to no notice)
    POST /_spotrun/fail     {"status": 503, "count": 3}              -> the next 3 cloud
                                                                        requests get HTTP 503
    GET  /_spotrun/state                                             -> 200 current state and
                                                                        instance profile (JSON)

Emulators add cloud-specific operations under the same prefix (see each module). A bad
control request is answered 400 with {"error": "..."} saying what to send instead.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import json
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, ClassVar, Self

from aiohttp import web

from spotrun.emulators.profile import InstanceProfile
from spotrun.notices.base import NoticeKind

CONTROL_PREFIX = "/_spotrun"
KINDS = tuple(k.value for k in NoticeKind)


class ControlError(ValueError):
    """A control request (trigger, fail, ...) that cannot be honoured; answered with HTTP 400."""


class NotSpotError(ControlError):
    """A reclaim or rebalance asked of an instance whose profile is not spot capacity."""


class TokenBook:
    """Session tokens with a TTL, as the AWS and Alibaba metadata services hand them out."""

    MAX_TTL_S = 21600

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    @classmethod
    def parse_ttl(cls, value: str | None) -> int | None:
        """The TTL asked for, or None when missing or outside 1..21600 (the cloud answers 400)."""
        try:
            ttl = int(value or "")
        except ValueError:
            return None
        return ttl if 1 <= ttl <= cls.MAX_TTL_S else None

    def issue(self, ttl_s: int) -> str:
        # 56 base64url characters, the shape of a real IMDSv2 token
        token = secrets.token_urlsafe(42)
        self._expiry[token] = time.monotonic() + ttl_s
        return token

    def remaining(self, token: str) -> int | None:
        """Whole seconds the token has left; None when unknown or expired."""
        expiry = self._expiry.get(token)
        if expiry is None:
            return None
        left = expiry - time.monotonic()
        return int(left) if left > 0 else None

    def revoke_all(self) -> None:
        self._expiry.clear()


def tree_lookup(values: dict[str, str], path: str) -> str | None:
    """An item of a flat `{"a/b": value}` map, or the listing of a folder as IMDS serves it."""
    path = path.strip("/")
    if path in values:
        return values[path]
    prefix = f"{path}/" if path else ""
    children: list[str] = []
    for key in values:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            child = rest.split("/", 1)[0] + ("/" if "/" in rest else "")
            if child not in children:
                children.append(child)
    return "\n".join(children) if children else None


class Emulator(abc.ABC):
    """One cloud's notice endpoint, served over HTTP (or a Unix socket) on this machine.

    `profile` holds the instance's facts; what it leaves out comes from the cloud's `DEFAULTS`.
    """

    cloud: ClassVar[str]
    title: ClassVar[str]  # the cloud's name in messages
    DEFAULTS: ClassVar[dict[str, str]] = {}

    def __init__(self, profile: InstanceProfile | None = None) -> None:
        self.profile = (profile or InstanceProfile()).or_defaults(**self.DEFAULTS)
        self.log = logging.getLogger(f"spotrun.emulators.{self.cloud}")
        self.url: str | None = None
        self.requests: Counter[str] = Counter()  # cloud requests by path: tests wait on polls
        self.responses: Counter[int] = Counter()  # cloud answers by status
        self._failures: list[int] = []
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []

    # --- what each cloud provides ---------------------------------------------------------

    @abc.abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The cloud's own paths."""

    @abc.abstractmethod
    def trigger(
        self, kind: str = "reclaim", action: str | None = None, lead_s: float | None = None
    ) -> dict[str, Any]:
        """Make a notice appear; returns the event as the cloud will serve it."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Remove every notice (the instance is healthy again)."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """What the emulator currently serves, for `GET /_spotrun/state` and tests."""

    def control_ops(self) -> dict[str, Callable[..., Any]]:
        """Extra `POST /_spotrun/<name>` operations; JSON body fields become keyword arguments."""
        return {}

    def on_stop(self) -> None:
        """Wake anything waiting (long polls) so the server can stop at once."""

    # --- shared behaviour -----------------------------------------------------------------

    def check_kind(self, kind: str, supported: tuple[str, ...]) -> None:
        """Refuse a notice this cloud never sends, or one an on-demand instance never gets."""
        if kind not in KINDS:
            raise ControlError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        if kind not in supported:
            raise ControlError(f"{self.title} has no {kind} notice; it supports {', '.join(supported)}")
        if kind != "maintenance" and not self.profile.spot:
            raise NotSpotError(
                f"this instance's profile says lifecycle {self.profile.lifecycle}: only spot capacity "
                f"gets a {kind} notice; use --profile lifecycle=spot"
            )

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` cloud requests with `status` (a 5xx blip, a 429, a 410)."""
        if count < 0 or not 100 <= status <= 599:
            raise ControlError("fail needs count >= 0 and an HTTP status between 100 and 599")
        self._failures.extend([status] * count)

    def schedule_trigger(self, delay_s: float, **trigger_args: Any) -> None:
        """Trigger after `delay_s` seconds (`spotrun emulate --notice-in`)."""
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay_s, lambda: self.trigger(**trigger_args)))

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, socket_path: str | None = None
    ) -> str:
        """Serve until `stop()`; returns the URL (`http://host:port` or `unix://path`)."""
        self._stopping.clear()
        app = web.Application(middlewares=[self._middleware])
        app.add_routes(self._control_routes())
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.UnixSite(self._runner, socket_path) if socket_path else web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError:  # address in use, no permission: leave nothing half-started
            await self.stop()
            raise
        if socket_path:
            self.url = f"unix://{socket_path}"
        else:
            bound_host, bound_port = self._runner.addresses[0][:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            self.url = f"http://{shown}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._stopping.set()
        self.on_stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)
        self.requests[request.path] += 1
        if self._failures:
            status = self._failures.pop(0)
            response = web.Response(status=status, text=f"{status} (injected by spotrun emulator)\n")
        else:
            response = await handler(request)
        self.responses[response.status] += 1
        return response

    def _control_routes(self) -> list[web.RouteDef]:
        ops: dict[str, Callable[..., Any]] = {
            "trigger": self.trigger,
            "clear": self.clear,
            "fail": lambda count=1, status=503: self.fail_next(count, status),
            **self.control_ops(),
        }

        async def control(request: web.Request) -> web.Response:
            name = request.match_info["op"]
            op = ops.get(name)
            if op is None:
                return _error(404, f"unknown control operation {name!r}; use one of {sorted(ops)}")
            try:
                args = await request.json() if request.can_read_body else {}
                if not isinstance(args, dict):
                    raise ControlError("send a JSON object")
                result = op(**args)
            except json.JSONDecodeError:
                return _error(400, "the body must be JSON, e.g. {\"kind\": \"reclaim\"}")
            except TypeError as exc:  # an unknown or missing field
                return _error(400, f"bad fields for {name}: {exc}")
            except ControlError as exc:
                return _error(400, str(exc))
            return web.json_response({"ok": True, "event": result, "state": self._shown_state()})

        async def state(_: web.Request) -> web.Response:
            return web.json_response(self._shown_state())

        return [
            web.get(f"{CONTROL_PREFIX}/state", state),
            web.post(CONTROL_PREFIX + "/{op}", control),
        ]

    def _shown_state(self) -> dict[str, Any]:
        """`state()` with the instance profile, so a client can see which machine it is on."""
        return {**self.state(), "profile": dataclasses.asdict(self.profile)}

    async def wait_stopping(self, timeout: float | None) -> bool:
        """Sleep up to `timeout` seconds (None: forever), returning early when the server stops."""
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout)
            return True
        except TimeoutError:
            return False


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class EmulatorThread:
    """Runs an emulator on its own event loop in a thread, for synchronous clients.

    botocore and google-auth block; serving them from the test's own event loop would
    deadlock, so the emulator gets a loop of its own:

        with EmulatorThread(AwsEmulator()) as emu:
            emu.call(emu.emulator.trigger, action="terminate")
            fetch(emu.url)
    """

    def __init__(self, emulator: Emulator, **start_args: Any) -> None:
        self.emulator = emulator
        self.url = ""
        self._start_args = start_args
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` on the emulator's loop (its state is not thread-safe) and return its result."""

        async def run() -> Any:
            return fn(*args, **kwargs)

        return self._submit(run())

    def _submit(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        self.url = self._submit(self.emulator.start(**self._start_args))
        return self

    def __exit__(self, *exc: object) -> None:
        self._submit(self.emulator.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
