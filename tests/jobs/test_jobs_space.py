"""Repository space: the launch-time estimate against free space (info with the numbers, a blocker that
refuses the VM before anything is created on the VRM), and a disk that fills during a backup (ENOSPC
injected at the OS boundary of the repository, and a real one on a small tmpfs when mounting is
permitted): the job ends cleanly with a clear message, no point is listed, gc reclaims what was written,
the VRM keeps nothing, and the agent is idle."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from tests.conftest import small_disks
from tests.repo.gcclock import age_chunks
from tests.servers import sim_control

import fctui.repo.repository as repository_module
from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import GIB, Plan, add_launch_findings, build_plan, plan_vm
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.repo import Repository
from fctui.vrm import VrmClient
from fctui.vrm.models import Vm

S = "urn:sites:0000ABCD"


@pytest.fixture
def sim_config() -> Any:
    from fctui.sim import SimConfig
    # 1 GB edge disks, 3 % written: ~30 MB per disk
    return small_disks(0.03)


def fast(**kw: Any) -> RunnerSettings:
    return RunnerSettings(**{**dict(watch_interval=0.05, busy_retry_s=1.0, busy_interval=0.05, task_interval=0.02,
                                    release_wait_s=5.0, cleanup_within_s=10.0), **kw})


def vm_of(n: int, gb: int = 10) -> Vm:
    disk = {"sequenceNum": 1, "pciType": "VIRTIO", "volumeUrn": f"{S}:volumes:{n}", "diskName": "d1",
            "quantityGB": gb, "datastoreUrn": f"{S}:datastores:1", "storageType": "LOCALPOME", "isThin": True,
            "indepDisk": False, "persistentDisk": True, "type": "normal"}
    return Vm.from_dict({"urn": f"{S}:vms:i-{n:08d}", "uri": f"/service/sites/0000ABCD/vms/i-{n:08d}",
                         "name": f"vm-{n}", "status": "running", "pvDriverStatus": "running", "toolsVersion": "2.5",
                         "isTemplate": False, "isLinkClone": False, "hostUrn": f"{S}:hosts:1", "hostName": "cna-01",
                         "vmConfig": {"cpu": {"quantity": 2}, "memory": {"quantityMB": 4096}, "disks": [disk]}})


def space_note(vp: Any) -> Any:
    return next(f for f in vp.launch if f.rule == "repo-space-low")


def test_launch_finding_with_numbers_and_blocker(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    plan = Plan(vms=[plan_vm(vm_of(1)), plan_vm(vm_of(2))], full=False, created=0.0)
    add_launch_findings(plan, repo=repo, room=(25 * GIB, GIB))
    notes = [space_note(vp) for vp in plan.vms]
    assert [n.severity for n in notes] == ["info", "info"]
    assert "needs ~10.0 GiB" in notes[0].message and "25.0 GiB free" in notes[0].message
    assert "no earlier point: 1.0 stored/read assumed" in notes[0].message
    assert "with the job's earlier VMs ~20.0 GiB" in notes[1].message

    plan = Plan(vms=[plan_vm(vm_of(1)), plan_vm(vm_of(2))], full=False, created=0.0)
    add_launch_findings(plan, repo=repo, room=(15 * GIB, GIB))
    first, second = plan.vms
    assert not first.refused and space_note(first).severity == "info"
    assert second.refused and second.kind is None
    assert second.reason.startswith("repository too full: needs ~10.0 GiB")
    assert "~20.0 GiB; 15.0 GiB free, 1.0 GiB kept as margin" in second.reason
    assert space_note(second).severity == "blocker"

    # within 10 % of the room: a warning (rules.md repo-space-low), the VM still runs
    plan = Plan(vms=[plan_vm(vm_of(1))], full=False, created=0.0)
    add_launch_findings(plan, repo=repo, room=(12 * GIB, GIB))
    (only,) = plan.vms
    assert not only.refused and space_note(only).severity == "warning"
    assert space_note(only).message.startswith("repository nearly full: needs ~10.0 GiB")

    # what the guest wrote (the VRM's userUsedSize) is the estimate of a first full backup
    plan = Plan(vms=[plan_vm(vm_of(1))], full=False, created=0.0)
    plan.vms[0].disks[0].used_bytes = 2 * GIB
    add_launch_findings(plan, repo=repo, room=(4 * GIB, GIB))
    assert not plan.vms[0].refused and "needs ~2.0 GiB" in space_note(plan.vms[0]).message
    repo.close()


def test_history_gives_the_ratio(tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    vm = vm_of(1, gb=1)
    bs = 1 << 20
    w = repo.new_point(vm_urn=vm.urn, vm_name=vm.name, job_id="j0", kind="cbt", vm_config={}, snapshot_urn="",
                       created=1.0)
    with w:
        d = w.add_disk(volume_urn=vm.disks[0].volume_urn, disk_name="d1", sequence_num=1, pci_type="VIRTIO",
                       size_bytes=GIB, block_size=bs, storage_type="LOCALPOME", datastore_urn="ds", cbt=None,
                       base_point_id=None)
        for i in range(64):  # compressible blocks: a few bytes stored per MiB read
            d.put_block(i, bytes([i + 1]) * bs)
        point = w.commit()
    plan = Plan(vms=[plan_vm(vm, previous=point)], full=False, created=0.0)
    add_launch_findings(plan, repo=repo, room=(10 * GIB, GIB))
    msg = space_note(plan.vms[0]).message
    assert "~64.0 MiB to read, stored/read 0.00 over 1 earlier point(s)" in msg, msg  # the 64 blocks it held
    assert msg.startswith("needs ~3.4 KiB")   # 64 MiB at the history's stored/read ratio (compressible blocks)
    repo.close()


async def test_space_blocker_refuses_before_touching_the_vrm(client: VrmClient, control: httpx.AsyncClient,
                                                             tmp_path: Path) -> None:
    repo = Repository.open(tmp_path / "repo")
    ready = (await control.get("/sim/edge-cases")).json()["ready"]
    plan = await build_plan(client, ready[:1], repo)
    assert plan.vms[0].disks[0].used_bytes == int(0.03 * 1024) << 20  # the simulator's userUsedSize
    add_launch_findings(plan, repo=repo, room=(GIB, GIB))
    before = (await control.get("/sim/stats")).json()["byMethod"]
    job = JobRecord(id="j1", targets=ready[:1])
    runner = BackupRunner(client, repo, settings=fast())
    try:
        await runner.run(job, plan, Reporter(job))
    finally:
        runner.close()
    assert job.state == "failed" and job.vms[0].state == "refused"
    assert "repository too full" in job.vms[0].reason
    after = (await control.get("/sim/stats")).json()["byMethod"]
    assert after.get("POST") == before.get("POST")  # no snapshot, no resource: nothing was asked of the VRM
    repo.close()


class _FullDisk:
    """The repository module's view of ``os`` with a filesystem that fills after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.written = 0
        self.refused = 0

    def _take(self, n: int) -> None:
        if self.written + n > self.room:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += n

    def module(self) -> Any:
        def write(fd: int, data: Any) -> int:
            self._take(len(data))
            return os.write(fd, data)

        def writev(fd: int, parts: Any) -> int:
            self._take(sum(len(p) for p in parts))
            return os.writev(fd, parts)

        ns = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
        ns.write, ns.writev = write, writev
        return ns


async def _assert_clean_end(job: JobRecord, repo: Repository, control: httpx.AsyncClient) -> None:
    assert job.state == "failed"
    reason = job.vms[0].reason
    assert reason.startswith("repository full: ") and "needs ~" in reason, reason
    assert "fctui repo gc" in reason and "internal error" not in reason
    assert repo.points() == []                               # no half point listed
    assert list(repo.pending_dir.iterdir()) == []            # no lease left
    stats = (await control.get("/sim/stats")).json()
    assert stats["resourcesPerHost"] == {}, stats
    assert stats["liveSnapshotsPerVm"].get(job.vms[0].urn, 0) == 0, stats
    age_chunks(repo.chunks_dir)   # written before this gc, also on a coarse file clock (gc spares chunks as new as it)
    gc = repo.gc()                                           # what it wrote is reclaimable
    assert gc.chunks_removed > 0 and gc.chunks_referenced == 0


async def test_enospc_mid_backup_ends_the_job_cleanly(client: VrmClient, control: httpx.AsyncClient,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Repository.open(tmp_path / "repo")
    ready = (await control.get("/sim/edge-cases")).json()["ready"]
    disk = _FullDisk(room=4 << 20)
    monkeypatch.setattr(repository_module, "os", disk.module())
    plan = await build_plan(client, ready[:1], repo)
    job = JobRecord(id="j1", targets=ready[:1])
    runner = BackupRunner(client, repo, journal=MemoryJournal(), settings=fast())
    try:
        await runner.run(job, plan, Reporter(job))
    finally:
        runner.close()
    assert disk.refused > 0
    monkeypatch.undo()
    await _assert_clean_end(job, repo, control)
    repo.close()


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 16 MiB tmpfs (needs root and mount permission; skipped otherwise)."""
    d = Path(tempfile.mkdtemp(prefix="fctui-full-"))
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        d.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here ({(r.stderr or r.stdout).strip() or 'mount failed'}); "
                    "the injected-ENOSPC test covers the same path")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


async def test_real_full_filesystem_ends_the_job_cleanly(client: VrmClient, control: httpx.AsyncClient,
                                                         small_fs: Path) -> None:
    repo = Repository.open(small_fs / "repo")
    ready = (await control.get("/sim/edge-cases")).json()["ready"]

    async def backup(**settings: Any) -> JobRecord:
        plan = await build_plan(client, ready[1:2], repo)   # three 1 GB disks, ~90 MB of data: does not fit
        job = JobRecord(id="j1", targets=ready[1:2])
        runner = BackupRunner(client, repo, settings=fast(**settings))
        try:
            await runner.run(job, plan, Reporter(job))
        finally:
            runner.close()
        return job

    # Once the CBT bitmap says what is to be read, a VM that cannot fit is stopped before any byte is.
    job = await backup()
    reason = job.vms[0].reason
    assert job.state == "failed" and reason.startswith("repository full: ") and "nothing was read" in reason
    assert job.vms[0].disks[0].bytes_read == 0 and repo.disk_usage() == (0, 0)
    # The disk fills while the backup writes (no check before, as when another writer filled it):
    job = await backup(space_check=False)
    await _assert_clean_end(job, repo, control)
    assert shutil.disk_usage(small_fs).free > 8 << 20   # gc gave the space back
    repo.close()


async def test_agent_is_idle_after_a_full_repository(sim: Any, dirs: dict[str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """In the job agent: the job ends failed with the message, leaves the running list (even when the
    state store cannot record its end either), watchers hear its end, and the agent uses no CPU after."""
    from fctui.agent.server import Agent
    from fctui.sim import EmbeddedSimulator
    disk = _FullDisk(room=4 << 20)
    monkeypatch.setattr(repository_module, "os", disk.module())
    with EmbeddedSimulator(sim.config) as es:
        agent = Agent(settings=fast())
        try:
            async with sim_control(es.url) as ctl:
                ready = (await ctl.get("/sim/edge-cases")).json()["ready"]
            ends: list[dict] = []
            agent.broadcast = lambda ev: ends.append(ev) if ev.get("event") == "end" else None  # type: ignore
            save = agent.store.save_job

            def save_job(job: JobRecord) -> None:  # the state disk fills too once the job has failed
                if job.is_final:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                save(job)
            agent.store.save_job = save_job  # type: ignore[method-assign]
            job = agent.submit({"targets": ready[:1], "vrm": es.url, "user": "admin", "password": "Admin@123"})
            await agent.tasks[job.id]
            assert job.state == "failed" and job.vms[0].reason.startswith("repository full: "), job.error
            assert agent.tasks == {} and agent.is_idle()
            assert ends == [{"event": "end", "job": job.id, "state": "failed"}]
            async with sim_control(es.url) as ctl:
                stats = (await ctl.get("/sim/stats")).json()
            assert stats["resourcesPerHost"] == {} and stats["sessions"] == 0
            cpu0, t0 = time.process_time(), time.monotonic()
            await __import__("asyncio").sleep(1.0)
            assert time.process_time() - cpu0 < 0.3 * (time.monotonic() - t0)  # nothing spins
        finally:
            await agent.shutdown()


def test_demo_inventory_keeps_the_repository_small() -> None:
    """`fctui demo`'s VMs keep realistic provisioned sizes but little data: all disks of all 60 VMs hold
    7.6 GiB (the 26 ready VMs' backups measured 4.1 GiB), against 3.6 TiB before."""
    from fctui.sim import Simulator, SimConfig, demo_config
    demo, plain = Simulator(demo_config(vms=60)), Simulator(SimConfig(vms=60))

    def written(sim: Any) -> float:
        return sum(v.content.fill * v.size_mb for v in sim.volumes.values()) / 1024

    assert written(demo) < 10, written(demo)              # GiB, every disk of every VM
    assert written(plain) > 400 * written(demo)           # the same inventory (edge-case VMs keep theirs)
    assert max(v.size_mb for v in demo.volumes.values()) >= 100 * 1024  # sizes as in the plain one
