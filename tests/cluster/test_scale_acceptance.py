"""Issue 18's acceptance: three proxies (``fctui agent --cluster`` processes, each with its own dirs and
password file), one NATS, one repository on S3, the simulator with 30 VMs on 5 hosts (14 on one: more than
its 8 backup connections). A client with no agent and no VRM password (``fctui backup --cluster``, a fourth
machine) submits a job of the 30 VMs; one proxy is killed (-9) while it reads a VM.

What must hold: the VRM never saw more than 8 backup resources on a host and never had to refuse a prepare
for it (10300412: proxies that did not share the limit hit it; see tests/proxies.py SCALE_VMS_PER_HOST);
every VM has exactly one restore point; the killed proxy's VMs were finished by the others; nothing of ours
is left on the VRM (no snapshot, no backup resource, none left to expire); ``fctui jobs --cluster`` on the
fourth machine lists the job.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.proxies import SCALE_VMS_PER_HOST, Proxies, scale_inventory

# Every data read waits this long at the VRM, so a VM is being read long enough to kill its proxy then, and
# the VMs of the crowded host overlap.
READ_LATENCY_MS = 250
# Short cluster timing: a dead proxy's VM item goes to another after 3 s, its slots expire after 6 s.
PROXY_ARGS = ["--ack-wait", "3", "--slot-ttl", "6", "--watch-interval", "0.2"]
JOB_WITHIN_S = 60.0


def client_env(base: Path) -> dict[str, str]:
    """The fourth machine: its own empty dirs, no agent, no VRM profile, no password."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FCTUI_") and k not in ("CREDENTIALS_DIRECTORY",)}
    for var, sub in (("FCTUI_CONFIG_DIR", "cfg"), ("FCTUI_DATA_DIR", "data"), ("FCTUI_RUNTIME_DIR", "run")):
        (base / sub).mkdir(parents=True, exist_ok=True)
        env[var] = str(base / sub)
    return env


def fctui(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fctui.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


async def wait_for(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    """Poll ``await check()`` until it returns something true; fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(every)


async def test_three_proxies_back_up_thirty_vms_within_the_host_limit_and_survive_a_killed_one(
        nats_server: Any, s3_repo_url: str) -> None:
    from fctui.cluster.connect import Cluster
    from fctui.cluster.jobs import ClusterJobs
    from fctui.jobs.model import FINAL_VM_STATES, JobRecord
    from fctui.repo import Repository
    from fctui.sim import EmbeddedSimulator

    started = time.monotonic()
    with EmbeddedSimulator(scale_inventory()) as es, httpx.Client(base_url=es.url) as control, \
            tempfile.TemporaryDirectory(prefix="fcl") as fourth:
        sim = es.sim
        ready = {sim.vm_urn(v): v.name for v in sim.vms.values() if v.name.startswith("ready-")}
        assert len(ready) == sum(SCALE_VMS_PER_HOST) == 30
        crowded = sim.urn("hosts", next(v.host.id for v in sim.vms.values() if v.name == "ready-cna-01-01"))
        control.post("/sim/faults", json={"path": "^/sim-data/", "method": "GET",
                                          "latencyMs": READ_LATENCY_MS}).raise_for_status()
        env = client_env(Path(fourth))
        with Proxies(3, nats_server.url, es.url, sim.config.user, sim.config.password, s3_repo_url,
                     args=PROXY_ARGS) as proxies:
            await proxies.wait_up()
            r = fctui(env, "backup", "--cluster", nats_server.url, "--json", *sorted(ready.values()))
            assert r.returncode == 0, r.stderr + proxies.logs()
            job_id = json.loads(r.stdout)["job"]

            cluster = await Cluster.connect(nats_server.url, proxy=False)   # an observer, as a console is
            try:
                jobs = ClusterJobs(cluster)

                async def someone_reading() -> tuple[str, str] | None:
                    job = await jobs.job(job_id)
                    for vm in job.vms if job else []:
                        rec = await jobs.vm_record(job_id, vm.urn) if vm.state == "reading" else None
                        if rec and rec["state"] == "reading" and rec["agent"] in {p.agent_id for p in proxies}:
                            return rec["agent"], vm.urn
                    return None

                victim_id, read_vm = await wait_for("a proxy reading a VM", someone_reading, 30, every=0.1)
                proxies.by_id(victim_id).kill9()
                at_kill = {u: await jobs.vm_record(job_id, u) for u in ready}
                victims_vms = {u for u, rec in at_kill.items()
                               if rec and rec["agent"] == victim_id and rec["state"] not in FINAL_VM_STATES}
                assert read_vm in victims_vms

                async def job_final() -> JobRecord | None:
                    job = await jobs.job(job_id)
                    return job if job is not None and job.is_final else None

                try:
                    job = await wait_for("the job's end", job_final, JOB_WITHIN_S, every=0.2)
                except AssertionError as e:
                    raise AssertionError(f"{e}\n{await jobs.job(job_id)}\n{proxies.logs()}") from None
                final = {u: await jobs.vm_record(job_id, u) for u in ready}
            finally:
                await cluster.close()

            # a fourth machine lists it (no agent, no VRM)
            listed = fctui(env, "jobs", "--cluster", nats_server.url, "--json")
            assert listed.returncode == 0, listed.stderr

        assert job.state == "succeeded", (job.error, final)
        assert sorted(vm.urn for vm in job.vms) == sorted(ready)
        assert {rec["state"] for rec in final.values() if rec} == {"done"}
        # the killed proxy's VMs were finished by the others
        for urn in victims_vms:
            assert final[urn]["agent"] not in ("", victim_id), final[urn]
        survivors = {p.agent_id for p in proxies} - {victim_id}
        assert {rec["agent"] for rec in final.values()} <= survivors | {victim_id}
        assert {final[u]["agent"] for u in final} & survivors

        mine = [j for j in json.loads(listed.stdout)["jobs"] if j["job"] == job_id]
        assert [(j["state"], len(j["vms"])) for j in mine] == [("succeeded", 30)]

        # the VRM: within its limits all along, and nothing of ours left on it
        async def clean() -> dict[str, Any] | None:
            st = control.get("/sim/stats").json()
            return st if not st["resourcesPerHost"] else None

        stats = await wait_for("released resources gone", clean, 10)
        assert stats["resourcesRefusedPerHost"] == {}, stats
        assert max(stats["maxResourcesPerHost"].values()) <= 8, stats
        # the crowded host was pressed: more resources at once than any other host has VMs (a VM's slot is
        # held through its snapshot too, so 8 slots give 6-8 resources at the peak)
        assert stats["maxResourcesPerHost"][crowded] > max(SCALE_VMS_PER_HOST[1:]), stats
        assert stats["resourcesExpired"] == 0, stats
        assert not set(stats["liveSnapshotsPerVm"]) & set(ready), stats

        # every VM backed up exactly once
        repo = Repository.open(s3_repo_url)
        try:
            points = repo.points()
        finally:
            repo.close()
        assert sorted(p.vm_urn for p in points) == sorted(ready)
        assert {p.job_id for p in points} == {job_id}
    assert time.monotonic() - started < 90
