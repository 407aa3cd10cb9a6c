"""Issue 15 bug 8 through a real agent: `fctui jobs` says each job's type and its VMs' names, and an overwrite
restore's "read X of Y" has its planned bytes (not "of 0 B"); `fctui jobs --json` adds "type" and each VM's
"name" to the keys it had."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.agent.test_agent_lifecycle import cli, creds
from tests.conftest import AgentProc
from tests.servers import sim_control


async def test_jobs_listing_names_type_vms_and_restore_figures(es: Any, agent: AgentProc,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    async with sim_control(es.url) as control:
        edges = (await control.get("/sim/edge-cases")).json()
        urn = edges["ready"][0]
        name = es.sim.vms[urn.rsplit(":", 1)[1]].name
        client = await agent.start()
        bjob = (await client.request("submit", targets=[urn], **creds(es)))["job"]
        done = await client.wait(bjob)
        assert done["state"] == "succeeded", done["error"]
        point = done["restore_points"][0]
        rjob = (await client.request("submit", type="restore", targets=[point],
                                     restore={"point_id": point, "target": "original", "stop_vm": True},
                                     **creds(es)))["job"]
        rdone = await client.wait(rjob)
        assert rdone["state"] == "succeeded", rdone["error"]

    capsys.readouterr()
    assert await asyncio.to_thread(cli, ["jobs"]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.strip()}
    assert " backup " in lines[bjob] and name in lines[bjob]
    assert " restore " in lines[rjob] and name in lines[rjob]
    assert " of 0 B" not in lines[rjob] and " of 0 Bytes" not in lines[rjob]

    assert await asyncio.to_thread(cli, ["jobs", "--json"]) == 0
    listed = {j["job"]: j for j in json.loads(capsys.readouterr().out)["jobs"]}
    for job_id, kind in ((bjob, "backup"), (rjob, "restore")):
        j = listed[job_id]
        assert {"job", "state", "warnings", "restore_points", "vms", "created", "finished", "error",
                "targets"} <= set(j)   # the keys it had stay
        assert j["type"] == kind and [v["name"] for v in j["vms"]] == [name]
        assert all(d["bytes_planned"] > 0 for v in j["vms"] for d in v["disks"])
