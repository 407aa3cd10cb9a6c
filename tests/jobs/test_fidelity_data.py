"""Issue 14 items 1 and 2, through the backup runner and the client against the simulator over HTTP.

1. A backup-resource prepare carries ``ip``, the requester's address (vrm-api.md §16: mandatory); the
   simulator refuses a missing, empty or malformed one, as a VRM would.
2. getcbt never asks at or past the end of the disk (vrm-api.md §16: nothing documents such a query; a
   real VRM may answer 400): a disk whose block count is a multiple of the query window (every edge
   disk here: 1 GiB of 64 KiB blocks = 16 windows of 1024) is read to its end and no further.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import httpx
import pytest
from tests.conftest import SIM_BASE_URL, small_disks

from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.repo import Repository
from fctui.sim import Simulator, create_app
from fctui.sim.testing import sim_harness
from fctui.vrm import VrmClient, VrmError

BLOCK = 128 * 512   # 64 KiB CBT blocks (sector_of_block=128)
WINDOW = 1024


@pytest.fixture
def sim_config() -> Any:
    return small_disks()


class Recording(httpx.AsyncBaseTransport):
    """The simulator, with every POST body kept: what the client asked the VRM."""

    def __init__(self, sim: Simulator) -> None:
        self.inner = httpx.ASGITransport(app=create_app(sim))
        self.posts: list[tuple[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            raw = await request.aread()
            self.posts.append((request.url.path, json.loads(raw) if raw else None))
        return await self.inner.handle_async_request(request)

    def bodies(self, suffix: str) -> list[tuple[str, Any]]:
        return [(p, b) for p, b in self.posts if p.endswith(suffix)]


async def recording_client(sim: Simulator, **kw: Any) -> tuple[VrmClient, Recording]:
    rec = Recording(sim)
    client = VrmClient(SIM_BASE_URL, sim.config.user, sim.config.password, transport=rec, **kw)
    await client.login()
    return client, rec


def fast_settings() -> RunnerSettings:
    return RunnerSettings(watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02,
                          release_wait_s=5.0, cleanup_within_s=10.0)


async def backup(client: VrmClient, repo: Repository, vm_name: str) -> JobRecord:
    journal = MemoryJournal()
    plan = await build_plan(client, [vm_name], repo, chain_marks=journal.chain_marks())
    job = JobRecord(id="j1", targets=[vm_name])
    runner = BackupRunner(client, repo, journal=journal, settings=fast_settings())
    try:
        await runner.run(job, plan, Reporter(job))
    finally:
        runner.close()
    return job


async def one_disk_ready_vm(client: VrmClient, control: httpx.AsyncClient) -> Any:
    edges = (await control.get("/sim/edge-cases")).json()
    return min([await client.vm(u) for u in edges["ready"]], key=lambda v: len(v.disks))


# --- item 1: the requester's ip --------------------------------------------------------------------

async def test_backup_prepares_with_the_local_address_towards_the_vrm(sim: Simulator, control: httpx.AsyncClient,
                                                                      repo: Repository) -> None:
    client, rec = await recording_client(sim)
    try:
        vm = await one_disk_ready_vm(client, control)
        job = await backup(client, repo, vm.name)
        assert job.state == "succeeded", job.error
        prepares = rec.bodies("/backupresources")
        assert len(prepares) == len(vm.disks)
        assert all(body["ip"] and ipaddress.ip_address(body["ip"]) for _, body in prepares), prepares
        from fctui.vrm.requester import local_address_towards
        ip = await client.requester_ip()
        # vrm.sim resolves nowhere: the address of this machine's default route stands in
        assert ipaddress.ip_address(ip) and ip == local_address_towards("vrm.sim", 80)
        assert all(body["ip"] == ip for _, body in prepares)
    finally:
        await client.close()


async def test_proxy_ip_setting_wins(sim: Simulator, control: httpx.AsyncClient, repo: Repository) -> None:
    client, rec = await recording_client(sim, proxy_ip=" 10.20.30.40 ")
    try:
        vm = await one_disk_ready_vm(client, control)
        job = await backup(client, repo, vm.name)
        assert job.state == "succeeded", job.error
        assert [b["ip"] for _, b in rec.bodies("/backupresources")] == ["10.20.30.40"] * len(vm.disks)
        # a restore's prepare (fctui/jobs/restore.py passes no ip either) carries it too
        vol = await client.volume(vm.disks[0].volume_urn)
        ref = await client.prepare_backup_resource(vol.uri, "RestoreVol", delay=60)
        assert rec.bodies("/backupresources")[-1][1]["ip"] == "10.20.30.40"
        await client.wait_backup_resource(vol.uri, ref.task_id, interval=0.02)
        await client.release_backup_resource(vol.uri, ref.task_id)
    finally:
        await client.close()


def test_the_local_address_of_a_loopback_vrm_is_loopback() -> None:
    from fctui.vrm.requester import local_address_towards
    assert local_address_towards("127.0.0.1", 7443) == "127.0.0.1"
    assert local_address_towards("localhost", 7443) in ("127.0.0.1", "::1")


@pytest.mark.parametrize("proxy_ip", ["10.0.0", "vrm.example", "10.0.0.1/24", "::g"])
def test_a_malformed_proxy_ip_is_refused_by_the_client(proxy_ip: str) -> None:
    with pytest.raises(VrmError, match="proxy_ip must be an IP address"):
        VrmClient(SIM_BASE_URL, "u", "p", proxy_ip=proxy_ip)


@pytest.mark.parametrize("ip, ok", [
    (None, False), ("", False), ("  ", False), ("300.1.1.1", False), ("proxy.example", False), (5, False),
    ("10.0.0.5", True), ("fe80::1", True),
])
async def test_simulator_refuses_a_prepare_without_a_valid_ip(ip: Any, ok: bool) -> None:
    async with sim_harness() as h:
        urn = (await h.client.get("/sim/edge-cases")).json()["ready"][0]
        vm = (await h.get(h.uri(urn))).json()
        ref = (await h.post(vm["uri"] + "/snapshots", {"name": "s", "type": "CBTbackup"})).json()
        assert (await h.wait_task(ref["taskUri"]))["status"] == "success"
        snap = (await h.get(ref["uri"])).json()
        body: dict[str, Any] = {"taskType": "CBTBackup", "snapUrn2": snap["urn"], "delay": 600}
        if ip is not None:
            body["ip"] = ip
        r = await h.post(snap["volsnapshots"][0]["volumeUri"] + "/backupresources", body)
        if ok:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 400 and r.json()["errorCode"] == "10000003", r.text
            assert "ip" in r.json()["errorDes"]


async def test_an_explicit_malformed_ip_never_reaches_the_vrm(sim: Simulator) -> None:
    client, rec = await recording_client(sim)
    try:
        with pytest.raises(VrmError, match="ip must be an IP address"):
            await client.prepare_backup_resource("/service/sites/x/volumes/1", "RestoreVol", ip="10.0.0")
        assert rec.bodies("/backupresources") == []
    finally:
        await client.close()


# --- item 2: getcbt stops at the disk's end ---------------------------------------------------------

def starts(rec: Recording) -> list[int]:
    return [b["startBlock"] for _, b in rec.bodies("/getcbt")]


async def test_backup_never_queries_past_the_end_of_a_window_aligned_disk(
        sim: Simulator, control: httpx.AsyncClient, repo: Repository) -> None:
    client, rec = await recording_client(sim)
    try:
        vm = await one_disk_ready_vm(client, control)
        blocks = (vm.disks[0].quantity_gb or 0) * (1 << 30) // BLOCK
        assert blocks and blocks % WINDOW == 0
        job = await backup(client, repo, vm.name)
        assert job.state == "succeeded", job.error
        assert starts(rec) == list(range(0, blocks, WINDOW))   # every window once, none at `blocks`
    finally:
        await client.close()


async def test_simulator_refuses_a_query_at_or_past_the_end() -> None:
    async with sim_harness() as h:
        urn = (await h.client.get("/sim/edge-cases")).json()["ready"][0]
        vm = (await h.get(h.uri(urn))).json()
        ref = (await h.post(vm["uri"] + "/snapshots", {"name": "s", "type": "CBTbackup"})).json()
        assert (await h.wait_task(ref["taskUri"]))["status"] == "success"
        vs = (await h.get(ref["uri"])).json()["volsnapshots"][0]
        body = {"type": "DiffBitmapAndBit1Num", "snapUuid": vs["snapUuid"],
                "volCBTCreateTime": vs["volCBTCreateTime"], "chgID": "0", "blockNum": WINDOW}
        whole = (await h.post(vs["volumeUri"] + "/getcbt", {**body, "blockNum": 0, "startBlock": 0})).json()
        r = await h.post(vs["volumeUri"] + "/getcbt", {k: v for k, v in body.items() if k != "blockNum"})
        total = r.json()["bitNum"]   # no startBlock/blockNum: the whole file
        assert whole["bitNum"] == 0 and total % 8 == 0
        last = await h.post(vs["volumeUri"] + "/getcbt", {**body, "startBlock": total - 8})
        assert last.status_code == 200 and last.json()["bitNum"] == 8
        for start in (total, total + WINDOW):
            r = await h.post(vs["volumeUri"] + "/getcbt", {**body, "startBlock": start})
            assert r.status_code == 400 and r.json()["errorCode"] == "10000003", r.text


@pytest.mark.parametrize("hint", [None, "exact", "low"])
@pytest.mark.parametrize("concurrency", [1, 4])
async def test_changed_blocks_ends_at_the_end_with_any_size_hint(hint: Any, concurrency: int, sim: Simulator,
                                                                 control: httpx.AsyncClient) -> None:
    """Without a size the client asks the volume for its own; a hint found too low (a full window
    reaching past it: the volume grew since it was read) is replaced by the volume's own size."""
    client, rec = await recording_client(sim)
    try:
        vm = await one_disk_ready_vm(client, control)
        size = (vm.disks[0].quantity_gb or 0) * (1 << 30)
        blocks = size // BLOCK
        ref = await client.create_snapshot(vm.uri, "s", type="CBTbackup")
        await client.wait_task(ref, timeout=30, interval=0.02)
        vs = (await client.snapshot(ref.uri)).vol_snapshots[0]
        volume_size = {None: None, "exact": size, "low": BLOCK * 1500}[hint]
        bs, total, changed = await client.changed_blocks(
            vs.volume_uri, snap_uuid=vs.snap_uuid, vol_cbt_create_time=vs.vol_cbt_create_time, chg_id="0",
            volume_size=volume_size, concurrency=concurrency)
        assert (bs, total) == (BLOCK, blocks) and changed == sorted(set(changed)) and changed
        assert sorted(starts(rec)) == list(range(0, blocks, WINDOW))
        volume_reads = [b for p, b in rec.posts if p.endswith("/volumes")]   # GETs are not recorded
        assert volume_reads == []
    finally:
        await client.close()
