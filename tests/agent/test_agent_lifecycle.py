"""The job agent as a real process: Unix socket, persistence, kill -9 and restart, the CLI on top.

The simulator runs in the test process on a loopback socket (EmbeddedSimulator); the agent is a
subprocess (``python -m fctui.cli agent --foreground``) with its own data and runtime dirs.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import AgentProc
from tests.servers import sim_control
from fctui.agent import AgentClient, AgentError, agent_command
from fctui.cli import main


async def stats(control: httpx.AsyncClient) -> dict[str, Any]:
    return (await control.get("/sim/stats")).json()


def creds(es: Any) -> dict[str, Any]:
    return {"vrm": es.url, "user": es.sim.config.user, "password": es.sim.config.password}


async def multi_disk_vm(control: httpx.AsyncClient, es: Any) -> str:
    edges = (await control.get("/sim/edge-cases")).json()
    return next(u for u in edges["ready"] if len(es.sim.vms[u.rsplit(":", 1)[1]].disks) > 1)


async def test_kill9_mid_job_then_restart_cleans_up(es: Any, agent: AgentProc, dirs: dict[str, str]) -> None:
    async with sim_control(es.url) as control:
        urn = await multi_disk_vm(control, es)
        client = await agent.start()
        sock = Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock"
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        await control.post("/sim/faults", json={"path": "^/sim-data/", "latency_ms": 40})
        job_id = (await client.request("submit", targets=[urn], **creds(es)))["job"]
        async for ev in client.watch(job_id):
            if ev.get("event") == "progress" and ev.get("bytes_read", 0) > 0:
                break
        s = await stats(control)
        assert s["resourcesPerHost"] and s["liveSnapshotsPerVm"].get(urn) == 1  # mid-job: both exist
        agent.kill9()
        await control.delete("/sim/faults")

        client = await agent.start()
        jobs = {j["id"]: j for j in (await client.request("list"))["jobs"]}
        assert jobs[job_id]["state"] == "interrupted"
        pending = (await client.request("cleanup-status"))["pending"]
        assert {p["what"] for p in pending} == {"snapshot", "resource"}
        assert all("password" not in json.dumps(p).lower() for p in pending)
        state_files = list(Path(dirs["FCTUI_DATA_DIR"]).rglob("*.json"))
        assert state_files and all(es.sim.config.password not in f.read_text() for f in state_files)
        s = await stats(control)
        assert s["liveSnapshotsPerVm"].get(urn) == 1  # still there until the agent has credentials

        # the next backup brings credentials: leftovers are cleaned first, then it succeeds
        job2 = (await client.request("submit", targets=[urn], **creds(es)))["job"]
        final = await client.wait(job2)
        assert final["state"] == "succeeded", final["error"]
        assert (await client.request("cleanup-status"))["pending"] == []
        s = await stats(control)
        assert s["resourcesPerHost"] == {} and s["liveSnapshotsPerVm"].get(urn) is None
        # no half restore point: exactly the one of the second job
        from fctui.repo import Repository
        repo = Repository.open(Path(dirs["FCTUI_DATA_DIR"]) / "repo")
        assert [p.job_id for p in repo.points()] == [job2]
        assert all(d["mode"] == "full" for d in final["vms"][0]["disks"])


def cli(argv: list[str]) -> int:
    return main(argv)


async def test_cli_backup_json_jobs_and_cancel(es: Any, agent: AgentProc, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    async with sim_control(es.url) as control:
        urn = await multi_disk_vm(control, es)
        client = await agent.start()
        user = es.sim.config.user
        rc = await asyncio.to_thread(cli, ["backup", "--vrm", es.url, "--user", user, urn, "--wait", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and out["state"] == "succeeded"
        assert set(out) == {"job", "state", "warnings", "restore_points", "vms", "error"} and len(out["restore_points"]) == 1
        assert out["warnings"] == []  # nothing left on the VRM
        vm = out["vms"][0]
        assert vm["urn"] == urn and vm["kind"] == "cbt" and len(vm["disks"]) == 3
        for d in vm["disks"]:
            assert set(d) == {"volume", "mode", "reason", "bytes_planned", "bytes_read", "bytes_written",
                              "blocks_healed", "name", "error"}
            assert d["mode"] == "full" and d["bytes_read"] == d["bytes_planned"] and d["blocks_healed"] == 0

        # the agent also runs restore jobs (issue 7's engine): a restore of that point to a new VM
        rjob = (await client.request("submit", type="restore", targets=[out["restore_points"][0]],
                                     restore={"point_id": out["restore_points"][0], "target": "new",
                                              "name": "restored-by-agent"}, **creds(es)))["job"]
        rfinal = await client.wait(rjob)
        assert rfinal["type"] == "restore" and rfinal["state"] == "succeeded", rfinal["error"]
        with pytest.raises(AgentError, match="point_id"):
            await client.request("submit", type="restore", targets=["x"], restore={}, **creds(es))

        # wrong password: exit 3 with one line, no traceback
        monkeypatch.setenv("FCTUI_PASSWORD", "wrong")
        rc = await asyncio.to_thread(cli, ["backup", "--vrm", es.url, "--user", user, urn])
        err = capsys.readouterr().err
        assert rc == 3 and "Traceback" not in err
        monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
        assert await asyncio.to_thread(cli, ["backup", urn]) == 2  # no --vrm/--user

        # a job keeps running when its watcher goes away; cancel cleans up
        await control.post("/sim/faults", json={"path": "^/sim-data/", "latency_ms": 40})
        await control.post(f"/sim/volumes/{vm['disks'][0]['volume'].rsplit(':', 1)[1]}/write",
                           json={"blocks": 300})
        job_id = (await client.request("submit", targets=[urn], **creds(es)))["job"]
        async for ev in client.watch(job_id):
            if ev.get("event") == "progress":
                break  # closing the watch connection here
        assert (await client.request("get", job=job_id))["job"]["state"] == "running"
        assert await asyncio.to_thread(cli, ["jobs", "cancel", job_id]) == 0
        final = await client.wait(job_id)
        await control.delete("/sim/faults")
        assert final["state"] == "cancelled"
        s = await stats(control)
        assert s["resourcesPerHost"] == {} and s["liveSnapshotsPerVm"].get(urn) is None
        capsys.readouterr()
        assert await asyncio.to_thread(cli, ["jobs", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {j["job"]: j["state"] for j in listed["jobs"]}[job_id] == "cancelled"
        assert listed["cleanup_pending"] == []


async def test_single_agent_and_demo(agent: AgentProc, dirs: dict[str, str]) -> None:
    client = await agent.start("--demo", "--demo-vms", "10")
    hello = await client.request("hello")
    assert hello["demo"] and hello["demo"]["url"].startswith("http://127.0.0.1:")
    async with sim_control(hello["demo"]["url"]) as c:  # the agent hosts the simulator
        assert (await c.get("/service/versions")).status_code == 200
    second = subprocess.run(agent_command(), env={**os.environ, **dirs}, capture_output=True, timeout=60)
    assert second.returncode == 1 and b"another agent" in second.stderr
    with pytest.raises(AgentError, match="no VM given"):
        await client.request("submit", targets=[], demo=True)
    await client.request("shutdown")
    assert agent.proc is not None and agent.proc.wait(20) == 0


async def test_idle_agent_exits_on_its_own_but_not_while_watched(dirs: dict[str, str]) -> None:
    """Started on demand, the agent must not linger forever; a console watching it keeps it up."""
    from fctui.agent import AgentClient
    from fctui.agent.server import Agent

    agent = Agent(idle_exit_s=1.0)
    served = asyncio.create_task(agent.serve())
    client = AgentClient(Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock")
    deadline = time.monotonic() + 30
    while True:
        try:
            await client.request("hello")
            break
        except Exception:
            assert time.monotonic() < deadline, "the agent did not answer"
            await asyncio.sleep(0.05)
    # a watcher, like an open console; its first event says the agent counts it
    reader, writer = await asyncio.open_unix_connection(str(Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock"))
    writer.write(json.dumps({"op": "watch"}).encode() + b"\n")
    await writer.drain()
    assert json.loads(await asyncio.wait_for(reader.readline(), 30))["event"] == "cleanup"
    watched = time.monotonic()
    # Until the agent's idle check has looked at it later than idle_exit_s after the watch began (it
    # dates its last activity to every check that finds it busy): an unwatched agent would have exited.
    while agent.last_activity < watched + agent.idle_exit_s:
        assert not served.done(), "the agent exited while a client was watching"
        assert time.monotonic() < deadline + 30, "the agent's idle check did not run"
        await asyncio.sleep(0.05)
    assert not served.done(), "the agent exited while a client was watching"
    writer.close()
    await asyncio.wait_for(served, timeout=5)  # no job, no watcher: it stops by itself
    assert not (Path(dirs["FCTUI_RUNTIME_DIR"]) / "agent.sock").exists()
