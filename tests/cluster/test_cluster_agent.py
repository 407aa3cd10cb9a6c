"""Proxies of the cluster (fctui.agent.cluster) against a real NATS server and a VRM simulator over HTTP:
a job spreads over proxies and every VM is backed up once; cancel; a VM busy in another job is refused;
a proxy killed mid-VM (a real process, kill -9) is taken over: its leftovers on the VRM are removed and
the VM is backed up by another proxy; the CLI's refusals."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest

from fctui.agent.cluster import ClusterAgent
from fctui.agent.server import new_job_id
from fctui.cluster.layout import ClusterSettings
from fctui.jobs.model import JobRecord
from fctui.jobs.runner import RunnerSettings
from fctui.repo import Repository
from tests.conftest import small_disks

# short enough that a dead proxy is noticed within seconds; slot_ttl > ack_wait (ClusterSettings' rule)
FAST = ClusterSettings(ack_wait_s=2.0, slot_ttl_s=4.0, agent_ttl_s=4.0, progress_interval_s=0.2)
RUNNER = RunnerSettings(watch_interval=0.2, hunt_interval_s=1.0, hunt_max_interval_s=2.0, cleanup_budget_s=20.0,
                        cleanup_floor_s=2.0, progress_interval=0.1)
# edge-case VMs with small CBT disks (the simulator's "ready" ones and three more that plan as CBT)
VM_NAMES = ("edge-ready-euleros-01", "edge-ready-euleros-02", "edge-disk-independent-01",
            "edge-guest-os-unlisted-01")


@pytest.fixture
def es() -> Iterator[Any]:
    from fctui.sim import EmbeddedSimulator
    with EmbeddedSimulator(small_disks(0.005)) as server:
        yield server


def urn_of(es: Any, name: str) -> str:
    vm = next(v for v in es.sim.vms.values() if v.name == name)
    return f"urn:sites:{es.sim.site.id}:vms:{vm.id}"


async def wait_until(what: str, cond: Callable[[], Awaitable[Any]], within: float = 60.0) -> Any:
    """Poll ``cond`` until it returns something true, failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        got = await cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def sim_stats(es: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=es.url) as c:
        return (await c.get("/sim/stats")).json()


async def sim_faults(es: Any, **fault: Any) -> None:
    async with httpx.AsyncClient(base_url=es.url) as c:
        if fault:
            await c.post("/sim/faults", json=fault)
        else:
            await c.delete("/sim/faults")


class Proxies:
    """In-process proxies (each its own NATS connection, repository object and VRM session) and a
    submitter's connection to the cluster (ClusterJobs)."""

    def __init__(self, nats_url: str, es: Any, repo_dir: Path) -> None:
        self.url, self.es, self.repo_dir = nats_url, es, repo_dir
        self.agents: list[ClusterAgent] = []
        self.tasks: list[asyncio.Task] = []
        self.cluster: Any = None
        self.jobs: Any = None

    async def connect(self) -> None:
        from fctui.cluster.connect import Cluster
        from fctui.cluster.jobs import ClusterJobs
        self.cluster = await Cluster.connect(self.url, settings=FAST)
        self.jobs = ClusterJobs(self.cluster)

    async def start(self, agent_id: str, global_limit: int = 4) -> ClusterAgent:
        cfg = self.es.sim.config
        agent = ClusterAgent(self.url, self.repo_dir, self.es.url, cfg.user, cfg.password, settings=RUNNER,
                             cluster_settings=FAST, global_limit=global_limit, agent_id=agent_id)
        task = asyncio.create_task(agent.run(signals=False))
        self.agents.append(agent)
        self.tasks.append(task)
        ready = asyncio.ensure_future(agent.ready.wait())
        await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()   # its start failed: say why
        assert agent.ready.is_set(), f"proxy {agent_id} did not start"
        return agent

    async def submit(self, *targets: str, full: bool = False) -> str:
        job = JobRecord(id=new_job_id(), vrm=self.es.url, user=self.es.sim.config.user, targets=list(targets),
                        full=full)
        job.add_log(f"backup submitted: {', '.join(targets)}")
        await self.jobs.create_job(job, {"verify": True})
        return job.id

    async def final(self, job_id: str, within: float = 90.0) -> JobRecord:
        async def done() -> JobRecord | None:
            job = await self.jobs.job(job_id)
            return job if job is not None and job.is_final else None
        return await wait_until(f"job {job_id} to end", done, within)

    async def close(self) -> None:
        for a in self.agents:
            a.stop()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.cluster is not None:
            await self.cluster.close()


@pytest.fixture
async def proxies(nats_server: Any, es: Any, tmp_path: Path) -> AsyncIterator[Proxies]:
    p = Proxies(nats_server.url, es, tmp_path / "repo")
    await p.connect()
    try:
        yield p
    finally:
        await p.close()


async def no_leftovers(es: Any) -> bool:
    s = await sim_stats(es)
    return not any(s["resourcesPerHost"].values()) and not any(s["liveSnapshotsPerVm"].values())


async def test_a_job_spreads_over_proxies_and_every_vm_is_backed_up_once(proxies: Proxies, es: Any) -> None:
    # two VMs at a time per proxy: the job's four must go to both
    await proxies.start("p1", global_limit=2)
    await proxies.start("p2", global_limit=2)
    await sim_faults(es, path="^/sim-data/", latency_ms=20)
    urns = [urn_of(es, n) for n in VM_NAMES]
    job_id = await proxies.submit(*urns)
    job = await proxies.final(job_id)
    assert job.state == "succeeded", job.error
    assert [vm.urn for vm in job.vms] == urns and all(vm.state == "done" for vm in job.vms)
    records = [await proxies.jobs.vm_record(job_id, u) for u in urns]
    agents = {_field(r, "agent") for r in records}
    assert agents == {"p1", "p2"}
    repo = Repository.open(proxies.repo_dir)
    points = repo.points()
    assert sorted(p.vm_urn for p in points) == sorted(urns)       # once each
    assert sorted(job.restore_points) == sorted(p.id for p in points)
    assert await no_leftovers(es)
    # every record's journal is empty: nothing left for anyone to clean
    assert all(not _field(r, "intents") for r in records)


async def test_cancel_stops_the_vms_and_leaves_nothing_on_the_vrm(proxies: Proxies, es: Any) -> None:
    await proxies.start("p1")
    await sim_faults(es, path="^/sim-data/", latency_ms=300)
    urns = [urn_of(es, n) for n in VM_NAMES[:2]]
    job_id = await proxies.submit(*urns)

    async def reading() -> bool:
        job = await proxies.jobs.job(job_id)
        return job is not None and any(vm.state == "reading" for vm in job.vms)
    await wait_until("a VM to read", reading)
    await proxies.jobs.request_cancel(job_id)
    job = await proxies.final(job_id, within=60)
    assert job.state == "cancelled"
    assert all(vm.state == "cancelled" for vm in job.vms), [(v.name, v.state) for v in job.vms]
    await sim_faults(es)
    assert await no_leftovers(es)
    assert Repository.open(proxies.repo_dir).points() == []


async def test_a_vm_busy_in_another_job_is_refused(proxies: Proxies, es: Any) -> None:
    await proxies.start("p1")
    await proxies.start("p2")
    await sim_faults(es, path="^/sim-data/", latency_ms=200)
    urn = urn_of(es, VM_NAMES[0])
    first = await proxies.submit(urn)

    async def reading() -> bool:
        job = await proxies.jobs.job(first)
        return job is not None and job.vms and job.vms[0].state == "reading"
    await wait_until("the first job to read", reading)
    second = await proxies.final(await proxies.submit(urn))
    assert second.state == "failed"
    assert second.vms[0].state == "refused"
    assert second.vms[0].reason == f"already being backed up by job {first}"
    await sim_faults(es)
    assert (await proxies.final(first)).state == "succeeded"
    assert [p.job_id for p in Repository.open(proxies.repo_dir).points()] == [first]


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, dict) else getattr(record, name)


# --- a proxy that dies mid-VM ------------------------------------------------------------------------------

def proxy_process(nats_url: str, es: Any, repo_dir: Path, tmp_path: Path, agent_id: str) -> subprocess.Popen:
    """``fctui agent --cluster`` as a real process (its password in a 0600 file, as a proxy has it)."""
    pw = tmp_path / f"{agent_id}.pw"
    pw.write_text(es.sim.config.password + "\n")
    pw.chmod(0o600)
    env = {**os.environ, "FCTUI_PASSWORD_FILE": str(pw)}
    env.pop("FCTUI_PASSWORD", None)
    args = [sys.executable, "-m", "fctui.cli", "agent", "--cluster", nats_url, "--repo", str(repo_dir),
            "--vrm", es.url, "--user", es.sim.config.user, "--agent-id", agent_id,
            "--ack-wait", str(FAST.ack_wait_s), "--slot-ttl", str(FAST.slot_ttl_s), "--watch-interval", "0.2"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_a_dead_proxys_vm_is_cleaned_up_and_backed_up_by_another(proxies: Proxies, es: Any,
                                                                        nats_server: Any, tmp_path: Path) -> None:
    urn = urn_of(es, VM_NAMES[1])   # three disks: it dies on the first, with the snapshot and a resource
    await sim_faults(es, path="^/sim-data/", latency_ms=300)
    doomed = proxy_process(nats_server.url, es, proxies.repo_dir, tmp_path, "doomed")
    try:
        job_id = await proxies.submit(urn)

        async def reading() -> Any:
            if doomed.poll() is not None:
                raise AssertionError(doomed.stderr.read().decode() if doomed.stderr else "the proxy died")
            record = await proxies.jobs.vm_record(job_id, urn)
            if record is None or _field(record, "state") != "reading":
                return None
            s = await sim_stats(es)
            return record if any(s["resourcesPerHost"].values()) else None
        record = await wait_until("the doomed proxy to read", reading)
        assert _field(record, "agent") == "doomed"
        assert {i["what"] for i in _field(record, "intents").values()} == {"snapshot", "resource"}
        doomed.kill()   # SIGKILL: no cleanup, no nak, its slots and claims simply stop being renewed
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
    s = await sim_stats(es)
    assert s["liveSnapshotsPerVm"].get(urn) == 1 and any(s["resourcesPerHost"].values())  # its leftovers
    await sim_faults(es)

    heir = await proxies.start("heir")
    job = await proxies.final(job_id)
    assert job.state == "succeeded", job.error
    record = await proxies.jobs.vm_record(job_id, urn)
    assert _field(record, "agent") == "heir" and _field(record, "attempt") == 2
    assert not _field(record, "intents")
    messages = [e["message"] for e in _field(record, "log")]
    assert any("proxy doomed stopped answering" in m for m in messages), messages
    assert any("removed 2 leftover(s) of the proxy that died" in m for m in messages), messages
    # the dead proxy's CBT snapshot consumed a chgID: the heir read the disks fully
    assert all(d.mode == "full" for d in job.vms[0].disks if d.mode != "excluded")
    assert await no_leftovers(es)
    points = Repository.open(proxies.repo_dir).points()
    assert [p.job_id for p in points] == [job_id]
    # the dead proxy's slots were adopted and released: none is held any more
    await heir.scheduler.refresh_counts()
    assert not any(heir.scheduler.pool.hosts.values()) and not any(heir.scheduler.pool.datastores.values())


# --- the command line ---------------------------------------------------------------------------------------

def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fctui.cli", "agent", *args], env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=60)


def test_cli_without_a_password_file_exits_2(es: Any, nats_server: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FCTUI_PASSWORD_FILE", "CREDENTIALS_DIRECTORY")}
    r = run_cli("--cluster", nats_server.url, "--vrm", es.url, "--user", es.sim.config.user, env=env)
    assert r.returncode == 2, r.stderr
    assert "no password for the service" in r.stderr


def test_cli_with_an_unreachable_cluster_exits_3(es: Any, tmp_path: Path) -> None:
    from tests.servers import free_port
    pw = tmp_path / "pw"
    pw.write_text(es.sim.config.password)
    pw.chmod(0o600)
    url = f"nats://127.0.0.1:{free_port()}"
    r = run_cli("--cluster", url, "--vrm", es.url, "--user", es.sim.config.user, "--repo", str(tmp_path / "repo"),
                env={**os.environ, "FCTUI_PASSWORD_FILE": str(pw)})
    assert r.returncode == 3, r.stderr
    assert f"cannot reach the cluster at {url}" in r.stderr
    assert es.sim.config.password not in r.stderr


def test_cluster_and_service_do_not_go_together(nats_server: Any) -> None:
    r = run_cli("--cluster", nats_server.url, "--service")
    assert r.returncode == 2 and "choose one" in r.stderr


def test_cluster_settings_follow_the_hidden_options() -> None:
    import argparse

    from fctui.cli.agent import cluster_settings
    ns = argparse.Namespace(ack_wait=2.0, slot_ttl=None)
    s = cluster_settings(ns)
    assert (s.ack_wait_s, s.slot_ttl_s) == (2.0, 4.0)
    assert dataclasses.asdict(cluster_settings(argparse.Namespace(ack_wait=None, slot_ttl=None))) == \
        dataclasses.asdict(ClusterSettings())
