"""make_watchers / detect: auto finds the emulator it is pointed at, quickly, and never hangs."""

from __future__ import annotations

import asyncio

import pytest

from spotrun.emulators.alibaba import AlibabaEmulator
from spotrun.emulators.aws import AwsEmulator
from spotrun.emulators.azure import AzureEmulator
from spotrun.emulators.eci import EciEmulator
from spotrun.emulators.gcp import GcpEmulator
from spotrun.notices.alibaba import AlibabaWatcher
from spotrun.notices.aws import AwsWatcher
from spotrun.notices.azure import AzureWatcher
from spotrun.notices.detect import PROVIDERS, WatchOptions, detect, make_watchers
from spotrun.notices.eci import EciWatcher
from spotrun.notices.file import FileWatcher
from spotrun.notices.gcp import GcpWatcher
from spotrun.notices.kubernetes import KubernetesWatcher

from tests.conftest import free_port
from .rawserver import RawServer

CASES = [
    (AwsEmulator(), AwsWatcher),
    (AwsEmulator(imdsv2_required=False), AwsWatcher),
    (GcpEmulator(), GcpWatcher),
    (AzureEmulator(), AzureWatcher),
    (AlibabaEmulator(), AlibabaWatcher),
    (AlibabaEmulator(token_required=True), AlibabaWatcher),
]


@pytest.fixture(autouse=True)
def no_kubernetes(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.parametrize(
    ("emulator", "expected"), CASES, ids=["aws-v2", "aws-v1", "gcp", "azure", "alibaba", "alibaba-hardened"]
)
async def test_auto_finds_the_emulator_it_is_pointed_at(serve, emulator, expected):
    url = await serve(emulator)
    watchers = await make_watchers(WatchOptions(metadata_url=url))
    try:
        assert [type(w) for w in watchers] == [expected]
    finally:
        for watcher in watchers:
            await watcher.aclose()


async def test_auto_finds_the_eci_socket(serve, tmp_path):
    url = await serve(EciEmulator(), socket_path=str(tmp_path / "eci.sock"))
    assert await detect(url) == ["eci"]
    [watcher] = await make_watchers(WatchOptions(metadata_url=url, poll_interval=0.2))
    assert isinstance(watcher, EciWatcher) and watcher.poll_interval == 0.2
    await watcher.aclose()


async def test_probe_gives_up_on_a_server_that_never_answers():
    server = RawServer(lambda method, target: None)
    url = await server.start()
    try:
        found = await asyncio.wait_for(detect(url), timeout=10)  # bounded: the probe must not hang
    finally:
        await server.stop()
    assert found == []
    assert server.requests >= 4  # every cloud was asked


async def test_nothing_listening_means_no_cloud():
    assert await detect(f"http://127.0.0.1:{free_port()}") == []


async def test_kubernetes_is_detected_from_the_environment(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    options = WatchOptions(metadata_url=f"http://127.0.0.1:{free_port()}", kubernetes_grace_s=15)
    [watcher] = await make_watchers(options)
    assert isinstance(watcher, KubernetesWatcher) and watcher.grace_s == 15


async def test_none_and_file(tmp_path):
    assert await make_watchers(WatchOptions(provider="none")) == []
    notice_file = tmp_path / "notice"
    for provider in ("none", "file"):
        [watcher] = await make_watchers(WatchOptions(provider=provider, watch_file=notice_file))
        assert isinstance(watcher, FileWatcher)
    with pytest.raises(ValueError, match="watch_file"):
        await make_watchers(WatchOptions(provider="file"))


async def test_explicit_provider_skips_probing_and_passes_options():
    [watcher] = await make_watchers(
        WatchOptions(provider="AWS", metadata_url="http://127.0.0.1:9", allow_imdsv1=True, poll_interval=2)
    )
    assert isinstance(watcher, AwsWatcher)
    assert watcher.token.optional and watcher.poll_interval == 2
    await watcher.aclose()
    [watcher] = await make_watchers(WatchOptions(provider="azure", azure_vm_name="vm-3"))
    assert isinstance(watcher, AzureWatcher) and watcher.vm_name == "vm-3"
    await watcher.aclose()


async def test_unknown_provider_names_the_accepted_ones():
    with pytest.raises(ValueError) as error:
        await make_watchers(WatchOptions(provider="oracle"))
    for name in PROVIDERS:
        assert name in str(error.value)
