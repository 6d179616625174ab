"""LocalProvider end to end: real launcher processes, the real agent, the AWS emulator over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from spotrun.providers.base import InstanceState, LaunchRefused
from spotrun.providers.local import LocalProvider, MarketConfig, procs
from spotrun.providers.local.records import InstanceDir, instance_id_for

from .conftest import instance_processes, processes, request, wait_state, wait_until

# A job that says it is ready, then copies the agent's notice file to $MARK when signalled.
SAVE_ON_NOTICE = (
    'trap \'cat "$SPOTRUN_NOTICE_FILE" > "$MARK.tmp" && mv "$MARK.tmp" "$MARK"; exit 75\' TERM; '
    "echo ready; while true; do sleep 0.05; done"
)


async def test_runs_setup_and_command_in_a_copy_of_workdir(make_provider, tmp_path: Path) -> None:
    provider = make_provider()
    workdir = tmp_path / "src"
    workdir.mkdir()
    (workdir / "input.txt").write_text("from-workdir")
    instance = await provider.launch(
        request(
            "t-exit",
            run='echo "$(cat input.txt) $(cat setup.txt) $GREETING"; touch made-by-job; exit 3',
            setup="echo setup-ran > setup.txt",
            workdir=str(workdir),
            env={"GREETING": "hello"},
        )
    )
    assert instance.state in (InstanceState.PENDING, InstanceState.RUNNING)
    done = await wait_state(provider, instance.id, InstanceState.EXITED)
    assert done.returncode == 3
    assert "from-workdir setup-ran hello" in Path(done.log_path).read_text()
    assert (provider.scratch_dir(instance.id) / "work" / "made-by-job").exists()  # kept until terminate
    assert not (workdir / "made-by-job").exists()  # the job ran on the instance's own copy
    await provider.terminate(instance.id)
    after = await provider.query(instance.id)
    assert (after.state, after.returncode) == (InstanceState.EXITED, 3)
    assert not provider.scratch_dir(instance.id).exists()


async def test_workdir_copy_skips_spotrun_own_dirs_and_stale_checkpoints(tmp_path: Path) -> None:
    """A workdir holding the provider's root (e.g. $SPOTRUN_HOME inside the project) is not
    copied into itself, and a stale local checkpoints/ does not ride along to the new machine."""
    workdir = tmp_path / "project"
    (workdir / "checkpoints").mkdir(parents=True)
    (workdir / "checkpoints" / "ckpt-000000000007.pkl").write_text("stale")
    (workdir / "train.py").write_text("print('hi')")
    provider = LocalProvider(workdir / ".spotrun-home" / "local")
    instance = await provider.launch(request("t-nest", run="ls -A > listing.txt", workdir=str(workdir)))
    await wait_state(provider, instance.id, InstanceState.EXITED)
    work = provider.scratch_dir(instance.id) / "work"
    listing = (work / "listing.txt").read_text().split()
    assert "train.py" in listing and "checkpoints" not in listing
    assert not (work / ".spotrun-home" / "local").exists()  # the provider's root is not copied into itself
    await provider.terminate(instance.id)


async def test_launch_is_idempotent_on_the_token(make_provider) -> None:
    provider = make_provider()
    first, second = await asyncio.gather(
        provider.launch(request("t-same", "sleep 600")), provider.launch(request("t-same", "sleep 600"))
    )
    assert first.id == second.id
    await wait_state(provider, first.id, InstanceState.RUNNING)
    again = await provider.launch(request("t-same", "sleep 600"))
    assert again.id == first.id
    assert len(await provider.list_instances()) == 1
    launchers = [p for p in instance_processes(first.id) if "spotrun.providers.local.instance" in p]
    assert len(launchers) == 1, launchers


@pytest.mark.parametrize("cloud", ["aws", "gcp", "azure"])
async def test_interrupt_reaches_the_job_and_reclaims_the_instance(make_provider, tmp_path: Path, cloud: str) -> None:
    provider = make_provider(MarketConfig(cloud=cloud))
    mark = tmp_path / "notice-seen.json"
    instance = await provider.launch(request("t-int", SAVE_ON_NOTICE, env={"MARK": str(mark)}))
    running = await wait_state(provider, instance.id, InstanceState.RUNNING)
    await wait_until(lambda: "ready" in Path(running.log_path).read_text(), "the job to start")

    await provider.interrupt(instance.id, lead_s=60)
    reclaimed = await wait_state(provider, instance.id, InstanceState.RECLAIMED)

    notice = json.loads(mark.read_text())
    assert notice["provider"] == cloud and notice["kind"] == "reclaim"
    assert reclaimed.returncode == 75  # the agent: stopped by a notice, resume me
    assert not provider.scratch_dir(instance.id).exists()  # the disk went with the machine
    assert "ready" in Path(reclaimed.log_path).read_text()  # the log did not
    await wait_until(lambda: instance_processes(instance.id) == [], "the launcher to exit")


async def test_reclaim_deadline_kills_a_job_that_ignores_the_notice(make_provider) -> None:
    provider = make_provider()
    run = "trap '' TERM; echo stubborn; while true; do sleep 0.05; done"
    instance = await provider.launch(request("t-stubborn", run, agent_args=("--kill-margin", "0s")))
    running = await wait_state(provider, instance.id, InstanceState.RUNNING)
    await wait_until(lambda: "stubborn" in Path(running.log_path).read_text(), "the job to start")
    await provider.interrupt(instance.id, lead_s=1)
    reclaimed = await wait_state(provider, instance.id, InstanceState.RECLAIMED)
    assert reclaimed.returncode in (75, None)  # the agent's SIGKILL or ours at the deadline
    await wait_until(lambda: instance_processes(instance.id) == [], "the launcher to exit")


async def test_rate_market_reclaims_spot_but_never_on_demand(make_provider, tmp_path: Path) -> None:
    provider = make_provider(MarketConfig(mean_lifetime_s=0.5, seed=7, lead_s=60))
    mark = tmp_path / "mark"
    spot = await provider.launch(request("t-spot", SAVE_ON_NOTICE, env={"MARK": str(mark)}))
    on_demand = await provider.launch(request("t-od", "sleep 3; echo finished", spot=False))
    reclaimed = await wait_state(provider, spot.id, InstanceState.RECLAIMED)
    assert reclaimed.returncode == 75
    finished = await wait_state(provider, on_demand.id, InstanceState.EXITED)
    assert finished.returncode == 0 and "finished" in Path(finished.log_path).read_text()
    assert provider.prices(None, None) == (reclaimed.price_per_hour, finished.price_per_hour)


def write_trace(path: Path, data: list[int], gap_seconds: int = 600) -> Path:
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap_seconds}, "data": data}))
    return path


async def test_trace_market_refuses_spot_launches_while_unavailable(make_provider, tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "us-west-2a.json", [0, 0, 0])
    provider = make_provider(MarketConfig(trace={"us-west-2a": trace}))
    with pytest.raises(LaunchRefused, match="us-west-2a"):
        await provider.launch(request("t-refused", "true"))
    assert await provider.list_instances() == []
    on_demand = await provider.launch(request("t-od", "true", spot=False))
    assert (await wait_state(provider, on_demand.id, InstanceState.EXITED)).zone == "us-west-2a"


async def test_trace_market_reclaims_when_the_zone_loses_capacity(make_provider, tmp_path: Path) -> None:
    # A 600 s tick played in 1 s; capacity for the first tick, then none.
    trace = write_trace(tmp_path / "zone.json", [1, 0, 1])
    provider = make_provider(MarketConfig(trace=trace, time_scale=1 / 600, lead_s=60))
    mark = tmp_path / "mark"
    instance = await provider.launch(request("t-trace", SAVE_ON_NOTICE, env={"MARK": str(mark)}))
    reclaimed = await wait_state(provider, instance.id, InstanceState.RECLAIMED)
    assert reclaimed.returncode in (75, None)  # None: reclaimed before the agent started


async def test_terminate_leaves_no_process_behind(make_provider) -> None:
    provider = make_provider()
    # A grandchild in a session of its own, which no process-group kill would reach.
    run = "setsid sleep 7771 & sleep 7772 & echo spawned; wait"
    instance = await provider.launch(request("t-term", run))
    running = await wait_state(provider, instance.id, InstanceState.RUNNING)
    await wait_until(lambda: "spawned" in Path(running.log_path).read_text(), "the job to start")
    await wait_until(lambda: len(processes("sleep 777", starting=True)) == 2, "both sleeps")
    await provider.terminate(instance.id)
    assert (await provider.query(instance.id)).state == InstanceState.TERMINATED
    assert processes("sleep 777", starting=True) == []
    assert instance_processes(instance.id) == []
    assert not provider.scratch_dir(instance.id).exists()
    await provider.terminate(instance.id)  # idempotent
    await provider.terminate("local-never-launched")


async def test_a_new_provider_object_sees_earlier_instances(make_provider) -> None:
    first = make_provider()
    long = await first.launch(request("t-long", "sleep 600", job_id="job-a"))
    short = await first.launch(request("t-short", "exit 4", job_id="job-b"))
    del first  # the controller went away; its instances did not

    restarted = make_provider()
    assert {i.id for i in await restarted.list_instances()} == {long.id, short.id}
    assert [i.id for i in await restarted.list_instances(job_id="job-a")] == [long.id]
    assert (await wait_state(restarted, short.id, InstanceState.EXITED)).returncode == 4
    await wait_state(restarted, long.id, InstanceState.RUNNING)
    await restarted.terminate(long.id)
    assert (await restarted.query(long.id)).state == InstanceState.TERMINATED


@pytest.mark.parametrize(
    ("victim", "record", "key"), [("launcher", "launcher.json", "pid"), ("agent", "state.json", "agent_pid")]
)
async def test_a_dead_launcher_or_agent_means_a_lost_instance_and_no_orphans(
    make_provider, victim: str, record: str, key: str
) -> None:
    """The machine vanished, or its agent was killed (its watchdog took the command with it):
    either way the instance is lost, not a failed job, and nothing of it keeps running."""
    provider = make_provider()
    instance = await provider.launch(request(f"t-crash-{victim}", "echo job-is-up; sleep 600"))
    running = await wait_state(provider, instance.id, InstanceState.RUNNING)
    await wait_until(lambda: "job-is-up" in Path(running.log_path).read_text(), "the job to start")
    pid = json.loads((provider.root / "instances" / instance.id / record).read_text())[key]
    os.kill(pid, signal.SIGKILL)
    gone = await wait_state(provider, instance.id, InstanceState.GONE, InstanceState.EXITED)
    assert (gone.state, gone.token, gone.returncode) == (InstanceState.GONE, f"t-crash-{victim}", None)
    await wait_until(lambda: instance_processes(instance.id) == [], "the instance's processes to go")


async def test_query_of_an_unknown_instance_is_gone(make_provider) -> None:
    provider = make_provider()
    assert (await provider.query("local-nope")).state == InstanceState.GONE
    with pytest.raises(ValueError, match="no local instance"):
        await provider.interrupt("local-nope")


async def test_spot_above_the_max_price_is_refused(make_provider) -> None:
    provider = make_provider()
    spot, on_demand = provider.prices(None, None)
    assert 0 < spot < on_demand
    with pytest.raises(LaunchRefused, match="max price"):
        await provider.launch(request("t-pricey", "true", max_price=spot / 2))
    assert await provider.list_instances() == []


async def test_on_demand_instances_cannot_be_interrupted(make_provider) -> None:
    provider = make_provider()
    instance = await provider.launch(request("t-od", "sleep 600", spot=False))
    with pytest.raises(ValueError, match="on-demand"):
        await provider.interrupt(instance.id)
    assert (await provider.query(instance.id)).state in (InstanceState.PENDING, InstanceState.RUNNING)



async def test_a_launch_killed_while_its_launcher_starts_is_found_again(make_provider) -> None:
    """The launching process (a controller) SIGKILLed after spawning the launcher but before the
    launcher's pid is on record: the launcher still holds the launch lock, so the instance is
    neither buried as lost nor launched a second time, and its job runs once."""
    provider = make_provider()
    code = (
        "import asyncio, sys\n"
        "from spotrun.providers.local import LocalProvider\n"
        "from tests.providers.conftest import request\n"
        "asyncio.run(LocalProvider(sys.argv[1]).launch(request('t-crash', 'echo job-ran')))\n"
    )
    env = {**os.environ, "SPOTRUN_TEST_CRASH_AT": "launcher-spawned", "SPOTRUN_TEST_STOP_AT": "launcher-unrecorded"}
    crashed = await asyncio.create_subprocess_exec(sys.executable, "-c", code, str(provider.root), env=env)
    assert await crashed.wait() == -signal.SIGKILL
    instance_id = instance_id_for("t-crash")

    def frozen() -> list[int]:
        return [pid for pid in procs.instance_pids(instance_id)
                if Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("T")]

    await wait_until(lambda: bool(frozen()), "the launcher to stop before recording its pid")
    assert (await provider.query(instance_id)).state != InstanceState.GONE  # still launching, not lost
    (launcher,) = frozen()
    os.kill(launcher, signal.SIGCONT)
    again = await provider.launch(request("t-crash", "echo job-ran"))
    assert again.id == instance_id
    done = await wait_state(provider, instance_id, InstanceState.EXITED)
    assert done.returncode == 0
    assert Path(done.log_path).read_text().count("job-ran\n") == 1


@pytest.mark.parametrize("end", ["deadline", "agent-killed"])
async def test_a_command_that_ended_is_not_lost_with_its_agent(make_provider, monkeypatch, tmp_path: Path, end: str) -> None:
    """The command finishes (ignoring a notice, inside its window; or with none); the agent,
    frozen right after recording that, never exits by itself: the machine's deadline passes, or
    the agent is killed. Its exit record still says how the command ended: not "lost", so the
    controller records a success and never runs the command's side effects again."""
    monkeypatch.setenv("SPOTRUN_TEST_STOP_AT", "agent-exit-recorded")
    provider = make_provider()
    go = tmp_path / "go"
    run = 'trap "" TERM; echo ready; while [ ! -e "$SPOTRUN_NOTICE_FILE" ] && [ ! -e "$GO" ]; do sleep 0.05; done; echo finished'
    instance = await provider.launch(request("t-ended", run, env={"GO": str(go)}))
    running = await wait_state(provider, instance.id, InstanceState.RUNNING)
    await wait_until(lambda: "ready" in Path(running.log_path).read_text(), "the job to start")
    if end == "deadline":
        await provider.interrupt(instance.id, lead_s=3)
    else:
        go.touch()
    await wait_until(lambda: "finished" in Path(running.log_path).read_text(), "the command to finish")
    if end == "agent-killed":
        state = InstanceDir(provider.root, instance.id).read_state()
        await wait_until(lambda: Path(f"/proc/{state.agent_pid}/stat").read_text().rsplit(") ", 1)[-1].startswith("T"),
                         "the agent to stop after its exit record")
        os.kill(state.agent_pid, signal.SIGKILL)
    ended = await wait_state(provider, instance.id, InstanceState.RECLAIMED, InstanceState.EXITED)
    assert (ended.state, ended.returncode) == (InstanceState.RECLAIMED if end == "deadline" else InstanceState.EXITED, 0)
