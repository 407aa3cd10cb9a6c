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
