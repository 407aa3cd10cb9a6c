"""File-level restore: a big directory listed and a big file extracted from a restore point, in place.

Each part builds a real ext4 image with ``mke2fs -d`` (e2fsprogs), puts it behind an MBR partition table at
1 MiB (so partition and 2 MiB repository blocks are not aligned, as on a real guest) and writes that disk
into a temporary repository as a restore point (PointWriter, 2 MiB blocks: the product's CBT block size).
Then:

(a) list: ``PointFiles.listdir`` of a directory of ``--entries`` (10,000) small files. "cold" is a fresh
    PointFiles each time (partition table, filesystem and chunk cache opened and read again; the operating
    system's page cache is left warm), "warm" a second listing on the same PointFiles. Goal: < 1 s.
(b) big: one ``--file-mib`` (1 GiB) file of seeded random bytes (a different seed per MiB, so nothing
    dedupes or compresses). The repository's raw read rate is ``DiskReader.iter_blocks`` over the whole
    disk (4 chunks in flight, what a restore reads with); the file's rates are ``extract_to_dir`` of it
    into a temporary directory and ``PointFiles.open`` read to nowhere in 1 MiB pieces. Rounds are
    interleaved; the median of each is compared. Goal: extraction >= 50 % of the raw read rate.
    Needs about 3.5 x the file size free where the scratch files go (checked first). Everything is
    removed afterwards. Every result is checked (names listed, SHA-256 of what was read and extracted).

    .venv/bin/python benchmarks/files.py [--part list|big|both] [--entries 10000] [--file-mib 1024]
                                         [--rounds 5] [--dir /path/on/the/target/disk]

Prints MB/s (1 MB = 10^6 bytes); no assertion on time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fctui.files.browse import PointFiles  # noqa: E402
from fctui.files.extract import extract_to_dir  # noqa: E402
from fctui.repo import Repository  # noqa: E402
from fctui.units import human_bytes  # noqa: E402

MIB = 1 << 20
BLOCK = 2 * MIB          # the product's CBT block (sector_of_block 4096)
PART_START = MIB         # where partitioning tools put the first partition
VOLUME = "urn:sites:BENCH:volumes:1"


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else float("inf")


def mbr(part_bytes: int) -> bytes:
    """A DOS partition table with one Linux partition at PART_START of ``part_bytes`` (whole sectors)."""
    sector = bytearray(512)
    sector[440:444] = (0x46435449).to_bytes(4, "little")     # disk identifier
    entry = bytearray(16)
    entry[1:4] = entry[5:8] = b"\xfe\xff\xff"                   # CHS unused (LBA only)
    entry[4] = 0x83                                             # Linux
    entry[8:12] = (PART_START // 512).to_bytes(4, "little")
    entry[12:16] = (part_bytes // 512).to_bytes(4, "little")
    sector[446:462] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def mke2fs(src: Path, image: Path, size_mib: int, *extra: str) -> None:
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-b", "4096", "-d", str(src), *extra, str(image),
                    f"{size_mib}M"], check=True, stdout=subprocess.DEVNULL)


def disk_blocks(image: Path) -> tuple[int, Iterator[tuple[int, bytes]]]:
    """The disk (MBR + the image as partition 1) as (size, iterator of 2 MiB blocks)."""
    part = image.stat().st_size
    size = -(-(PART_START + part) // BLOCK) * BLOCK

    def blocks() -> Iterator[tuple[int, bytes]]:
        with open(image, "rb") as f:
            head = mbr(part) + bytes(PART_START - 512)
            index = 0
            buf = head + f.read(BLOCK - len(head))
            while buf:
                buf = buf.ljust(BLOCK, b"\0")
                yield index, buf
                index += 1
                buf = f.read(BLOCK)
    return size, blocks()


def store_point(repo: Repository, image: Path, name: str) -> str:
    size, blocks = disk_blocks(image)
    with repo.new_point(vm_urn=f"urn:sites:BENCH:vms:{name}", vm_name=name, job_id="bench", kind="cbt",
                        vm_config={}, snapshot_urn="", created=time.time()) as pw:
        dw = pw.add_disk(volume_urn=VOLUME, disk_name="disk0", sequence_num=1, pci_type="VIRTIO",
                         size_bytes=size, block_size=BLOCK, storage_type="LOCALPOME", datastore_urn="urn:ds",
                         cbt=None, base_point_id=None)
        with ThreadPoolExecutor(4) as pool:
            inflight: list[Future[str]] = []
            for index, data in blocks:          # at most 8 blocks in memory
                if len(inflight) >= 8:
                    inflight.pop(0).result()
                inflight.append(pool.submit(dw.put_block, index, data))
            for fut in inflight:
                fut.result()
        return pw.commit().id


def timed_extract(repo: Repository, pid: str, out: Path, nbytes: int, digest: str | None) -> float:
    """MB/s of one extract_to_dir of /p1/big.bin into ``out`` (made and removed here); with ``digest`` the
    written file is checked against it."""
    out.mkdir()
    try:
        with PointFiles(repo, pid) as pf:
            pf.stat("/p1/big.bin")   # volumes and filesystem opened outside the timing
            t0 = time.perf_counter()
            report = extract_to_dir(pf, ["/p1/big.bin"], out)
            mbs = rate(nbytes, time.perf_counter() - t0)
        if not report.ok:
            raise SystemExit(f"extraction into {out} failed: {report.errors}")
        if digest is not None and file_sha256(out / "big.bin") != digest:
            raise SystemExit(f"the file extracted into {out} differs from the one put in the image")
        return mbs
    finally:
        shutil.rmtree(out, ignore_errors=True)


def evict(repo: Repository) -> None:
    """Drop the repository's chunk files from the page cache (POSIX_FADV_DONTNEED on clean pages, no root
    needed): the next read comes from the disk, as in a repository larger than this machine's memory."""
    for path in repo.chunks_dir.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def free_bytes(where: Path) -> int:
    return shutil.disk_usage(where).free


# --- (a) a 10,000-entry directory ------------------------------------------------------------------------

def bench_list(scratch: Path, entries: int, rounds: int) -> None:
    src = scratch / "src"
    many = src / "many"
    many.mkdir(parents=True)
    names = {f"file-{i:05d}.conf" for i in range(entries)}
    for n in names:
        (many / n).write_bytes(b"setting = %d\n" % len(n))
    image = scratch / "list.ext4"
    size_mib = max(64, entries * 8 // 1024 + 64)   # a 4 KiB block and an inode per file, and room
    t0 = time.perf_counter()
    mke2fs(src, image, size_mib, "-N", str(entries + 1024))
    shutil.rmtree(src)
    repo = Repository.open(scratch / "repo")
    pid = store_point(repo, image, "list")
    image.unlink()
    print(f"(a) ext4 of {size_mib} MiB with /many of {entries:,} files, stored as point {pid} "
          f"in {time.perf_counter() - t0:.1f} s")

    cold, warm = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        with PointFiles(repo, pid) as pf:
            listed = pf.listdir("/p1/many")
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            again = pf.listdir("/p1/many")
            warm.append(time.perf_counter() - t0)
        got = {e.name for e in listed}
        if got != names or {e.name for e in again} != names:
            raise SystemExit(f"listing is wrong: {len(got)} entries, {len(names - got)} missing, "
                             f"{len(got - names)} unexpected")
    goal = "met" if statistics.median(cold) < 1.0 else "MISSED"
    print(f"    listdir cold (fresh PointFiles: partition table, filesystem, directory): "
          f"median {statistics.median(cold):.3f} s, best {min(cold):.3f}, worst {max(cold):.3f} "
          f"over {rounds} rounds")
    print(f"    listdir warm (same PointFiles again): median {statistics.median(warm):.3f} s, "
          f"best {min(warm):.3f}, worst {max(warm):.3f}")
    print(f"    goal < 1 s (cold median): {goal}")
    repo.close()


# --- (b) a 1 GiB file ------------------------------------------------------------------------------------

# "text": every byte one of 16 characters (4 bits of entropy; zstd stores it at about half its size), the
# way logs, dumps and database files compress; "random" is the worst case (stored raw, nothing to unpack).
_TEXT = bytes(b"0123456789abcde\n"[i % 16] for i in range(256))


def write_big(path: Path, mib: int, seed: int, content: str = "random") -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            piece = hashlib.shake_128(b"fctui-bench-%d-%d" % (seed, i)).digest(MIB)
            if content == "text":
                piece = piece.translate(_TEXT)
            h.update(piece)
            f.write(piece)
    return h.hexdigest()


def bench_big(scratch: Path, mib: int, rounds: int, content: str = "random") -> None:
    need = int(mib * MIB * 3.5)
    free = free_bytes(scratch)
    if free < need:
        print(f"(b) skipped: needs {human_bytes(need)} free in {scratch}, only {human_bytes(free)} (--dir elsewhere "
              f"or a smaller --file-mib)")
        return
    src = scratch / "src"
    src.mkdir()
    t0 = time.perf_counter()
    digest = write_big(src / "big.bin", mib, seed=17, content=content)
    image = scratch / "big.ext4"
    size_mib = mib + max(64, mib // 16)    # the file, its extent tree, the journal, the metadata
    mke2fs(src, image, size_mib)
    shutil.rmtree(src)
    repo = Repository.open(scratch / "repo")
    pid = store_point(repo, image, "big")
    image.unlink()
    point = repo.point(pid)
    print(f"(b) ext4 of {size_mib} MiB holding /big.bin ({mib} MiB, {content}), stored as point {pid} "
          f"({human_bytes(point.bytes_stored)} stored) in {time.perf_counter() - t0:.1f} s")

    nbytes = mib * MIB
    raw, ext, opened, dest, ram = [], [], [], [], []
    raw_bytes = 0
    out = scratch / "out"
    # This VM's disk writes (and fsyncs) ~550 MB/s, a quarter of the repository's read rate from the page
    # cache: extraction onto it measures the disk. A RAM-backed destination measures fctui's own path.
    shm = Path("/dev/shm")
    ram_out = shm / f"fctui-bench-{os.getpid()}" if shm.is_dir() and free_bytes(shm) > 2 * nbytes else None
    for r in range(rounds):
        reader = repo.open_disk(pid, VOLUME)
        t0 = time.perf_counter()
        raw_bytes = sum(len(data) for _, data in reader.iter_blocks(readahead=4) if data is not None)
        raw.append(rate(raw_bytes, time.perf_counter() - t0))

        check = digest if r == 0 else None
        ext.append(timed_extract(repo, pid, out, nbytes, check))
        if ram_out is not None:
            ram.append(timed_extract(repo, pid, ram_out, nbytes, check))

        with PointFiles(repo, pid) as pf:
            pf.stat("/p1/big.bin")
            h = hashlib.sha256() if r == 0 else None
            t0 = time.perf_counter()
            with pf.open("/p1/big.bin") as f:
                while piece := f.read(MIB):
                    if h is not None:
                        h.update(piece)
            seconds = time.perf_counter() - t0
            opened.append(rate(nbytes, seconds))
        if h is not None and h.hexdigest() != digest:
            raise SystemExit("PointFiles.open read other bytes than the file put in the image")
        dest.append(rate(nbytes, write_from_memory(scratch / "plain.bin", mib)))
    raw_m, ext_m, open_m = (statistics.median(x) for x in (raw, ext, opened))
    print(f"    raw read (DiskReader.iter_blocks, 4 in flight, {human_bytes(raw_bytes)} of stored blocks): "
          f"median {raw_m:.0f} MB/s  [{' '.join(f'{x:.0f}' for x in raw)}]")
    print(f"    extract_to_dir of the file: median {ext_m:.0f} MB/s = {ext_m / raw_m:.0%} of raw  "
          f"[{' '.join(f'{x:.0f}' for x in ext)}]")
    print(f"    PointFiles.open read to nowhere (first round hashed): median {open_m:.0f} MB/s = "
          f"{open_m / raw_m:.0%} of raw  [{' '.join(f'{x:.0f}' for x in opened)}]")
    dest_m = statistics.median(dest)
    # The same two with the repository read from the disk: evicted from the page cache before each round.
    cold_raw, cold_ram = [], []
    for _ in range(rounds if ram_out is not None else 0):
        evict(repo)
        reader = repo.open_disk(pid, VOLUME)
        t0 = time.perf_counter()
        got = sum(len(data) for _, data in reader.iter_blocks(readahead=4) if data is not None)
        cold_raw.append(rate(got, time.perf_counter() - t0))
        evict(repo)
        assert ram_out is not None
        cold_ram.append(timed_extract(repo, pid, ram_out, nbytes, None))
    print(f"    the destination's own write rate (the same bytes from memory, written and fsynced): median "
          f"{dest_m:.0f} MB/s; extraction = {ext_m / dest_m:.0%} of it  [{' '.join(f'{x:.0f}' for x in dest)}]")
    if cold_raw:
        craw_m, cram_m = statistics.median(cold_raw), statistics.median(cold_ram)
        print(f"    repository read from the disk (page cache dropped before each round): raw median {craw_m:.0f} MB/s "
              f"[{' '.join(f'{x:.0f}' for x in cold_raw)}]; extract_to_dir to RAM median {cram_m:.0f} MB/s = "
              f"{cram_m / craw_m:.0%} of raw [{' '.join(f'{x:.0f}' for x in cold_ram)}]")
    if ram:
        ram_m = statistics.median(ram)
        print(f"    extract_to_dir to RAM ({shm}, no disk in the way): median {ram_m:.0f} MB/s = "
              f"{ram_m / raw_m:.0%} of raw  [{' '.join(f'{x:.0f}' for x in ram)}]")
    # A repository is larger than the machine's memory: its raw read rate is the disk's. That case decides
    # the goal; the warm-cache figures (all in memory, the hardest ratio) are printed beside it.
    if cold_raw:
        print(f"    goal extraction >= 50 % of raw, repository read from the disk: "
              f"{'met' if cram_m >= 0.5 * craw_m else 'MISSED'} ({cram_m / craw_m:.0%}); with the repository "
              f"in the page cache: {ram_m / raw_m:.0%} to RAM, {ext_m / raw_m:.0%} onto this disk "
              f"(which writes at {dest_m / raw_m:.0%} of that rate itself)")
    else:
        print(f"    goal extraction >= 50 % of raw: {'met' if ext_m >= 0.5 * raw_m else 'MISSED'} "
              f"(no RAM-backed /dev/shm with room to measure the repository read from the disk)")
    repo.close()


def write_from_memory(path: Path, mib: int) -> float:
    """Seconds to write ``mib`` MiB already in memory to a new file and fsync it: what any extraction to
    that filesystem is bounded by."""
    piece = hashlib.shake_128(b"fctui-bench-plain").digest(MIB)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for _ in range(mib):
            os.write(fd, piece)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(4 * MIB):
            h.update(piece)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("list", "big", "both"), default="both")
    ap.add_argument("--entries", type=int, default=10_000, help="files in the listed directory (10000)")
    ap.add_argument("--file-mib", type=int, default=1024, help="size of the big file in MiB (1024)")
    ap.add_argument("--rounds", type=int, default=5, help="measurements of each kind (5)")
    ap.add_argument("--content", choices=("random", "text", "both"), default="both",
                    help="the big file's bytes: random (incompressible, the worst case), text (compresses ~2:1)")
    ap.add_argument("--dir", default=None, help="where the scratch image and repository go (a temp dir)")
    args = ap.parse_args()
    if shutil.which("mke2fs") is None:
        print("mke2fs (e2fsprogs) is needed to build the images", file=sys.stderr)
        return 2
    print(f"file-level restore benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}")
    runs: list[tuple[str, Callable[[Path], None]]] = [("list", lambda d: bench_list(d, args.entries, args.rounds))]
    for content in (("random", "text") if args.content == "both" else (args.content,)):
        runs.append(("big", lambda d, c=content: bench_big(d, args.file_mib, args.rounds, c)))
    for part, fn in runs:
        if args.part not in (part, "both"):
            continue
        scratch = Path(tempfile.mkdtemp(prefix="fctui-bench-files-", dir=args.dir))
        try:
            fn(scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
