"""The real CLI on a "fourth machine" -- no job agent, no VRM password -- pointed at a cluster (a real NATS):
``fctui jobs`` lists a proxy's jobs, ``fctui backup --wait`` submits one and follows it to its end while
a proxy (played here through ClusterJobs) runs it, ``fctui jobs cancel`` asks the proxies to stop."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import pytest

from fctui.cluster.connect import Cluster
from fctui.cluster.jobs import ClusterJobs, record_of
from fctui.cluster.layout import agent_key
from fctui.jobs.model import DiskProgress, JobRecord, VmProgress

MIB = 1 << 20
WEB = "urn:sites:1:vms:i-00000001"


@pytest.fixture
async def proxy(nats_server: Any) -> AsyncIterator[ClusterJobs]:
    cluster = await Cluster.connect(nats_server.url)
    yield ClusterJobs(cluster)
    await cluster.close()


@pytest.fixture
def machine(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The fourth machine's environment: its own dirs, no password anywhere, no cluster named."""
    env = {k: v for k, v in os.environ.items() if k not in ("FCTUI_PASSWORD", "FCTUI_CLUSTER")}
    Path(dirs["FCTUI_CONFIG_DIR"]).mkdir(parents=True, exist_ok=True)
    return env | dirs


async def fctui(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "fctui.cli", *args, env=env,
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await fctui(env, *args)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def web01(state: str, read: int = 0, **kw: Any) -> VmProgress:
    return VmProgress(urn=WEB, name="web01", host="urn:sites:1:hosts:1", kind="cbt", state=state,
                      disks=[DiskProgress(volume=f"{WEB}:vol", name="web01-disk1", mode="full", state=state,
                                          bytes_planned=64 * MIB, bytes_read=read)], **kw)


async def test_jobs_lists_and_cancels_a_proxys_job(nats_server: Any, proxy: ClusterJobs,
                                                  machine: dict[str, str]) -> None:
    job = JobRecord(id="20261203-120000-aa0001", targets=["web01"])
    await proxy.create_job(job)
    await proxy.add_vms(job.id, [web01("reading", read=16 * MIB)], agent="proxy-1")
    await proxy.update_header(job.id, lambda h: h.update(state="running"))

    code, out, err = await run(machine, "jobs", "--cluster", nats_server.url)
    assert code == 0, err
    head, line = out.splitlines()
    assert head == f"cluster {nats_server.url}: no proxy alive (start `fctui agent --cluster URL` on one)"
    assert line.startswith(job.id) and "running" in line and "1 VM(s) (web01)" in line
    assert "read 16.0 MiB of 64.0 MiB" in line

    await proxy.cluster.agents_kv.put(agent_key("proxy-1"), b"{}")   # a proxy's heartbeat
    code, out, err = await run(machine | {"FCTUI_CLUSTER": nats_server.url}, "jobs", "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert [j["job"] for j in listing["jobs"]] == [job.id] and listing["cleanup_pending"] == []
    assert listing["cluster"] == {"url": nats_server.url, "proxies": ["proxy-1"]}

    code, out, err = await run(machine, "jobs", "cancel", job.id, "--cluster", nats_server.url)
    assert code == 0 and "cancel requested" in out, err
    header, _ = await proxy.header(job.id)
    assert header["cancel"] is True
    assert not (Path(machine["FCTUI_RUNTIME_DIR"]) / "agent.sock").exists()   # no local agent was started


async def test_backup_needs_no_password_and_follows_the_job_to_its_end(nats_server: Any, proxy: ClusterJobs,
                                                                       machine: dict[str, str]) -> None:
    # a profile names the VRM (it goes with the job); no password is asked: stdin is closed, none is set
    (Path(machine["FCTUI_CONFIG_DIR"]) / "config.toml").write_text(
        f'cluster = "{nats_server.url}"\n[profiles.p]\nvrm = "https://vrm.example:7443"\nuser = "ops"\n')
    proc = await fctui(machine, "backup", "web01", "--wait")
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while not (jobs := await proxy.jobs()):   # the proxy's side: the job arrives
            assert proc.returncode is None and loop.time() < end, "no job submitted"
            await asyncio.sleep(0.05)
        (job,) = jobs
        assert (job.vrm, job.user, job.targets, job.state) == ("https://vrm.example:7443", "ops", ["web01"], "queued")
        await proxy.add_vms(job.id, [web01("reading", read=32 * MIB)], agent="proxy-1")
        await proxy.update_header(job.id, lambda h: h.update(state="running", started=h["created"]))
        # the CLI follows the job: its progress line (stderr is a pipe: one line per 10 %) says so; what
        # the proxy logs from now on is printed as it comes (earlier lines are the job's history)
        assert proc.stderr is not None
        first = await asyncio.wait_for(proc.stderr.readline(), 30)
        assert b"backup  50 % \xc2\xb7 32.0 MiB of 64.0 MiB" in first, first
        await proxy.put_vm(job.id, record_of(web01("done", read=64 * MIB, point_id="P1"), agent="proxy-1",
                                             log=[{"time": job.created + 1, "level": "info",
                                                   "message": "web01: restore point P1 committed"}]))
        await proxy.finish_if_done(job.id)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith(f"job {job.id}: succeeded\n") and "-> restore point P1" in out.decode()
    assert "web01: restore point P1 committed" in err.decode()   # the proxy's log line, as it came
    assert not (Path(machine["FCTUI_RUNTIME_DIR"]) / "agent.sock").exists()


async def test_check_counts_a_cluster_jobs_snapshot_as_owned(es: Any, nats_server: Any, proxy: ClusterJobs,
                                                              dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """``fctui check`` with a cluster named ($FCTUI_CLUSTER) does not call a proxy's running backup
    snapshot a leftover: it asks the cluster for its unfinished jobs, as it asks the local agent."""
    from fctui.cli import main
    from fctui.vrm import VrmClient
    from fctui.vrm.urn import urn_to_uri
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    monkeypatch.delenv("FCTUI_CLUSTER", raising=False)
    urn = next(iter(es.sim.edge_cases["ready"]))
    job = JobRecord(id="20261203-120000-aa0001", vrm=es.url, user=es.sim.config.user, targets=[urn])
    name = f"fctui-{job.id}-{urn.rsplit(':', 1)[-1]}"
    async with VrmClient(es.url, es.sim.config.user, es.sim.config.password) as c:
        await c.wait_task(await c.create_snapshot(urn_to_uri(urn), name, type="CBTbackup"), interval=0.05)
        snapshot_urn = next(n.urn for n in (await c.snapshot_tree(urn_to_uri(urn))).walk() if n.name == name)

    def leftover() -> bool:
        assert main(["check", "--vrm", es.url, "--user", es.sim.config.user, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        vm = next(v for v in report["vms"] if v["urn"] == urn)
        return "leftover-backup-snapshot" in {f["rule"] for f in vm["findings"]}

    assert await asyncio.to_thread(leftover)             # nobody owns it: a leftover
    await proxy.create_job(job)
    await proxy.add_vms(job.id, [VmProgress(urn=urn, name="web01", kind="cbt", state="reading",
                                            snapshot_urn=snapshot_urn)], agent="proxy-1")
    await proxy.update_header(job.id, lambda h: h.update(state="running"))
    monkeypatch.setenv("FCTUI_CLUSTER", nats_server.url)
    assert not await asyncio.to_thread(leftover)         # a proxy's running job owns it


async def test_status_judges_with_the_cluster_jobs(es: Any, nats_server: Any, proxy: ClusterJobs,
                                                   dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``fctui status`` with a cluster named reads the last attempts from the cluster's job records:
    a VM whose proxy failed it is "at risk" because its last backup failed."""
    from fctui.cli import main
    from tests.cli.test_status import A, status_json
    monkeypatch.setenv("FCTUI_PASSWORD", es.sim.config.password)
    monkeypatch.delenv("FCTUI_CLUSTER", raising=False)
    assert main(["policy", "add", "one", "--vms", f"re:^{A}$", "--schedule", "daily 00:00", "--rpo", "1d"]) == 0
    _, doc = await status_json(es, "--vms", f"re:^{A}$")
    assert doc["vms"][0]["reason"] == "no restore point yet"

    urn = next(f"urn:sites:{es.sim.site.id}:vms:{v.id}" for v in es.sim.vms.values() if v.name == A)
    job = JobRecord(id="20261203-120000-aa0001", vrm=es.url, user=es.sim.config.user, targets=[A])
    await proxy.create_job(job)
    await proxy.add_vms(job.id, [VmProgress(urn=urn, name=A, kind="cbt", state="failed",
                                            reason="the VRM refused the snapshot")], agent="proxy-1")
    assert (await proxy.finish_if_done(job.id)).state == "failed"
    monkeypatch.setenv("FCTUI_CLUSTER", nats_server.url)
    rc, doc = await status_json(es, "--vms", f"re:^{A}$")
    assert rc == 1 and doc["vms"][0]["state"] == "at-risk"
    assert doc["vms"][0]["reason"].startswith("last backup failed"), doc["vms"][0]
    assert "the VRM refused the snapshot" in doc["vms"][0]["reason"]
