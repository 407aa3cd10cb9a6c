"""``fctui dr`` end to end: a plan made on site A's inventory, rehearsed by the real job agent into site B
(two simulators on loopback, profiles ``a`` and ``b``), followed and reported by the CLI; a failover is
refused without the plan's name typed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tests.conftest import AgentProc
from tests.sites import SIM_PASSWORD, two_sites, write_sites_config

from fctui.cli import main
from fctui.jobs.model import JobRecord
from fctui.jobs.planner import build_plan
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings
from fctui.jobs.sitemap import SiteMapping, SiteMappingStore, suggest_mapping
from fctui.repo import Repository
from fctui.vrm import VrmClient
from fctui.vrm.urn import site_id


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))   # the CLI runs its own event loop, as from a shell


async def test_plan_rehearse_runs_and_failover_confirmation(dirs: dict[str, str], agent: AgentProc,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", SIM_PASSWORD)
    with two_sites(vms=0, edge_fill=0.002, ready_vms_per_host=(2,)) as (a, b):
        write_sites_config(dirs["FCTUI_CONFIG_DIR"], a, b)
        repo = Repository.open(Path(dirs["FCTUI_DATA_DIR"]) / "repo")
        async with VrmClient(a.url, "admin", SIM_PASSWORD) as ca, VrmClient(b.url, "admin", SIM_PASSWORD) as cb:
            site_a, site_b = (await ca.sites())[0], (await cb.sites())[0]
            names = sorted(v.name for v in await ca.vms(site_a.uri, detail=0) if v.name.startswith("ready-"))
            job = JobRecord(id="b-1", targets=names)
            runner = BackupRunner(ca, repo, settings=RunnerSettings(task_interval=0.02, busy_interval=0.05,
                                                                    watch_interval=0.05, release_wait_s=5.0))
            try:
                await runner.run(job, await build_plan(ca, names, repo), Reporter(job))
            finally:
                runner.close()
            assert job.state == "succeeded", job.error
            stores, groups = await cb.datastores(site_b.uri), await cb.port_groups(site_b.uri)
            hosts = {h.urn: h.arch for h in await cb.hosts(site_b.uri)}
            m = SiteMapping(site_id(site_a.urn), site_id(site_b.urn))
            for p in repo.points():
                m = suggest_mapping(p, m.target_site, stores, groups, m, arch=p.vm_config.get("arch", ""),
                                    host_arch=hosts)
            SiteMappingStore().save(m)   # the site pair's remembered mapping (data dir)
            before = ({v.urn for v in await cb.vms(site_b.uri, detail=0, templates=None)},
                      {v.urn for v in await cb.volumes(site_b.uri)})
        repo.close()
        await agent.start()

        assert await cli("dr", "plan", "add", "erp", "--target", "b", "--profile", "a", "--vms", "re:^ready-",
                         "--group", f"db={names[0]}", "--rehearsal-network", "dr-isolated",
                         "--tools-timeout", "60") == 0
        assert "2 VM(s) into b, boot order db(1) -> others(1)" in capsys.readouterr().out

        assert await cli("dr", "rehearse", "erp", "--json", "--no-verify") == 0
        run = json.loads(capsys.readouterr().out)
        assert run["state"] == "succeeded" and run["cleanup"] == "done" and run["rto_s"] > 0
        assert [(v["vm_name"], v["group"], v["state"]) for v in run["vms"]] == [
            (names[0], "db", "running"), (names[1], "others", "running")]
        assert all(v["restore_s"] > 0 and v["boot_s"] > 0 and v["rto_s"] > 0 for v in run["vms"])

        async with VrmClient(b.url, "admin", SIM_PASSWORD) as cb:
            after = ({v.urn for v in await cb.vms(site_b.uri, detail=0, templates=None)},
                     {v.urn for v in await cb.volumes(site_b.uri)})
        assert after == before

        # a failover needs the plan's name typed: nothing is submitted without it
        assert await cli("dr", "failover", "erp") == 2
        assert "--confirm erp" in capsys.readouterr().err
        assert await cli("dr", "failover", "erp", "--confirm", "ERP") == 2
        assert "not the plan's name" in capsys.readouterr().err

        assert await cli("dr", "runs", "erp") == 0
        out = capsys.readouterr().out
        assert "rehearsal" in out and names[0] in out and "clean-up: done" in out
        assert await cli("dr", "plan", "list") == 0
        assert "last rehearsal" in capsys.readouterr().out and "succeeded" in out
        assert await cli("dr", "plan", "show", "nope") == 1
        assert "plans: erp" in capsys.readouterr().err


async def test_plan_add_maps_by_name_on_each_site(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The plan's own mapping: sources named on site A, targets on site B, kept as URNs with their names;
    a name either site does not have stops the plan and says what there is."""
    monkeypatch.setenv("FCTUI_PASSWORD", SIM_PASSWORD)
    with two_sites(vms=0, edge_fill=0.002, ready_vms_per_host=(1,)) as (a, b):
        write_sites_config(dirs["FCTUI_CONFIG_DIR"], a, b)
        async with VrmClient(a.url, "admin", SIM_PASSWORD) as ca, VrmClient(b.url, "admin", SIM_PASSWORD) as cb:
            site_a, site_b = (await ca.sites())[0], (await cb.sites())[0]
            src = {x.name: x.urn for x in await ca.datastores(site_a.uri)} | \
                {g.name: g.urn for g in await ca.port_groups(site_a.uri)}
            dst = {x.name: x.urn for x in await cb.datastores(site_b.uri)} | \
                {g.name: g.urn for g in await cb.port_groups(site_b.uri)} | \
                {c.name: c.urn for c in await cb.clusters(site_b.uri)}
        base = ("dr", "plan", "add", "erp", "--target", "b", "--profile", "a", "--vms", "re:^ready-")
        maps = ("--map-datastore", "ds-nas-cluster-01=ds-nas-dr-cluster-02", "--map-network", "prod-net=dr-app-net",
                "--map-network", "app-net=none", "--location", "dr-cluster-02", "--rehearsal-network", "dr-isolated")

        assert await cli(*base, *maps[:-2], "--rehearsal-network", "nope") == 1
        err = capsys.readouterr().err
        assert "--rehearsal-network (site b): port group 'nope': not found" in err and "dr-isolated" in err
        assert await cli(*base, "--map-datastore", "ds-nas-dr-cluster-02=ds-nas-dr-cluster-02") == 1
        assert "--map-datastore (site a): datastore 'ds-nas-dr-cluster-02': not found" in capsys.readouterr().err
        # across storage classes (NAS -> distributed): refused when the plan is made, not at its failover
        assert await cli(*base, "--map-datastore", "ds-nas-cluster-01=ds-dsware-dr-cluster-01") == 1
        assert ("--map-datastore ds-nas-cluster-01=ds-dsware-dr-cluster-01: cross-storage-restore: backup is from "
                "virtualized storage (NAS), target ds-dsware-dr-cluster-01 is distributed") in capsys.readouterr().err
        assert await cli(*base, "--map-network", "prod-net") == 2          # not SRC=DST
        assert "give SRC=DST" in capsys.readouterr().err
        assert await cli("dr", "plan", "list") == 0
        assert "no recovery plan" in capsys.readouterr().out             # nothing saved by a refused add

        assert await cli(*base, *maps) == 0
        capsys.readouterr()
        assert await cli("dr", "plan", "show", "erp", "--json") == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["datastores"] == {src["ds-nas-cluster-01"]: dst["ds-nas-dr-cluster-02"]}
        assert plan["port_groups"] == {src["prod-net"]: dst["dr-app-net"], src["app-net"]: ""}
        assert (plan["location"], plan["rehearsal_network"]) == (dst["dr-cluster-02"], dst["dr-isolated"])
        assert await cli("dr", "plan", "show", "erp") == 0
        out = capsys.readouterr().out
        assert "rehearsal network: dr-isolated;" in out and "location: dr-cluster-02" in out
        assert "datastore: ds-nas-cluster-01 -> ds-nas-dr-cluster-02" in out
        assert "port group (failover): prod-net -> dr-app-net" in out
        assert "port group (failover): app-net -> none" in out
        assert "urn:" not in out
