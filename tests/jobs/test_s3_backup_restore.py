"""The engine on an S3 repository: a VM backed up full then incremental (BackupRunner against the VRM
simulator) and restored from the incremental to a new VM, the disks byte-identical to the source."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.conftest import small_disks
from tests.jobs.test_restore_engine import backup, digest, fast, vol_id

from fctui.jobs.restore import RestoreRequest, plan_restore, restore_result, run_restore
from fctui.repo import Repository
from fctui.vrm import VrmClient


@pytest.fixture
def sim_config() -> Any:
    return small_disks(0.005)  # 1 GB edge disks, 0.5 % written: a few MB per disk


async def test_backup_and_restore_through_s3(client: VrmClient, control: httpx.AsyncClient, s3_repo_url: str) -> None:
    repo = Repository.open(s3_repo_url)
    assert repo.room() is None  # no space rule on an object store
    edges = (await control.get("/sim/edge-cases")).json()
    vm = next(v for v in [await client.vm(x) for x in edges["ready"]] if len(v.disks) == 1)
    vol = vm.disks[0].volume_urn
    await backup(client, repo, vm.name, "s3-full")
    await control.post(f"/sim/volumes/{vol_id(vol)}/write", json={"blocks": 20})
    expected = await digest(control, vol)
    p_incr = await backup(client, repo, vm.name, "s3-incr")
    assert repo.point(p_incr).disks[0].mode == "incremental"
    other = Repository.open(s3_repo_url, create=False)  # as another machine would read it
    plan = await plan_restore(client, other, RestoreRequest(p_incr, "new", name="from-s3", power_on=False))
    assert not plan.blocked, plan.findings
    job = await run_restore(client, other, plan, settings=fast())
    assert job.state == "succeeded", job.error
    target = restore_result(job)["volumes"][0]
    assert target["verified"] is True
    assert await digest(control, target["target"]) == expected
    assert other.verify().ok
