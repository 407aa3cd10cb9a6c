"""Restore jobs in the real job agent (a subprocess on its Unix socket), driven by ``fctui restore``;
and after a ``kill -9`` mid-restore, the restarted agent removes what the restore had created."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AgentProc
from tests.servers import sim_control
from fctui.cli import main
from fctui.repo import Repository
from fctui.vrm import VrmClient


@pytest.fixture
def env(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("FCTUI_PASSWORD", "Admin@123")
    return {**dirs, "FCTUI_PASSWORD": "Admin@123"}


async def make_point(es: Any, env: dict[str, str]) -> tuple[str, Any]:
    """A restore point of a real multi-disk VM written straight into the agent's repository (seeded
    blocks; the backup path has its own tests), before the agent opens it."""
    import random
    async with sim_control(es.url) as ctl:
        ready = (await ctl.get("/sim/edge-cases")).json()["ready"]
    async with VrmClient(es.url, "admin", "Admin@123") as vrm:
        vm = next(v for v in [await vrm.vm(x) for x in ready] if len(v.disks) > 1)
    repo = Repository.open(Path(env["FCTUI_DATA_DIR"]) / "repo")
    bs = 64 << 10
    w = repo.new_point(vm_urn=vm.urn, vm_name=vm.name, job_id="seed", kind="cbt", snapshot_urn="", created=1.0,
                       vm_config={"disks": [{"volumeUrn": d.volume_urn, "sequenceNum": d.sequence_num,
                                             "pciType": d.pci_type} for d in vm.disks]})
    with w:
        for d in vm.disks:
            dw = w.add_disk(volume_urn=d.volume_urn, disk_name=d.disk_name, sequence_num=d.sequence_num,
                            pci_type=d.pci_type, size_bytes=(d.quantity_gb or 1) << 30, block_size=bs,
                            storage_type=d.storage_type, datastore_urn=d.datastore_urn, cbt=None, base_point_id=None)
            rnd = random.Random(d.volume_urn)
            for i in sorted(rnd.sample(range(((d.quantity_gb or 1) << 30) // bs), 150)):
                dw.put_block(i, rnd.randbytes(bs))
        point = w.commit()
    repo.close()
    return point.id, vm


def run_cli(argv: list[str]) -> int:
    return main(argv)


async def in_thread(argv: list[str]) -> int:
    # the CLI runs its own event loop (asyncio.run), as from a shell
    return await asyncio.to_thread(run_cli, argv)


async def test_cli_confirm_wait_json_runs_in_the_agent(es: Any, agent: AgentProc, env: dict[str, str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    point_id, vm = await make_point(es, env)
    client = await agent.start()
    async with VrmClient(es.url, "admin", "Admin@123") as vrm:
        site = (await vrm.sites())[0].uri
        vms = await vrm.vms(site, detail=2)
        names = [w.name for w in vms]
        other = next(v for v in vms if v.status == "stopped" and not v.is_template and v.urn != vm.urn
                     and names.count(v.name) == 1)
    disk = vm.disks[1]
    code = await in_thread(["restore", point_id, "--to", "disk", "--disk", disk.disk_name, "--vm", other.name,
                            "--confirm", "--wait", "--json", "--vrm", es.url, "--user", "admin"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0, doc
    assert doc["state"] == "succeeded" and doc["job"] and doc["vm"] == other.urn
    assert [v["source"] for v in doc["volumes"]] == [disk.volume_urn]
    assert doc["volumes"][0]["verified"] is True
    target = doc["volumes"][0]["target"]
    repo = Repository.open(Path(env["FCTUI_DATA_DIR"]) / "repo", create=False)
    async with sim_control(es.url) as ctl:
        got = (await ctl.get(f"/sim/volumes/{target.rsplit(':', 1)[1]}/digest")).json()["sha256"]
    assert got == repo.open_disk(point_id, disk.volume_urn).sha256()
    async with VrmClient(es.url, "admin", "Admin@123") as vrm:
        assert target in {d.volume_urn for d in (await vrm.vm(other.urn)).disks}
    jobs = (await client.request("list"))["jobs"]
    assert [j["type"] for j in jobs] == ["restore"]


async def test_kill_9_mid_restore_then_restart_cleans_up(es: Any, agent: AgentProc, env: dict[str, str]) -> None:
    point_id, vm = await make_point(es, env)
    client = await agent.start()
    async with VrmClient(es.url, "admin", "Admin@123") as vrm:
        site = (await vrm.sites())[0].uri
        before = {v.urn for v in await vrm.volumes(site)}
    async with sim_control(es.url) as ctl:
        # slow data writes so the restore is surely mid-way when the agent dies
        await ctl.post("/sim/faults", json={"path": "^/sim-data/", "method": "PUT", "latency_ms": 300})
        job_id = (await client.request("submit", type="restore", targets=[point_id], vrm=es.url, user="admin",
                                       password="Admin@123",
                                       restore={"point_id": point_id, "target": "new", "name": "doomed"}))["job"]
        async for ev in client.watch(job_id):  # until data moves on the first disk
            if ev.get("event") == "progress" or (ev.get("event") == "job" and any(
                    d["state"] == "reading" for v in ev["job"]["vms"] for d in v["disks"])):
                break
        agent.stop(signal.SIGKILL)
        await ctl.delete("/sim/faults")
        async with VrmClient(es.url, "admin", "Admin@123") as vrm:
            assert {v.urn for v in await vrm.volumes(site)} - before  # it had created volumes
        client = await agent.start()
        job = (await client.request("get", job=job_id))["job"]
        assert job["state"] == "interrupted"
        # the next job on that VRM (or `fctui jobs cleanup`) cleans the leftovers
        r = await client.request("credentials", vrm=es.url, user="admin", password="Admin@123")
        assert r["failed"] == [], r
        stats = (await ctl.get("/sim/stats")).json()
    assert stats["resourcesPerHost"] == {}
    async with VrmClient(es.url, "admin", "Admin@123") as vrm:
        assert {v.urn for v in await vrm.volumes(site)} == before
        assert not [v for v in await vrm.vms(site, detail=0, templates=None) if v.name == "doomed"]
