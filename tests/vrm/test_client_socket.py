"""The client over real loopback sockets (uvicorn in a thread): plain HTTP, HTTPS with the simulator's CA
(--ca-file), the default verification rejecting the self-signed certificate, --insecure, and faults that
only a real socket shows (dropped connection, timeout)."""

from __future__ import annotations

import hashlib
import logging
import ssl
from typing import Iterator

import httpx
import pytest

from tests.servers import sim_control

from fctui.sim import EmbeddedSimulator, SimConfig
from fctui.vrm import INSECURE_WARNING, HttpResourceTransport, VrmClient, VrmConnectionError, VrmTimeoutError


@pytest.fixture(scope="module")
def http_sim() -> Iterator[EmbeddedSimulator]:
    with EmbeddedSimulator(SimConfig(vms=30, seed=2, sector_of_block=128, time_scale=100.0)) as es:
        yield es


@pytest.fixture(scope="module")
def https_sim() -> Iterator[EmbeddedSimulator]:
    with EmbeddedSimulator(SimConfig(vms=10, seed=4, sector_of_block=128, time_scale=100.0), tls=True) as es:
        yield es


async def backup_ready_vm(c: VrmClient, site_uri: str):  # type: ignore[no-untyped-def]
    """A running VM with Tools whose disks a CBT snapshot covers (virtualized, not shared/independent)."""
    return next(v for v in await c.vms(site_uri) if v.status == "running" and v.tools_version
                and v.pv_driver_status == "running" and v.disks
                and all(not d.indep_disk and d.type == "normal" and d.storage_type in ("LOCALPOME", "NAS", "LUNPOME")
                        for d in v.disks))


def make(es: EmbeddedSimulator, **kw: object) -> VrmClient:
    return VrmClient(es.url, es.sim.config.user, es.sim.config.password, **kw)  # type: ignore[arg-type]


async def test_http_socket_listing(http_sim: EmbeddedSimulator) -> None:
    async with make(http_sim) as c:
        site = (await c.sites())[0]
        seq = await c.vms(site.uri, concurrency=1)
        par = await c.vms(site.uri, concurrency=4)
        assert seq and [v.urn for v in seq] == [v.urn for v in par]


async def test_dropped_connection_over_socket(http_sim: EmbeddedSimulator) -> None:
    async with make(http_sim) as c, sim_control(http_sim.url) as ctl:
        site = (await c.sites())[0]
        await ctl.post("/sim/faults", json={"path": "/clusters$", "method": "GET", "drop": True, "count": 1})
        try:
            with pytest.raises(VrmConnectionError) as ei:
                await c.clusters(site.uri)
            assert http_sim.url in str(ei.value)
            assert await c.clusters(site.uri)  # a fresh connection works
        finally:
            await ctl.delete("/sim/faults")


async def test_timeout_over_socket(http_sim: EmbeddedSimulator) -> None:
    async with make(http_sim, timeout=0.3) as c, sim_control(http_sim.url) as ctl:
        site = (await c.sites())[0]
        await ctl.post("/sim/faults", json={"path": "/hosts$", "method": "GET", "latency_ms": 1500, "count": 1})
        try:
            with pytest.raises(VrmTimeoutError):
                await c.hosts(site.uri)
        finally:
            await ctl.delete("/sim/faults")


async def test_connection_refused_is_typed() -> None:
    with EmbeddedSimulator(SimConfig(vms=0)) as es:
        url = es.url
    c = VrmClient(url, "admin", "x", api_version="8.1", timeout=2)
    with pytest.raises(VrmConnectionError) as ei:
        await c.login()
    await c.aclose()
    assert url in str(ei.value)


async def test_https_with_ca_file(https_sim: EmbeddedSimulator) -> None:
    assert https_sim.url.startswith("https://") and https_sim.ca_file
    async with make(https_sim, verify=https_sim.ca_file) as c:
        site = (await c.sites())[0]
        vms = await c.vms(site.uri)
        assert vms


async def test_https_default_verification_rejects_self_signed(https_sim: EmbeddedSimulator) -> None:
    c = make(https_sim)
    with pytest.raises(VrmConnectionError) as ei:
        await c.login()
    await c.aclose()
    assert "certificate" in str(ei.value).lower() and "--ca-file" in str(ei.value)


async def test_https_insecure_warns_and_works(https_sim: EmbeddedSimulator,
                                              caplog: pytest.LogCaptureFixture) -> None:
    import fctui.vrm.client as client_mod
    client_mod._insecure_warned = False
    caplog.set_level(logging.WARNING, logger="fctui.vrm.client")
    async with make(https_sim, verify=False) as c:
        assert await c.sites()
    async with make(https_sim, verify=False):
        pass
    assert caplog.text.count(INSECURE_WARNING) == 1  # once per process


async def test_https_data_transport_with_ca(https_sim: EmbeddedSimulator) -> None:
    """Backup resource bytes over HTTPS with the same CA: the first MiB equals the simulator's bytes."""
    async with make(https_sim, verify=https_sim.ca_file) as c, \
            httpx.AsyncClient(base_url=https_sim.url,
                              verify=ssl.create_default_context(cafile=https_sim.ca_file)) as ctl:
        site = (await c.sites())[0]
        vm = await backup_ready_vm(c, site.uri)
        ref = await c.create_snapshot(vm.uri, "fctui-tls")
        await c.wait_task(ref, timeout=30, interval=0.02)
        snap = await c.snapshot(ref.uri)
        vs = snap.vol_snapshots[0]
        rref = await c.prepare_backup_resource(vs.volume_uri, "CBTBackup", snap_urn2=snap.urn, delay=300,
                                               trans_mode="lanssl")
        res = await c.wait_backup_resource(vs.volume_uri, rref.task_id, timeout=30)
        assert res.resource_url.startswith("https://")
        async with c.data_transport(res) as tr:
            head = await tr.read(0, 1 << 20)
            streamed = b"".join([x async for x in tr.aiter_read(0, 1 << 20, 300_000)])
        assert head == streamed and len(head) == 1 << 20
        # the same range read raw (independently of our transport) gives the same bytes
        raw = await ctl.get(res.resource_url, headers={"X-Resource-Token": res.token,
                                                       "Range": f"bytes=0-{(1 << 20) - 1}"})
        assert raw.status_code == 206 and hashlib.sha256(raw.content).digest() == hashlib.sha256(head).digest()
        # the resource's own caCert suffices for its data endpoint (default verification, no CA file)
        assert res.ca_cert
        async with HttpResourceTransport(res.resource_url, res.token, ca_cert=res.ca_cert) as tr2:
            assert await tr2.read(0, 4096) == head[:4096]
        async with HttpResourceTransport(res.resource_url, res.token) as tr3:
            with pytest.raises(VrmConnectionError):
                await tr3.read(0, 4096)
        await c.release_backup_resource(vs.volume_uri, rref.task_id)


async def test_blocking_data_path_over_socket(http_sim: EmbeddedSimulator) -> None:
    """The backup/restore pipelines call the transport from worker threads (httpx's sync client over
    a real socket): reads from several threads equal the async read, one dropped read is retried,
    two are a typed error, and bytes written to a restore resource read back equal."""
    import asyncio

    from fctui.vrm.urn import urn_to_uri
    async with make(http_sim) as c, sim_control(http_sim.url) as ctl:
        site = (await c.sites())[0]
        vm = await backup_ready_vm(c, site.uri)
        ref = await c.create_snapshot(vm.uri, "fctui-threads")
        await c.wait_task(ref, timeout=30, interval=0.02)
        snap = await c.snapshot(ref.uri)
        vs = snap.vol_snapshots[0]
        rref = await c.prepare_backup_resource(vs.volume_uri, "CBTBackup", snap_urn2=snap.urn, delay=300)
        res = await c.wait_backup_resource(vs.volume_uri, rref.task_id, timeout=30)
        piece = 1 << 20
        async with c.data_transport(res) as tr:
            want = await tr.read(0, 4 * piece)
            got = await asyncio.gather(*(asyncio.to_thread(tr.read_blocking, k * piece, piece) for k in range(4)))
            assert b"".join(got) == want
            await ctl.post("/sim/faults", json={"path": "^/sim-data/", "method": "GET", "drop": True, "count": 1})
            assert await asyncio.to_thread(tr.read_blocking, 0, piece) == want[:piece]  # retried once
            await ctl.post("/sim/faults", json={"path": "^/sim-data/", "method": "GET", "drop": True, "count": 2})
            with pytest.raises(VrmConnectionError):
                await asyncio.to_thread(tr.read_blocking, 0, piece)
            await ctl.delete("/sim/faults")
        await c.release_backup_resource(vs.volume_uri, rref.task_id)

        # a restore resource of a new volume: bytes written from a thread read back equal
        ds = next(d for d in await c.datastores(site.uri) if d.storage_type in ("LOCALPOME", "NAS"))
        vref = await c.create_volume(site.uri, name="fctui-threads-vol", quantity_gb=1, datastore_urn=ds.urn)
        await c.wait_task(vref, timeout=30, interval=0.02)
        vol_uri = urn_to_uri(vref.urn)
        wref = await c.prepare_backup_resource(vol_uri, "RestoreVol", delay=300)
        wres = await c.wait_backup_resource(vol_uri, wref.task_id, timeout=30)
        async with c.data_transport(wres, size=1 << 30) as tr:
            await asyncio.to_thread(tr.write_blocking, 3 * piece, want[:2 * piece])
            assert await tr.read(3 * piece, 2 * piece) == want[:2 * piece]
            assert await tr.read(0, piece) == bytes(piece)
        await c.release_backup_resource(vol_uri, wref.task_id)
