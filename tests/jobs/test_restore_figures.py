"""Issue 15 bug 8: an overwrite restore reports what it plans (the whole volume is read back and compared),
so its figures never say "read 1.0 GiB of 0 B" and a finished one never shows "planning" or "planned ?".

Against the simulator over HTTP, with the restore engine's own helpers (tests/jobs/test_restore_engine.py).
"""

from __future__ import annotations

from typing import Any

import httpx

from fctui.jobs.model import JobRecord
from fctui.jobs.progress import JobsBoard
from fctui.jobs.restore import RestoreRequest, plan_restore, run_restore
from fctui.jobs.runner import Reporter
from fctui.repo import Repository
from fctui.vrm import VrmClient
from tests.jobs.test_restore_engine import backup, fast, multi_disk_vm, sim_config, vol_id  # noqa: F401


async def test_overwrite_restore_reports_its_planned_bytes(client: VrmClient, control: httpx.AsyncClient,
                                                           repo: Repository) -> None:
    vm = await multi_disk_vm(client, control)
    point_id = await backup(client, repo, vm.name, "b1")
    for d in vm.disks:
        await control.post(f"/sim/volumes/{vol_id(d.volume_urn)}/write", json={"ranges": [[0, 2]]})
    plan = await plan_restore(client, repo, RestoreRequest(point_id, "original", stop_vm=True))
    assert not plan.blocked and {d.mode for d in plan.disks} == {"differing"}

    events: list[dict[str, Any]] = []
    job = await run_restore(client, repo, plan, settings=fast(verify=False),
                            reporter=Reporter(JobRecord(id="x"), events.append))
    assert job.state == "succeeded", job.error
    sizes = {d.source_volume: d.size_bytes for d in plan.disks}
    # every progress event carries the plan: the whole volume, read back and compared
    progress = [e for e in events if e.get("event") == "progress"]
    assert progress and all(e["bytes_planned"] == sizes[e["volume"]] for e in progress)
    for d in job.vms[0].disks:
        assert d.bytes_planned == sizes[d.volume] and d.bytes_read == d.bytes_planned
    t = job.totals()
    assert t["bytes_planned"] == sum(sizes.values()) == t["bytes_read"]

    board = JobsBoard(lambda: 0.0)
    board.apply({"event": "job", "job": job.to_dict()})
    fig = board.figures(job.id)
    assert fig is not None and fig.planned == t["bytes_planned"] and fig.fraction == 1.0
