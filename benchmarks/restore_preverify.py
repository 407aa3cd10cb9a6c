"""What checking a restore point before the first write costs: seconds per GiB of stored data.

A restore over an existing VM or disk (``--to original``, ``--to disk``) reads and hashes every chunk of
the point before it stops the VM or prepares anything (restore.py ``_Restore._preverify``). This runs
that very code on a one-disk point built like benchmarks/restore.py's (2 MiB blocks, half incompressible,
half compressible), with no VRM involved (the pass never talks to it).

The chunks were just written, so they are in the page cache: the figure is the CPU cost (decompress and
SHA-256); on a cold repository add its sequential read time.

    python benchmarks/restore_preverify.py [--disk-gb 1] [--fill 1.0] [--threads 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from restore import GIB, make_point  # noqa: E402  (benchmarks/restore.py)

from fctui.jobs.journal import MemoryJournal  # noqa: E402
from fctui.jobs.model import JobRecord  # noqa: E402
from fctui.jobs.restore import (RestoreDiskPlan, RestorePlan, RestoreRequest, RestoreSettings,  # noqa: E402
                                _progress_from_plan, _Restore)
from fctui.jobs.runner import Reporter  # noqa: E402
from fctui.repo import Repository  # noqa: E402


class _Ds:
    urn = "urn:sites:BENCH:datastores:1"
    storage_type = "LOCAL"


async def main(ns: argparse.Namespace) -> None:
    bs = 2 << 20
    size = ns.disk_gb * GIB
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository.open(Path(tmp) / "repo")
        point_id, vol, written = make_point(repo, "BENCH", _Ds(), size, bs, ns.fill)
        stored = len(written) * bs
        point = repo.point(point_id)
        disk = point.disks[0]
        dp = RestoreDiskPlan(source_volume=vol, disk_name=disk.disk_name, sequence_num=1, pci_type="VIRTIO",
                             size_bytes=size, storage_type="LOCAL", target_datastore_urn=_Ds.urn,
                             target_datastore_name="ds", target_volume_urn="", mode="all",
                             bytes_to_write=stored, reason="")
        best = float("inf")
        for _ in range(ns.rounds):
            plan = RestorePlan(request=RestoreRequest(point_id, "disk", disk_volume=vol), point=point,
                               vm_name="", vm_urn="", disks=[dp])
            job = JobRecord(id="bench")
            _progress_from_plan(job, plan)
            run = _Restore(None, repo, plan, job, Reporter(job), MemoryJournal(),  # type: ignore[arg-type]
                           RestoreSettings(read_threads=ns.threads))
            t0 = time.perf_counter()
            await run._preverify()
            best = min(best, time.perf_counter() - t0)
            run.close()
        print(f"point: {stored / GIB:.2f} GiB stored ({len(written)} chunks of {bs >> 20} MiB), "
              f"{ns.threads} threads")
        print(f"pre-verification: best {best:.2f} s = {best / (stored / GIB):.2f} s/GiB "
              f"({stored / best / 1e6:.0f} MB/s)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--disk-gb", type=int, default=1)
    ap.add_argument("--fill", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
