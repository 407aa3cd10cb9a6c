"""Answer size caps, over real loopback sockets: an answer larger than the client's cap is refused while
it streams (the simulator's ``bodyBytes`` fault counts what it managed to send), and a data-range read
keeps only the range asked for whatever the peer sends."""

from __future__ import annotations

import asyncio
from typing import Iterator

import httpx
import pytest

from tests.servers import sim_control

from fctui.sim import EmbeddedSimulator, SimConfig
from fctui.vrm import MAX_BODY, VrmBodyTooLargeError, VrmClient

HUGE = 512 << 20  # never sent in full: the test fails long before memory is at risk if the cap leaks


@pytest.fixture(scope="module")
def es() -> Iterator[EmbeddedSimulator]:
    with EmbeddedSimulator(SimConfig(vms=30, seed=2, sector_of_block=128, time_scale=100.0,
                                     edge_disk_gb=1, edge_fill=0.02)) as s:
        yield s


def make(es: EmbeddedSimulator, **kw: object) -> VrmClient:
    return VrmClient(es.url, es.sim.config.user, es.sim.config.password, **kw)  # type: ignore[arg-type]


async def sent(ctl: httpx.AsyncClient) -> int:
    return int((await ctl.get("/sim/stats")).json()["faultBodyBytesSent"])


async def test_huge_answer_refused_at_the_cap(es: EmbeddedSimulator) -> None:
    async with make(es, max_body=1 << 20) as c, sim_control(es.url) as ctl:
        site = (await c.sites())[0]
        await ctl.post("/sim/faults", json={"path": "/clusters$", "method": "GET", "bodyBytes": HUGE, "count": 1})
        try:
            with pytest.raises(VrmBodyTooLargeError) as ei:
                await c.clusters(site.uri)
        finally:
            await ctl.delete("/sim/faults")
        msg = str(ei.value)
        assert "GET" in msg and site.uri + "/clusters" in msg and "1 MiB" in msg, msg
        assert ei.value.cap == 1 << 20
        # Reading stopped near the cap: what the server produced is the cap plus socket buffers.
        assert await sent(ctl) < 32 << 20
        assert await c.clusters(site.uri)  # the client is still usable


async def test_default_cap_is_generous_for_vm_pages(es: EmbeddedSimulator) -> None:
    # 390,508 bytes is the largest 100-VM detail=2 page of a 10,000-VM simulator (measured once);
    # the default must leave wide headroom over it, and a real page of this inventory passes.
    assert MAX_BODY >= 100 * 390_508
    async with make(es) as c:
        site = (await c.sites())[0]
        assert len(await c.vms(site.uri, detail=2)) > 20


async def test_range_read_keeps_only_the_range(es: EmbeddedSimulator) -> None:
    """A data server that ignores Range (200 with the whole volume, here 512 MiB) costs the range asked
    for, not the volume: the transport stops reading once it has its bytes."""
    async with make(es) as c, sim_control(es.url) as ctl:
        site = (await c.sites())[0]
        vm = next(v for v in await c.vms(site.uri, detail=2) if v.status == "running" and v.disks
                  and v.pv_driver_status == "running" and not v.disks[0].indep_disk
                  and v.disks[0].storage_type in ("LOCALPOME", "NAS", "LUNPOME"))
        vol = vm.disks[0].volume_urn
        from fctui.vrm.urn import urn_to_uri
        ref = await c.create_snapshot(vm.uri, "limits", type="normal")
        await c.wait_task(ref, timeout=60, interval=0.05)
        prep = await c.prepare_backup_resource(urn_to_uri(vol), "BackupVol", snap_urn2=ref.urn, delay=600)
        res = await c.wait_backup_resource(urn_to_uri(vol), prep.task_id, timeout=60, interval=0.05)
        try:
            async with c.data_transport(res) as t:
                await ctl.post("/sim/faults", json={"path": "^/sim-data/", "method": "GET", "bodyBytes": HUGE,
                                                    "count": 1})
                try:
                    data = await t.read(1 << 20, 64 << 10)
                finally:
                    await ctl.delete("/sim/faults")
                assert len(data) == 64 << 10 and set(data) == {ord("x")}
                assert await sent(ctl) < 32 << 20
                # the blocking path (worker threads of a backup) likewise
                await ctl.post("/sim/faults", json={"path": "^/sim-data/", "method": "GET", "bodyBytes": HUGE,
                                                    "count": 1})
                try:
                    data = await asyncio.to_thread(t.read_blocking, 1 << 20, 64 << 10)
                finally:
                    await ctl.delete("/sim/faults")
                assert len(data) == 64 << 10 and await sent(ctl) < 32 << 20
                # a 206 longer than the range asked for is refused, not trusted
                await ctl.post("/sim/faults", json={"path": "^/sim-data/", "method": "GET", "bodyBytes": 1 << 20,
                                                    "status": 206, "count": 2})
                try:
                    with pytest.raises(VrmBodyTooLargeError):
                        await t.read(0, 64 << 10)
                    with pytest.raises(VrmBodyTooLargeError):
                        await asyncio.to_thread(t.read_blocking, 0, 64 << 10)
                finally:
                    await ctl.delete("/sim/faults")
                assert len(await t.read(0, 4096)) == 4096  # the real data path still works
        finally:
            await c.release_backup_resource(urn_to_uri(vol), prep.task_id)
            snap = ref.uri or urn_to_uri(ref.urn)
            await c.wait_task(await c.delete_snapshot(snap), timeout=60, interval=0.05)
