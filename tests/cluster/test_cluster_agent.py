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

import pytest

from fctui.agent.cluster import ClusterAgent
from fctui.agent.server import new_job_id
from fctui.cluster.layout import ClusterSettings
from fctui.jobs.model import JobRecord
from fctui.jobs.runner import RunnerSettings
from fctui.repo import Repository
from tests.conftest import small_disks
from tests.servers import sim_control

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
    async with sim_control(es.url) as c:
        return (await c.get("/sim/stats")).json()


async def sim_faults(es: Any, **fault: Any) -> None:
    async with sim_control(es.url) as c:
        if fault:
            await c.post("/sim/faults", json=fault)
        else:
            await c.delete("/sim/faults")


class Proxies:
    """In-process proxies (each its own NATS connection, repository object and VRM session) and a
    submitter's connection to the cluster (ClusterJobs)."""

    def __init__(self, nats_url: str, es: Any, repo_dir: Path | str) -> None:
        self.url, self.es, self.repo_dir = nats_url, es, repo_dir   # a directory, or s3://bucket/prefix
        self.agents: list[ClusterAgent] = []
        self.tasks: list[asyncio.Task] = []
        self.cluster: Any = None
        self.jobs: Any = None

    async def connect(self) -> None:
        from fctui.cluster.connect import Cluster
        from fctui.cluster.jobs import ClusterJobs
        self.cluster = await Cluster.connect(self.url, settings=FAST)
        self.jobs = ClusterJobs(self.cluster)

    async def start(self, agent_id: str, global_limit: int = 4, settings: ClusterSettings = FAST) -> ClusterAgent:
        cfg = self.es.sim.config
        agent = ClusterAgent(self.url, self.repo_dir, self.es.url, cfg.user, cfg.password, settings=RUNNER,
                             cluster_settings=settings, global_limit=global_limit, agent_id=agent_id)
        task = asyncio.create_task(agent.run(signals=False))
        self.agents.append(agent)
        self.tasks.append(task)
        ready = asyncio.ensure_future(agent.ready.wait())
        await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()   # its start failed: say why
        assert agent.ready.is_set(), f"proxy {agent_id} did not start"
        return agent

    async def submit(self, *targets: str, full: bool = False, vrm: str | None = None) -> str:
        job = JobRecord(id=new_job_id(), vrm=self.es.url if vrm is None else vrm, user=self.es.sim.config.user,
                        targets=list(targets), full=full)
        job.add_log(f"backup submitted: {', '.join(targets)}")
        await self.jobs.create_job(job, {"verify": True})
        return job.id

    async def final(self, job_id: str, within: float = 90.0) -> JobRecord:
        async def done() -> JobRecord | None:
            job = await self.jobs.job(job_id)
            return job if job is not None and job.is_final else None
        return await wait_until(f"job {job_id} to end", done, within)

    async def stop(self, agent: ClusterAgent) -> None:
        """Stop one proxy as SIGTERM does, and wait until it is gone."""
        agent.stop()
        await asyncio.wait_for(self.tasks[self.agents.index(agent)], 60)

    async def close(self) -> None:
        for a in self.agents:
            a.stop()
        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*self.tasks, return_exceptions=True)
                if self.cluster is not None:
                    await self.cluster.close()
        except TimeoutError:
            import io
            out = io.StringIO()
            for t in asyncio.all_tasks():
                t.print_stack(file=out)
            raise AssertionError(f"the proxies did not stop within 60 s:\n{out.getvalue()}") from None


@pytest.fixture
def repo_kind() -> str:
    return "dir"


@pytest.fixture
async def proxies(nats_server: Any, es: Any, tmp_path: Path, repo_kind: str,
                  request: pytest.FixtureRequest) -> AsyncIterator[Proxies]:
    """The proxies share one repository: a directory, or (``repo_kind`` "s3") a prefix on SeaweedFS."""
    spec = request.getfixturevalue("s3_repo_url") if repo_kind == "s3" else tmp_path / "repo"
    p = Proxies(nats_server.url, es, spec)
    await p.connect()
    try:
        yield p
    finally:
        await p.close()


async def no_leftovers(es: Any, *job_ids: str) -> bool:
    """No backup resource on any host, and no snapshot of these jobs (named fctui-<job>-...) on any VM."""
    s = await sim_stats(es)
    ours = [snap.name for vm in list(es.sim.vms.values()) for snap in list(vm.snapshots.values())
            if any(snap.name.startswith(f"fctui-{j}-") for j in job_ids)]
    return not any(s["resourcesPerHost"].values()) and not ours


@pytest.mark.parametrize("repo_kind", ["dir", "s3"])
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
    agents = {r["agent"] for r in records}
    assert agents == {"p1", "p2"}
    repo = Repository.open(proxies.repo_dir)
    points = repo.points()
    assert sorted(p.vm_urn for p in points) == sorted(urns)       # once each
    assert sorted(job.restore_points) == sorted(p.id for p in points)
    assert await no_leftovers(es, job_id)
    # every record's journal is empty: nothing left for anyone to clean
    assert all(not r["intents"] for r in records)


async def test_a_duplicated_vm_item_never_runs_the_vm_twice(proxies: Proxies, es: Any) -> None:
    await proxies.start("p1")
    await proxies.start("p2")
    await sim_faults(es, path="^/sim-data/", latency_ms=100)
    urn = urn_of(es, VM_NAMES[0])
    job_id = await proxies.submit(urn)

    async def reading() -> Any:
        record = await proxies.jobs.vm_record(job_id, urn)
        return record if record is not None and record["state"] == "reading" else None
    record = await wait_until("the VM to read", reading)
    # as a planner that died after publishing and was replanned would: the same VM item again
    await proxies.jobs.publish_vm_items(job_id, [urn])
    await sim_faults(es)
    job = await proxies.final(job_id)
    assert job.state == "succeeded", job.error
    after = await proxies.jobs.vm_record(job_id, urn)
    assert (after["item"], after["agent"], after["attempt"]) == (record["item"], record["agent"], 1)
    assert [p.job_id for p in Repository.open(proxies.repo_dir).points()] == [job_id]

    async def queue_empty() -> bool:   # the duplicate was answered (acked), not left to go round
        info = await proxies.cluster.js.consumer_info("FCTUI_WORK", "proxies")
        return info.num_pending == 0 and info.num_ack_pending == 0
    await wait_until("the work queue to empty", queue_empty, within=10)


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
    assert await no_leftovers(es, job_id)
    assert Repository.open(proxies.repo_dir).points() == []


async def test_a_job_cancelled_before_any_proxy_took_it_ends_cancelled(proxies: Proxies, es: Any) -> None:
    job_id = await proxies.submit(urn_of(es, VM_NAMES[0]))
    await proxies.jobs.request_cancel(job_id)
    await proxies.start("p1")
    job = await proxies.final(job_id, within=30)
    assert job.state == "cancelled" and job.vms == []
    assert Repository.open(proxies.repo_dir).points() == []


async def test_a_job_for_a_vrm_no_proxy_serves_fails_saying_so(proxies: Proxies, es: Any) -> None:
    await proxies.start("p1", settings=dataclasses.replace(FAST, max_attempts=1))
    job_id = await proxies.submit(urn_of(es, VM_NAMES[0]), vrm="https://other-vrm.example:7443")
    job = await proxies.final(job_id, within=30)
    assert job.state == "failed"
    assert job.error == (f"no proxy of the cluster serves the VRM https://other-vrm.example:7443 "
                         f"(this one serves {es.url})")


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


async def test_a_stopping_proxy_hands_its_vm_to_another(proxies: Proxies, es: Any) -> None:
    first = await proxies.start("p1")
    await sim_faults(es, path="^/sim-data/", latency_ms=300)
    urn = urn_of(es, VM_NAMES[0])
    job_id = await proxies.submit(urn)

    async def reading() -> bool:
        record = await proxies.jobs.vm_record(job_id, urn)
        return record is not None and record["state"] == "reading"
    await wait_until("p1 to read", reading)
    await proxies.start("p2")
    await proxies.stop(first)   # SIGTERM: its cleanup on the VRM, then the item back to the queue
    record = await proxies.jobs.vm_record(job_id, urn)
    assert record["state"] == "queued" or record["agent"] == "p2", record["state"]
    assert not record["intents"]
    await sim_faults(es)
    job = await proxies.final(job_id)
    assert job.state == "succeeded", job.error
    record = await proxies.jobs.vm_record(job_id, urn)
    assert record["agent"] == "p2" and record["attempt"] == 2
    assert any("proxy p1 stopped: back in the queue" in e["message"] for e in record["log"])
    assert not any(e["message"].endswith("cancelled: cancelled by the user") for e in record["log"])
    # p1's CBT snapshot consumed a chgID before it was deleted: p2 read the disk fully
    assert all(d.mode == "full" for d in job.vms[0].disks)
    assert await no_leftovers(es, job_id)
    assert [p.job_id for p in Repository.open(proxies.repo_dir).points()] == [job_id]


async def test_a_leftover_the_vrm_refused_is_removed_by_the_sweep(proxies: Proxies, es: Any) -> None:
    await proxies.start("p1")
    urn = urn_of(es, VM_NAMES[0])
    # the VRM refuses to delete snapshots (not a busy answer: no retry) until the fault is gone
    await sim_faults(es, path="/snapshots/", method="DELETE", status=400, errorCode="10300999")
    job_id = await proxies.submit(urn)
    job = await proxies.final(job_id)
    assert job.state == "succeeded" and job.outcome == "succeeded with warnings", job.error
    record = await proxies.jobs.vm_record(job_id, urn)
    assert [i["what"] for i in record["intents"].values()] == ["snapshot"]
    assert not await no_leftovers(es, job_id)
    await sim_faults(es)

    async def swept() -> bool:
        r = await proxies.jobs.vm_record(job_id, urn)
        return not r["intents"]
    await wait_until("the sweep to remove the snapshot", swept, within=30)
    assert await no_leftovers(es, job_id)
    record = await proxies.jobs.vm_record(job_id, urn)
    assert any("removed 1 leftover(s) on the VRM (proxy p1)" in e["message"] for e in record["log"])


async def test_a_job_left_running_with_every_vm_final_is_ended_by_a_proxy(proxies: Proxies, es: Any) -> None:
    """The proxy of a job's last VM died between the VM's end and the job's: another proxy ends it."""
    await proxies.start("p1")
    job_id = await proxies.submit(urn_of(es, VM_NAMES[0]))
    assert (await proxies.final(job_id)).state == "succeeded"

    def unend(h: dict[str, Any]) -> None:
        h.update(state="running", finished=None)
    await proxies.jobs.update_header(job_id, unend)
    job = await proxies.final(job_id, within=30)
    assert job.state == "succeeded" and job.finished


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


@pytest.mark.parametrize(("repo_kind", "max_attempts"), [("dir", 4), ("dir", 1), ("s3", 4)])
async def test_a_dead_proxys_vm_is_cleaned_up_and_backed_up_by_another(proxies: Proxies, es: Any, nats_server: Any,
                                                                        tmp_path: Path, max_attempts: int) -> None:
    """kill -9 of a proxy mid-read: the heir removes its snapshot and resource (from the VM record's
    journal), breaks the CBT chain, and backs the VM up again (fully); with max_attempts=1 the VM fails
    instead, its leftovers removed all the same."""
    urn = urn_of(es, VM_NAMES[1])   # three disks: it dies on the first, with the snapshot and a resource
    await sim_faults(es, path="^/sim-data/", latency_ms=300)
    doomed = proxy_process(nats_server.url, es, proxies.repo_dir, tmp_path, "doomed")
    try:
        job_id = await proxies.submit(urn)

        async def reading() -> Any:
            if doomed.poll() is not None:
                raise AssertionError(doomed.stderr.read().decode() if doomed.stderr else "the proxy died")
            record = await proxies.jobs.vm_record(job_id, urn)
            if record is None or record["state"] != "reading":
                return None
            s = await sim_stats(es)
            return record if any(s["resourcesPerHost"].values()) else None
        record = await wait_until("the doomed proxy to read", reading)
        assert record["agent"] == "doomed"
        assert {i["what"] for i in record["intents"].values()} == {"snapshot", "resource"}
        doomed.kill()   # SIGKILL: no cleanup, no nak, its slots and claims simply stop being renewed
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
    s = await sim_stats(es)
    assert s["liveSnapshotsPerVm"].get(urn) == 1 and any(s["resourcesPerHost"].values())  # its leftovers
    await sim_faults(es)

    heir = await proxies.start("heir", settings=dataclasses.replace(FAST, max_attempts=max_attempts))
    job = await proxies.final(job_id)
    record = await proxies.jobs.vm_record(job_id, urn)
    assert record["agent"] == "heir" and record["attempt"] == 2
    assert not record["intents"]
    messages = [e["message"] for e in record["log"]]
    assert any("proxy doomed stopped answering" in m for m in messages), messages
    assert any("removed 2 leftover(s) of the proxy that died" in m for m in messages), messages
    assert await no_leftovers(es, job_id)
    if max_attempts == 1:
        assert job.state == "failed" and job.vms[0].reason == "1 proxy died while backing it up"
        assert Repository.open(proxies.repo_dir).points() == []
        return
    assert job.state == "succeeded", job.error
    # the dead proxy's CBT snapshot consumed a chgID: the heir read the disks fully
    assert all(d.mode == "full" for d in job.vms[0].disks if d.mode != "excluded")
    assert await no_leftovers(es, job_id)
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


def test_cli_with_a_password_the_vrm_refuses_exits_2(es: Any, nats_server: Any, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("not-the-password")
    pw.chmod(0o600)
    r = run_cli("--cluster", nats_server.url, "--vrm", es.url, "--user", es.sim.config.user,
                "--repo", str(tmp_path / "repo"), env={**os.environ, "FCTUI_PASSWORD_FILE": str(pw)})
    assert r.returncode == 2, r.stderr
    assert f"the VRM {es.url} refused {es.sim.config.user}" in r.stderr
    assert "not-the-password" not in r.stderr


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


async def test_sigterm_stops_a_proxy_process_cleanly(proxies: Proxies, es: Any, nats_server: Any,
                                                     tmp_path: Path) -> None:
    """SIGTERM (systemd's stop): the proxy cleans up on the VRM, puts its VM back in the queue and exits 0."""
    import signal
    urn = urn_of(es, VM_NAMES[0])
    await sim_faults(es, path="^/sim-data/", latency_ms=300)
    proc = proxy_process(nats_server.url, es, proxies.repo_dir, tmp_path, "termed")
    try:
        job_id = await proxies.submit(urn)

        async def reading() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode() if proc.stderr else "the proxy died")
            record = await proxies.jobs.vm_record(job_id, urn)
            return record is not None and record["state"] == "reading"
        await wait_until("the proxy to read", reading)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err.decode()
    assert "proxy termed stopped" in err.decode()
    record = await proxies.jobs.vm_record(job_id, urn)
    assert record["state"] == "queued" and not record["intents"]
    assert await no_leftovers(es, job_id)
    await sim_faults(es)
    await proxies.start("heir")
    assert (await proxies.final(job_id)).state == "succeeded"
