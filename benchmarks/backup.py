"""Backup throughput: raw resource read vs fctui's full backup of the same disk, and a 5 % incremental.

The simulator runs in its own process (so its data generation does not share our interpreter lock),
serving a VM whose disk is mostly written. In one run we measure:

1. raw: plain httpx streaming of the backup resource's ``resourceUrl`` to nowhere (one GET);
2. fctui full backup of that VM (CBT snapshot, bitmap, resource, pipelined range reads, hashing,
   zstd, repository writes, release, snapshot delete, commit);
3. an incremental after guest writes to 5 % of the blocks.

Prints MB/s, the ratio to raw, CPU seconds per GB, and bytes read per changed byte.
Goal: full >= 70 % of raw; the incremental reads exactly the changed blocks (ratio 1.00).

    python benchmarks/backup.py [--disk-gb 2] [--fill 0.9] [--reads 6] [--range-mb 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fctui.jobs.model import JobRecord  # noqa: E402
from fctui.jobs.planner import build_plan  # noqa: E402
from fctui.jobs.runner import BackupRunner, Reporter, RunnerSettings  # noqa: E402
from fctui.repo import Repository  # noqa: E402
from fctui.vrm import VrmClient  # noqa: E402

SIM_SCRIPT = """
import sys, time
from fctui.sim import EmbeddedSimulator, SimConfig
cfg = SimConfig(vms=30, seed=7, time_scale=50.0, edge_disk_gb={gb}, edge_fill={fill})
es = EmbeddedSimulator(cfg).start()
print(es.url, flush=True)
sys.stdin.read()
es.stop()
"""

MB = 1_000_000


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def raw_read(client: VrmClient, vm_uri: str, volume_uri: str) -> tuple[int, float]:
    """One plain streaming GET of the whole resource, bytes dropped."""
    ref = await client.create_snapshot(vm_uri, "bench-raw", type="CBTbackup")
    await client.wait_task(ref, interval=0.05)
    res_ref = await client.prepare_backup_resource(volume_uri, "CBTBackup", snap_urn2=ref.urn, delay=600)
    res = await client.wait_backup_resource(volume_uri, res_ref.task_id)
    url = res.resource_url if res.resource_url.startswith("http") else client.base_url + res.resource_url
    n = 0
    c0 = cpu()
    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=600) as h:
        async with h.stream("GET", url, headers={"X-Resource-Token": res.token}) as r:
            r.raise_for_status()
            async for part in r.aiter_raw(1 << 20):
                n += len(part)
    dt = time.perf_counter() - t0
    raw_read.cpu_per_gb = (cpu() - c0) / (n / 1e9)  # type: ignore[attr-defined]
    await client.release_backup_resource(volume_uri, res_ref.task_id)
    for _ in range(200):  # wait until the resource is gone, then drop the snapshot
        try:
            await client.backup_resource(volume_uri, res_ref.task_id)
            await asyncio.sleep(0.05)
        except Exception:
            break
    await client.wait_task(await client.delete_snapshot(ref.uri), interval=0.05)
    return n, dt


async def fctui_backup(client: VrmClient, repo: Repository, urn: str, job_id: str,
                       settings: RunnerSettings) -> tuple[JobRecord, float, float]:
    plan = await build_plan(client, [urn], repo)
    job = JobRecord(id=job_id)
    runner = BackupRunner(client, repo, settings=settings)
    reporter = Reporter(job, None)
    c0, t0 = cpu(), time.perf_counter()
    await runner.run(job, plan, reporter)
    dt, dc = time.perf_counter() - t0, cpu() - c0
    runner.close()
    total = sum(reporter.busy.values()) or 1.0
    print(f"    commit (fsync, manifest, catalog): {reporter.busy['write']:.2f} s; busy share per stage (summed over workers): "
          + ", ".join(f"{k} {v / total:.0%}" for k, v in reporter.busy.items()))
    if job.state != "succeeded":
        raise SystemExit(f"backup {job_id} {job.state}: {job.error}")
    return job, dt, dc


async def main(ns: argparse.Namespace) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SIM_SCRIPT.format(gb=ns.disk_gb, fill=ns.fill)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=str(ROOT), text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        async with httpx.AsyncClient(base_url=url) as control, \
                VrmClient(url, "admin", "Admin@123") as client:
            edges = (await control.get("/sim/edge-cases")).json()
            urn = edges["ready"][0]
            vm = await client.vm(urn)
            vol = vm.disks[0]
            vol_uri = "/service/" + vol.volume_urn[4:].replace(":", "/")
            disk_bytes = (vol.quantity_gb or 0) << 30
            print(f"disk: {vol.quantity_gb} GB ({disk_bytes / MB:.0f} MB), written fraction ~{ns.fill:.0%}, "
                  f"2 MiB CBT blocks; simulator in its own process; {os.cpu_count()} CPU(s)")

            n, dt = await raw_read(client, vm.uri, vol_uri)
            raw = n / dt / MB
            print(f"raw resource read : {n / MB:8.0f} MB in {dt:6.2f} s = {raw:7.1f} MB/s, "
                  f"CPU {raw_read.cpu_per_gb:.2f} s/GB")  # type: ignore[attr-defined]

            settings = RunnerSettings(reads_in_flight=ns.reads,
                                      max_range_bytes=ns.range_mb << 20, watch_interval=2.0,
                                      task_interval=0.05)
            with tempfile.TemporaryDirectory(prefix="fctui-bench-") as tmp:
                repo = Repository.open(Path(tmp) / "repo")
                job, dt, dc = await fctui_backup(client, repo, urn, "full", settings)
                read = job.vms[0].bytes_read
                full = read / dt / MB
                print(f"fctui full backup : {read / MB:8.0f} MB in {dt:6.2f} s = {full:7.1f} MB/s "
                      f"({full / raw:.0%} of raw; goal >= 70 %), CPU {dc / (read / 1e9):.2f} s/GB, "
                      f"stored {sum(d.bytes_stored for d in job.vms[0].disks) / MB:.0f} MB compressed")

                blocks = disk_bytes // (2 << 20)
                n_changed = max(1, blocks * 5 // 100)
                r = await control.post(f"/sim/volumes/{vol.volume_urn.rsplit(':', 1)[1]}/write",
                                       json={"blocks": n_changed})
                r.raise_for_status()
                changed_bytes = r.json()["written"] * (2 << 20)
                job2, dt2, dc2 = await fctui_backup(client, repo, urn, "incr", settings)
                d = job2.vms[0].disks[0]
                print(f"fctui incremental : {d.bytes_read / MB:8.0f} MB in {dt2:6.2f} s = "
                      f"{d.bytes_read / dt2 / MB:7.1f} MB/s, mode {d.mode}, "
                      f"{n_changed} of {blocks} blocks changed (5 %): bytes read per changed byte "
                      f"{d.bytes_read / changed_bytes:.2f} (goal 1.00), CPU {dc2 / max(d.bytes_read / 1e9, 1e-9):.2f} s/GB")
                p = repo.point(job2.restore_points[0])
                got = repo.open_disk(p.id, vol.volume_urn).sha256()
                want = (await control.get(f"/sim/volumes/{vol.volume_urn.rsplit(':', 1)[1]}/digest")).json()["sha256"]
                print(f"incremental point restores to the volume's content: {got == want}")
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(30)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--disk-gb", type=int, default=2)
    ap.add_argument("--fill", type=float, default=0.9)
    ap.add_argument("--reads", type=int, default=6, help="ranges in flight (each read + stored on a thread)")
    ap.add_argument("--range-mb", type=int, default=8, help="largest coalesced range read")
    asyncio.run(main(ap.parse_args()))
