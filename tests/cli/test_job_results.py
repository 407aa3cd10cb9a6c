"""Issue 15 (friction): ``backup --wait --json`` and ``restore --wait --json`` say why a job or a VM failed;
restore summaries (text and JSON) name the VM and its disks, not only URNs; ``restore --wait`` shows its
progress as ``backup --wait`` does. A real agent works against the simulator on a loopback socket."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import pytest

from fctui.cli import main
from fctui.repo import Repository
from tests.agent.test_agent_lifecycle import creds, multi_disk_vm
from tests.cli.test_follow_progress import PROGRESS, Pipe
from tests.conftest import AgentProc
from tests.servers import sim_control


async def one_disk_vm(control: httpx.AsyncClient, es: Any) -> str:
    edges = (await control.get("/sim/edge-cases")).json()
    return next(u for u in edges["ready"] if len(es.sim.vms[u.rsplit(":", 1)[1]].disks) == 1)


def vm_name(es: Any, urn: str) -> str:
    return es.sim.vms[urn.rsplit(":", 1)[1]].name


async def test_backup_wait_json_says_why_the_vm_failed(es: Any, agent: AgentProc, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    async with sim_control(es.url) as control:
        urn = await multi_disk_vm(control, es)
        await agent.start()
        await control.post("/sim/faults", json={"taskType": "CreateVmSnapshot", "errorCode": "10300026",
                                                "count": 1})
        rc = await asyncio.to_thread(main, ["backup", urn, "--vrm", es.url, "--user", es.sim.config.user,
                                            "--wait", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["state"] == "failed", out
    assert {"job", "state", "warnings", "restore_points", "vms"} <= set(out)   # the keys it had stay
    vm = out["vms"][0]
    assert vm["name"] == vm_name(es, urn) and vm["state"] == "failed", vm
    assert "10300026" in vm["reason"] or "snapshot" in vm["reason"].lower(), vm
    assert out["error"], out


async def test_restore_wait_names_the_vm_and_disks_and_shows_progress(es: Any, agent: AgentProc,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    async with sim_control(es.url) as control:
        urn = await one_disk_vm(control, es)   # a restore reads every byte back: one 1 GB disk is enough
        client = await agent.start()
        done = await client.wait((await client.request("submit", targets=[urn], **creds(es)))["job"])
        assert done["state"] == "succeeded", done["error"]
        point_id = done["restore_points"][0]
        disks = [d.disk_name for d in Repository.open(None, create=False).point(point_id).disks]
        base = ["restore", point_id, "--vrm", es.url, "--user", es.sim.config.user, "--confirm", "--wait"]
        pipe = Pipe()
        monkeypatch.setattr(sys, "stderr", pipe)
        rc = await asyncio.to_thread(main, [*base, "--to", "new", "--name", "cli-restored"])
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        text = capsys.readouterr().out
        assert rc == 0, text + pipe.getvalue()
        assert "VM cli-restored" in text and all(f"{d}: urn:" in text for d in disks), text
        assert any(PROGRESS.search(ln) and ln.split(" ", 1)[1].startswith("restore") for ln in
                   pipe.getvalue().splitlines()), pipe.getvalue()

        # a restore that fails: its JSON says why, and names what it restored
        await control.post("/sim/faults", json={"taskType": "CreateVolume", "errorCode": "10300026", "count": 1})
        rc = await asyncio.to_thread(main, [*base, "--to", "new", "--name", "cli-failed", "--json"])
        res = json.loads(capsys.readouterr().out)
        await control.delete("/sim/faults")
    assert rc == 1 and res["state"] == "failed" and res["error"], res
    assert res["vm_name"] == "cli-failed" and [v["name"] for v in res["volumes"]] == disks, res
