"""The recovery run beyond the acceptance rehearsal: a cancelled rehearsal (what it made was journaled while it
existed, and is gone after), a kept one (--keep), and a failover (the VM's own name, production port groups, nothing removed).
Two small simulated sites in-process on one ManualClock, as in test_dr_rehearsal."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator

import pytest
from tests.jobs.test_restore_engine import fast
from tests.sites import asgi_client, two_site_sims

from fctui.jobs.dr import RecoveryPlan
from fctui.jobs.drrun import RecoverySettings, new_run, run_recovery
from fctui.jobs.journal import MemoryJournal
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.jobs.sitemap import SiteMapping, suggest_mapping
from fctui.repo import Repository
from fctui.vrm.urn import site_id


@pytest.fixture
async def world(tmp_path: Any) -> AsyncIterator[dict[str, Any]]:
    """Sites A and B, two VMs of A backed up, the site pair's suggested mapping, a plan of both."""
    from fctui.sim import ManualClock
    clock = ManualClock()
    sim_a, sim_b = two_site_sims(vms=0, clock=clock, time_scale=1.0, edge_fill=0.002, ready_vms_per_host=(2,))

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.005)
            clock.advance(0.5)

    tick = asyncio.create_task(ticker())
    repo = Repository.open(tmp_path / "repo")
    try:
        async with asgi_client(sim_a) as a, asgi_client(sim_b) as b:
            site_a, site_b = (await a.sites())[0], (await b.sites())[0]
            vms = sorted((v for v in await a.vms(site_a.uri, detail=0) if v.name.startswith("ready-")),
                         key=lambda v: v.name)
            job = JobRecord(id="b-1", targets=[v.name for v in vms])
            runner = BackupRunner(a, repo, settings=RunnerSettings(
                watch_interval=0.05, busy_retry_s=5.0, busy_interval=0.05, task_interval=0.02, release_wait_s=5.0))
            try:
                await runner.run(job, await build_plan(a, [v.name for v in vms], repo), Reporter(job))
            finally:
                runner.close()
            assert job.state == "succeeded", job.error
            groups = await b.port_groups(site_b.uri)
            hosts = {h.urn: h.arch for h in await b.hosts(site_b.uri)}
            mapping = SiteMapping(site_id(site_a.urn), site_id(site_b.urn))
            for p in repo.points():
                mapping = suggest_mapping(p, mapping.target_site, await b.datastores(site_b.uri), groups, mapping,
                                          arch=p.vm_config.get("arch", ""), host_arch=hosts)
            plan = RecoveryPlan(name="p", target="b", vms=[v.urn for v in vms], vm_names={v.urn: v.name for v in vms},
                                tools_timeout_s=60)

            async def sleep(seconds: float) -> None:
                clock.advance(seconds)
                await asyncio.sleep(0)

            async def listing() -> Any:
                return ({(v.urn, v.name) for v in await b.vms(site_b.uri, detail=0, templates=None)},
                        {v.urn for v in await b.volumes(site_b.uri)})

            yield {"a": a, "b": b, "sim_b": sim_b, "repo": repo, "plan": plan, "mapping": mapping, "clock": clock,
                   "sleep": sleep, "listing": listing, "groups": groups, "site_b": site_b.uri}
    finally:
        tick.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick


def settings() -> RecoverySettings:
    return RecoverySettings(tools_poll_s=2.0, restore=fast(verify=False))


async def test_cancelled_rehearsal_was_journaled_and_leaves_nothing(world: dict[str, Any]) -> None:
    w = world
    before = await w["listing"]()
    run = new_run(w["plan"], "rehearsal")
    journal = MemoryJournal()
    cancel = asyncio.Event()
    journaled: list[set[str]] = []

    def changed(r: Any) -> None:
        booting = [v for v in r.vms if v.state == "booting"]
        if booting and not cancel.is_set():
            # what a crash now would leave: the restored VM and its volume, each a cleanup record
            journaled.append({f"{i['what']}:{i.get('name')}" for i in journal.pending() if i.get("dr_run") == r.id})
            cancel.set()

    await run_recovery(w["b"], w["repo"], w["plan"], run, mapping=w["mapping"], journal=journal, on_change=changed,
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings(), cancel=cancel)
    first = run.vms[0]
    assert journaled and f"restore-vm:{first.restored_name}" in journaled[0]
    assert any(x.startswith(f"restore-volume:{first.restored_name}") for x in journaled[0])
    assert run.state == "cancelled" and run.cleanup == "done" and run.rto_s is None
    assert journal.pending() == []
    assert await w["listing"]() == before

    # --keep: the rehearsal's VMs stay (and leave the journal: kept on purpose, not leftovers)
    kept = new_run(w["plan"], "rehearsal")
    await run_recovery(w["b"], w["repo"], w["plan"], kept, mapping=w["mapping"], journal=journal, keep=True,
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings())
    assert kept.state == "succeeded" and kept.cleanup == "kept" and journal.pending() == []
    vms_after, vols_after = await w["listing"]()
    assert {n for _, n in vms_after - before[0]} == {v.restored_name for v in kept.vms}
    assert len(vols_after - before[1]) == 2


async def test_failover_keeps_the_vms_on_production_port_groups(world: dict[str, Any]) -> None:
    w = world
    before = await w["listing"]()
    plan = w["plan"]
    plan.vms = plan.vms[:1]
    run = new_run(plan, "failover")
    journal = MemoryJournal()
    await run_recovery(w["b"], w["repo"], plan, run, mapping=w["mapping"], journal=journal,
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings())
    vm = run.vms[0]
    assert run.state == "succeeded" and run.cleanup == "none" and vm.state == "running", (run.error, vm.error)
    assert vm.restored_name == vm.vm_name and run.rto_s == vm.rto_s
    assert journal.pending() == []   # production now: no cleanup record
    vms_after, vols_after = await w["listing"]()
    assert (vm.restored_urn, vm.vm_name) in vms_after - before[0] and len(vols_after - before[1]) == 1
    restored = w["sim_b"].vms[vm.restored_urn.rsplit(":", 1)[1]]
    production = {g.urn for g in w["groups"] if g.name != "dr-isolated"}
    assert restored.nics and {n.port_group_urn for n in restored.nics} <= production
    assert set(w["mapping"].port_groups.values()) >= {n.port_group_urn for n in restored.nics}
    # a second failover of the same plan is refused for that VM: the target has a VM of that name
    again = new_run(plan, "failover")
    await run_recovery(w["b"], w["repo"], plan, again, mapping=w["mapping"], journal=journal,
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings())
    assert again.state == "failed" and "exists on the target site already" in again.vms[0].error


async def test_the_plans_own_mapping_beats_the_site_pairs(world: dict[str, Any]) -> None:
    """A plan's datastores, port groups and location override the remembered mapping: the failover's VM is
    on the plan's datastore, port group and host, not the mapping's."""
    w = world
    plan, mapping, b = w["plan"], w["mapping"], w["b"]
    plan.vms = plan.vms[:1]
    point = [p for p in w["repo"].points() if p.vm_urn == plan.vms[0]][-1]
    src_ds = point.disks[0].datastore_urn
    stores = await b.datastores(w["site_b"])
    kind = {d.urn: d.storage_type for d in stores}
    remembered = mapping.datastores[src_ds]
    # another datastore of the same storage type, on other hosts than the remembered one
    other = next(d for d in stores if d.storage_type == kind[remembered] and d.urn != remembered and d.hosts
                 and not set(d.hosts) & set(next(x for x in stores if x.urn == remembered).hosts))
    host = other.hosts[-1]     # the planner alone would take another of them
    src_pg = next(n["portGroupUrn"] for n in point.vm_config["nics"])
    app_net = next(g.urn for g in w["groups"] if g.name == "dr-app-net")
    assert mapping.port_groups[src_pg] != app_net      # else the test would show nothing
    plan.datastores, plan.port_groups, plan.location = {src_ds: other.urn}, {src_pg: app_net}, host
    run = new_run(plan, "failover")
    await run_recovery(b, w["repo"], plan, run, mapping=mapping, journal=MemoryJournal(),
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings())
    vm = run.vms[0]
    assert run.state == "succeeded" and vm.state == "running", (run.error, vm.error)
    restored = w["sim_b"].vms[vm.restored_urn.rsplit(":", 1)[1]]
    assert {n.port_group_urn for n in restored.nics} == {app_net}
    seen = await b.vm(vm.restored_urn)
    assert seen.host_urn == host
    assert seen.disks and {d.datastore_urn for d in seen.disks} == {other.urn}

    # an override naming a port group as none leaves those NICs out
    plan.port_groups = {src_pg: ""}
    plan.vm_names = {plan.vms[0]: "renamed"}     # a failover keeps the name: another one may not clash
    again = new_run(plan, "failover")
    await run_recovery(b, w["repo"], plan, again, mapping=mapping, journal=MemoryJournal(),
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings())
    assert again.vms[0].state == "running", (again.error, again.vms[0].error)
    assert w["sim_b"].vms[again.vms[0].restored_urn.rsplit(":", 1)[1]].nics == []


async def test_nothing_mapped_names_every_item_and_how_to_map_them(world: dict[str, Any]) -> None:
    w = world
    before = await w["listing"]()
    run = new_run(w["plan"], "rehearsal")
    await run_recovery(w["b"], w["repo"], w["plan"], run, mapping=None, journal=MemoryJournal(),
                       clock=w["clock"].now, sleep=w["sleep"], settings=settings())
    assert run.state == "failed" and [v.state for v in run.vms] == ["failed", "failed"]
    for v in run.vms:
        point = [p for p in w["repo"].points() if p.vm_urn == v.vm_urn][-1]
        assert v.error.startswith("restore refused: restore-unmapped: ")
        assert all(d.disk_name in v.error for d in point.disks)            # every disk named
        assert "`fctui dr plan add p ... --map-datastore SRC=DST`" in v.error
    assert await w["listing"]() == before
