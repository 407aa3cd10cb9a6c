"""Scale-out: one proxy against three (``fctui agent --cluster`` processes) sharing one NATS server and one S3
store (SeaweedFS), backing up the same VMs of a simulator with a realistic per-request latency.

Three runs, each on a fresh simulator, NATS server and repository prefix (so every run reads every block):

1. one proxy backs up every VM; 2. three proxies do the same; 3. three proxies again, one killed (-9) while it
reads a VM: how long until that VM is done on another proxy (the item waits ``--ack-wait`` seconds before
JetStream hands it to another proxy, which removes the dead one's snapshot and resource, then reads the VM
again, fully: the dead proxy's CBT snapshot broke the chain).

Prints per run the wall time from submission to the job's end, MB/s of VM data read, the highest number of
backup resources the simulator saw on any host and its 10300412 refusals; then the throughput ratio and the
takeover time. The proxies, NATS, SeaweedFS and the simulator all share this machine's cores, where real
proxies each have their own machine: so each proxy's capacity is modelled by how many VMs it backs up at
once (``--global-limit``, default 4), and the ratio shows how the cluster spreads work over proxies while
the cores last; with ``--global-limit 16`` one proxy alone already saturates a 2-core machine.

    .venv/bin/python benchmarks/scale.py [--vms-per-host 8,8,8,8,8] [--fill 0.005] [--latency-ms 20] [--ack-wait 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.proxies import Proxies, cpu_seconds, scale_inventory  # noqa: E402
from tests.servers import NatsServer, S3Server  # noqa: E402

from fctui.sim import EmbeddedSimulator  # noqa: E402

DISK_BYTES = 1 << 30   # the scale inventory's VMs have one 1 GB disk each


def parse_hosts(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


async def run_job(n_proxies: int, nats: NatsServer, s3: S3Server, args: argparse.Namespace,
                  kill: bool = False) -> dict[str, Any]:
    """One job of every ready VM on ``n_proxies`` proxies; with ``kill``, one proxy dies while reading."""
    import httpx

    from fctui.agent.server import new_job_id
    from fctui.cluster.connect import Cluster
    from fctui.cluster.jobs import ClusterJobs
    from fctui.jobs.model import JobRecord

    config = scale_inventory(fill=args.fill, latency_ms=args.latency_ms, ready_vms_per_host=args.vms_per_host)
    repo = s3.url(f"bench-{n_proxies}-{'kill' if kill else 'run'}-{os.getpid()}")
    env = {**os.environ, **s3.env}
    proxy_args = ["--ack-wait", str(args.ack_wait), "--global-limit", str(args.global_limit)]
    with EmbeddedSimulator(config) as es, httpx.Client(base_url=es.url) as control:
        sim = es.sim
        urns = [sim.vm_urn(v) for v in sim.vms.values() if v.name.startswith("ready-")]
        with Proxies(n_proxies, nats.url, es.url, sim.config.user, sim.config.password, repo, args=proxy_args,
                     env=env) as proxies:
            await proxies.wait_up(60)
            cluster = await Cluster.connect(nats.url, proxy=False)   # a client, as the CLI is
            try:
                jobs = ClusterJobs(cluster)
                job = JobRecord(id=new_job_id(), vrm=es.url, user=sim.config.user, targets=urns)
                t0 = time.monotonic()
                # CPU from submission to the end: the proxies; this process (the simulator's thread, and
                # the polling here); SeaweedFS; NATS
                cpu0 = {"proxies": sum(p.cpu_seconds() for p in proxies), "simulator": time.process_time(),
                        "s3": cpu_seconds(s3.proc.pid), "nats": cpu_seconds(nats.proc.pid)}
                await jobs.create_job(job, {"verify": True})
                # planning: the proxy that takes the job item plans every VM before publishing their items
                while True:
                    planned = await jobs.job(job.id)
                    if planned is not None and any(vm.state != "queued" for vm in planned.vms):
                        t_planned = time.monotonic()
                        break
                    if time.monotonic() - t0 > args.timeout:
                        raise SystemExit(f"the job was not planned within {args.timeout:g} s:\n{proxies.logs()}")
                    await asyncio.sleep(0.05)
                takeover: float | None = None
                victim = ""
                if kill:
                    victim, vm_urn, t_kill = await kill_one_reading(jobs, job.id, proxies)
                    while True:
                        rec = await jobs.vm_record(job.id, vm_urn)
                        if rec is not None and rec.get("state") == "done":
                            takeover = time.monotonic() - t_kill
                            break
                        if time.monotonic() - t_kill > 10 * args.ack_wait + 120:
                            raise SystemExit(f"the killed proxy's VM was not finished:\n{proxies.logs()}")
                        await asyncio.sleep(0.1)
                while True:
                    final = await jobs.job(job.id)
                    if final is not None and final.is_final:
                        break
                    if time.monotonic() - t0 > args.timeout:
                        raise SystemExit(f"the job did not end within {args.timeout:g} s:\n{proxies.logs()}")
                    await asyncio.sleep(0.1)
                elapsed = time.monotonic() - t0
                cpu = {"proxies": sum(p.cpu_seconds() for p in proxies if p.alive) - cpu0["proxies"],
                       "simulator": time.process_time() - cpu0["simulator"],
                       "s3": cpu_seconds(s3.proc.pid) - cpu0["s3"], "nats": cpu_seconds(nats.proc.pid) - cpu0["nats"]}
            finally:
                await cluster.close()
        stats = control.get("/sim/stats").json()
    if final.state != "succeeded":
        raise SystemExit(f"job {final.id} {final.state}: {final.error}")
    read = final.totals()["bytes_read"]
    return {"proxies": n_proxies, "vms": len(urns), "seconds": elapsed, "bytes_read": read,
            "planning_s": t_planned - t0, "backing_up_s": elapsed - (t_planned - t0), "mb_s": read / elapsed / 1e6, "max_per_host": max(stats["maxResourcesPerHost"].values(), default=0),
            "refused": sum(stats["resourcesRefusedPerHost"].values()), "expired": stats["resourcesExpired"],
            "takeover_s": takeover, "victim": victim, "cpu": cpu}


async def kill_one_reading(jobs: Any, job_id: str, proxies: Proxies) -> tuple[str, str, float]:
    """Wait until a proxy reads a VM, kill it (-9); its id, the VM and the moment."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = await jobs.job(job_id)
        for vm in (job.vms if job else []):
            if vm.state == "reading":
                rec = await jobs.vm_record(job_id, vm.urn)
                agent = (rec or {}).get("agent", "")
                if rec and rec.get("state") == "reading" and agent:
                    proxies.by_id(agent).kill9()
                    return agent, vm.urn, time.monotonic()
        await asyncio.sleep(0.05)
    raise SystemExit("no proxy was seen reading a VM")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vms-per-host", type=parse_hosts, default=(8, 8, 8, 8, 8),
                    help="ready VMs on each of the first hosts (default 8,8,8,8,8: 40 VMs, 40 streams at most)")
    ap.add_argument("--fill", type=float, default=0.005, help="written part of each 1 GB disk (default 0.005: 5 MiB)")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="simulator latency per request (default 20)")
    ap.add_argument("--ack-wait", type=float, default=10.0,
                    help="seconds before a dead proxy's VM goes to another (production: 60; default 10)")
    ap.add_argument("--global-limit", type=int, default=4,
                    help="VMs one proxy backs up at once (default 4: a proxy's own capacity, see above)")
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    vms = sum(args.vms_per_host)
    need = 3 * vms * DISK_BYTES * args.fill * 1.2
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < 4 * need:
        raise SystemExit(f"{free / 1e9:.1f} GB free in {tempfile.gettempdir()}; this run stores about "
                         f"{need / 1e9:.1f} GB: lower --fill or the VMs")
    print(f"{vms} VMs on {len(args.vms_per_host)} hosts {args.vms_per_host}, {args.fill * 1024:.0f} MiB "
          f"written per VM ({vms * args.fill:.2f} GiB per run), simulator latency {args.latency_ms:g} ms, "
          f"ack wait {args.ack_wait:g} s; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")

    results = []
    for n, kill in ((1, False), (3, False), (3, True)):
        with NatsServer() as nats, S3Server() as s3:
            r = asyncio.run(run_job(n, nats, s3, args, kill=kill))
        results.append(r)
        extra = (f", VM of killed proxy {r['victim']} done {r['takeover_s']:.1f} s after the kill"
                 if kill else "")
        print(f"{n} prox{'y' if n == 1 else 'ies'}{' (one killed)' if kill else ''}: {r['seconds']:.1f} s "
              f"(planning {r['planning_s']:.1f} s, then {r['backing_up_s']:.1f} s), "
              f"{r['mb_s']:.1f} MB/s, max {r['max_per_host']} resources on a host, {r['refused']} refused "
              f"(10300412), {r['expired']} expired; CPU s: " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu"].items())
              + extra, flush=True)
    one, three, killed = results
    print(f"\nthroughput 3 proxies / 1 proxy: {three['mb_s'] / one['mb_s']:.2f}x "
          f"({one['seconds']:.1f} s -> {three['seconds']:.1f} s); after planning (one proxy plans the whole job): "
          f"{one['backing_up_s'] / three['backing_up_s']:.2f}x ({one['backing_up_s']:.1f} s -> "
          f"{three['backing_up_s']:.1f} s)")
    print(f"max backup resources on any host: {max(r['max_per_host'] for r in results)} (limit 8), "
          f"10300412 refusals: {sum(r['refused'] for r in results)}")
    print(f"killed proxy's VM finished by another: {killed['takeover_s']:.1f} s after the kill "
          f"(ack wait {args.ack_wait:g} s)")
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
