"""Repository throughput: put_block with 1/2/4 threads (random and half-zero 2 MiB blocks), then
read-back and verify of the same point. Prints MB/s (1 MB = 10^6 bytes) and CPU seconds per GB.

    .venv/bin/python benchmarks/repo.py [--mib 256] [--dir /path/on/the/target/disk]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fctui.repo import Repository  # noqa: E402

BLOCK = 2 * 1024 * 1024


def make_blocks(n: int, half_zero: bool, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    zero = bytes(BLOCK)
    return [zero if half_zero and i % 2 else rng.randbytes(BLOCK) for i in range(n)]


def backup(root: Path, blocks: list[bytes], threads: int) -> tuple[Repository, str, float, float, float]:
    repo = Repository.open(root)
    t0, c0 = time.perf_counter(), time.process_time()
    with repo.new_point(vm_urn="urn:vm:bench", vm_name="bench", job_id="bench", kind="cbt", vm_config={},
                        snapshot_urn="urn:snap", created=time.time()) as pw:
        dw = pw.add_disk(volume_urn="urn:vol:bench", disk_name="bench", sequence_num=1, pci_type="VIRTIO",
                         size_bytes=len(blocks) * BLOCK, block_size=BLOCK, storage_type="LOCALPOME",
                         datastore_urn="urn:ds", cbt=None, base_point_id=None)
        if threads == 1:
            for i, b in enumerate(blocks):
                dw.put_block(i, b)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda ib: dw.put_block(*ib), enumerate(blocks)))
        t_put = time.perf_counter() - t0
        point = pw.commit()  # includes the fsync of every new chunk
    return repo, point.id, t_put, time.perf_counter() - t0, time.process_time() - c0


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mib", type=int, default=256, help="logical data per run (default 256 MiB)")
    ap.add_argument("--dir", default=None, help="where to create the scratch repositories")
    args = ap.parse_args()
    n = max(2, args.mib * 1024 * 1024 // BLOCK)
    total = n * BLOCK
    print(f"repository benchmark: {n} blocks of 2 MiB = {total / 1e6:.0f} MB per run, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'data':<10} {'threads':>7} {'put MB/s':>9} {'+commit':>8} {'CPU s/GB':>9} {'stored MB':>10} "
          f"{'read MB/s':>10} {'read4 MB/s':>11} {'verify MB/s':>12}")
    for kind in ("random", "half-zero"):
        blocks = make_blocks(n, kind == "half-zero", seed=42)
        for threads in (1, 2, 4):
            scratch = Path(tempfile.mkdtemp(prefix="fctui-bench-", dir=args.dir))
            try:
                repo, pid, put_secs, secs, cpu = backup(scratch / "repo", blocks, threads)
                stored = repo.point(pid).bytes_stored
                reader = repo.open_disk(pid, "urn:vol:bench")
                t0 = time.perf_counter()
                for _ in reader.iter_blocks(readahead=1):
                    pass
                read1 = time.perf_counter() - t0
                t0 = time.perf_counter()
                for _ in reader.iter_blocks(readahead=4):
                    pass
                read4 = time.perf_counter() - t0
                rep = repo.verify(threads=4)
                assert rep.ok
                print(f"{kind:<10} {threads:>7} {rate(total, put_secs):>9.0f} {rate(total, secs):>8.0f} "
                      f"{cpu / (total / 1e9):>9.2f} "
                      f"{stored / 1e6:>10.1f} {rate(total, read1):>10.0f} {rate(total, read4):>11.0f} "
                      f"{rate(rep.bytes_checked, rep.seconds):>12.0f}")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    print("put = put_block calls (hash, zero check, zstd-1 or raw, write to page cache); +commit = including\n"
          "the fsync of every chunk and the manifest/catalog writes; logical bytes per second;\n"
          "read/read4 = DiskReader.iter_blocks with 1/4 chunks in flight (decompress + hash check), "
          "logical bytes;\nverify = Repository.verify(threads=4), stored (non-zero) bytes re-hashed per second.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
