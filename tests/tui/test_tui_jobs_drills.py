"""Drills against the simulator's control API (in-process HTTP): each one does to the VM what it says."""

from __future__ import annotations

import httpx
import pytest

from fctui.sim import SimConfig, Simulator, create_app
from fctui.tui.drills import DRILLS, DrillError, drills_available, run_drill
from fctui.tui.source import ConnectSpec


@pytest.fixture
def sim() -> Simulator:
    return Simulator(SimConfig(vms=30, seed=1, sector_of_block=128, time_scale=100.0))


def ctl(sim: Simulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)), base_url="http://vrm.sim")


@pytest.mark.parametrize("drill", list(DRILLS))
async def test_each_drill_changes_the_vm(sim: Simulator, drill: str) -> None:
    vm_urn = sim.edge_cases["ready"][0]
    vm = sim.vms[vm_urn.rsplit(":", 1)[1]]
    waited: list[bool] = []

    async def vm_failed() -> None:
        waited.append(True)

    async with ctl(sim) as http:
        host_before = vm.host
        size_before = sum(d.volume.size_mb for d in vm.disks)
        what = await run_drill(http, vm_urn, drill, vm_failed)
        assert what
        if drill == "power-off":
            assert vm.busy_task is not None and vm.busy_task.user != sim.config.user  # someone else's task
        elif drill == "ha-restart":
            assert waited and vm.status == "running" and vm.host is not host_before   # restarted elsewhere
        elif drill == "volume-expansion":
            await http.get("/sim/info")
            assert vm.busy_task is not None or sum(d.volume.size_mb for d in vm.disks) > size_before
        elif drill == "storage-migration":
            assert waited                                                     # stopped again after the job
            t = vm.busy_task
            assert t is None or not t.active


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
