"""Acceptance (issue 19, item 3): a 10-VM recovery plan with two boot groups rehearsed from site A into
site B. Per-VM restore, boot and recovery times and the run's total are reported, a VM that does not boot
is caught with its reason (the next group waits for it), and site B's listing (VMs, volumes) is exactly
what it was before.

Two simulators of different sites in-process (ASGI) on one ManualClock. During the backups on A a ticker
moves it (about 100x real time); during the rehearsal on B the clock moves only by requests (0.5 s of sim
time per request to B) and by the runner's injected sleep while it waits for VM Tools, so the measured
times do not depend on how busy the machine is, and no test time is spent waiting for a boot. Real backups
of ten small VMs on A (1 GB disks, ~2 MB written).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from tests.jobs.test_restore_engine import fast
from tests.sites import asgi_client, asgi_control, base_url, two_site_sims

from fctui.jobs.dr import BootGroup, RecoveryPlan
from fctui.jobs.drrun import RecoverySettings, new_run, run_recovery
from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.jobs.sitemap import SiteMapping, suggest_mapping
from fctui.repo import Repository
from fctui.sim import ManualClock, Simulator, create_app
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_id

TOOLS_TIMEOUT = 60.0
BOOT = 20.0       # SimConfig.boot_seconds (time_scale 1: sim seconds)


class RequestClock(httpx.AsyncBaseTransport):
    """The simulator's transport, moving ``clock`` by ``step`` sim seconds per request: VRM tasks progress
    with the client's polls, not with the machine's speed."""

    def __init__(self, sim: Simulator, clock: ManualClock, step: float = 0.5) -> None:
        self.inner, self.clock, self.step = httpx.ASGITransport(app=create_app(sim)), clock, step

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.clock.advance(self.step)
        return await self.inner.handle_async_request(request)


async def listing(client: Any, site: str) -> tuple[set[tuple[str, str]], set[str]]:
    vms = {(v.urn, v.name) for v in await client.vms(site, detail=0, templates=None)}
    return vms, {v.urn for v in await client.volumes(site)}


async def test_rehearsal_of_ten_vms_in_two_groups_into_site_b(tmp_path: Any) -> None:
    clock = ManualClock()
    sim_a, sim_b = two_site_sims(vms=0, clock=clock, time_scale=1.0, edge_fill=0.002,
                                 ready_vms_per_host=(5, 5), boot_seconds=BOOT)

    async def ticker() -> None:   # VRM tasks progress: 0.5 s of sim time per 5 ms
        while True:
            await asyncio.sleep(0.005)
            clock.advance(0.5)

    async def sim_sleep(seconds: float) -> None:   # the runner waits for Tools: time jumps
        clock.advance(seconds)
        await asyncio.sleep(0)

    repo = Repository.open(tmp_path / "repo")
    tick = asyncio.create_task(ticker())
    try:
        b_client = VrmClient(base_url(sim_b), sim_b.config.user, sim_b.config.password,
                             transport=RequestClock(sim_b, clock))
        async with asgi_client(sim_a) as a, b_client as b, asgi_control(sim_b) as control_b:
            site_a, site_b = (await a.sites())[0].uri, (await b.sites())[0].uri
            vms = sorted((v for v in await a.vms(site_a, detail=0) if v.name.startswith("ready-")),
                         key=lambda v: v.name)
            assert len(vms) == 10
            plan_b = await build_plan(a, [v.name for v in vms], repo)
            job = JobRecord(id="b-1", targets=[v.name for v in vms])
            runner = BackupRunner(a, repo, settings=RunnerSettings(
                watch_interval=0.05, busy_retry_s=5.0, busy_interval=0.05, task_interval=0.02,
                release_wait_s=5.0, cleanup_within_s=10.0))
            try:
                await runner.run(job, plan_b, Reporter(job))
            finally:
                runner.close()
            assert job.state == "succeeded", job.error
            tick.cancel()   # from here on, time on B moves with its requests and the runner's sleeps
            with contextlib.suppress(asyncio.CancelledError):
                await tick

            # The site pair's mapping, as the console would offer it (datastores by class and arch).
            target_site = site_id((await b.sites())[0].urn)
            stores, hosts = await b.datastores(site_b), {h.urn: h.arch for h in await b.hosts(site_b)}
            groups = await b.port_groups(site_b)
            mapping = SiteMapping(site_id(vms[0].urn), target_site)
            for p in repo.points():
                mapping = suggest_mapping(p, target_site, stores, groups, mapping, arch=p.vm_config.get("arch", ""),
                                          host_arch=hosts)
            isolated = next(g for g in groups if g.name == "dr-isolated")
            db = [v.name for v in vms[:5]]          # ready-cna-01-*: the first group
            failing = db[2]
            plan = RecoveryPlan(name="erp", target="b", vms=[v.urn for v in vms],
                                vm_names={v.urn: v.name for v in vms}, selection="filter:re:^ready-",
                                groups=[BootGroup("databases", ["ready-cna-01-*"]),
                                        BootGroup("apps", ["READY-CNA-02-*"])],
                                rehearsal_network=isolated.urn, tools_timeout_s=TOOLS_TIMEOUT)
            r = await control_b.post("/sim/boot-failures", json={"names": [f"{failing}-rehearsal-*"]})
            assert r.status_code == 200

            before = await listing(b, site_b)
            run = new_run(plan, "rehearsal")
            journal = MemoryJournal()
            seen: list[str] = []
            nics: dict[str, list[str]] = {}

            def changed(rr: Any) -> None:   # what the console would poll: booting VMs seen while they ran
                for v in rr.vms:
                    if v.state == "booting" and v.restored_urn and v.restored_urn not in seen:
                        seen.append(v.restored_urn)
                        vm = sim_b.vms.get(v.restored_urn.rsplit(":", 1)[1])
                        nics[v.vm_name] = [n.port_group_urn for n in vm.nics] if vm else []

            await run_recovery(b, repo, plan, run, mapping=mapping, journal=journal, on_change=changed,
                               clock=clock.now, sleep=sim_sleep,
                               settings=RecoverySettings(tools_poll_s=2.0, restore=fast(verify=False)))
            after = await listing(b, site_b)
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick

    by_name = {v.vm_name: v for v in run.vms}
    assert [v.group for v in run.vms] == ["databases"] * 5 + ["apps"] * 5
    # The VM that does not boot: caught, with its reason; every other VM up with its times.
    bad = by_name[failing]
    assert bad.state == "failed" and "did not boot" in bad.error and "1 min 00 s" in bad.error
    assert bad.restore_s is not None and bad.rto_s is None
    for v in run.vms:
        assert v.point_id and v.restored_name == f"{v.vm_name}-rehearsal-{run.id}"
        if v is bad:
            continue
        assert v.state == "running", (v.vm_name, v.error)
        assert v.restore_s is not None and v.restore_s > 0
        # Never less than the boot itself (power-on counted); never so long that it would have timed out.
        # Measured from the power-on request, not the restore's start: see the RTO check below.
        assert BOOT <= v.boot_s < TOOLS_TIMEOUT, v
        assert v.rto_s is not None and v.rto_s >= v.restore_s + v.boot_s
    # Boot order: the apps are powered on only once the databases are up, or (the failing one) timed out.
    db_done = max(by_name[n].rto_s or 0 for n in db if n != failing)
    apps_on = min(v.rto_s - v.boot_s for v in run.vms if v.group == "apps")
    assert apps_on >= db_done and apps_on >= TOOLS_TIMEOUT
    assert run.state == "failed" and failing in run.error and run.rto_s is None   # not every VM ran
    assert run.finished is not None and run.finished - run.started >= apps_on + BOOT
    # NICs only on the isolated port group while they ran.
    assert len(nics) == 10 and all(pgs and set(pgs) == {isolated.urn} for pgs in nics.values())
    # Everything created is gone, journal empty, B listed exactly as before.
    assert run.cleanup == "done", run.cleanup_error
    assert journal.pending() == []
    assert after == before

    from fctui.cli.dr import format_run
    text = format_run(run)
    assert all(v.vm_name in text for v in run.vms) and "did not boot" in text and "run took" in text
