"""Kubernetes: the kubelet's SIGTERM to the pod IS the reclaim notice.

On spot node shutdown (GKE graceful node shutdown, Karpenter or NTH drains) the only thing a
container ever sees is SIGTERM, then SIGKILL `terminationGracePeriodSeconds` later. So the
agent, running as the container's entrypoint, turns that SIGTERM into a notice with the grace
period as its deadline instead of passing it straight on.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from datetime import timedelta

from spotrun.notices.base import Notice, NoticeKind, Watcher, utcnow

log = logging.getLogger(__name__)


class KubernetesWatcher(Watcher):
    provider = "kubernetes"

    def __init__(self, grace_s: float = 30.0) -> None:
        if grace_s < 0:
            raise ValueError(f"the Kubernetes grace period cannot be negative: {grace_s}")
        self.grace_s = grace_s

    async def watch(self) -> AsyncIterator[Notice]:
        loop = asyncio.get_running_loop()
        received: asyncio.Queue[Notice] = asyncio.Queue()

        def on_sigterm() -> None:
            # Stamped in the handler, not when the consumer wakes, so the deadline is honest.
            now = utcnow()
            received.put_nowait(
                Notice(
                    provider=self.provider,
                    kind=NoticeKind.RECLAIM,
                    action="terminate",
                    deadline=now + timedelta(seconds=self.grace_s),
                    received_at=now,
                    raw={"signal": "SIGTERM", "grace_s": self.grace_s},
                )
            )

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            yield await received.get()
            # The kubelet sends SIGTERM once; any later one carries no new information.
            while True:
                await received.get()
                log.info("another SIGTERM received; already handling the first one")
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
