"""Which notice watchers to run here: the one place the agent asks.

`auto` probes every cloud at once with short timeouts, so on a laptop (no metadata server)
it gives up in about 0.3 s instead of hanging; an explicit provider skips probing.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import httpx

from spotrun.notices import eci
from spotrun.notices.base import Watcher

HTTP_CLOUDS = ("aws", "gcp", "azure", "alibaba")
PROVIDERS = ("auto", *HTTP_CLOUDS, "eci", "kubernetes", "file", "none")
PROBE_TIMEOUT_S = 0.3
PROBE_BUDGET_S = 1.0  # hard cap on one cloud's probe, whatever its requests do

log = logging.getLogger("spotrun.notices.detect")


@dataclass
class WatchOptions:
    provider: str = "auto"  # auto|aws|gcp|azure|alibaba|eci|kubernetes|file|none
    metadata_url: str | None = None  # endpoint root override (emulators, tests)
    allow_imdsv1: bool = False
    watch_file: Path | None = None  # generic file watcher (also added when provider=auto)
    poll_interval: float | None = None  # None = each watcher's default
    kubernetes_grace_s: float = 30.0
    azure_vm_name: str | None = None


async def make_watchers(options: WatchOptions) -> list[Watcher]:
    """The watchers for `options.provider` (probed when `auto`), plus the file watcher if any."""
    provider = options.provider.lower()
    if provider not in PROVIDERS:
        raise ValueError(f"unknown notice provider {options.provider!r}; use one of {', '.join(PROVIDERS)}")
    if provider == "file" and options.watch_file is None:
        raise ValueError("provider 'file' needs a file to watch (watch_file / --watch-file)")
    if provider == "auto":
        sources = await detect(options.metadata_url)
        log.info("notice sources detected: %s", ", ".join(sources) or "none (no cloud metadata found)")
    else:
        sources = [] if provider in ("none", "file") else [provider]
    watchers = [_watcher(source, options) for source in sources]
    if options.watch_file is not None:
        from spotrun.notices.file import FileWatcher

        extra = {} if options.poll_interval is None else {"poll_interval": options.poll_interval}
        watchers.append(FileWatcher(options.watch_file, **extra))
    return watchers


async def detect(metadata_url: str | None = None) -> list[str]:
    """Every notice source reachable from here, probed concurrently and briefly."""
    found = []
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        found.append("kubernetes")
    unix = bool(metadata_url and metadata_url.startswith("unix://"))
    if eci.available(metadata_url if unix else None):
        found.append("eci")
    if unix:
        return found
    answers = await asyncio.gather(*(_probe(cloud, metadata_url) for cloud in HTTP_CLOUDS))
    return found + [cloud for cloud, yes in zip(HTTP_CLOUDS, answers) if yes]


async def _probe(cloud: str, metadata_url: str | None) -> bool:
    module = importlib.import_module(f"spotrun.notices.{cloud}")
    url = metadata_url or module.DEFAULT_URL
    async with httpx.AsyncClient(base_url=url, timeout=PROBE_TIMEOUT_S, trust_env=False) as client:
        try:
            return await asyncio.wait_for(module.probe(client), PROBE_BUDGET_S)
        except (httpx.HTTPError, TimeoutError):
            return False


def _watcher(source: str, options: WatchOptions) -> Watcher:
    url, interval = options.metadata_url, options.poll_interval
    if source == "aws":
        from spotrun.notices.aws import AwsWatcher

        return AwsWatcher(url, allow_imdsv1=options.allow_imdsv1, poll_interval=interval)
    if source == "gcp":
        from spotrun.notices.gcp import GcpWatcher

        return GcpWatcher(url)
    if source == "azure":
        from spotrun.notices.azure import AzureWatcher

        return AzureWatcher(url, vm_name=options.azure_vm_name, poll_interval=interval)
    if source == "alibaba":
        from spotrun.notices.alibaba import AlibabaWatcher

        return AlibabaWatcher(url, poll_interval=interval)
    if source == "eci":
        return eci.EciWatcher(url, poll_interval=interval)
    from spotrun.notices.kubernetes import KubernetesWatcher

    return KubernetesWatcher(grace_s=options.kubernetes_grace_s)


def metadata_env(sources: list[str], metadata_url: str | None) -> dict[str, str]:
    """The endpoint the agent watches, in the variables a script's own poller and the clouds'
    SDKs read (botocore, google-auth), so under an emulator they hear the same notice."""
    from urllib.parse import urlsplit

    env: dict[str, str] = {}
    for source in sources:
        if source not in HTTP_CLOUDS:
            continue
        url = (metadata_url or importlib.import_module(f"spotrun.notices.{source}").DEFAULT_URL).rstrip("/")
        env.setdefault("SPOTRUN_METADATA_URL", url)
        if source == "aws":
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = url + "/"
        elif source == "gcp":
            env["GCE_METADATA_HOST"] = env["GCE_METADATA_IP"] = urlsplit(url).netloc
    return env
