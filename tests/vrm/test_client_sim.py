"""The VRM client against the simulator over in-process HTTP (httpx.ASGITransport).

Session, versions, inventory, 401 -> re-login (also in the middle of paging), faults -> typed errors,
tasks, snapshots, CBT and the data transport."""

from __future__ import annotations

import asyncio
import hashlib
import logging

import httpx
import pytest

from tests.conftest import sim_client, small_disks
from fctui.sim import ManualClock, SimConfig, Simulator, create_app
from fctui.vrm import (SnapshotDetail, TaskFailedError, TaskTimeoutError, VrmAuthError, VrmClient,
                       VrmConflictError, VrmConnectionError, VrmNotFoundError, VrmServerError,
                       VrmError, VrmTimeoutError, VrmVersionError, Vm, urn_to_uri)

SUPPORTED_STORAGE = {"LOCALPOME", "LUNPOME", "NAS"}


@pytest.fixture
def sim_config() -> SimConfig:
    # as conftest's, with 2 % of the 1 GB edge disks written: whole-volume digests stay cheap
    return small_disks()


# --- helpers ------------------------------------------------------------------------------------

def cbt_capable(vm: Vm) -> bool:
    return (vm.status == "running" and vm.pv_driver_status == "running" and bool(vm.tools_version)
            and not vm.is_template and not vm.is_link_clone and bool(vm.disks)
            and all(not d.indep_disk and d.type == "normal" and d.pci_type != "IDE"
                    and d.storage_type in SUPPORTED_STORAGE for d in vm.disks))


async def pick_vm(client: VrmClient, site_uri: str) -> Vm:
    """The smallest VM a CBT backup can run on (the sim keeps such test disks small)."""
    vms = [v for v in await client.vms(site_uri) if cbt_capable(v)]
    assert vms, "simulator inventory has no CBT-capable VM"
    return min(vms, key=lambda v: (v.size_gb, len(v.disks)))


async def cbt_snapshot(client: VrmClient, vm: Vm, name: str) -> SnapshotDetail:
    ref = await client.create_snapshot(vm.uri, name, type="CBTbackup")
    await client.wait_task(ref, timeout=30, interval=0.02)
    return await client.snapshot(ref.uri)


async def fault(control: httpx.AsyncClient, **rule: object) -> None:
    r = await control.post("/sim/faults", json=rule)
    assert r.status_code < 300, r.text


# --- session and versions -----------------------------------------------------------------------

async def test_login_sha256_discovers_newest_version(sim: Simulator) -> None:
    c = sim_client(sim)
    async with c:
        assert c.api_version == sim.config.versions[-1]
        assert c.login_info is not None and c.login_info.validity_ms == 600000
        vs = await c.versions()
        assert [v.version for v in vs] == list(sim.config.versions)
        assert (await c.sites())[0].id == sim.site.id


@pytest.mark.parametrize("offered", ["v8.0", "V8.0"])
async def test_a_version_offered_with_a_v_is_asked_for_without_it(offered: str) -> None:
    """Some VRMs list "v8.0" (vrm-api §2); the Accept header carries the number."""
    sim = Simulator(SimConfig(vms=5, seed=3, versions=("6.3", offered)))
    rec = _Recording(httpx.ASGITransport(app=create_app(sim)))
    async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password, transport=rec) as c:
        assert c.api_version == "8.0"
        assert (await c.sites())[0].id == sim.site.id
    assert len([p for p in rec.paths if "/service/versions" in p]) == 1     # an answer is not asked again


async def test_a_failed_version_discovery_is_logged_and_not_asked_again(
        sim: Simulator, control: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    """A VRM whose /service/versions fails (not for want of a session) is asked once; login goes on."""
    await fault(control, path="/service/versions$", method="GET", status=500, errorCode="10000099")
    rec = _Recording(httpx.ASGITransport(app=create_app(sim)))
    c = VrmClient("http://vrm.sim", sim.config.user, sim.config.password, transport=rec, retries_5xx=0)
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        async with c:
            assert c.logged_in
    assert [p for p in rec.paths if "/service/versions" in p] == ["http://vrm.sim/service/versions"]
    (msg,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("version discovery")]
    assert msg.startswith("version discovery failed (VRM refused GET /service/versions: ")
    assert msg.endswith("); falling back")


async def test_a_refused_login_without_a_version_tries_the_next_and_keeps_it(
        sim: Simulator, control: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    """Discovery failed: the login without a version header is refused as unsupported (10000022), the
    next fallback version works, and the session that later expires is reopened with it, without asking
    /service/versions or trying the refused one again."""
    await fault(control, path="/service/versions$", method="GET", status=500, errorCode="10000099")
    await fault(control, path="/service/session$", method="POST", status=400, errorCode="10000022", count=1)
    rec = _Recording(httpx.ASGITransport(app=create_app(sim)))
    c = VrmClient("http://vrm.sim", sim.config.user, sim.config.password, transport=rec, retries_5xx=0)
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        async with c:
            assert c.api_version == "8.1"
            assert (await control.post("/sim/tokens/expire", json={})).status_code < 300
            assert (await c.sites())[0].id == sim.site.id
            assert c.api_version == "8.1"
    assert "VRM refused API version none; trying 8.1" in [r.getMessage() for r in caplog.records]
    assert len([p for p in rec.paths if "/service/versions" in p]) == 1
    assert len([p for p in rec.paths if p.endswith("/service/session")]) == 4   # refused, 8.1, again, logout


async def test_login_plaintext_mode(sim: Simulator) -> None:
    # SITEAPP style: plaintext key, user type 0 -- the simulator's account of that type
    async with VrmClient("http://vrm.sim", "operator", "Operator@123", plaintext_key=True, user_type="0",
                         transport=httpx.ASGITransport(app=create_app(sim))) as c:
        assert len(await c.sites()) == 1


async def test_wrong_password_is_auth_error(sim: Simulator) -> None:
    c = VrmClient("http://vrm.sim", sim.config.user, "not-it", transport=httpx.ASGITransport(app=create_app(sim)))
    with pytest.raises(VrmAuthError) as ei:
        await c.login()
    await c.aclose()
    assert ei.value.status == 401 and ei.value.error_code


async def test_unsupported_version_is_version_error() -> None:
    sim = Simulator(SimConfig(vms=0, unsupported_versions=("6.0",)))
    async with sim_client(sim, api_version="8.1") as ok:
        assert ok.api_version == "8.1"
    c = sim_client(sim, api_version="6.0")
    with pytest.raises(VrmVersionError) as ei:
        await c.login()
    await c.aclose()
    assert ei.value.error_code == "10000022"


async def test_discovery_falls_back_when_newest_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    sim = Simulator(SimConfig(vms=0, unsupported_versions=("8.1",)))
    with caplog.at_level(logging.INFO, logger="fctui.vrm.client"):
        async with sim_client(sim) as c:
            assert sim.config.versions[-1] == "8.1" and c.api_version == sim.config.versions[-2]
            assert (await c.sites())[0].id == sim.site.id
    assert f"VRM refused API version 8.1; trying {sim.config.versions[-2]}" in [r.getMessage() for r in caplog.records]


async def test_logout_invalidates_token(sim: Simulator, control: httpx.AsyncClient) -> None:
    c = sim_client(sim)
    await c.login()
    token = c._token
    await c.logout()
    assert not c.logged_in
    r = await control.get("/service/sites", headers={"X-Auth-Token": token or ""})
    assert r.status_code == 401
    await c.aclose()


async def test_401_relogin_and_retry_once(client: VrmClient, control: httpx.AsyncClient, site_uri: str) -> None:
    before = client._token
    r = await control.post("/sim/tokens/expire", json={})
    assert r.status_code < 300
    clusters = await client.clusters(site_uri)
    assert clusters and client._token != before


async def test_persistent_401_is_auth_error_without_loop(client: VrmClient, control: httpx.AsyncClient,
                                                         site_uri: str, sim: Simulator) -> None:
    await fault(control, path="/clusters$", method="GET", status=401, errorCode="10000002")
    logins_before = len(sim.sessions)
    with pytest.raises(VrmAuthError):
        await client.clusters(site_uri)
    assert len(sim.sessions) - logins_before == 1  # exactly one re-login


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_token_expiry_in_the_middle_of_paging(concurrency: int) -> None:
    # 20 ms latency keeps the concurrent pages in flight while the token is expired under them
    sim = Simulator(SimConfig(vms=450, seed=3, latency_ms=20))
    async with sim_client(sim) as c:
        site = f"/service/sites/{sim.site.id}"
        expected = [v.urn for v in await c.vms(site, concurrency=1)]
        assert len(expected) > 400
        got: list[str] = []
        pages = 0
        sessions_before = len(sim.sessions)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(sim)),
                                     base_url="http://vrm.sim") as ctl:
            async for page in c.iter_vm_pages(site, concurrency=concurrency):
                pages += 1
                got.extend(v.urn for v in page)
                if pages == 1:
                    assert (await ctl.post("/sim/tokens/expire", json={})).status_code < 300
        assert got == expected
        # the expiry was noticed and exactly one new session opened, even with 8 pages in flight
        assert len(sim.sessions) - sessions_before == 1


# --- inventory ----------------------------------------------------------------------------------

async def test_inventory_matches_simulator(client: VrmClient, sim: Simulator, site_uri: str) -> None:
    clusters = await client.clusters(site_uri)
    hosts = await client.hosts(site_uri)
    stores = await client.datastores(site_uri)
    assert len(clusters) == len(sim.clusters) and len(hosts) == len(sim.hosts)
    assert len(stores) == len(sim.datastores)
    assert {h.arch for h in hosts} >= {"x86_64", "aarch64"}
    vms = await client.vms(site_uri)
    templates = await client.vms(site_uri, templates=True)
    both = await client.vms(site_uri, templates=None)
    live = [v for v in sim.vms.values() if not v.gone]
    assert len(vms) == sum(1 for v in live if not v.is_template)
    assert len(templates) == sum(1 for v in live if v.is_template) and templates
    assert [v.urn for v in both] == [v.urn for v in vms] + [v.urn for v in templates]
    assert all(not v.is_template for v in vms) and all(v.is_template for v in templates)
    assert len({v.urn for v in vms}) == len(vms)
    v0 = next(v for v in vms if v.disks)
    detail = await client.vm(v0.urn)  # URN accepted, converted to the URI
    assert detail.uri == v0.uri and [d.volume_urn for d in detail.disks] == [d.volume_urn for d in v0.disks]
    vol = await client.volume(v0.disks[0].volume_urn)
    assert vol.quantity_gb == v0.disks[0].quantity_gb and vol.datastore_urn == v0.disks[0].datastore_urn
    cat = await client.os_catalogue(site_uri)
    assert all(cat.describe(v.os.os_version) for v in vms)
    assert any("EulerOS" in e.description for e in cat.entries.values())


async def test_vm_filters_and_scope(client: VrmClient, site_uri: str) -> None:
    vms = await client.vms(site_uri)
    target = next(v for v in vms if v.cluster_urn)
    in_cluster = await client.vms(site_uri, scope=target.cluster_urn)
    assert target.urn in {v.urn for v in in_cluster}
    assert all(v.cluster_urn == target.cluster_urn for v in in_cluster)
    by_name = await client.vms(site_uri, name=target.name.upper())
    assert target.urn in {v.urn for v in by_name}
    stopped = await client.vms(site_uri, status="stopped")
    assert stopped and all(v.status == "stopped" for v in stopped)
    slim = await client.vms(site_uri, detail=0)
    assert len(slim) == len(vms) and not slim[0].has_vm_config
    owner = await client.vms(site_uri, scope=target.disks[0].volume_urn, detail=0)
    assert [v.urn for v in owner] == [target.urn]


async def test_hosts_and_datastores_by_scope(client: VrmClient, site_uri: str) -> None:
    """The scope reaches the VRM (vrm-api §3): a cluster's hosts, a host's datastores, not all of them."""
    hosts = await client.hosts(site_uri)
    cluster = hosts[0].cluster_urn
    in_cluster = await client.hosts(site_uri, scope=cluster)
    assert {h.urn for h in in_cluster} == {h.urn for h in hosts if h.cluster_urn == cluster}
    assert 0 < len(in_cluster) < len(hosts)
    everywhere = await client.datastores(site_uri)
    on_host = await client.datastores(site_uri, scope=hosts[0].urn)
    assert 0 < len(on_host) < len(everywhere)


async def test_unknown_object_is_not_found(client: VrmClient, site_uri: str) -> None:
    with pytest.raises(VrmNotFoundError) as ei:
        await client.vm(site_uri + "/vms/i-0000FFFF")
    assert ei.value.status == 404 and ei.value.path.endswith("i-0000FFFF")


# --- faults -------------------------------------------------------------------------------------

async def test_5xx_retried_then_succeeds(sim: Simulator, control: httpx.AsyncClient, site_uri: str) -> None:
    await fault(control, path="/hosts$", method="GET", status=503, errorCode="10000010", count=2)
    async with sim_client(sim, retries_5xx=2) as c:
        assert await c.hosts(site_uri)


async def test_5xx_beyond_retries_is_server_error(sim: Simulator, control: httpx.AsyncClient,
                                                  site_uri: str) -> None:
    await fault(control, path="/hosts$", method="GET", status=500, errorCode="10000010", count=5)
    async with sim_client(sim, retries_5xx=1) as c:
        with pytest.raises(VrmServerError) as ei:
            await c.hosts(site_uri)
    assert ei.value.status == 500 and ei.value.error_code == "10000010"


async def test_business_conflict_is_typed(client: VrmClient, site_uri: str) -> None:
    vm = next(v for v in await client.vms(site_uri) if v.status == "running")
    with pytest.raises(VrmConflictError) as ei:
        await client.start_vm(vm.uri)  # start only from stopped/hibernated
    assert ei.value.status == 400 and len(ei.value.error_code) == 8


async def test_dropped_connection_is_connection_error(client: VrmClient, control: httpx.AsyncClient,
                                                      site_uri: str) -> None:
    await fault(control, path="/clusters$", method="GET", drop=True, count=1)
    with pytest.raises(VrmConnectionError):
        await client.clusters(site_uri)
    assert await client.clusters(site_uri)  # next call fine


async def test_latency_beyond_timeout_is_timeout_error(sim: Simulator, control: httpx.AsyncClient,
                                                       site_uri: str) -> None:
    await fault(control, path="/clusters$", method="GET", latency_ms=2000, count=1)
    async with sim_client(sim, timeout=0.3) as c:
        with pytest.raises(VrmTimeoutError):
            await c.clusters(site_uri)


# --- tasks --------------------------------------------------------------------------------------

async def test_task_success_with_progress(client: VrmClient, site_uri: str) -> None:
    vm = next(v for v in await client.vms(site_uri) if v.status == "stopped" and not v.is_template)
    seen: list[tuple[str, int]] = []
    ref = await client.start_vm(vm.uri)
    task = await client.wait_task(ref, timeout=30, interval=0.01, on_progress=lambda t: seen.append(
        (t.status, t.progress)))
    assert task.status == "success" and task.progress == 100
    assert seen[-1] == ("success", 100)
    assert (await client.vm(vm.uri)).status == "running"
    again = await client.task(ref.task_uri)  # still queryable after completion
    assert again.status == "success"
    listed = await client.tasks(site_uri)
    assert ref.task_urn in {t.urn for t in listed}
    typed = await client.tasks(site_uri, type=task.type)   # the filters reach the VRM
    assert ref.task_urn in {t.urn for t in typed} and {t.type for t in typed} == {task.type}
    assert await client.tasks(site_uri, type="NoSuchTaskType") == []


async def test_task_failure_carries_reason(client: VrmClient, control: httpx.AsyncClient,
                                           site_uri: str) -> None:
    stopped = [v for v in await client.vms(site_uri) if v.status == "stopped" and not v.is_template]
    first = await client.wait_task(await client.start_vm(stopped[0].uri), timeout=30, interval=0.01)
    await fault(control, task_type=first.type, errorCode="10300026")  # fail the next task of that type
    with pytest.raises(TaskFailedError) as ei:
        await client.wait_task(await client.start_vm(stopped[1].uri), timeout=30, interval=0.01)
    assert ei.value.reason == "10300026" and ei.value.task.status == "failed"
    assert not ei.value.cancelled and ei.value.task.reason_des


async def test_task_timeout_and_asyncio_cancellation(manual_client: VrmClient, manual_clock: ManualClock,
                                                     manual_sim: Simulator) -> None:
    site = f"/service/sites/{manual_sim.site.id}"
    vm = next(v for v in await manual_client.vms(site) if v.status == "stopped" and not v.is_template)
    ref = await manual_client.start_vm(vm.uri)
    with pytest.raises(TaskTimeoutError) as ei:  # the manual clock never moves: the task never ends
        await manual_client.wait_task(ref, timeout=0.2, interval=0.02)
    assert ei.value.task is not None and ei.value.task.is_active
    polls = manual_sim.stats["requests"]
    waiter = asyncio.ensure_future(manual_client.wait_task(ref, timeout=60, interval=0.02))
    deadline = asyncio.get_running_loop().time() + 30
    while manual_sim.stats["requests"] < polls + 2:  # cancelled while it polls, not before it starts
        assert asyncio.get_running_loop().time() < deadline and not waiter.done()
        await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    manual_clock.advance(3600)
    done = await manual_client.wait_task(ref, timeout=5, interval=0.01)
    assert done.status == "success"


async def test_cancel_task_ends_failed_cancelled(manual_client: VrmClient, manual_clock: ManualClock,
                                                 manual_sim: Simulator) -> None:
    site = f"/service/sites/{manual_sim.site.id}"
    vms = await manual_client.vms(site)
    vm = next(v for v in vms if v.status == "running" and v.disks and not v.disks[0].indep_disk
              and v.disks[0].storage_type in SUPPORTED_STORAGE)
    ds = next(d for d in await manual_client.datastores(site) if d.storage_type == "NAS"
              and d.urn != vm.disks[0].datastore_urn)
    ref = await manual_client.request("POST", urn_to_uri(vm.disks[0].volume_urn) + "/action/migratevol",
                                      json={"datastoreUrn": ds.urn, "speed": 20, "migrateType": 1})
    task_uri = ref["taskUri"]
    t = await manual_client.task(task_uri)
    assert t.cancelable and t.is_active
    await manual_client.cancel_task(task_uri)
    assert (await manual_client.task(task_uri)).status == "cancelling"
    manual_clock.advance(5)
    with pytest.raises(TaskFailedError) as ei:
        await manual_client.wait_task(task_uri, timeout=5, interval=0.01)
    assert ei.value.cancelled and "cancelled" in str(ei.value)


# --- snapshots, CBT and data --------------------------------------------------------------------

async def test_snapshot_tree_and_delete(client: VrmClient, site_uri: str) -> None:
    vm = await pick_vm(client, site_uri)
    snap = await cbt_snapshot(client, vm, "fctui-test-1")
    assert snap.type == "CBTbackup" and snap.status == "ready"
    assert {v.volume_urn for v in snap.vol_snapshots} == {d.volume_urn for d in vm.disks}
    assert all(v.snap_uuid and v.vol_cbt_create_time and v.chg_id for v in snap.vol_snapshots)
    tree = await client.snapshot_tree(vm.uri)
    assert snap.urn in {n.urn for n in tree.walk()}
    await client.wait_task(await client.delete_snapshot(snap.uri), timeout=30, interval=0.02)
    with pytest.raises(VrmNotFoundError) as ei:
        await client.snapshot(snap.uri)
    assert ei.value.error_code == "10300109"


async def test_changed_blocks_equal_guest_writes(client: VrmClient, control: httpx.AsyncClient,
                                                 site_uri: str) -> None:
    vm = await pick_vm(client, site_uri)
    s1 = await cbt_snapshot(client, vm, "fctui-base")
    vs1 = s1.vol_snapshots[0]
    vol_id = vs1.volume_urn.rsplit(":", 1)[-1]
    written = [(5, 3), (1030, 2), (2047, 1)]
    r = await control.post(f"/sim/volumes/{vol_id}/write", json={"ranges": [list(x) for x in written]})
    assert r.status_code < 300, r.text
    s2 = await cbt_snapshot(client, vm, "fctui-incr")
    vs2 = next(v for v in s2.vol_snapshots if v.volume_urn == vs1.volume_urn)
    assert int(vs2.chg_id) == int(vs1.chg_id) + 1 and vs2.vol_cbt_create_time == vs1.vol_cbt_create_time
    bs, total, changed = await client.changed_blocks(vs2.volume_uri or vs2.volume_urn, snap_uuid=vs2.snap_uuid,
                                                     vol_cbt_create_time=vs2.vol_cbt_create_time,
                                                     chg_id=vs1.chg_id)
    expected = sorted(b for start, n in written for b in range(start, start + n))
    assert changed == expected
    assert bs == 128 * 512 and total * bs >= (vm.disks[0].quantity_gb or 0) * 1024**3
    _, _, none = await client.changed_blocks(vs2.volume_urn, snap_uuid=vs2.snap_uuid,
                                             vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id=vs2.chg_id)
    assert none == []
    _, _, full = await client.changed_blocks(vs2.volume_urn, snap_uuid=vs2.snap_uuid,
                                             vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id="0")
    assert set(expected) <= set(full) and full == sorted(full)
    # concurrent windows with a size hint give exactly the same answer
    bs2, total2, changed2 = await client.changed_blocks(
        vs2.volume_urn, snap_uuid=vs2.snap_uuid, vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id=vs1.chg_id,
        volume_size=(vm.disks[0].quantity_gb or 0) * 1024**3, concurrency=4)
    assert (bs2, total2, changed2) == (bs, total, changed)
    _, _, full2 = await client.changed_blocks(vs2.volume_urn, snap_uuid=vs2.snap_uuid,
                                              vol_cbt_create_time=vs2.vol_cbt_create_time, chg_id="0",
                                              volume_size=1, concurrency=4)  # a low hint is harmless
    assert full2 == full


async def test_data_transport_reads_match_digest(client: VrmClient, control: httpx.AsyncClient,
                                                 site_uri: str) -> None:
    vm = await pick_vm(client, site_uri)
    snap = await cbt_snapshot(client, vm, "fctui-data")
    vs = snap.vol_snapshots[0]
    vol_uri = vs.volume_uri or vs.volume_urn
    vol_id = vs.volume_urn.rsplit(":", 1)[-1]
    digest = (await control.get(f"/sim/volumes/{vol_id}/digest")).json()
    ref = await client.prepare_backup_resource(vol_uri, "CBTBackup", snap_urn2=snap.urn, delay=600)
    res = await client.wait_backup_resource(vol_uri, ref.task_id, timeout=30)
    assert res.status == "success" and res.resource_url and res.token
    # guest keeps writing after the snapshot: the resource must still serve the point-in-time bytes
    await control.post(f"/sim/volumes/{vol_id}/write", json={"ranges": [[0, 4]]})
    h = hashlib.sha256()
    size = int(digest["bytes"])
    async with client.data_transport(res) as tr:
        first = await tr.read(0, 1000)
        async for chunk in tr.aiter_read(0, size, 8 << 20):
            h.update(chunk)
        assert first == (await tr.read(0, 1000))
    assert h.hexdigest() == digest["sha256"]
    await client.extend_backup_resource(vol_uri, ref.task_id, 120)
    await client.release_backup_resource(vol_uri, ref.task_id)


async def test_restore_writes_through_transport(client: VrmClient, control: httpx.AsyncClient,
                                                site_uri: str) -> None:
    ds = next(d for d in await client.datastores(site_uri) if d.storage_type == "NAS")
    ref = await client.create_volume(site_uri, name="fctui-restore", quantity_gb=1, datastore_urn=ds.urn)
    await client.wait_task(ref, timeout=30, interval=0.02)
    vol = await client.volume(ref.uri)
    res_ref = await client.prepare_backup_resource(vol.uri, "RestoreVol", delay=300)
    res = await client.wait_backup_resource(vol.uri, res_ref.task_id, timeout=30)
    size = 1024**3
    payload = {0: b"\x11" * 65536, 10 * 65536: bytes(range(256)) * 512}
    async with client.data_transport(res, size=size) as tr, client.data_transport(res) as tr_nosize:
        for (off, data), t in zip(payload.items(), (tr, tr_nosize)):  # "bytes a-b/total" and "a-b/*"
            await t.write(off, data)
        with pytest.raises(VrmConflictError):
            await tr.write(size - 10, b"x" * 20)  # past the end of the volume
    h = hashlib.sha256()
    zero = bytes(1 << 20)
    pos = 0
    for off, data in sorted(payload.items()):
        while pos < off:
            n = min(len(zero), off - pos)
            h.update(zero[:n])
            pos += n
        h.update(data)
        pos += len(data)
    while pos < size:
        n = min(len(zero), size - pos)
        h.update(zero[:n])
        pos += n
    vol_id = vol.urn.rsplit(":", 1)[-1]
    digest = (await control.get(f"/sim/volumes/{vol_id}/digest")).json()
    assert digest["sha256"] == h.hexdigest()
    await client.release_backup_resource(vol.uri, res_ref.task_id)


async def prepared_resource(client: VrmClient, site_uri: str, name: str):  # type: ignore[no-untyped-def]
    """(VolSnapshot, TaskRef, ready BackupResource) of a fresh CBT snapshot of a small VM."""
    vm = await pick_vm(client, site_uri)
    snap = await cbt_snapshot(client, vm, name)
    vs = snap.vol_snapshots[0]
    ref = await client.prepare_backup_resource(vs.volume_uri, "CBTBackup", snap_urn2=snap.urn, delay=600)
    res = await client.wait_backup_resource(vs.volume_uri, ref.task_id, timeout=30)
    res.raw["_test_vm_uri"], res.raw["_test_snap_urn"] = vm.uri, snap.urn
    return vs, ref, res


async def test_data_read_retries_one_dropped_connection(client: VrmClient, control: httpx.AsyncClient,
                                                        site_uri: str) -> None:
    vs, ref, res = await prepared_resource(client, site_uri, "fctui-drop")
    async with client.data_transport(res) as tr:
        clean = await tr.read(65536, 200_000)
        await fault(control, path="^/sim-data/", method="GET", drop=True, count=1)
        assert await tr.read(65536, 200_000) == clean  # one drop: retried transparently
        await fault(control, path="^/sim-data/", method="GET", drop=True, count=2)
        with pytest.raises(VrmConnectionError):
            await tr.read(65536, 200_000)  # two in a row: typed error
    await client.release_backup_resource(vs.volume_uri, ref.task_id)


async def test_data_transport_wrong_token_and_released(client: VrmClient, site_uri: str) -> None:
    from fctui.vrm import BackupResource, VrmApiError
    vs, ref, res = await prepared_resource(client, site_uri, "fctui-token")
    forged = BackupResource.from_dict(dict(res.raw, token="not-the-token"))
    async with client.data_transport(forged) as tr:
        with pytest.raises(VrmApiError) as ei:
            await tr.read(0, 4096)
    assert ei.value.status in (401, 403, 404)
    await client.release_backup_resource(vs.volume_uri, ref.task_id)
    async with client.data_transport(res) as tr:
        deadline = asyncio.get_running_loop().time() + 30
        with pytest.raises(VrmApiError):
            while True:  # release is asynchronous: the endpoint goes away shortly
                await tr.read(0, 4096)
                assert asyncio.get_running_loop().time() < deadline, "the released resource still answers"
                await asyncio.sleep(0.01)


async def test_resource_rules_are_typed(client: VrmClient, site_uri: str) -> None:
    vs, ref, res = await prepared_resource(client, site_uri, "fctui-rules")
    with pytest.raises(VrmConflictError):  # one resource per volume
        await client.prepare_backup_resource(vs.volume_uri, "CBTBackup", snap_urn2=res.raw["_test_snap_urn"],
                                             delay=600)
    with pytest.raises(VrmConflictError):  # remaining + added must stay within 7200 s
        await client.extend_backup_resource(vs.volume_uri, ref.task_id, 7200)
    with pytest.raises(VrmConflictError):  # no CBT snapshot while a resource is prepared
        await client.create_snapshot(res.raw["_test_vm_uri"], "fctui-refused")
    await client.release_backup_resource(vs.volume_uri, ref.task_id)
    with pytest.raises(VrmError):  # checked before sending
        await client.prepare_backup_resource(vs.volume_uri, "CBTBackup", delay=10)


async def test_failed_resource_is_typed(client: VrmClient, control: httpx.AsyncClient, site_uri: str) -> None:
    from fctui.vrm import BackupResourceError
    vm = await pick_vm(client, site_uri)
    snap = await cbt_snapshot(client, vm, "fctui-fail")
    vs = snap.vol_snapshots[0]
    await fault(control, task_type="PrepareBackupResource", errorCode="10300413")
    ref = await client.prepare_backup_resource(vs.volume_uri, "CBTBackup", snap_urn2=snap.urn, delay=600)
    with pytest.raises(BackupResourceError) as bi:
        await client.wait_backup_resource(vs.volume_uri, ref.task_id, timeout=10)
    assert bi.value.reason == "10300413" and "failed" in str(bi.value)
    with pytest.raises(TaskFailedError) as ei:
        await client.wait_task(ref, timeout=10, interval=0.01)
    assert ei.value.reason == "10300413"


async def test_restore_vm_operations(client: VrmClient, site_uri: str) -> None:
    """The restore path: new volume -> attach/detach -> expand -> VM from the volume -> delete."""
    ds = next(d for d in await client.datastores(site_uri) if d.storage_type == "NAS")
    free_before = ds.free_gb
    vref = await client.create_volume(site_uri, name="fctui-r1", quantity_gb=2, datastore_urn=ds.urn)
    await client.wait_task(vref, timeout=30, interval=0.01)
    assert (await client.datastore(ds.uri)).free_gb == (free_before or 0) - 2
    host_vm = next(v for v in await client.vms(site_uri) if v.status == "stopped" and not v.is_template
                   and not v.is_link_clone)
    await client.wait_task(await client.attach_volume(host_vm.uri, vref.urn, pci_type="VIRTIO"),
                           timeout=30, interval=0.01)
    assert vref.urn in {d.volume_urn for d in (await client.vm(host_vm.uri)).disks}
    await client.wait_task(await client.detach_volume(host_vm.uri, vref.urn), timeout=30, interval=0.01)
    assert vref.urn not in {d.volume_urn for d in (await client.vm(host_vm.uri)).disks}
    await client.wait_task(await client.expand_volume(vref.uri, 3 * 1024), timeout=30, interval=0.01)
    assert (await client.volume(vref.uri)).quantity_gb == 3
    body = {"name": "fctui-restored", "location": host_vm.cluster_urn, "autoBoot": False,
            "osOptions": {"osType": "Linux", "osVersion": host_vm.os.os_version},
            "vmConfig": {"cpu": {"quantity": 1}, "memory": {"quantityMB": 1024},
                         "disks": [{"volumeUrn": vref.urn, "sequenceNum": 1, "pciType": "VIRTIO"}]}}
    cref = await client.create_vm(site_uri, body)
    await client.wait_task(cref, timeout=30, interval=0.01)
    new_vm = await client.vm(cref.uri)
    assert new_vm.status == "stopped" and [d.volume_urn for d in new_vm.disks] == [vref.urn]
    await client.wait_task(await client.start_vm(new_vm.uri), timeout=30, interval=0.01)
    await client.wait_task(await client.hibernate_vm(new_vm.uri), timeout=30, interval=0.01)
    assert (await client.vm(new_vm.uri)).status == "hibernated"
    await client.wait_task(await client.start_vm(new_vm.uri), timeout=30, interval=0.01)
    await client.wait_task(await client.stop_vm(new_vm.uri, mode="force"), timeout=30, interval=0.01)
    await client.wait_task(await client.delete_vm(new_vm.uri, reserve_disks=True), timeout=30, interval=0.01)
    with pytest.raises(VrmNotFoundError):
        await client.vm(new_vm.uri)
    assert (await client.volume(vref.uri)).urn == vref.urn  # kept
    await client.wait_task(await client.delete_volume(vref.uri), timeout=30, interval=0.01)
    with pytest.raises(VrmNotFoundError):
        await client.volume(vref.uri)


async def test_revert_snapshot(client: VrmClient, site_uri: str) -> None:
    """The client's side of a revert: the right call, a task that ends, the snapshot still there.
    (What a revert does to disk contents is the simulator's own test.)"""
    vm = await pick_vm(client, site_uri)
    snap = await cbt_snapshot(client, vm, "fctui-revert")
    try:
        task = await client.wait_task(await client.revert_snapshot(snap.uri), timeout=30, interval=0.01)
    except VrmConflictError:  # a VRM may want the VM stopped first
        await client.wait_task(await client.stop_vm(vm.uri, mode="force"), timeout=30, interval=0.01)
        task = await client.wait_task(await client.revert_snapshot(snap.uri), timeout=30, interval=0.01)
    assert task.status == "success"
    assert (await client.snapshot(snap.uri)).status == "ready"
    with pytest.raises(VrmNotFoundError):
        await client.revert_snapshot(snap.uri.rsplit("/", 1)[0] + "/999999")


class _Recording(httpx.AsyncBaseTransport):
    """The simulator's transport, recording the URL of every request the client sends."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(str(request.url))
        return await self.inner.handle_async_request(request)


class _PagingVrm(_Recording):
    """A VRM that pages host and datastore listings even when asked for the whole list (here in
    pages of 2): the VRM side of the test, not our client."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.path.endswith(("/hosts", "/datastores")) and "limit" not in url.params:
            url = url.copy_merge_params({"limit": "2", "offset": "0"})
            request = httpx.Request(request.method, url, headers=request.headers, content=request.content)
        return await super().handle_async_request(request)


async def test_hosts_and_datastores_in_one_request_or_page_by_page() -> None:
    """Asked without limit and offset the VRM answers hosts and datastores whole (vrm-api §3): one
    request each. A VRM that pages them anyway still gives every one (the client reads on)."""
    sim = Simulator(SimConfig(vms=30, seed=3, time_scale=100.0))
    assert len(sim.hosts) > 2 and len(sim.datastores) > 2
    rec = _PagingVrm(httpx.ASGITransport(app=create_app(sim)))
    async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password, transport=rec) as c:
        site = (await c.sites())[0]
        rec.paths.clear()
        hosts = await c.hosts(site.uri)
        stores = await c.datastores(site.uri)
        assert {h.urn for h in hosts} == {sim.urn("hosts", h.id) for h in sim.hosts.values()}
        assert {d.urn for d in stores} == {sim.urn("datastores", d.id) for d in sim.datastores.values()}
        assert len([p for p in rec.paths if "/hosts" in p]) == 2    # a page of 2, then the rest
    async with VrmClient("http://vrm.sim", sim.config.user, sim.config.password,
                         transport=httpx.ASGITransport(app=create_app(sim))) as c:
        n0 = c.request_count
        assert len(await c.hosts(site.uri)) == len(sim.hosts)
        assert len(await c.datastores(site.uri)) == len(sim.datastores)
        assert c.request_count - n0 == 2                    # whole lists: one request each
