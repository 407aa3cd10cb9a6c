"""Self-healing incrementals against the simulator: a CBT incremental never inherits a block whose chunk
is gone from its base point (quarantined by verify, deleted); it reads that block again from the VRM in
the same backup, even though CBT says unchanged, and says how many it healed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import small_disks

from fctui.jobs.planner import build_plan
from fctui.repo import RepoError, Repository
from fctui.vrm import VrmClient

from tests.jobs.test_jobs_runner import assert_nothing_left, backup, digest, vol_id


@pytest.fixture
def sim_config() -> Any:
    # 1 GB edge disks, 1 % written: about 10 MB per disk.
    return small_disks(0.01)




def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    path.write_bytes(bytes(raw))


async def one_disk_vm(client: VrmClient, edges: dict[str, list[str]]) -> Any:
    return next(v for v in [await client.vm(x) for x in edges["ready"]] if len(v.disks) == 1)


async def test_incremental_reads_again_the_blocks_whose_base_chunk_is_gone(
        client: VrmClient, control: httpx.AsyncClient, repo: Repository, edges: dict[str, list[str]]) -> None:
    vm = await one_disk_vm(client, edges)
    vol = vm.disks[0].volume_urn
    job, _ = await backup(client, repo, [vm.urn], job_id="full")
    assert job.state == "succeeded", job.error
    base = job.restore_points[0]
    blocks = repo.open_disk(base, vol).block_digests()
    digests = sorted(set(blocks.values()))
    assert len(digests) >= 3
    quarantined, deleted = digests[0], digests[1]
    # verify quarantines a damaged chunk (renamed .bad); another one is simply gone
    flip_byte(repo.chunk_path(quarantined))
    assert not repo.verify(point_ids=[base]).ok
    assert repo.chunk_path(quarantined).with_name(quarantined + ".bad").exists()
    repo.chunk_path(deleted).unlink()
    lost = sorted(i for i, h in blocks.items() if h in (quarantined, deleted))

    # nothing written on the VM since: CBT says every block is unchanged
    content = await digest(control, vol)
    events: list[dict[str, Any]] = []
    job2, plan2 = await backup(client, repo, [vm.urn], job_id="incr", sink=events.append)
    assert job2.state == "succeeded", job2.error
    new = job2.restore_points[0]
    assert repo.verify(point_ids=[new]).ok  # the new point is whole ...
    assert repo.open_disk(new, vol).sha256() == content  # ... and holds the VM's data
    d = job2.vms[0].disks[0]
    assert d.mode == "incremental"
    assert d.blocks_healed == len(lost) and job2.vms[0].blocks_healed == len(lost)
    assert d.blocks_planned == len(lost) and d.bytes_read > 0  # only the lost blocks were read
    summary = job2.summary_json()  # what `fctui jobs --json` and `fctui backup --json` print
    assert summary["vms"][0]["blocks_healed"] == len(lost)
    assert summary["vms"][0]["disks"][0]["blocks_healed"] == len(lost)
    assert any("healing" in e["message"] and str(len(lost)) in e["message"] for e in job2.log)
    assert repo.open_disk(base, vol).read_block(lost[0])  # the rewritten chunk heals the base too
    await assert_nothing_left(control, vm.urn)

    # and the next incremental has nothing left to heal
    job3, _ = await backup(client, repo, [vm.urn], job_id="incr2")
    assert job3.state == "succeeded" and job3.vms[0].disks[0].blocks_healed == 0
    assert job3.vms[0].disks[0].bytes_read == 0


async def test_healing_adds_to_the_changed_blocks(client: VrmClient, control: httpx.AsyncClient,
                                                  repo: Repository, edges: dict[str, list[str]]) -> None:
    vm = await one_disk_vm(client, edges)
    vol = vm.disks[0].volume_urn
    job, _ = await backup(client, repo, [vm.urn], job_id="full")
    assert job.state == "succeeded", job.error
    blocks = repo.open_disk(job.restore_points[0], vol).block_digests()
    gone = sorted(set(blocks.values()))[0]
    repo.chunk_path(gone).unlink()
    lost = {i for i, h in blocks.items() if h == gone}
    r = await control.post(f"/sim/volumes/{vol_id(vol)}/write", json={"ranges": [[3, 2]]})
    assert r.status_code == 200
    content = await digest(control, vol)
    job2, _ = await backup(client, repo, [vm.urn], job_id="incr")
    assert job2.state == "succeeded", job2.error
    assert repo.verify(point_ids=[job2.restore_points[0]]).ok
    assert repo.open_disk(job2.restore_points[0], vol).sha256() == content
    d = job2.vms[0].disks[0]
    assert d.blocks_healed == len(lost)
    assert d.blocks_planned == len(lost | {3, 4})


async def test_commit_refuses_a_point_that_still_inherits_a_missing_chunk(
        client: VrmClient, repo: Repository, edges: dict[str, list[str]]) -> None:
    """A caller that ignores heal_blocks cannot commit a damaged point (the repository's own guard)."""
    vm = await one_disk_vm(client, edges)
    job, _ = await backup(client, repo, [vm.urn], job_id="full")
    base = repo.point(job.restore_points[0])
    disk = base.disks[0]
    blocks = repo.open_disk(base.id, disk.volume_urn).block_digests()
    repo.chunk_path(next(iter(blocks.values()))).unlink()
    plan = await build_plan(client, [vm.urn], repo)
    assert plan.vms[0].disks[0].base_point_id == base.id
    with repo.new_point(vm_urn=vm.urn, vm_name=vm.name, job_id="x", kind="cbt", vm_config={},
                        snapshot_urn="s", created=base.created + 1) as pw:
        w = pw.add_disk(volume_urn=disk.volume_urn, disk_name=disk.disk_name, sequence_num=None,
                        pci_type="", size_bytes=disk.size_bytes, block_size=disk.block_size, storage_type="",
                        datastore_urn="", cbt=None, base_point_id=base.id)
        assert w.heal_blocks
        with pytest.raises(RepoError, match="were not read again"):
            pw.commit()
    assert [p.id for p in repo.points()] == [base.id]


async def test_incremental_on_a_base_without_manifest_fails_cleanly_then_forget_runs_full(
        client: VrmClient, control: httpx.AsyncClient, repo: Repository, edges: dict[str, list[str]]) -> None:
    vm = await one_disk_vm(client, edges)
    job, _ = await backup(client, repo, [vm.urn], job_id="full")
    base = job.restore_points[0]
    (repo.points_dir / f"{base}.json").unlink()
    repo._manifests.clear()  # as another process (the CLI) sees it
    job2, _ = await backup(client, repo, [vm.urn], job_id="incr")
    assert job2.state == "failed"
    why = job2.vms[0].reason
    assert base in why and "is missing" in why and f"fctui repo forget {base}" in why, why
    assert "Traceback" not in why
    assert job2.restore_points == [] and [p.id for p in repo.points()] == [base]
    await assert_nothing_left(control, vm.urn)
    repo.forget(base)
    job3, _ = await backup(client, repo, [vm.urn], job_id="again")
    assert job3.state == "succeeded", job3.error
    assert job3.vms[0].disks[0].mode == "full"
    assert repo.verify().ok
