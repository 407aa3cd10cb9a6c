"""The backup runner against the simulator over HTTP (httpx.ASGITransport, in-process).

Every test reads real bytes through backup resources, writes a real repository and asks the simulator
(/sim/stats, /sim/volumes/{id}/digest) what was left behind.
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
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.jobs.scheduler import Scheduler
from fctui.repo import Repository
from fctui.vrm import VrmClient

BLOCK = 128 * 512  # sector_of_block=128 -> 64 KiB CBT blocks


@pytest.fixture
def sim_config() -> Any:
    # 1 GB edge disks, 2 % written: about 20 MB per disk, so full backups stay quick.
    return small_disks()




def fast_settings(**kw: Any) -> RunnerSettings:
    base = dict(watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02,
                release_wait_s=5.0, cleanup_within_s=10.0, read_retry_s=3.0)  # a persistent getcbt 500 fails in 3 s, not 30
    base.update(kw)
    return RunnerSettings(**base)


async def backup(client: VrmClient, repo: Repository, targets: list[str], *, job_id: str = "j1",
                 full: bool = False, journal: MemoryJournal | None = None, scheduler: Scheduler | None = None,
                 settings: RunnerSettings | None = None, sink: Any = None) -> tuple[JobRecord, Any]:
    journal = journal if journal is not None else MemoryJournal()
    plan = await build_plan(client, targets, repo, full=full, chain_marks=journal.chain_marks())
    job = JobRecord(id=job_id, targets=list(targets), full=full)
    runner = BackupRunner(client, repo, scheduler=scheduler, journal=journal, settings=settings or fast_settings())
    try:
        await runner.run(job, plan, Reporter(job, sink))
    finally:
        runner.close()
    return job, plan


def job_vol(repo: Repository) -> str:
    return repo.points()[-1].disks[0].volume_urn


def vol_id(urn: str) -> str:
    return urn.rsplit(":", 1)[1]


async def digest(control: httpx.AsyncClient, volume_urn: str) -> str:
    r = await control.get(f"/sim/volumes/{vol_id(volume_urn)}/digest")
    r.raise_for_status()
    return r.json()["sha256"]


async def assert_nothing_left(control: httpx.AsyncClient, vm_urn: str, baseline_snapshots: int = 0) -> None:
    stats = (await control.get("/sim/stats")).json()
    assert stats["resourcesPerHost"] == {}, stats
    assert stats["liveSnapshotsPerVm"].get(vm_urn, 0) == baseline_snapshots, stats


def writes_after_snapshot(control: httpx.AsyncClient, volume_urns: list[str], blocks: int = 40) -> Any:
    """A progress sink that writes guest data as soon as the job's snapshot exists (VM state 'reading'),
    so the restore point must still equal the content at the snapshot moment."""
    fired: list[asyncio.Task] = []

    def sink(ev: dict[str, Any]) -> None:
        if fired or ev.get("event") != "job":
            return
        if any(v.get("state") == "reading" for v in ev["job"]["vms"]):
            async def write() -> None:
                for urn in volume_urns:
                    await control.post(f"/sim/volumes/{vol_id(urn)}/write", json={"blocks": blocks})
            fired.append(asyncio.get_running_loop().create_task(write()))
    sink.fired = fired  # type: ignore[attr-defined]
    return sink


async def test_full_then_incremental_multi_disk(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                                edges: dict[str, list[str]]) -> None:
    vm = next(v for v in [await client.vm(x) for x in edges["ready"]] if len(v.disks) > 1)
    urn = vm.urn
    vols = [d.volume_urn for d in vm.disks]
    assert len(vols) == 3
    before = {v: await digest(control, v) for v in vols[:2]}  # whole-disk digests cost ~1 s/GB: two suffice
    sink = writes_after_snapshot(control, vols)
    job, plan = await backup(client, repo, [vm.name], job_id="full1", sink=sink)
    await asyncio.gather(*sink.fired)
    assert job.state == "succeeded", job.error
    assert plan.vms[0].kind == "cbt"
    summary = job.summary_json()
    assert [d["mode"] for d in summary["vms"][0]["disks"]] == ["full"] * 3
    assert all(d["reason"] == "no earlier restore point of this VM" for d in summary["vms"][0]["disks"])
    point = repo.point(job.restore_points[0])
    for v in vols[:2]:
        assert repo.open_disk(point.id, v).sha256() == before[v]  # content at the snapshot moment ...
    assert before[vols[1]] != await digest(control, vols[1])      # ... not the data written after it
    # every written block was read once; bytes read == changed blocks x block size
    for d in summary["vms"][0]["disks"]:
        assert d["bytes_read"] == d["bytes_planned"] > 0
        assert d["bytes_planned"] % BLOCK == 0
    await assert_nothing_left(control, urn)

    # incremental: exactly the blocks written since (40 per disk by the sink, plus ours now on disk 0)
    r = await control.post(f"/sim/volumes/{vol_id(vols[0])}/write", json={"ranges": [[0, 3], [100, 2]]})
    assert r.status_code == 200
    mid = {v: await digest(control, v) for v in vols[:1]}
    job2, plan2 = await backup(client, repo, [urn], job_id="incr1")
    assert job2.state == "succeeded", job2.error
    disks = job2.summary_json()["vms"][0]["disks"]
    assert [d["mode"] for d in disks] == ["incremental"] * 3
    assert "CBT chain intact" in disks[0]["reason"]
    written_first = 40 + 5  # sink blocks + our ranges (random blocks may overlap ours: at most 45)
    assert disks[0]["bytes_read"] <= written_first * BLOCK and disks[0]["bytes_read"] >= 40 * BLOCK
    assert disks[1]["bytes_read"] == 40 * BLOCK and disks[2]["bytes_read"] == 40 * BLOCK
    for d in disks:
        assert d["bytes_read"] == d["bytes_planned"]
    p2 = repo.point(job2.restore_points[0])
    assert p2.disks[0].mode == "incremental"
    for v in vols[:1]:  # an incremental point is logically full: the whole disk equals the VM's
        assert repo.open_disk(p2.id, v).sha256() == mid[v]
    await assert_nothing_left(control, urn)

    # repository verify finds a flipped byte in a chunk (one end-to-end check)
    assert repo.verify().ok
    digests = sorted(set(repo.open_disk(p2.id, vols[1]).block_digests().values()))
    chunk = repo.chunk_path(digests[0])
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    report = repo.verify()
    assert not report.ok
    assert p2.id in report.damaged_points  # the chunk belongs to the latest point (and maybe the first)
    assert {d.volume_urn for d in report.damaged} == {vols[1]}


# The exact reason each cause must produce, written here from the product document ("the planner names
# the cause": the VRM's task list names it; the simulator leaves a task per event, like the platform). A
# planner that ignores the cause falls back to the generic "volCBTCreateTime changed (power-off, HA restart,
# revert, expansion or host reboot)" or "the disk was expanded" text, which matches none of these. Without
# the task list the planner still finds the re-initialised CBT at the snapshot (test_jobs_planner).
# "{disk}" is the label of the VM's (only) disk: an expansion is named per disk, the others for all disks.
@pytest.mark.parametrize("event,expect", [
    ("power-off", "CBT chain broken: all disks: power-off"),
    ("ha-restart", "CBT chain broken: all disks: HA restart"),
    ("host-reboot", "CBT chain broken: all disks: host reboot"),
    ("snapshot-revert", "CBT chain broken: all disks: snapshot revert"),
    ("volume-expansion", "CBT chain broken: {disk}: volume expansion"),
])
async def test_chain_breaking_event_forces_full(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                                edges: dict[str, list[str]], event: str, expect: str) -> None:
    urn = edges["ready"][0]
    vm_uri = f"/service/sites/{urn.split(':')[2]}/vms/{urn.rsplit(':', 1)[1]}"
    labels = [d.label for d in (await client.vm(vm_uri)).disks]
    assert len(labels) == 1 and labels[0], labels
    job, _ = await backup(client, repo, [urn], job_id="base")
    assert job.state == "succeeded", job.error
    r = await control.post(f"/sim/vms/{urn.rsplit(':', 1)[1]}/events", json={"event": event})
    assert r.status_code == 200, r.text
    if event == "power-off":  # powered on again before the next backup (a stopped VM gets a standard one)
        await client.wait_task(await client.start_vm(vm_uri), interval=0.02)
        for _ in range(500):  # and its guest booted: Tools run boot_seconds (scaled) after the power-on
            if (await client.vm(vm_uri)).pv_driver_status == "running":
                break
            await asyncio.sleep(0.01)
    job2, plan2 = await backup(client, repo, [urn], job_id="after")
    assert job2.state == "succeeded", job2.error
    d = job2.summary_json()["vms"][0]["disks"][0]
    assert d["mode"] == "full"
    assert d["reason"] == expect.format(disk=labels[0]), d["reason"]
    assert job2.vms[0].disks[0].bytes_read == job2.vms[0].disks[0].bytes_planned > 0


async def test_full_flag_and_chgid_gap(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                       edges: dict[str, list[str]]) -> None:
    urn = edges["ready"][0]
    assert (await backup(client, repo, [urn], job_id="a"))[0].state == "succeeded"
    job, _ = await backup(client, repo, [urn], job_id="b", full=True)
    assert job.summary_json()["vms"][0]["disks"][0]["reason"] == "--full requested"
    # a CBT snapshot not backed up by us (someone else's, deleted at once): chgID gap -> full
    ref = await client.create_snapshot(f"/service/sites/{urn.split(':')[2]}/vms/{urn.rsplit(':', 1)[1]}", "other")
    await client.wait_task(ref, interval=0.02)
    await client.wait_task(await client.delete_snapshot(ref.uri), interval=0.02)
    job3, _ = await backup(client, repo, [urn], job_id="c")
    d = job3.summary_json()["vms"][0]["disks"][0]
    assert d["mode"] == "full" and "chgID gap" in d["reason"], d


async def test_refused_and_excluded(client: VrmClient, repo: Repository, edges: dict[str, list[str]]) -> None:
    job, plan = await backup(client, repo, [edges["tools-missing"][0], edges["disk-independent"][0], "no-such-vm"])
    by = {v.urn: v for v in job.vms}
    assert by[edges["tools-missing"][0]].state == "refused"
    assert by[edges["tools-missing"][0]].kind is None
    assert by["no-such-vm"].state == "refused" and "no VM named" in by["no-such-vm"].reason
    ind = by[edges["disk-independent"][0]]
    assert ind.state == "done"
    excluded = [d for d in ind.disks if d.mode == "excluded"]
    assert len(excluded) == 1 and "independent" in excluded[0].reason
    assert job.state == "failed"  # not everything asked for was backed up
    # the contract leaves excluded disks out of the JSON disk list
    js = job.summary_json()
    assert len([v for v in js["vms"] if v["urn"] == ind.urn][0]["disks"]) == 1


async def test_stopped_vm_standard_full(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                        edges: dict[str, list[str]]) -> None:
    urn = edges["state-stopped"][0]
    job, plan = await backup(client, repo, [urn], settings=fast_settings(default_block_size=4 << 20))
    assert job.state == "succeeded", job.error
    v = job.summary_json()["vms"][0]
    assert v["kind"] == "standard"
    assert v["disks"][0]["mode"] == "full" and "standard" in v["disks"][0]["reason"]
    vol = (await client.vm(urn)).disks[0].volume_urn
    assert v["disks"][0]["bytes_read"] == 1 << 30  # no bitmap: the whole disk
    assert repo.open_disk(job.restore_points[0], vol).sha256() == await digest(control, vol)
    await assert_nothing_left(control, urn)


FAULTS = {
    "snapshot-task-fails": {"taskType": "CreateVmSnapshot", "errorCode": "10300026", "count": 1},
    "resource-refused": {"path": "/backupresources$", "method": "POST", "status": 400,
                         "errorCode": "10300412", "count": 10000},
    "data-read-drops": {"path": "^/sim-data/", "drop": True, "count": 10000},
    "getcbt-fails": {"path": "/getcbt$", "method": "POST", "status": 500, "count": 10000},
    "delete-refused-once": {"path": "/snapshots/\\d+$", "method": "DELETE", "status": 400,
                            "errorCode": "10000009", "count": 2},
    "resource-task-fails": {"taskType": "PrepareBackupResource", "errorCode": "10300026", "count": 10000},
    "delete-task-busy-once": {"taskType": "DeleteVmSnapshot", "errorCode": "10000009", "count": 1},
}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_leaves_nothing_behind(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                           edges: dict[str, list[str]], fault: str) -> None:
    urn = edges["ready"][1]
    r = await control.post("/sim/faults", json=FAULTS[fault])
    assert r.status_code == 200, r.text
    journal = MemoryJournal()
    job, _ = await backup(client, repo, [urn], journal=journal)
    await control.delete("/sim/faults")
    if fault.startswith("delete-"):  # busy is retried: the job still succeeds
        assert job.state == "succeeded", job.error
    else:
        assert job.state == "failed"
        assert job.vms[0].reason and "internal error" not in job.vms[0].reason, job.vms[0].reason
        assert repo.points() == []
    assert journal.pending() == []
    await assert_nothing_left(control, urn)
    if fault in ("resource-refused", "data-read-drops", "getcbt-fails", "resource-task-fails"):
        # a CBT snapshot was taken and not backed up: the chain is marked, the next run is full
        assert journal.chain_marks()
        job2, _ = await backup(client, repo, [urn], journal=journal, job_id="next")
        assert job2.state == "succeeded", job2.error
        assert all(d["mode"] == "full" for d in job2.summary_json()["vms"][0]["disks"])
        assert journal.chain_marks() == {}  # a good restore point clears the marks


async def test_token_expiry_mid_job(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                    edges: dict[str, list[str]]) -> None:
    urn = edges["ready"][1]
    expired: list[asyncio.Task] = []
    progress: list[dict[str, Any]] = []

    def sink(ev: dict[str, Any]) -> None:
        if ev.get("event") == "progress":
            progress.append(ev)
        if ev.get("event") == "progress" and not expired:
            expired.append(asyncio.get_running_loop().create_task(control.post("/sim/tokens/expire", json={})))
    job, _ = await backup(client, repo, [urn], sink=sink, settings=fast_settings(progress_interval=0.0))
    assert expired and (await expired[0]).json()["expired"] >= 1
    assert job.state == "succeeded", job.error
    await assert_nothing_left(control, urn)
    last = progress[-1]  # what the jobs screen renders: counters, rates, busy seconds per stage
    assert last["state"] == "done" and last["bytes_read"] == last["bytes_planned"] > 0
    assert set(last["busy"]) == {"read", "hash", "write"} and last["busy"]["read"] > 0
    assert last["totals"]["bytes_read"] == sum(d.bytes_read for d in job.vms[0].disks)


async def test_someone_elses_operation_fails_cleanly(client: VrmClient, control: httpx.AsyncClient,
                                                     repo: Repository, edges: dict[str, list[str]]) -> None:
    urn = edges["ready"][1]
    fired: list[asyncio.Task] = []

    def sink(ev: dict[str, Any]) -> None:
        if ev.get("event") == "job" and not fired and any(v.get("state") == "reading" for v in ev["job"]["vms"]):
            fired.append(asyncio.get_running_loop().create_task(
                control.post(f"/sim/vms/{urn.rsplit(':', 1)[1]}/operations", json={"op": "migrate"})))
    journal = MemoryJournal()
    assert (await backup(client, repo, [urn], journal=journal, job_id="j0"))[0].state == "succeeded"
    await control.post(f"/sim/volumes/{vol_id(job_vol(repo))}/write", json={"blocks": 200})
    # slow reads down so the migration lands while data moves
    await control.post("/sim/faults", json={"path": "^/sim-data/", "latency_ms": 30})
    job, _ = await backup(client, repo, [urn], sink=sink, journal=journal)
    await control.delete("/sim/faults")
    assert fired and (await fired[0]).status_code == 200
    assert job.state == "failed"
    assert "mutually exclusive" in job.vms[0].reason
    await assert_nothing_left(control, urn)
    marks = journal.chain_marks()
    assert set(marks) == {d.volume for d in job.vms[0].disks}
    # wait for the migration to finish, then the next backup is full and says why
    for _ in range(200):
        if (await client.vm(urn)).status == "running":
            break
        await asyncio.sleep(0.02)
    job2, _ = await backup(client, repo, [urn], journal=journal, job_id="j2")
    assert job2.state == "succeeded", job2.error
    assert all("CBT chain broken: job j1" in d["reason"] for d in job2.summary_json()["vms"][0]["disks"])


async def test_cancel_mid_read_cleans_up(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                         edges: dict[str, list[str]]) -> None:
    urn = edges["ready"][1]
    await control.post("/sim/faults", json={"path": "^/sim-data/", "latency_ms": 30})
    journal = MemoryJournal()
    plan = await build_plan(client, [urn], repo)
    job = JobRecord(id="jc")
    runner = BackupRunner(client, repo, journal=journal, settings=fast_settings())
    started = asyncio.Event()

    def sink(ev: dict[str, Any]) -> None:
        if ev.get("event") == "progress":
            started.set()
    task = asyncio.create_task(runner.run(job, plan, Reporter(job, sink)))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    runner.close()
    await control.delete("/sim/faults")
    assert job.state == "cancelled"
    assert job.vms[0].state == "cancelled"
    assert journal.pending() == []
    assert repo.points() == []
    await assert_nothing_left(control, urn)


async def test_per_host_limit_never_exceeded(client: VrmClient, control: httpx.AsyncClient, repo: Repository,
                                             edges: dict[str, list[str]]) -> None:
    names = ["ready", "consistency-not-euleros", "guest-os-unlisted", "snapshot-limit-near", "target-space-low"]
    targets = [edges["ready"][0], edges["ready"][1]] + [edges[n][0] for n in names[1:]]
    waits: list[str] = []

    def sink(ev: dict[str, Any]) -> None:
        if ev.get("event") == "job":
            waits.extend(v["reason"] for v in ev["job"]["vms"] if v["state"] == "waiting")
    job, plan = await backup(client, repo, targets, scheduler=Scheduler(per_host=2), sink=sink)
    assert job.state == "succeeded", job.error
    assert len(job.restore_points) == len(targets)
    stats = (await control.get("/sim/stats")).json()
    assert stats["maxResourcesPerHost"] and max(stats["maxResourcesPerHost"].values()) <= 2
    assert "host-sockets-busy" in waits  # queued work says why it waits
    await assert_nothing_left(control, targets[0])


async def test_cleanup_of_intents_without_ids(client: VrmClient, control: httpx.AsyncClient,
                                              edges: dict[str, list[str]]) -> None:
    """The crash window between a POST and recording its answer: the journal only has the intent."""
    import time

    from fctui.jobs.cleanup import cleanup_intents
    urn = edges["ready"][0]
    vm = await client.vm(urn)
    name = "fctui-jX-" + urn.rsplit(":", 1)[1]
    t0 = time.time()
    ref = await client.create_snapshot(vm.uri, name)
    await client.wait_task(ref, interval=0.02)
    vol = vm.disks[0]
    vol_uri = "/service/" + vol.volume_urn[4:].replace(":", "/")
    await client.prepare_backup_resource(vol_uri, "CBTBackup", snap_urn2=ref.urn, delay=600)
    s = await stats_of(control)
    assert s["resourcesPerHost"] and s["liveSnapshotsPerVm"].get(urn) == 1
    done: list[int] = []
    intents = [{"key": 1, "what": "snapshot", "vm": urn, "name": name, "time": t0},
               {"key": 2, "what": "resource", "vm": urn, "volume_urn": vol.volume_urn, "volume_uri": vol_uri,
                "time": t0}]
    failed = await cleanup_intents(client, intents, done.append, within=10)
    assert failed == [] and sorted(done) == [1, 2]
    await assert_nothing_left(control, urn)


async def stats_of(control: httpx.AsyncClient) -> dict[str, Any]:
    return (await control.get("/sim/stats")).json()
