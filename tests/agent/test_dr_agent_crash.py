"""kill -9 of the job agent mid-rehearsal: the restored VM is on site B and booting when the agent dies. After
a restart the job is ``interrupted``, the recovery run ``failed`` with the reason and the clean-up owed, and
once the agent has B's password again its cleanup queue removes everything the rehearsal made: B's listing
is what it was before. Two simulators on loopback and the real agent process."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import AgentProc
from tests.sites import SIM_PASSWORD, two_sites

from fctui.jobs.dr import DrStore, RecoveryPlan
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.jobs.sitemap import SiteMapping, SiteMappingStore, suggest_mapping
from fctui.repo import Repository
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_id


async def listing(client: VrmClient, site: str) -> tuple[set[str], set[str]]:
    return ({v.urn for v in await client.vms(site, detail=0, templates=None)},
            {v.urn for v in await client.volumes(site)})


async def test_kill_9_mid_rehearsal_then_restart_leaves_site_b_as_it_was(dirs: dict[str, str], agent: AgentProc,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", SIM_PASSWORD)
    # Tools never come up within the test: the VM is surely booting when the agent dies
    with two_sites(vms=0, edge_fill=0.002, ready_vms_per_host=(1,), boot_seconds=3600.0) as (a, b):
        repo = Repository.open(Path(dirs["FCTUI_DATA_DIR"]) / "repo")
        async with VrmClient(a.url, "admin", SIM_PASSWORD) as ca, VrmClient(b.url, "admin", SIM_PASSWORD) as cb:
            site_a, site_b = (await ca.sites())[0], (await cb.sites())[0]
            vms = [v for v in await ca.vms(site_a.uri, detail=0) if v.name.startswith("ready-")][:1]
            job = JobRecord(id="b-1", targets=[v.name for v in vms])
            runner = BackupRunner(ca, repo, settings=RunnerSettings(task_interval=0.02, busy_interval=0.05,
                                                                    watch_interval=0.05, release_wait_s=5.0))
            try:
                await runner.run(job, await build_plan(ca, job.targets, repo), Reporter(job))
            finally:
                runner.close()
            assert job.state == "succeeded", job.error
            hosts = {h.urn: h.arch for h in await cb.hosts(site_b.uri)}
            m = SiteMapping(site_id(site_a.urn), site_id(site_b.urn))
            for p in repo.points():
                m = suggest_mapping(p, m.target_site, await cb.datastores(site_b.uri),
                                    await cb.port_groups(site_b.uri), m, arch=p.vm_config.get("arch", ""),
                                    host_arch=hosts)
            SiteMappingStore().save(m)
            before = await listing(cb, site_b.uri)
        repo.close()
        DrStore().save_plan(RecoveryPlan(name="erp", target="b", vms=[v.urn for v in vms],
                                         vm_names={v.urn: v.name for v in vms}, tools_timeout_s=3600.0))

        client = await agent.start()
        job_id = (await client.request("submit", type="rehearsal", targets=["erp"], vrm=b.url, user="admin",
                                       password=SIM_PASSWORD, dr={"plan": "erp", "verify": False}))["job"]

        async def until_booting() -> None:
            async for ev in client.watch(job_id):
                if ev.get("event") == "dr" and any(v["state"] == "booting" for v in ev["run"]["vms"]):
                    return
        await asyncio.wait_for(until_booting(), 120)
        agent.kill9()
        async with VrmClient(b.url, "admin", SIM_PASSWORD) as cb:
            made = await listing(cb, site_b.uri)
        assert made[0] - before[0] and made[1] - before[1]      # the rehearsal's VM and volume are there

        client = await agent.start()
        assert (await client.request("get", job=job_id))["job"]["state"] == "interrupted"
        run = DrStore().runs("erp")[0]
        assert run.job_id == job_id and run.state == "failed" and "interrupted" in run.error
        assert run.vms[0].state == "failed" and "cleanup queue" in run.cleanup_error
        # the agent has B's password again (the next job on B, or `fctui jobs cleanup`): the queue empties
        r: dict[str, Any] = await client.request("credentials", vrm=b.url, user="admin", password=SIM_PASSWORD)
        assert r["failed"] == [], r
        async with VrmClient(b.url, "admin", SIM_PASSWORD) as cb:
            assert await listing(cb, site_b.uri) == before
