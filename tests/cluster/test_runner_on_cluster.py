"""The engine's BackupRunner, unchanged, on ClusterScheduler: two agents (two NATS connections, two VRM
sessions) backing up VMs of the same hosts never hold more backup resources on a host than per_host,
as the simulator counts them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from tests.conftest import sim_client, small_disks
from tests.jobs.test_jobs_runner import assert_nothing_left, fast_settings

from fctui.cluster.slots import ClusterScheduler
from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter
from fctui.repo import Repository


@pytest.fixture
def sim_config() -> Any:
    return small_disks()


async def test_two_agents_share_the_per_host_limit(sim: Any, control: httpx.AsyncClient, repo: Repository,
                                                   edges: dict[str, list[str]], connect: Any) -> None:
    names = ["ready", "consistency-not-euleros", "guest-os-unlisted", "snapshot-limit-near", "target-space-low"]
    targets = [edges["ready"][0], edges["ready"][1]] + [edges[n][0] for n in names[1:]]
    waits: list[str] = []

    def sink(ev: dict[str, Any]) -> None:
        if ev.get("event") == "job":
            waits.extend(v["reason"] for v in ev["job"]["vms"] if v["state"] == "waiting")

    async def agent(name: str, job_id: str, mine: list[str]) -> JobRecord:
        scheduler = ClusterScheduler(await connect(), name, per_host=2, per_datastore=2)
        async with sim_client(sim) as client:
            plan = await build_plan(client, mine, repo)
            job = JobRecord(id=job_id, targets=mine)
            runner = BackupRunner(client, repo, scheduler=scheduler, journal=MemoryJournal(),  # type: ignore[arg-type]
                                  settings=fast_settings())
            try:
                await runner.run(job, plan, Reporter(job, sink))
            finally:
                runner.close()
        await scheduler.drain()
        assert scheduler.held() == []
        await scheduler.close()
        return job

    jobs = await asyncio.gather(agent("agent-a", "J-a", targets[0::2]), agent("agent-b", "J-b", targets[1::2]))
    for job in jobs:
        assert job.state == "succeeded", job.error
    assert sum(len(j.restore_points) for j in jobs) == len(targets)
    stats = (await control.get("/sim/stats")).json()
    assert stats["maxResourcesPerHost"] and max(stats["maxResourcesPerHost"].values()) <= 2
    assert "host-sockets-busy" in waits
    await assert_nothing_left(control, targets[0])
