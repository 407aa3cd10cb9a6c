"""The restore engine against the simulator over HTTP (httpx.ASGITransport, in-process).

Restore points are made by the real backup runner; every restored disk is checked independently with the
simulator's ``/sim/volumes/{id}/digest`` (the engine itself never calls /sim), and what is left on the VRM
is read back through the VRM listings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.conftest import small_disks

from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.restore import (RestoreError, RestoreRequest, RestoreSettings, coalesce_runs, datastore_choices,
                                plan_restore, restore_result, run_restore)
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.repo import Repository
from fctui.repo.repository import CHUNK_RAW
from fctui.rules import catalog as C
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_uri


@pytest.fixture
def sim_config() -> Any:
    # 1 GB edge disks, 2 % written: about 20 MB of data per disk.
    return small_disks()



def fast(verify: bool = True) -> RestoreSettings:
    return RestoreSettings(task_interval=0.02, busy_interval=0.05, busy_retry_s=5.0, release_wait_s=5.0,
                           cleanup_within_s=10.0, verify=verify)


async def backup(client: VrmClient, repo: Repository, vm_name: str, job_id: str) -> str:
    plan = await build_plan(client, [vm_name], repo)
    job = JobRecord(id=job_id, targets=[vm_name])
    runner = BackupRunner(client, repo, settings=RunnerSettings(
        watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02, release_wait_s=5.0,
        cleanup_within_s=10.0))
    try:
        await runner.run(job, plan, Reporter(job))
    finally:
        runner.close()
    assert job.state == "succeeded", job.error
    return job.restore_points[0]


def vol_id(urn: str) -> str:
    return urn.rsplit(":", 1)[1]


async def digest(control: httpx.AsyncClient, volume_urn: str) -> str:
    r = await control.get(f"/sim/volumes/{vol_id(volume_urn)}/digest")
    r.raise_for_status()
    return r.json()["sha256"]


async def multi_disk_vm(client: VrmClient, control: httpx.AsyncClient) -> Any:
    edges = (await control.get("/sim/edge-cases")).json()
    return next(v for v in [await client.vm(x) for x in edges["ready"]] if len(v.disks) > 1)


async def world(client: VrmClient, site: str) -> tuple[set[str], set[str]]:
    """What exists on the VRM: volume URNs and VM URNs (the listing a user would see)."""
    vols = {v.urn for v in await client.volumes(site)}
    vms = {v.urn for v in await client.vms(site, detail=0, templates=None)}
    return vols, vms


async def test_full_and_incremental_points_to_new_vms(client: VrmClient, control: httpx.AsyncClient,
                                                      repo: Repository) -> None:
    vm = await multi_disk_vm(client, control)
    vols = [d.volume_urn for d in vm.disks]
    at_full = {v: await digest(control, v) for v in vols}
    p_full = await backup(client, repo, vm.name, "b-full")
    for v in vols:  # the guest changes every disk before the next backup
        await control.post(f"/sim/volumes/{vol_id(v)}/write", json={"blocks": 60})
    at_incr = {v: await digest(control, v) for v in vols}
    assert at_incr != at_full
    p_incr = await backup(client, repo, vm.name, "b-incr")
    assert {d.mode for d in repo.point(p_incr).disks} == {"incremental"}

    for point_id, expected, name, power in ((p_full, at_full, "restored-full", False),
                                            (p_incr, at_incr, "restored-incr", True)):
        plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name=name, power_on=power))
        assert not plan.blocked, plan.findings
        assert [d.source_volume for d in plan.disks] == vols  # the VM's disk order
        assert plan.overwrites == [] and plan.powers_off == []
        job = await run_restore(client, repo, plan, settings=fast())
        assert job.state == "succeeded", job.error
        assert job.type == "restore"
        res = restore_result(job)
        assert [v["source"] for v in res["volumes"]] == vols
        assert all(v["verified"] is True for v in res["volumes"])
        for v in res["volumes"]:
            assert await digest(control, v["target"]) == expected[v["source"]]
        new = await client.vm(res["vm"])
        assert new.name == name and new.status == ("running" if power else "stopped")
        assert new.cpu_quantity == vm.cpu_quantity and new.memory_mb == vm.memory_mb
        by_vol = {d.volume_urn: d for d in new.disks}
        for v, old in zip(res["volumes"], vm.disks):
            d = by_vol[v["target"]]
            assert (d.sequence_num, d.pci_type) == (old.sequence_num, old.pci_type)
            assert d.datastore_urn == old.datastore_urn  # default target: the disk's own datastore
        for d in job.vms[0].disks:
            assert d.bytes_written == d.bytes_planned  # only the point's non-zero blocks were written


async def test_overwrite_original_writes_only_differing_blocks(client: VrmClient, control: httpx.AsyncClient,
                                                               repo: Repository) -> None:
    vm = await multi_disk_vm(client, control)
    vols = [d.volume_urn for d in vm.disks]
    at_point = {v: await digest(control, v) for v in vols}
    point_id = await backup(client, repo, vm.name, "b1")
    for v in vols:
        await control.post(f"/sim/volumes/{vol_id(v)}/write", json={"ranges": [[0, 5], [100, 3]]})
    assert vm.status == "running"

    # Running and no stop asked: blocked, and nothing happens.
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "original"))
    assert plan.blocked and [f.rule for f in plan.blockers] == ["restore-overwrite-running"]
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "failed" and "restore-overwrite-running" in job.error
    assert (await client.vm(vm.urn)).status == "running"

    plan = await plan_restore(client, repo, RestoreRequest(point_id, "original", stop_vm=True))
    assert not plan.blocked
    assert plan.powers_off and vm.name in plan.powers_off[0]
    assert len(plan.overwrites) == len(vols) and plan.creates == []
    assert {d.mode for d in plan.disks} == {"differing"}

    # Writes fail half-way: the journal keeps "overwrite in progress" with the way to retry.
    await control.post("/sim/faults", json={"path": "^/sim-data/", "method": "PUT", "status": 500})
    journal = MemoryJournal()
    job = await run_restore(client, repo, plan, settings=fast(), journal=journal)
    assert job.state == "failed"
    assert (await client.vm(vm.urn)).status == "stopped"  # stopped because it was asked
    pending = journal.pending()
    assert [p["what"] for p in pending] == ["restore-overwrite"]
    assert pending[0]["state"] == "overwrite in progress" and pending[0]["point_id"] == point_id
    assert "--to original" in pending[0]["retry"]
    assert (await control.get("/sim/stats")).json()["resourcesPerHost"] == {}  # resource released
    await control.delete("/sim/faults")

    # The retry: the same restore again (the VM is stopped now, no stop needed).
    seen: list[dict[str, Any]] = []
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "original"))
    assert not plan.blocked and plan.powers_off == []
    job = await run_restore(client, repo, plan, settings=fast(), journal=journal,
                            reporter=Reporter(JobRecord(id="x"), seen.append))
    assert job.state == "succeeded", job.error
    bs = repo.point(point_id).disks[0].block_size
    for d in job.vms[0].disks:
        assert d.bytes_written == 8 * bs  # the 8 blocks the guest changed, nothing else
    for v in vols:
        assert await digest(control, v) == at_point[v]
    assert all(v["verified"] is True and v["target"] == v["source"] for v in restore_result(job)["volumes"])
    assert journal.pending() == []  # cleared once every disk is verified
    marks = journal.chain_marks()  # the next backup of the overwritten disks is full
    assert set(marks) == set(vols) and all("overwritten by restore" in m for m in marks.values())
    assert any("overwrite in progress" in str(ev.get("message", "")) for ev in seen)


async def test_prechecks_refuse_before_anything_is_created(client: VrmClient, control: httpx.AsyncClient,
                                                           repo: Repository, sim: Any) -> None:
    """Planning only reads; a cross-storage target and a full datastore are refused; bad input is a typed
    error; a refused plan run changes nothing on the VRM."""
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    point = repo.point(point_id)
    site = site_uri(vm.urn)
    before = await world(client, site)

    # planning is read-only: no request but GETs reaches the VRM
    stats0 = (await control.get("/sim/stats")).json()["byMethod"]
    for target in ("new", "original", "disk"):
        req = RestoreRequest(point_id, target, disk_volume=vm.disks[0].volume_urn if target == "disk" else None)
        (await plan_restore(client, repo, req)).to_json()
    stats1 = (await control.get("/sim/stats")).json()["byMethod"]
    assert {k: v for k, v in stats1.items() if k != "GET"} == {k: v for k, v in stats0.items() if k != "GET"}
    assert stats1["GET"] > stats0["GET"]

    # cross-storage: only same-class datastores are offered as compatible
    disk = point.disks[0]
    choices = await datastore_choices(client, repo, point_id, disk.volume_urn)
    src_class = C.storage_class(disk.storage_type)
    assert any(c.compatible for c in choices)
    assert all(C.storage_class(c.datastore.storage_type) == src_class for c in choices if c.compatible)
    other = next(c for c in choices if C.storage_class(c.datastore.storage_type) not in (src_class, C.UNKNOWN_CLASS))
    assert not other.compatible and "storage" in other.reason
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="x",
                                                           datastores={disk.volume_urn: other.datastore.urn}))
    assert plan.blocked
    assert [f.rule for f in plan.blockers] == ["cross-storage-restore"]
    assert plan.blockers[0].disks == [disk.volume_urn]
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "failed" and "cross-storage-restore" in job.error
    assert job.vms[0].state == "refused"

    # not enough space: the datastore of the first disk fills up
    ds_urn = disk.datastore_urn
    ds = sim.datastores[int(vol_id(ds_urn))]
    used = ds.used_gb
    ds.used_gb = ds.capacity_gb
    on_it = [d.volume_urn for d in point.disks if d.datastore_urn == ds_urn]
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="x"))
    assert plan.blocked
    space = [f for f in plan.blockers if f.rule == "restore-space"]
    assert len(space) == 1 and set(space[0].disks) == set(on_it)
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "failed" and "restore-space" in job.error
    choice = next(c for c in await datastore_choices(client, repo, point_id, on_it[0]) if c.datastore.urn == ds_urn)
    assert not choice.compatible and "free, the disk needs 1.0 GiB" in choice.reason
    ds.used_gb = used

    assert await world(client, site) == before

    with pytest.raises(RestoreError, match="no-such-point"):
        await plan_restore(client, repo, RestoreRequest("no-such-point", "new"))
    with pytest.raises(RestoreError, match="use new, original or disk"):
        await plan_restore(client, repo, RestoreRequest(point_id, "elsewhere"))
    with pytest.raises(RestoreError, match="not in the point"):
        await plan_restore(client, repo, RestoreRequest(point_id, "new", datastores={"urn:x": "urn:y"}))
    with pytest.raises(RestoreError):
        await plan_restore(client, repo, RestoreRequest(point_id, "disk"))  # which disk?
    bad_ds = await plan_restore(client, repo, RestoreRequest(
        point_id, "new", datastores={vm.disks[0].volume_urn: "urn:sites:X:datastores:999"}))
    assert bad_ds.blocked and bad_ds.blockers[0].rule == "restore-target-unknown"


@pytest.mark.parametrize("where", ["data", "create-vm", "cancel"])
async def test_fault_mid_restore_cleans_up(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                           where: str) -> None:
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    site = site_uri(vm.urn)
    before = await world(client, site)
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="half-made"))
    cancel = asyncio.Event()
    fired: list[asyncio.Task[Any]] = []

    def sink(ev: dict[str, Any]) -> None:
        # once the second disk starts moving data, break something (or cancel)
        if fired or ev.get("event") != "job":
            return
        disks = ev["job"]["vms"][0]["disks"]
        if disks[0]["state"] == "done" and disks[1]["state"] == "reading":
            if where == "cancel":
                cancel.set()
                fired.append(asyncio.get_running_loop().create_task(asyncio.sleep(0)))
            else:
                fired.append(asyncio.get_running_loop().create_task(control.post(
                    "/sim/faults", json={"path": "^/sim-data/", "method": "PUT", "status": 500})))

    if where == "create-vm":
        await control.post("/sim/faults", json={"path": r"/vms$", "method": "POST", "status": 500})
    journal = MemoryJournal()
    job = await run_restore(client, repo, plan, settings=fast(verify=False), journal=journal, cancel=cancel,
                            reporter=Reporter(JobRecord(id="x"), sink if where != "create-vm" else None))
    await asyncio.gather(*fired)
    await control.delete("/sim/faults")
    assert job.state == ("cancelled" if where == "cancel" else "failed"), job.error
    if where != "create-vm":
        assert fired, "the fault was never injected"
    assert await world(client, site) == before  # no new volume, no VM left
    stats = (await control.get("/sim/stats")).json()
    assert stats["resourcesPerHost"] == {}
    assert journal.pending() == []
    assert any("cleanup: deleted volume" in e["message"] for e in job.log)
    res = restore_result(job)
    assert res["vm"] is None and all(v["target"] is None and v["verified"] is False for v in res["volumes"])


async def test_keep_on_failure_keeps_the_volumes(client: VrmClient, control: httpx.AsyncClient,
                                                 repo: Repository) -> None:
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    site = site_uri(vm.urn)
    before_vols, _ = await world(client, site)
    await control.post("/sim/faults", json={"path": r"/vms$", "method": "POST", "status": 500})
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="kept", keep_on_failure=True))
    job = await run_restore(client, repo, plan, settings=fast(verify=False))
    assert job.state == "failed"
    after_vols, _ = await world(client, site)
    kept = after_vols - before_vols
    assert kept == {v["target"] for v in restore_result(job)["volumes"]} and len(kept) == len(vm.disks)


async def test_single_disk_detached_and_attached(client: VrmClient, control: httpx.AsyncClient,
                                                 repo: Repository) -> None:
    vm = await multi_disk_vm(client, control)
    src = vm.disks[1].volume_urn
    at_point = await digest(control, src)
    point_id = await backup(client, repo, vm.name, "b1")
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "disk", disk_volume=src, name="one-disk"))
    assert not plan.blocked and len(plan.disks) == 1 and "left detached" in plan.creates[0]
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "succeeded", job.error
    res = restore_result(job)
    assert res["vm"] is None and res["volumes"][0]["verified"] is True
    target = res["volumes"][0]["target"]
    assert await digest(control, target) == at_point
    vol = await client.volume(target)
    assert vol.name == "one-disk" and not vol.vm_urn

    other = next(v for v in await client.vms(site_uri(vm.urn), detail=2) if v.status == "stopped"
                 and not v.is_template and v.urn != vm.urn)
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "disk", disk_volume=src, attach_to_vm=other.urn))
    assert not plan.blocked and other.name in plan.creates[0]
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "succeeded", job.error
    target = restore_result(job)["volumes"][0]["target"]
    assert target in {d.volume_urn for d in (await client.vm(other.urn)).disks}


def test_coalesce_runs() -> None:
    assert list(coalesce_runs([], 4)) == []
    assert list(coalesce_runs([0, 1, 2, 5, 6, 9], 4)) == [(0, 3), (5, 2), (9, 1)]
    assert list(coalesce_runs(list(range(10)), 4)) == [(0, 4), (4, 4), (8, 2)]


async def test_crash_leftovers_are_cleaned_and_overwrite_record_stays(client: VrmClient, control: httpx.AsyncClient,
                                                                      repo: Repository) -> None:
    """What the agent does after a kill -9 mid-restore: the journal's intents name what was created."""
    from fctui.jobs.restore import cleanup_restore_intents
    vm = await multi_disk_vm(client, control)
    site = site_uri(vm.urn)
    before = await world(client, site)
    ds = vm.disks[0].datastore_urn
    journal = MemoryJournal()
    # a volume whose URN was recorded, and one created but not recorded yet (found by its name)
    ref = await client.create_volume(site, name="r-known", quantity_gb=1, datastore_urn=ds)
    await client.wait_task(ref, interval=0.02)
    journal.intend(job_id="r1", vrm="", user="", what="restore-volume", vm_urn="", site=site, name="r-known",
                   datastore_urn=ds, volume_urn=ref.urn, volume_uri=ref.uri)
    ref2 = await client.create_volume(site, name="r-unrecorded", quantity_gb=1, datastore_urn=ds)
    await client.wait_task(ref2, interval=0.02)
    journal.intend(job_id="r1", vrm="", user="", what="restore-volume", vm_urn="", site=site, name="r-unrecorded",
                   datastore_urn=ds)
    journal.intend(job_id="r2", vrm="", user="", what="restore-overwrite", vm_urn=vm.urn, site=site,
                   point_id="p1", retry="run the same restore again")
    assert len((await world(client, site))[0]) == len(before[0]) + 2
    failed = await cleanup_restore_intents(client, journal.pending(), journal.done, within=5.0)
    assert await world(client, site) == before
    assert [i["what"] for i, _ in failed] == ["restore-overwrite"]
    assert "run the same restore again" in failed[0][1]
    assert [p["what"] for p in journal.pending()] == ["restore-overwrite"]


def test_block_comparison_finds_any_difference() -> None:
    """The comparison behind 'differing' writes and verification: a stored block by its SHA-256, any
    other block must be zeros; a single changed byte anywhere is found."""
    import hashlib

    from fctui.jobs.restore import _differing_blocks
    bs = 16
    blocks = {0: b"a" * bs, 2: b"b" * bs}
    digests = {i: hashlib.sha256(b).hexdigest() for i, b in blocks.items()}
    good = blocks[0] + bytes(bs) + blocks[2] + bytes(bs - 4)  # last block short (end of the disk)
    assert _differing_blocks(digests, bs, 0, good) == []
    for pos, block in ((3, 0), (bs + 5, 1), (2 * bs, 2), (3 * bs + 3, 3)):
        bad = bytearray(good)
        bad[pos] ^= 1
        assert _differing_blocks(digests, bs, 0, bytes(bad)) == [block]
    assert _differing_blocks(digests, bs, 1, good[bs:2 * bs]) == []  # a window starting at block 1
    assert _differing_blocks(digests, bs, 1, blocks[0]) == [1]


@pytest.mark.parametrize("verify", [True, False])
async def test_damaged_chunk_never_yields_a_restored_vm(client: VrmClient, control: httpx.AsyncClient,
                                                       repo: Repository, verify: bool) -> None:
    """Every chunk is hashed before it is written, read-back verification on or off: a damaged chunk
    fails the restore before its block is written (see also test_restore_safety.py)."""
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    disk = repo.point(point_id).disks[0]
    digest_ = next(iter(repo.open_disk(point_id, disk.volume_urn).block_digests().values()))
    path = repo.chunk_path(digest_)
    # Silent corruption: a well-formed chunk whose content differs in one byte from what its name says
    # (a flipped bit in a compressed chunk would already fail decompression).
    data = bytearray(repo.read_chunk(digest_))
    data[len(data) // 2] ^= 0x01
    path.write_bytes(CHUNK_RAW + bytes(data))
    site = site_uri(vm.urn)
    before = await world(client, site)
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="from-damaged"))
    job = await run_restore(client, repo, plan, settings=fast(verify=verify))
    assert job.state == "failed"
    assert "does not match its hash" in job.error and "stopped before writing that block" in job.error
    assert await world(client, site) == before  # no VM, no volume left behind
