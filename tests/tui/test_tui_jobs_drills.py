"""Drills against the simulator's control API (in-process HTTP): each one does to the VM what it says."""

from __future__ import annotations

import httpx
import pytest

from fctui.sim import ManualClock, SimConfig, Simulator, create_app
from fctui.tui.drills import DRILLS, DrillError, drills_available, run_drill
from fctui.tui.source import ConnectSpec


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def sim(clock: ManualClock) -> Simulator:
    # A manual clock: the VM tasks a drill starts stay running until the test moves time on.
    return Simulator(SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0), clock=clock)


def ctl(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url="http://vrm.sim")


def later(sim: Simulator, clock: ManualClock, seconds: float = 3600.0) -> None:
    """Let the simulated time pass (every task of the drills takes well under an hour, scaled)."""
    clock.advance(seconds)
    sim.advance()


@pytest.mark.parametrize("drill", list(DRILLS))
async def test_each_drill_changes_the_vm(sim: Simulator, clock: ManualClock, drill: str) -> None:
    """No backup runs on the VM (the drill's plain path): each drill has exactly one outcome."""
    vm_urn = sim.edge_cases["ready"][0]
    vm = sim.vms[vm_urn.rsplit(":", 1)[1]]
    waited: list[bool] = []

    async def vm_failed() -> None:
        waited.append(True)

    async with ctl(sim) as http:
        host_before = vm.host
        sizes_before = [d.volume.size_mb for d in vm.disks]
        for d in vm.disks:  # as after a CBT backup: a chain the drill must end (power-off, HA, expansion)
            d.volume.cbt_create_time, d.volume.cbt_version = "2026-01-01 00:00:00", 3

        def chains() -> list[str | None]:
            return [d.volume.cbt_create_time for d in vm.disks]
        tasks_before = set(sim.tasks)
        assert vm.status == "running" and vm.busy_task is None
        what = await run_drill(http, vm_urn, drill, vm_failed)
        new = [sim.tasks[i] for i in sorted(set(sim.tasks) - tasks_before)]
        if drill == "power-off":
            assert what == "the VM is being powered off by another user"
            # a real stop task by someone else, holding the VM until it ends; then the VM is stopped
            assert [(t.type, t.user) for t in new] == [("StopVm", "other-admin")]
            assert vm.busy_task is new[0] and new[0].active and not waited
            later(sim, clock)
            assert new[0].final == "success" and vm.busy_task is None and vm.status == "stopped"
            assert chains() == [None] * len(vm.disks)                          # CBT re-initialised
        elif drill == "ha-restart":
            assert what == "the VM went down with its host and was restarted by HA on another host"
            assert waited == [True]                                            # the job gave up first
            assert vm.status == "running" and vm.host is not host_before       # restarted elsewhere
            assert [(t.type, t.final) for t in new] == [("StopVm", "success"), ("HARestartVm", "success")]
            assert chains() == [None] * len(vm.disks)                          # CBT lost
        elif drill == "volume-expansion":
            # nothing holds the disk: the VRM accepts the expansion as a real task (not the out-of-band path)
            assert what == "a disk of the VM is being expanded by another user"
            assert [(t.type, t.user) for t in new] == [("ExpandVolume", "other-admin")]
            assert vm.busy_task is new[0] and new[0].active and not waited
            assert [d.volume.size_mb for d in vm.disks] == sizes_before         # not before the task ends
            later(sim, clock)
            assert new[0].final == "success" and vm.busy_task is None
            assert [d.volume.size_mb for d in vm.disks] == [sizes_before[0] + 1024] + sizes_before[1:]
            assert chains() == [None] + ["2026-01-01 00:00:00"] * (len(vm.disks) - 1)  # that disk's chain ends
        elif drill == "storage-migration":
            assert what == "a storage migration ran on the VM (stopped again after the job failed)"
            assert waited == [True]                                            # stopped again after the job
            # the migration task by someone else ended (successfully) when stopped: the VM is free again
            assert [(t.type, t.user, t.final) for t in new] == [("MigrateVolume", "other-admin", "success")]
            assert vm.busy_task is None and vm.status == "running"
            assert [d.volume.status for d in vm.disks] == ["USE"] * len(vm.disks)
            assert chains() == ["2026-01-01 00:00:00"] * len(vm.disks)          # a migration keeps CBT
        else:  # a new drill needs its own expected outcome here
            pytest.fail(f"no expected outcome for drill {drill!r}")


async def test_unknown_drill_and_refusals_are_typed_errors(sim: Simulator) -> None:
    async with ctl(sim) as http:
        with pytest.raises(DrillError):
            await run_drill(http, sim.edge_cases["ready"][0], "meteor-strike")
        with pytest.raises(DrillError):
            await run_drill(http, "urn:sites:1:vms:i-nope", "power-off")


def test_drills_only_in_the_demo() -> None:
    class A:
        spec = ConnectSpec(url="https://vrm.example", user="u", password="p")
    assert not drills_available(A())
    A.spec = ConnectSpec(url="http://127.0.0.1:1", user="u", password="p", label="demo")
    assert drills_available(A())
