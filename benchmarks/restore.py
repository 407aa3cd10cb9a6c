"""Restore throughput: fctui's restore of a large disk vs plain httpx PUTs of the same bytes.

The simulator runs in its own process on a loopback socket. A restore point of one disk is written into
a temporary repository (seeded data: half incompressible blocks, half compressible ones, the rest of the
disk zero). In one run we measure:

1. raw: plain httpx PUTs of the point's non-zero ranges (the same coalesced ranges, bytes already in
   memory) to a RestoreVol resource of a fresh volume — one PUT in flight, then ``--parallel`` in flight;
2. fctui restore of that disk to a new volume as the product runs it (read-back verification on),
   with sequential chunk reads (one range at a time, one repository thread) and with parallel chunk
   reads (``--parallel`` ranges in flight, ``--threads`` repository threads). The goal compares the
   write phase (the engine's own timing) with raw; the end-to-end rate, which adds volume creation,
   resource set-up and reading the whole disk back to prove it, is printed beside it.

Prints MB/s and the ratio to raw. Goal: parallel restore write phase >= 70 % of raw (best of raw).

Each measurement gets a fresh simulator process (``--shared-sim``: one for all, as before), so that no
measurement pays for another's memory history: the simulator keeps written bytes in memory, and until it
freed a deleted volume's bytes the later measurements of a run (the restores) paid for the earlier ones'
memory -- its sys time per GiB rose 3-4x, which made the goal look missed.
Also printed: user/sys CPU and minor page faults per GiB of both processes during the data transfer only
(the restore's write phase cut out of the run by the engine's own log line), and every round's numbers.

    python benchmarks/restore.py [--disk-gb 2] [--fill 0.5] [--parallel 4] [--threads 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fctui.jobs.restore import (RestoreRequest, RestoreSettings, coalesce_runs, plan_restore,  # noqa: E402
                                restore_result, run_restore)
from fctui.repo import Repository  # noqa: E402
from fctui.rules import catalog as C  # noqa: E402
from fctui.vrm import VrmClient  # noqa: E402
from fctui.vrm.urn import urn_to_uri  # noqa: E402

SIM_SCRIPT = """
import sys
from fctui.sim import EmbeddedSimulator, SimConfig
es = EmbeddedSimulator(SimConfig(vms=10, seed=7, time_scale=50.0)).start()
print(es.url, flush=True)
sys.stdin.read()
es.stop()
"""

MB = 1_000_000
GIB = 1 << 30


def make_point(repo: Repository, site: str, ds: object, size: int, bs: int, fill: float) -> tuple[str, str, list[int]]:
    """A one-disk restore point with ``fill`` of its blocks written (seeded, reproducible)."""
    rnd = random.Random(42)
    n = size // bs
    written = sorted(rnd.sample(range(n), int(n * fill)))
    vol = f"urn:sites:{site}:volumes:999999"
    w = repo.new_point(vm_urn=f"urn:sites:{site}:vms:i-BENCH000", vm_name="bench-vm", job_id="bench",
                       kind="cbt", vm_config={"disks": [{"volumeUrn": vol, "sequenceNum": 1, "pciType": "VIRTIO"}]},
                       snapshot_urn="", created=time.time())
    with w:
        dw = w.add_disk(volume_urn=vol, disk_name="disk0", sequence_num=1, pci_type="VIRTIO", size_bytes=size,
                        block_size=bs, storage_type=ds.storage_type, datastore_urn=ds.urn, cbt=None,  # type: ignore[attr-defined]
                        base_point_id=None)
        text = (b"restore benchmark line of moderately compressible text 0123456789\n" * (bs // 64 + 1))[:bs]
        for i in written:
            if i % 2:
                data = random.Random(i).randbytes(bs)
            else:
                data = text[: bs - 8] + i.to_bytes(8, "little")
            dw.put_block(i, data)
        point = w.commit()
    return point.id, vol, written


def cpu() -> float:
    t = os.times()
    return t.user + t.system


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int | str) -> tuple[float, float, float]:
    """(user s, sys s, minor page faults) of a whole process, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK, float(fields[7])


class CpuSampler:
    """Samples user/sys CPU of this process and of the simulator every 10 ms, so that a phase known
    only afterwards (the engine's write phase, from its log) can be cut out of the run. The earlier
    version of this benchmark counted only this process's CPU over the whole restore (volume creation
    and read-back verification included), which says nothing about who is busy while the data flows."""

    def __init__(self, sim_pid: int) -> None:
        self.sim_pid = sim_pid
        self.samples: list[tuple[float, ...]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> tuple[float, ...]:
        t = time.time()
        return (t, *proc_cpu("self"), *proc_cpu(self.sim_pid))

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.samples.append(self.now())
            if len(self.samples) > 200_000:
                del self.samples[:100_000]

    def window(self, t0: float, t1: float) -> tuple[float, ...]:
        """(client user, sys, page faults, sim user, sys, page faults) between wall times t0 and t1."""
        def at(t: float) -> tuple[float, ...]:
            best = min(self.samples, key=lambda s: abs(s[0] - t))
            return best[1:]
        a, b = at(t0), at(t1)
        return tuple(y - x for x, y in zip(a, b))  # type: ignore[return-value]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


SAMPLER: CpuSampler | None = None


async def new_volume(client: VrmClient, site_uri: str, ds_urn: str, gb: int, name: str) -> str:
    ref = await client.create_volume(site_uri, name=name, quantity_gb=gb, datastore_urn=ds_urn)
    await client.wait_task(ref, interval=0.02)
    return ref.urn


async def delete_volume(client: VrmClient, urn: str) -> None:
    await client.wait_task(await client.delete_volume(urn_to_uri(urn)), interval=0.02)


async def raw_write(client: VrmClient, site_uri: str, ds_urn: str, gb: int, ranges: list[tuple[int, bytes]],
                    in_flight: int) -> tuple[float, float, tuple[float, ...]]:
    vol = await new_volume(client, site_uri, ds_urn, gb, f"bench-raw-{in_flight}")
    uri = urn_to_uri(vol)
    ref = await client.prepare_backup_resource(uri, "RestoreVol", delay=600)
    res = await client.wait_backup_resource(uri, ref.task_id, interval=0.02)
    size = gb * GIB
    async with httpx.AsyncClient(headers={"X-Resource-Token": res.token}, timeout=120) as http:
        it = iter(ranges)

        async def worker() -> None:
            for off, data in it:
                r = await http.put(res.resource_url, content=data, headers={
                    "Content-Range": f"bytes {off}-{off + len(data) - 1}/{size}",
                    "Content-Type": "application/octet-stream"})
                r.raise_for_status()

        assert SAMPLER is not None
        w0 = SAMPLER.now()
        t0, c0 = time.perf_counter(), cpu()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        dt, dc = time.perf_counter() - t0, cpu() - c0
        w1 = SAMPLER.now()
    await client.release_backup_resource(uri, ref.task_id)
    await asyncio.sleep(0.1)
    for _ in range(50):
        try:
            await delete_volume(client, vol)
            break
        except Exception:
            await asyncio.sleep(0.1)
    return dt, dc, tuple(y - x for x, y in zip(w0[1:], w1[1:]))


async def fctui_restore(client: VrmClient, repo: Repository, point_id: str, vol: str, ds_urn: str,
                        settings: RestoreSettings) -> tuple[float, int, bool | None, float, float, tuple[float, ...]]:
    req = RestoreRequest(point_id, "disk", disk_volume=vol, datastores={vol: ds_urn},
                         name=f"bench-{settings.writes_in_flight}-{settings.verify}")
    plan = await plan_restore(client, repo, req)
    assert not plan.blocked, plan.findings
    t0, c0 = time.perf_counter(), cpu()
    job = await run_restore(client, repo, plan, settings=settings)
    dt, dc = time.perf_counter() - t0, cpu() - c0
    assert job.state == "succeeded", job.error
    res = restore_result(job)
    written = job.vms[0].disks[0].bytes_written
    await delete_volume(client, res["volumes"][0]["target"])
    # the engine logs its write phase alone ("wrote N MB in T s"): without volume creation and resource setup
    phase, end = next(((float(m.group(1)), e["time"]) for e in job.log
                       if (m := re.search(r"wrote [\d.]+ MB in ([\d.]+) s", e["message"]))), (dt, time.time()))
    assert SAMPLER is not None
    return dt, written, res["volumes"][0]["verified"], dc, phase, SAMPLER.window(end - phase, end)


class Sim:
    """The simulator in its own process, a logged-in client, and the datastore the benchmark writes to."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SIM_SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        self.client = VrmClient(self.url, "admin", "Admin@123")

    async def __aenter__(self) -> "Sim":
        global SAMPLER
        await self.client.__aenter__()
        SAMPLER = CpuSampler(self.proc.pid)
        self.site = (await self.client.sites())[0]
        stores = [d for d in await self.client.datastores(self.site.uri)
                  if d.status == "NORMAL" and C.storage_class(d.storage_type) != C.UNKNOWN_CLASS]
        self.ds = max(stores, key=lambda d: d.usable_free_gb or 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        global SAMPLER
        await self.client.__aexit__(None, None, None)
        if SAMPLER is not None and SAMPLER.sim_pid == self.proc.pid:
            SAMPLER.stop()
            SAMPLER = None
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


async def main(ns: argparse.Namespace) -> None:
    bs = 2 << 20
    size = ns.disk_gb * GIB
    shared: Sim | None = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            repo = Repository.open(Path(tmp) / "repo")
            async with Sim() as first:
                site_id, ds = first.site.id, first.ds
            t0 = time.perf_counter()
            point_id, vol, written = make_point(repo, site_id, ds, size, bs, ns.fill)
            print(f"restore point: {ns.disk_gb} GiB disk, {len(written)} of {size // bs} blocks written "
                  f"({len(written) * bs / MB:.0f} MB), built in {time.perf_counter() - t0:.1f} s")
            reader = repo.open_disk(point_id, vol)
            max_blocks = RestoreSettings().max_range_bytes // bs
            ranges = [(s * bs, b"".join(reader.read_block(i) for i in range(s, s + n)))
                      for s, n in coalesce_runs(written, max_blocks)]
            nbytes = sum(len(d) for _, d in ranges)
            if ns.shared_sim:
                shared = await Sim().__aenter__()

            async def measure(fn: Any) -> Any:
                # The simulator keeps every byte written, also of deleted volumes; sharing one simulator
                # makes each measurement pay for the memory all earlier ones left behind (page faults on
                # fresh memory: measured 4x the simulator's sys time after ~2 GB). A fresh simulator per
                # measurement gives raw and restore the same start.
                if shared is not None:
                    return await fn(shared)
                async with Sim() as sim:
                    assert sim.site.id == site_id and sim.ds.urn == ds.urn, "simulator seed changed"
                    return await fn(sim)

            # interleaved rounds, best of each: the machine's other load shifts between measurements
            raw1 = rawp = seq = par = None
            rounds: list[tuple] = []
            for _ in range(ns.rounds):
                r1 = await measure(lambda s: raw_write(s.client, s.site.uri, ds.urn, ns.disk_gb, ranges, 1))
                rp = await measure(lambda s: raw_write(s.client, s.site.uri, ds.urn, ns.disk_gb, ranges,
                                                       ns.parallel))
                # the product's default: read-back verification on (so chunks are hashed once, there)
                sq = await measure(lambda s: fctui_restore(s.client, repo, point_id, vol, ds.urn, RestoreSettings(
                    writes_in_flight=1, read_threads=1, verify=True, task_interval=0.02, busy_interval=0.05)))
                pr = await measure(lambda s: fctui_restore(s.client, repo, point_id, vol, ds.urn, RestoreSettings(
                    writes_in_flight=ns.parallel, read_threads=ns.threads, verify=True, task_interval=0.02,
                    busy_interval=0.05)))
                raw1 = r1 if raw1 is None or r1[0] < raw1[0] else raw1
                rawp = rp if rawp is None or rp[0] < rawp[0] else rawp
                # the goal is about the write phase: keep the round with the fastest write phase
                seq = sq if seq is None or sq[4] < seq[4] else seq
                par = pr if par is None or pr[4] < par[4] else par
                rounds.append((r1, rp, sq, pr))
            del ranges
        assert raw1 and rawp and seq and par
        assert seq[1] == par[1] == nbytes, (seq[1], par[1], nbytes)
        report(ns, nbytes, raw1, rawp, seq, par, rounds)
    finally:
        if shared is not None:
            await shared.__aexit__(None, None, None)
        if SAMPLER is not None:
            SAMPLER.stop()


def report(ns: argparse.Namespace, nbytes: int, raw1: Any, rawp: Any, seq: Any, par: Any, rounds: list[tuple]) -> None:
    def mbs(dt: float) -> float:
        return nbytes / MB / dt

    best_raw = max(mbs(raw1[0]), mbs(rawp[0]))
    print(f"raw PUT, 1 in flight:            {mbs(raw1[0]):8.1f} MB/s")
    print(f"raw PUT, {ns.parallel} in flight:            {mbs(rawp[0]):8.1f} MB/s")
    seq_w, par_w = mbs(max(seq[4], 0.05)), mbs(max(par[4], 0.05))
    print(f"fctui restore write phase, sequential reads: {seq_w:8.1f} MB/s  ({seq_w / best_raw:.0%} of raw)")
    print(f"fctui restore write phase, parallel reads:   {par_w:8.1f} MB/s  ({par_w / best_raw:.0%} of raw)"
          f"  goal >= 70 %: {'met' if par_w / best_raw >= 0.7 else 'NOT met'}")
    print(f"fctui restore end to end (volume, resource, write, read-back verify of {ns.disk_gb} GiB): "
          f"{mbs(par[0]):8.1f} MB/s of data, verified={par[2]}")
    print(f"CPU of this process per GiB written: fctui parallel incl. verify {par[3] / (nbytes / GIB):.2f} s, "
          f"raw PUTs {rawp[1] / (nbytes / GIB):.2f} s (the simulator runs in its own process)")
    gib = nbytes / GIB

    def cpu_line(name: str, c: tuple[float, ...]) -> str:
        return (f"  {name:<30} client user {c[0] / gib:5.2f} sys {c[1] / gib:5.2f} s, {c[2] / gib / 1000:4.0f}k flt"
                f" | sim user {c[3] / gib:5.2f} sys {c[4] / gib:5.2f} s, {c[5] / gib / 1000:4.0f}k flt")
    print("CPU and minor page faults per GiB during the data transfer only (best round; 10 ms sampling):")
    print(cpu_line("raw PUT, 1 in flight", raw1[2]))
    print(cpu_line(f"raw PUT, {ns.parallel} in flight", rawp[2]))
    print(cpu_line("fctui write phase, sequential", seq[5]))
    print(cpu_line("fctui write phase, parallel", par[5]))
    print("per round, MB/s (raw 1, raw {0}, fctui write seq, fctui write par; par % of the round's best raw):"
          .format(ns.parallel))
    ratios = []
    for r1, rp, sq, pr in rounds:
        br = max(mbs(r1[0]), mbs(rp[0]))
        ratios.append(mbs(max(pr[4], 0.05)) / br)
        print(f"  {mbs(r1[0]):7.1f} {mbs(rp[0]):7.1f} {mbs(max(sq[4], 0.05)):7.1f} "
              f"{mbs(max(pr[4], 0.05)):7.1f}  {ratios[-1]:.0%}")
    print(f"median per-round ratio, parallel write phase / best raw: {sorted(ratios)[len(ratios) // 2]:.0%}")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--disk-gb", type=int, default=2)
    ap.add_argument("--fill", type=float, default=0.5, help="fraction of the disk's blocks written")
    ap.add_argument("--parallel", type=int, default=4, help="PUTs / chunk ranges in flight")
    ap.add_argument("--threads", type=int, default=4, help="repository read threads")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is shown")
    ap.add_argument("--shared-sim", action="store_true",
                    help="one simulator for all measurements (the old way: later ones pay for earlier ones' memory)")
    asyncio.run(main(ap.parse_args()))
