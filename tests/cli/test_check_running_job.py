"""Issue 15 bug 3, the check's half: ``fctui check`` does not flag a running job's own snapshot as
``leftover-backup-snapshot``; it asks the job agent (if one runs -- it never starts one) for the
snapshots of unfinished jobs, as the console does. A real agent, the simulator on a loopback socket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fctui.agent import AgentClient, AgentError
from fctui.cli import main
from tests.agent.test_agent_lifecycle import creds, multi_disk_vm
from tests.conftest import AgentProc
from tests.servers import sim_control

LEFTOVER = "leftover-backup-snapshot"


def check(es: Any) -> list[str]:
    return ["check", "--vrm", es.url, "--user", es.sim.config.user, "--json"]


def rules_of(report: dict[str, Any], urn: str) -> set[str]:
    vm = next(v for v in report["vms"] if v["urn"] == urn)
    return {f["rule"] for f in vm["findings"]}


async def test_check_counts_a_running_jobs_snapshot_as_owned(es: Any, agent: AgentProc,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    async with sim_control(es.url) as control:
        urn = await multi_disk_vm(control, es)
        client = await agent.start()
        await control.post("/sim/faults", json={"path": "^/sim-data/", "latency_ms": 300})
        job_id = (await client.request("submit", targets=[urn], **creds(es)))["job"]
        async for ev in client.watch(job_id):
            if ev.get("event") == "progress" and ev.get("bytes_read", 0) > 0:
                break
        stats = (await control.get("/sim/stats")).json()
        assert stats["liveSnapshotsPerVm"].get(urn) == 1   # the job's snapshot is on the VRM
        try:
            rc = await asyncio.to_thread(main, check(es))
            report = json.loads(capsys.readouterr().out)
            assert (await client.request("get", job=job_id))["job"]["state"] == "running"
        finally:
            await control.delete("/sim/faults")
            await client.request("cancel", job=job_id)
            await client.wait(job_id)
    assert rc == 0
    assert LEFTOVER not in rules_of(report, urn), next(v for v in report["vms"] if v["urn"] == urn)


async def test_check_never_starts_an_agent(es: Any, dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    assert await asyncio.to_thread(main, check(es)) == 0
    json.loads(capsys.readouterr().out)
    with pytest.raises(AgentError):
        await AgentClient().request("hello")
