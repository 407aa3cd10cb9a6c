"""Restore never writes a byte it has not verified (issue #12, item 3), against the simulator over HTTP.

A damaged restore point (a flipped byte in a chunk, a missing or quarantined chunk, a missing manifest)
must change nothing on the VRM: the plan names it as a blocker when the damage is visible without
reading (missing files), and the run refuses before the first write when it is only visible by hashing.
Restored disks are checked independently with the simulator's ``/sim/volumes/{id}/digest``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.conftest import small_disks

from fctui.jobs.journal import MemoryJournal
from fctui.jobs.restore import RestoreRequest, plan_restore, run_restore
from fctui.cli.restore import format_plan
from fctui.repo import Repository
from fctui.repo.repository import CHUNK_RAW
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_uri

from tests.jobs.test_restore_engine import backup, digest, fast, multi_disk_vm, vol_id, world


@pytest.fixture
def sim_config() -> Any:
    return small_disks()



def first_stored(repo: Repository, point_id: str, volume_urn: str) -> tuple[int, str]:
    """The first stored block of a disk and its chunk digest."""
    blocks = repo.open_disk(point_id, volume_urn).block_digests()
    block = min(blocks)
    return block, blocks[block]


def flip_a_byte(repo: Repository, digest_: str) -> None:
    """Silent corruption: a well-formed chunk whose content differs in one byte from what its name says."""
    data = bytearray(repo.read_chunk(digest_))
    data[len(data) // 2] ^= 0x01
    repo.chunk_path(digest_).write_bytes(CHUNK_RAW + bytes(data))


async def post_count(control: httpx.AsyncClient) -> dict[str, int]:
    by = (await control.get("/sim/stats")).json()["byMethod"]
    return {k: v for k, v in by.items() if k != "GET"}


async def test_flipped_byte_over_original_changes_nothing(client: VrmClient, control: httpx.AsyncClient,
                                                          repo: Repository) -> None:
    """The bug of issue #12 item 3: the guest changed the block whose chunk is damaged, so a restore
    over the original would write that chunk. It must refuse before stopping the VM or writing."""
    vm = await multi_disk_vm(client, control)
    vols = [d.volume_urn for d in vm.disks]
    point_id = await backup(client, repo, vm.name, "b1")
    disk = repo.point(point_id).disk(vols[0])
    block, chunk = first_stored(repo, point_id, vols[0])
    flip_a_byte(repo, chunk)
    for v in vols:  # the guest changes the damaged block (and others) after the backup
        await control.post(f"/sim/volumes/{vol_id(v)}/write", json={"ranges": [[block, 1], [block + 40, 2]]})
    before = {v: await digest(control, v) for v in vols}
    assert (await client.vm(vm.urn)).status == "running"

    plan = await plan_restore(client, repo, RestoreRequest(point_id, "original", stop_vm=True))
    assert not plan.blocked, plan.findings  # a flipped byte is only found by hashing
    changes = await post_count(control)
    journal = MemoryJournal()
    job = await run_restore(client, repo, plan, settings=fast(), journal=journal)

    assert job.state == "failed"
    assert {v: await digest(control, v) for v in vols} == before  # production disks untouched
    assert (await client.vm(vm.urn)).status == "running"           # and the VM was not stopped
    assert point_id in job.error and disk.disk_name in job.error and f"block {block}" in job.error
    assert "nothing was written" in job.error
    assert await post_count(control) == changes                    # no stop, no resource, no PUT
    assert journal.pending() == [] and journal.chain_marks() == {}


async def test_flipped_byte_single_disk_creates_nothing(client: VrmClient, control: httpx.AsyncClient,
                                                        repo: Repository) -> None:
    vm = await multi_disk_vm(client, control)
    src = vm.disks[1].volume_urn
    point_id = await backup(client, repo, vm.name, "b1")
    block, chunk = first_stored(repo, point_id, src)
    flip_a_byte(repo, chunk)
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "disk", disk_volume=src, name="one-disk"))
    assert not plan.blocked
    changes = await post_count(control)
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "failed" and f"block {block}" in job.error and point_id in job.error
    assert await post_count(control) == changes  # not even a volume was created and removed


async def test_flipped_byte_restore_to_new_stops_before_the_block(client: VrmClient, control: httpx.AsyncClient,
                                                                  repo: Repository) -> None:
    """To a new VM the chunk is hashed as it is read for writing: the restore stops before that block,
    names it, and removes the volumes it created."""
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    disk = repo.point(point_id).disks[0]
    block, chunk = first_stored(repo, point_id, disk.volume_urn)
    flip_a_byte(repo, chunk)
    site = site_uri(vm.urn)
    before = await world(client, site)
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "new", name="from-damaged"))
    journal = MemoryJournal()
    job = await run_restore(client, repo, plan, settings=fast(), journal=journal)
    assert job.state == "failed"
    assert point_id in job.error and disk.disk_name in job.error and f"block {block}" in job.error
    assert "stopped before writing that block" in job.error
    assert await world(client, site) == before  # no VM, no volume left
    assert (await control.get("/sim/stats")).json()["resourcesPerHost"] == {}
    assert journal.pending() == []


@pytest.mark.parametrize("damage", ["missing", "quarantined", "manifest"])
async def test_incomplete_point_is_a_plan_blocker(client: VrmClient, control: httpx.AsyncClient,
                                                  repo: Repository, damage: str) -> None:
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    disk = repo.point(point_id).disks[0]
    block, chunk = first_stored(repo, point_id, disk.volume_urn)
    path = repo.chunk_path(chunk)
    if damage == "missing":
        path.unlink()
    elif damage == "quarantined":
        path.rename(path.with_name(chunk + ".bad"))
    else:
        (repo.points_dir / f"{point_id}.json").unlink()
        repo = Repository.open(repo.path)  # a fresh process: no manifest cached in memory
    site = site_uri(vm.urn)
    before = await world(client, site)
    changes = await post_count(control)

    for req in (RestoreRequest(point_id, "new", name="x"), RestoreRequest(point_id, "original", stop_vm=True),
                RestoreRequest(point_id, "disk", disk_volume=disk.volume_urn)):
        plan = await plan_restore(client, repo, req)
        assert plan.blocked, req.target
        damaged = [f for f in plan.blockers if f.rule == "restore-point-damaged"]
        assert damaged and point_id in damaged[0].message, req.target
        if damage == "manifest":
            assert "manifest" in damaged[0].message and len(damaged) == 1
        else:
            assert damaged[0].disks == [disk.volume_urn]
            assert disk.disk_name in damaged[0].message and f"block {block}" in damaged[0].message
            assert damage in damaged[0].message
        assert "restore-point-damaged" in format_plan(plan)  # the dry run shows it
        job = await run_restore(client, repo, plan, settings=fast())
        assert job.state == "failed" and "restore-point-damaged" in job.error
    assert await world(client, site) == before
    assert await post_count(control) == changes
    assert (await client.vm(vm.urn)).status == "running"


async def test_healthy_point_plans_clean_and_restores(client: VrmClient, control: httpx.AsyncClient,
                                                      repo: Repository) -> None:
    """The checks do not get in the way of a good point: over the original, the changed blocks are
    written back and the disk equals the point."""
    vm = await multi_disk_vm(client, control)
    v0 = vm.disks[0].volume_urn
    at_point = await digest(control, v0)
    point_id = await backup(client, repo, vm.name, "b1")
    await control.post(f"/sim/volumes/{vol_id(v0)}/write", json={"ranges": [[0, 3]]})
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "original", stop_vm=True))
    assert not plan.blocked and not [f for f in plan.findings if f.rule == "restore-point-damaged"]
    job = await run_restore(client, repo, plan, settings=fast())
    assert job.state == "succeeded", job.error
    assert await digest(control, v0) == at_point
    assert any("checked before writing" in e["message"] for e in job.log)
