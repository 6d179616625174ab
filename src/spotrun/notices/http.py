"""What the HTTP notice watchers share: clients, session tokens, the polling loop, time parsing.

The polling loop is where the watcher contract lives: any bad answer (garbage, 5xx, a hang,
a vanished token endpoint, a field that is not what the cloud sends) is logged once, backed off
and retried; it never ends `watch()`, never becomes a notice and is never adopted as state.
Every poll has an overall deadline: httpx's timeout is per read, so a server trickling a byte
a second would otherwise hold a poll, and every notice behind it, forever.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Hashable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import httpx

from spotrun.notices.base import Notice, NoticeKind, Watcher

DEFAULT_POLL_INTERVAL = 1.0  # notice -> yield p99 about 1 s (target 1.2 s) at about 0.3 % of a core
REQUEST_TIMEOUT = httpx.Timeout(1.0, connect=0.5)
MAX_BACKOFF_S = 2.0  # bounded so a recovered endpoint is heard again within seconds
POLL_DEADLINE_S = 3.0  # a whole poll (token, every GET, every body byte); normally milliseconds
MAX_SKEW = timedelta(days=3650)  # a notice time further than this from now is garbage, not a notice
_IDENTIFIER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
T = TypeVar("T")


class BadResponse(Exception):
    """The endpoint answered something a watcher cannot trust (bad status, garbage body)."""


def metadata_client(
    base_url: str, *, uds: str | None = None, timeout: httpx.Timeout = REQUEST_TIMEOUT
) -> httpx.AsyncClient:
    """A keep-alive client that ignores proxy settings: metadata endpoints are link-local."""
    transport = httpx.AsyncHTTPTransport(uds=uds) if uds else None
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout,
        transport=transport,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=30.0),
    )


def parse_utc(text: str) -> datetime:
    """An RFC3339 time such as `2017-09-18T08:22:00Z`, as an aware UTC datetime."""
    text = text.strip()
    if "T" not in text:
        raise BadResponse(f"not a time value: {text[:60]!r}")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadResponse(f"not a time value: {text[:60]!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return plausible(when.astimezone(timezone.utc))


def plausible(when: datetime) -> datetime:
    """A notice time within MAX_SKEW of now (past times are allowed: a late or stale notice)."""
    now = datetime.now(timezone.utc)
    if not now - MAX_SKEW <= when <= now + MAX_SKEW:
        raise BadResponse(f"time {when.isoformat()} is too far from now to be a notice")
    return when


def identifier(value: object, what: str) -> str:
    """An id or code from the endpoint (EventId, Code, ...): short, printable, no spaces."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise BadResponse(f"{what} {value!r:.60} is not an identifier")
    return value


async def within(seconds: float, work: Awaitable[T], what: str) -> T:
    """`work`, or BadResponse when it has not finished after `seconds` in all."""
    try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow the caller's cancellation
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise BadResponse(f"{what}: no complete answer within {seconds:g}s") from None


def termination_notice(provider: str, body: str) -> Notice | None:
    """Alibaba's and ECI's `termination-time`: empty means safe, a time means release."""
    if not body.strip():
        return None
    deadline = parse_utc(body)
    return Notice(provider, NoticeKind.RECLAIM, "delete", deadline, raw=body.strip())


class Backoff:
    """Exponential backoff with full jitter, from `base` up to MAX_BACKOFF_S."""

    def __init__(self, base: float) -> None:
        self.base = base
        self._failures = 0

    def next(self) -> float:
        self._failures += 1
        ceiling = min(MAX_BACKOFF_S, self.base * 2 ** (self._failures - 1))
        return max(self.base, random.uniform(0, ceiling))

    def reset(self) -> None:
        self._failures = 0


class OnceLog:
    """Logs a failure once (warning) until it changes or recovers, so a dead endpoint polled
    twice a second does not flood the agent's log."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._last: str | None = None

    def failed(self, message: str) -> None:
        if message != self._last:
            self.log.warning("%s; still watching", message)
        self._last = message

    def ok(self) -> None:
        if self._last is not None:
            self.log.info("notice endpoint answering again")
        self._last = None


def describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    if isinstance(exc, httpx.HTTPError):
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return str(exc) or type(exc).__name__


class SessionToken:
    """An IMDSv2-style session token (AWS, Alibaba hardened mode): fetched with a PUT, sent
    on every request, refreshed before it expires, using the remaining TTL the server reports."""

    REFRESH_MARGIN_S = 60.0
    RETRY_AFTER_FAILURE_S = 30.0

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        ttl_header: str,
        token_header: str,
        ttl_s: int,
        optional: bool,
        log: logging.Logger,
        hint: str,
    ) -> None:
        self.client = client
        self.ttl_header = ttl_header
        self.token_header = token_header
        self.ttl_s = ttl_s
        self.optional = optional  # True: carry on without a token when none can be had
        self.log = log
        self.hint = hint  # what the user can do when a required token cannot be had
        self._token: str | None = None
        self._expires = 0.0
        self._retry_at = 0.0

    async def headers(self) -> dict[str, str]:
        now = time.monotonic()
        margin = min(self.REFRESH_MARGIN_S, self.ttl_s / 4)
        if self._token and self._expires - now > margin:
            return {self.token_header: self._token}
        if now >= self._retry_at or not self.optional:
            try:
                await self._fetch()
            except (httpx.HTTPError, BadResponse) as exc:
                self._retry_at = now + self.RETRY_AFTER_FAILURE_S
                if not self.optional and not self._usable():
                    raise BadResponse(f"no session token ({describe(exc)}); {self.hint}") from None
                self.log.debug("token refresh failed (%s); keeping the current state", describe(exc))
        return {self.token_header: self._token} if self._token and self._usable() else {}

    def _usable(self) -> bool:
        return self._token is not None and self._expires > time.monotonic()

    async def _fetch(self) -> None:
        response = await self.client.put("/latest/api/token", headers={self.ttl_header: str(self.ttl_s)})
        token = response.text.strip()
        if response.status_code != 200:
            raise BadResponse(f"token endpoint answered HTTP {response.status_code}")
        if not (token.isascii() and token.isprintable()) or " " in token or len(token) > 4096:
            raise BadResponse(f"token endpoint answered something that is not a token: {token[:40]!r}")
        self._token = token
        self._expires = time.monotonic() + self.ttl_s
        self.observe(response)

    def observe(self, response: httpx.Response) -> None:
        """Servers report the token's remaining seconds on every answer: trust that clock, but
        never beyond the TTL asked for (a garbage header must not keep a dead token alive)."""
        remaining = response.headers.get(self.ttl_header, "")
        if remaining.isascii() and remaining.isdigit() and len(remaining) < 7 and self._token:
            self._expires = time.monotonic() + min(int(remaining), self.ttl_s)

    def invalidate(self) -> None:
        self._token = None
        self._retry_at = 0.0

    async def get(self, path: str) -> httpx.Response:
        """GET with the token. 401/403: it expired early, or is now required: renew, retry once."""
        response = await self.client.get(path, headers=await self.headers())
        if response.status_code in (401, 403):
            self.invalidate()
            response = await self.client.get(path, headers=await self.headers())
        self.observe(response)
        return response


class PollingWatcher(Watcher):
    """A watcher that asks its endpoint every `poll_interval` seconds and yields what is new.

    Subclasses implement `poll()`, returning `(key, notice)` pairs for everything the endpoint
    currently reports; a key seen before is not yielded again, so each event is yielded once.
    """

    poll_deadline_s = POLL_DEADLINE_S

    def __init__(self, client: httpx.AsyncClient, poll_interval: float | None) -> None:
        interval = DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval
        if interval <= 0:
            raise ValueError(f"the poll interval must be positive, not {interval}")
        self.client = client
        self.poll_interval = interval
        self.log = logging.getLogger(f"spotrun.notices.{self.provider}")
        self._seen: set[Hashable] = set()

    @abc.abstractmethod
    async def poll(self) -> list[tuple[Hashable, Notice]]: ...

    async def watch(self) -> AsyncIterator[Notice]:
        backoff = Backoff(self.poll_interval)
        errors = OnceLog(self.log)
        while True:
            try:
                found = await within(self.poll_deadline_s, self.poll(), "poll")
            # The contract: whatever the endpoint does, keep watching (see module docstring).
            except Exception as exc:  # noqa: BLE001
                errors.failed(f"{self.provider} notice endpoint: {describe(exc)}")
                await asyncio.sleep(backoff.next())
                continue
            errors.ok()
            backoff.reset()
            for key, notice in found:
                if key not in self._seen:
                    self._seen.add(key)
                    self.log.info("notice: %s %s, deadline %s", notice.kind.value, notice.action,
                                  notice.deadline)
                    yield notice
            await asyncio.sleep(self.poll_interval)

    async def aclose(self) -> None:
        await self.client.aclose()
