"""Real-VRM fidelity of the job engine (issue #14, items 8 and 9), against the simulator over HTTP.

Item 8: a restore creates its VM with the minimal documented body (vrm-api.md §11): the simulator
refuses query-only fields as a strict VRM would, and disks keep the bus they were backed up on.
Item 9: with the simulator enforcing "no prepared backup resource when a CBT snapshot is created" per
host (vrm-api.md §16 NOTES, scope not stated), the scheduler's host gate makes several VMs of one host
succeed, and the simulator's stats show no CBT snapshot was created while a resource was live there.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.conftest import small_disks

from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.restore import RestoreRequest, RestoreSettings, plan_restore, restore_result, run_restore
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.jobs.scheduler import Scheduler
from fctui.repo import Repository
from fctui.vrm import VrmClient
from fctui.vrm.errors import VrmApiError
from fctui.vrm.urn import urn_to_uri

# CBT-ready edge VMs the generator puts on one host (cna-01), each with 1 GB disks
ONE_HOST = ["edge-ready-euleros-01", "edge-ready-euleros-02", "edge-disk-independent-01",
            "edge-consistency-not-euleros-01", "edge-guest-os-unlisted-01"]


@pytest.fixture
def sim_config() -> Any:
    cfg = small_disks()
    cfg.cbt_snapshot_resource_scope = "host"
    return cfg


def fast_settings(**kw: Any) -> RunnerSettings:
    return RunnerSettings(watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02,
                          release_wait_s=5.0, cleanup_within_s=10.0, **kw)


async def backup(client: VrmClient, repo: Repository, targets: list[str], scheduler: Scheduler,
                 job_id: str = "j1", strict: bool = False) -> JobRecord:
    plan = await build_plan(client, targets, repo)
    job = JobRecord(id=job_id, targets=list(targets))
    runner = BackupRunner(client, repo, scheduler=scheduler, journal=MemoryJournal(),
                          settings=fast_settings(host_snapshot_gate=strict))
    try:
        await runner.run(job, plan, Reporter(job))
    finally:
        runner.close()
    return job


async def test_simulator_can_refuse_a_cbt_snapshot_while_a_resource_lives_on_the_host(
        client: VrmClient, control: httpx.AsyncClient, site_uri: str) -> None:
    a, b = [next(v for v in await client.vms(site_uri) if v.name == n) for n in ONE_HOST[:2]]
    assert a.host_urn == b.host_urn
    ref = await client.create_snapshot(a.uri, "fctui-a", type="CBTbackup")
    await client.wait_task(ref, timeout=30, interval=0.01)
    res = await client.prepare_backup_resource(urn_to_uri(a.disks[0].volume_urn), "CBTBackup",
                                               snap_urn2=ref.urn, ip="192.0.2.10", delay=600)
    with pytest.raises(VrmApiError) as e:   # another VM of the host: refused in the "host" reading
        await client.create_snapshot(b.uri, "fctui-b", type="CBTbackup")
    assert e.value.error_code == "10300062"
    stats = (await control.get("/sim/stats")).json()
    assert stats["cbtSnapshotsRefusedForHostResource"] == 1
    await client.release_backup_resource(urn_to_uri(a.disks[0].volume_urn), res.task_id)


@pytest.mark.parametrize("told", ["scheduler", "settings"])
async def test_host_gate_backs_up_several_vms_of_one_host_when_the_vrm_enforces_it_per_host(
        client: VrmClient, control: httpx.AsyncClient, repo: Repository, told: str) -> None:
    # Two VM slots per host: the third VM's snapshot comes while the first two read their disks.
    scheduler = Scheduler(per_host=2, host_snapshot_gate=told == "scheduler")
    job = await backup(client, repo, ONE_HOST, scheduler, strict=told == "settings")
    assert job.state == "succeeded", job.error
    assert [v.state for v in job.vms] == ["done"] * len(ONE_HOST)
    stats = (await control.get("/sim/stats")).json()
    assert stats["cbtSnapshotsWithHostResource"] == 0
    assert stats["cbtSnapshotsRefusedForHostResource"] == 0
    assert stats["resourcesPerHost"] == {}
    # the gate is empty again: nothing waits, nothing held
    assert all(st.creating == st.resources == st.snapshots_waiting == 0 for st in scheduler.gate._hosts.values())


async def test_restore_creates_the_vm_with_the_minimal_documented_body(
        client: VrmClient, control: httpx.AsyncClient, repo: Repository, site_uri: str) -> None:
    vm = next(v for v in await client.vms(site_uri) if v.name == "edge-ready-euleros-02")
    job = await backup(client, repo, [vm.name], Scheduler())
    assert job.state == "succeeded", job.error
    point_id = job.restore_points[0]
    point = repo.point(point_id)
    # the backed-up vmConfig holds query-only fields a VRM reports but refuses on create
    assert "affinitySet" in point.vm_config["cpu"] and "hostname" in point.vm_config["osOptions"]
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="restored-minimal"))
    assert not plan.blocked, plan.findings
    out = await run_restore(client, repo, plan, settings=RestoreSettings(
        task_interval=0.02, busy_interval=0.05, busy_retry_s=5.0, release_wait_s=5.0, cleanup_within_s=10.0))
    assert out.state == "succeeded", out.error
    new = await client.vm(restore_result(out)["vm"])
    assert new.cpu_quantity == vm.cpu_quantity and new.memory_mb == vm.memory_mb
    assert new.os.os_version == vm.os.os_version
    assert sorted((d.sequence_num, d.pci_type) for d in new.disks) == sorted(
        (d.sequence_num, d.pci_type) for d in vm.disks)


async def test_restored_disks_keep_their_backed_up_bus(client: VrmClient, repo: Repository, site_uri: str) -> None:
    """A point whose disks were on the SCSI bus restores them on SCSI (not the VIRTIO default), and a
    point that does not name the bus leaves the choice to the VRM."""
    vm = next(v for v in await client.vms(site_uri) if v.name == "edge-ready-euleros-02")
    job = await backup(client, repo, [vm.name], Scheduler())
    assert job.state == "succeeded", job.error
    point_id = job.restore_points[0]
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="restored-scsi"))
    for i, dp in enumerate(plan.disks):
        dp.pci_type = "SCSI" if i == 0 else ""
    from fctui.jobs.restore import _Restore  # the body the engine would send, without running it
    run = _Restore.__new__(_Restore)
    run.plan = plan
    run.targets = {dp.source_volume: f"urn:new:{i}" for i, dp in enumerate(plan.disks)}
    body = run._vm_body()
    disks = body["vmConfig"]["disks"]
    assert disks[0]["pciType"] == "SCSI"
    backed = {x["volumeUrn"]: x["pciType"] for x in plan.point.vm_config["disks"]}
    assert disks[1]["pciType"] == backed[plan.disks[1].source_volume]   # from the point's vmConfig
    assert "affinitySet" not in body["vmConfig"]["cpu"]
    assert set(body["osOptions"]) <= {"osType", "osVersion", "guestOSName"}


async def test_host_gate_prefers_snapshots_and_lets_resources_share_the_host() -> None:
    """Pure ordering: resources of one host share it; a snapshot waits for them and, while it waits,
    no new resource starts there (no starvation); another host is not held up."""
    import asyncio
    from fctui.jobs.scheduler import HOST_SNAPSHOT_GATE, HostSnapshotGate
    gate = HostSnapshotGate(enabled=True)
    assert await gate.begin_resource("h1") and await gate.begin_resource("h1")
    told: list[str] = []
    snap = asyncio.create_task(gate.begin_snapshot("h1", told.append))
    await asyncio.sleep(0)
    assert not snap.done() and told == [HOST_SNAPSHOT_GATE]
    late = asyncio.create_task(gate.begin_resource("h1"))
    other = asyncio.create_task(gate.begin_resource("h2"))
    await asyncio.sleep(0)
    assert not late.done() and other.done()
    gate.end_resource("h1")
    await asyncio.sleep(0)
    assert not snap.done()
    gate.end_resource("h1")
    await asyncio.sleep(0)
    assert snap.done() and not late.done()
    gate.end_snapshot("h1")
    await asyncio.sleep(0)
    assert late.done()
    off = HostSnapshotGate(enabled=False)
    assert await off.begin_resource("h1")
    assert not await off.begin_snapshot("h1")   # not strict: passes at once, not counted
    assert await off.begin_resource("h1")       # and no preparation waits for it
    strict = asyncio.create_task(off.begin_snapshot("h1", strict=True))   # a strict job's waits for them
    await asyncio.sleep(0)
    assert not strict.done()
    strict.cancel()
    await asyncio.gather(strict, return_exceptions=True)
    assert off._state("h1").snapshots_waiting == 0   # a cancelled wait leaves nothing behind
