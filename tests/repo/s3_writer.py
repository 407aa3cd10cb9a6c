"""A restore point writer in its own process, for the S3 repository's tests (another machine's writer).

    python -m tests.repo.s3_writer URL SEED FIRST SECOND [--renew S --ttl S --poll S]

Opens the repository (AWS_* from the environment), starts a point, puts the blocks FIRST (a list of
block numbers of the test's pool, seeded by SEED; see :func:`pool_block`), prints ``TOUCHED <point id>``
and waits for a line on stdin: ``go`` puts the blocks SECOND and commits, printing ``COMMITTED <id>``
or ``REFUSED <reason>``; the test may kill or stop the process at any time instead.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

BS = 4096
VOLUME = "urn:vol:1"


def pool_block(seed: int, n: int) -> bytes:
    """Block ``n`` of the test's pool: deterministic, incompressible, distinct."""
    return random.Random(seed * 1_000_003 + n).randbytes(BS)


def start_point(repo, size_blocks: int, vm: str = "urn:sites:1:vms:i-s3"):  # type: ignore[no-untyped-def]
    pw = repo.new_point(vm_urn=vm, vm_name="s3vm", job_id="job-s3", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap:1", created=time.time())
    dw = pw.add_disk(volume_urn=VOLUME, disk_name="d0", sequence_num=1, pci_type="VIRTIO",
                     size_bytes=size_blocks * BS, block_size=BS, storage_type="LOCALPOME",
                     datastore_urn="urn:ds:1", cbt=None, base_point_id=None)
    return pw, dw


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("seed", type=int)
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--renew", type=float, default=0.5)
    ap.add_argument("--ttl", type=float, default=3.0)
    ap.add_argument("--poll", type=float, default=0.1)
    ns = ap.parse_args()
    from fctui.repo import RepoError, Repository
    repo = Repository.open(ns.url)
    repo.lease_renew_s, repo.lease_ttl_s, repo.gc_poll_s = ns.renew, ns.ttl, ns.poll
    first = [int(x) for x in ns.first.split(",") if x]
    second = [int(x) for x in ns.second.split(",") if x]
    pw, dw = start_point(repo, len(first) + len(second))
    for i, n in enumerate(first):
        dw.put_block(i, pool_block(ns.seed, n))
    print(f"TOUCHED {pw.point_id}", flush=True)
    if sys.stdin.readline().strip() != "go":
        pw.abort()
        return 1
    try:
        for i, n in enumerate(second, len(first)):
            dw.put_block(i, pool_block(ns.seed, n))
        point = pw.commit()
    except RepoError as exc:
        print(f"REFUSED {exc}", flush=True)
        return 0
    print(f"COMMITTED {point.id}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
